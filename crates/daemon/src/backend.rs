//! The approvals API's backend: each call opens its own store connection on a blocking thread
//! and hands over to `safe_updater_engine::operator`, where the rules live. Answers that let
//! work proceed also wake the daemon so it acts without waiting for the next scheduled cycle.

use std::path::PathBuf;

use jiff::Timestamp;
use safe_updater_engine::operator::{self, OperatorError};
use safe_updater_server::{
    AssetSummary, Backend, BackendError, BackendResult, Operator, PendingApproval, PushEvent,
};
use safe_updater_store::{AssetFilter, Store};
use tokio::sync::mpsc;

use crate::Trigger;

/// The daemon's implementation of the server's [`Backend`].
#[derive(Debug, Clone)]
pub struct DaemonBackend {
    state_path: PathBuf,
    triggers: mpsc::UnboundedSender<Trigger>,
}

impl DaemonBackend {
    pub fn new(state_path: PathBuf, triggers: mpsc::UnboundedSender<Trigger>) -> Self {
        DaemonBackend {
            state_path,
            triggers,
        }
    }

    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, OperatorError> + Send + 'static,
    ) -> BackendResult<T> {
        let path = self.state_path.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut store = Store::open(&path).map_err(OperatorError::Store)?;
            f(&mut store)
        })
        .await
        .map_err(|e| BackendError::internal(format!("the request's worker failed: {e}")))?;
        joined.map_err(to_backend)
    }

    fn wake(&self, trigger: Trigger) {
        // The daemon is gone only while it shuts down; the answer is stored either way.
        let _ = self.triggers.send(trigger);
    }
}

fn to_backend(e: OperatorError) -> BackendError {
    match e {
        OperatorError::NotFound(m) => BackendError::not_found(m).with_hint(
            "GET /api/v1/approvals lists what waits; GET /api/v1/assets what is tracked",
        ),
        e @ OperatorError::AlreadyDecided { .. } => BackendError::conflict(e.to_string()),
        OperatorError::Invalid(m) => BackendError::invalid(m),
        OperatorError::Store(e) => BackendError::internal(e.to_string()),
    }
}

impl Backend for DaemonBackend {
    async fn pending_approvals(&self) -> BackendResult<Vec<PendingApproval>> {
        let list = self.with_store(|s| operator::pending(s)).await?;
        Ok(list
            .into_iter()
            .map(|p| PendingApproval {
                id: p.id,
                asset_id: p.asset_id,
                asset_type: p.kind.asset_type().to_owned(),
                namespace: p.namespace,
                current: p.from,
                candidate: p.candidate,
                update_type: p.change,
                rule: p.rule.unwrap_or_default(),
                reason: p.reason,
                requested_at: p.decided_at,
            })
            .collect())
    }

    async fn approve(&self, id: String, op: Operator) -> BackendResult<()> {
        let actor = op.actor();
        let asset = operator::parse_approval_id(&id)
            .map(|(a, _)| a.to_owned())
            .map_err(to_backend)?;
        self.with_store(move |s| operator::approve(s, &id, &actor, Timestamp::now()))
            .await?;
        self.wake(Trigger::Assets(vec![asset]));
        Ok(())
    }

    async fn reject(&self, id: String, op: Operator, reason: String) -> BackendResult<()> {
        let actor = op.actor();
        self.with_store(move |s| operator::reject(s, &id, &actor, &reason, Timestamp::now()))
            .await?;
        Ok(())
    }

    async fn list_assets(&self) -> BackendResult<Vec<AssetSummary>> {
        self.with_store(|s| {
            let now = Timestamp::now();
            let mut out = Vec::new();
            for a in s.list_assets(&AssetFilter::default())? {
                let state = operator::operator_state(s, &a.id, now)?;
                out.push(AssetSummary {
                    asset_type: a.kind.asset_type().to_owned(),
                    kind: a.kind.as_str().to_owned(),
                    id: a.id,
                    namespace: a.namespace,
                    reference: a.image,
                    pinned: state.pin.map(|p| p.constraint),
                    snoozed_until: state.snooze.map(|s| s.until),
                    skipped_versions: state.skipped_versions,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn skip_version(
        &self,
        asset_id: String,
        version: String,
        op: Operator,
    ) -> BackendResult<()> {
        let actor = op.actor();
        self.with_store(move |s| {
            operator::skip_version(s, &asset_id, &version, &actor, None, Timestamp::now())
        })
        .await?;
        Ok(())
    }

    async fn snooze(&self, asset_id: String, until: Timestamp, op: Operator) -> BackendResult<()> {
        let actor = op.actor();
        self.with_store(move |s| operator::snooze(s, &asset_id, until, &actor, Timestamp::now()))
            .await?;
        Ok(())
    }

    async fn unsnooze(&self, asset_id: String, op: Operator) -> BackendResult<()> {
        let actor = op.actor();
        let wake = asset_id.clone();
        self.with_store(move |s| operator::unsnooze(s, &asset_id, &actor, Timestamp::now()))
            .await?;
        self.wake(Trigger::Assets(vec![wake]));
        Ok(())
    }

    async fn pin(&self, asset_id: String, constraint: String, op: Operator) -> BackendResult<()> {
        let actor = op.actor();
        self.with_store(move |s| {
            operator::pin(s, &asset_id, &constraint, &actor, Timestamp::now())
        })
        .await?;
        Ok(())
    }

    async fn unpin(&self, asset_id: String, op: Operator) -> BackendResult<()> {
        let actor = op.actor();
        let wake = asset_id.clone();
        self.with_store(move |s| operator::unpin(s, &asset_id, &actor, Timestamp::now()))
            .await?;
        self.wake(Trigger::Assets(vec![wake]));
        Ok(())
    }

    async fn webhook_push(&self, event: PushEvent) -> BackendResult<()> {
        self.wake(Trigger::Repository {
            registry: event.registry,
            repository: event.repository,
        });
        Ok(())
    }
}
