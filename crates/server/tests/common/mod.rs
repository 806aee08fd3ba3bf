//! Shared test scaffolding: an in-memory [`Backend`] (a test double for the handlers' contract,
//! recording every call) and a real server on 127.0.0.1:0 reached over real HTTP.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use safe_updater_server::{
    ApiToken, AppState, AssetSummary, Backend, BackendError, BackendResult, LiveSecrets, Metrics,
    Operator, PendingApproval, PushEvent, Readiness, Secret, ServerConfig, WebhookSecrets, router,
    serve,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ALICE_TOKEN: &str = "alice-token-3f9a1c";
pub const BOB_TOKEN: &str = "bob-token-77e2d0";

/// A call the handlers made, with the operator they passed.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Approve {
        id: String,
        operator: String,
    },
    Reject {
        id: String,
        operator: String,
        reason: String,
    },
    Skip {
        asset: String,
        version: String,
        operator: String,
    },
    Snooze {
        asset: String,
        until: Timestamp,
        operator: String,
    },
    Unsnooze {
        asset: String,
        operator: String,
    },
    Pin {
        asset: String,
        constraint: String,
        operator: String,
    },
    Unpin {
        asset: String,
        operator: String,
    },
}

#[derive(Debug, Default)]
pub struct MemState {
    pub pending: Vec<PendingApproval>,
    pub decided: Vec<String>,
    pub assets: Vec<AssetSummary>,
    pub calls: Vec<Call>,
    pub pushes: Vec<PushEvent>,
}

#[derive(Debug, Default)]
pub struct MemBackend {
    pub state: Mutex<MemState>,
}

impl MemBackend {
    pub fn with_fixtures() -> MemBackend {
        let b = MemBackend::default();
        {
            let mut s = b.lock();
            s.pending.push(approval(
                "docker/local/web@2.0.0",
                "docker/local/web",
                "1.1.0",
                "2.0.0",
                "major",
            ));
            s.pending.push(approval(
                "k8s/prod/shop/Deployment/api/api@1.5.0",
                "k8s/prod/shop/Deployment/api/api",
                "1.4.2",
                "1.5.0",
                "minor",
            ));
            s.assets
                .push(asset("docker/local/web", "container", "docker", None));
            s.assets.push(asset(
                "k8s/prod/shop/Deployment/api/api",
                "Deployment",
                "kubernetes",
                Some("shop"),
            ));
        }
        b
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        self.state.lock().expect("backend state lock")
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn pushes(&self) -> Vec<PushEvent> {
        self.lock().pushes.clone()
    }

    fn asset_known(&self, id: &str) -> BackendResult<()> {
        if self.lock().assets.iter().any(|a| a.id == id) {
            Ok(())
        } else {
            Err(BackendError::not_found(format!("no asset '{id}'"))
                .with_hint("GET /api/v1/assets lists them"))
        }
    }

    fn take_pending(&self, id: &str) -> BackendResult<()> {
        let mut s = self.lock();
        if s.decided.iter().any(|d| d == id) {
            return Err(BackendError::conflict(format!(
                "'{id}' was already decided"
            )));
        }
        let Some(pos) = s.pending.iter().position(|p| p.id == id) else {
            return Err(BackendError::not_found(format!(
                "no pending approval '{id}'"
            )));
        };
        s.pending.remove(pos);
        s.decided.push(id.to_owned());
        Ok(())
    }

    fn record(&self, call: Call) {
        self.lock().calls.push(call);
    }
}

pub fn approval(
    id: &str,
    asset: &str,
    current: &str,
    candidate: &str,
    update_type: &str,
) -> PendingApproval {
    PendingApproval {
        id: id.to_owned(),
        asset_id: asset.to_owned(),
        asset_type: "docker".to_owned(),
        namespace: None,
        current: current.to_owned(),
        candidate: candidate.to_owned(),
        update_type: update_type.to_owned(),
        rule: format!("default.{update_type}"),
        reason: format!("{update_type} updates need a review"),
        requested_at: "2026-11-20T08:00:00Z".parse().expect("timestamp"),
    }
}

pub fn asset(id: &str, kind: &str, asset_type: &str, namespace: Option<&str>) -> AssetSummary {
    AssetSummary {
        id: id.to_owned(),
        kind: kind.to_owned(),
        asset_type: asset_type.to_owned(),
        namespace: namespace.map(str::to_owned),
        reference: "127.0.0.1:5001/demo/web:1.1.0".to_owned(),
        pinned: None,
        snoozed_until: None,
        skipped_versions: Vec::new(),
    }
}

impl Backend for MemBackend {
    async fn pending_approvals(&self) -> BackendResult<Vec<PendingApproval>> {
        Ok(self.lock().pending.clone())
    }

    async fn approve(&self, id: String, operator: Operator) -> BackendResult<()> {
        self.take_pending(&id)?;
        self.record(Call::Approve {
            id,
            operator: operator.name,
        });
        Ok(())
    }

    async fn reject(&self, id: String, operator: Operator, reason: String) -> BackendResult<()> {
        self.take_pending(&id)?;
        self.record(Call::Reject {
            id,
            operator: operator.name,
            reason,
        });
        Ok(())
    }

    async fn list_assets(&self) -> BackendResult<Vec<AssetSummary>> {
        Ok(self.lock().assets.clone())
    }

    async fn skip_version(
        &self,
        asset: String,
        version: String,
        operator: Operator,
    ) -> BackendResult<()> {
        self.asset_known(&asset)?;
        self.record(Call::Skip {
            asset,
            version,
            operator: operator.name,
        });
        Ok(())
    }

    async fn snooze(
        &self,
        asset: String,
        until: Timestamp,
        operator: Operator,
    ) -> BackendResult<()> {
        self.asset_known(&asset)?;
        self.record(Call::Snooze {
            asset,
            until,
            operator: operator.name,
        });
        Ok(())
    }

    async fn unsnooze(&self, asset: String, operator: Operator) -> BackendResult<()> {
        self.asset_known(&asset)?;
        self.record(Call::Unsnooze {
            asset,
            operator: operator.name,
        });
        Ok(())
    }

    async fn pin(
        &self,
        asset: String,
        constraint: String,
        operator: Operator,
    ) -> BackendResult<()> {
        self.asset_known(&asset)?;
        if constraint.contains("garbage") {
            // Stands in for the core's constraint parser refusing the text.
            return Err(BackendError::invalid(format!(
                "'{constraint}' is not a version constraint"
            ))
            .with_hint("e.g. ~1.2, ^2, >=1.4 <2"));
        }
        self.record(Call::Pin {
            asset,
            constraint,
            operator: operator.name,
        });
        Ok(())
    }

    async fn unpin(&self, asset: String, operator: Operator) -> BackendResult<()> {
        self.asset_known(&asset)?;
        self.record(Call::Unpin {
            asset,
            operator: operator.name,
        });
        Ok(())
    }

    async fn webhook_push(&self, event: PushEvent) -> BackendResult<()> {
        self.lock().pushes.push(event);
        Ok(())
    }
}

pub fn config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tokens: vec![
            ApiToken::new("alice", ALICE_TOKEN),
            ApiToken::new("bob", BOB_TOKEN),
        ],
        webhooks: WebhookSecrets::default(),
    }
}

pub fn secret(s: &str) -> Option<Secret> {
    Some(Secret::new(s))
}

/// A server on a free loopback port, stopped (gracefully) on drop.
pub struct TestServer {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub backend: Arc<MemBackend>,
    pub metrics: Metrics,
    pub readiness: Readiness,
    /// What a configuration reload replaces.
    pub secrets: LiveSecrets,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(config: ServerConfig, backend: MemBackend) -> TestServer {
        config.validate().expect("valid test config");
        let backend = Arc::new(backend);
        let metrics = Metrics::new();
        let readiness = Readiness::new();
        let state = AppState::new(
            &config,
            Arc::clone(&backend),
            metrics.clone(),
            readiness.clone(),
        );
        let secrets = state.secrets();
        let listener = safe_updater_server::bind(&config)
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(serve(listener, router(state), async {
            let _ = rx.await;
        }));
        TestServer {
            base: format!("http://{addr}"),
            addr,
            backend,
            metrics,
            readiness,
            secrets,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Graceful shutdown; returns what `serve` returned.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let handle = self.handle.take().expect("running");
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("server stops within 10s")
            .expect("server task")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn client() -> reqwest::Client {
    // In a workspace build reqwest carries `rustls-no-provider` (the registry's choice, to keep
    // aws-lc out), so a client needs a process-wide provider even for plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client")
}

/// A log sink for `tracing_subscriber::fmt().with_writer(...)`: what the tests' global
/// subscriber writes, to be searched.
#[derive(Clone, Default)]
pub struct LogBuf(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
