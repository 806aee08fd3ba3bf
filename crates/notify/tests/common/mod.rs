//! Fixtures shared by the test binaries: channel URLs whose secrets are recognisable, an
//! event, options with short waits, and local servers that hang, refuse or echo.
#![allow(dead_code)] // each test binary uses a part

use std::sync::{Arc, Mutex};
use std::time::Duration;

use safe_updater_notify::{Channel, Event, EventKind, NotifyOptions};
use url::Url;
use wiremock::{MockServer, Request, Respond, ResponseTemplate};

pub const SLACK_P3: &str = "SlackSecretPart3xxxxxxxx";

pub const SLACK_HOOK: &str = "slack://hook:T0SECRET1-B0SECRET2-SlackSecretPart3xxxxxxxx@webhook";

pub const SLACK_BOT: &str =
    "slack://xoxb:123456789012-123456789013-BotSecretPart3yyyyyyyyyy@C0123456789?botname=updater";

pub const DISCORD_TOKEN: &str = "DiscordSecret-Token_value123";

pub const TEAMS_GROUP: &str = "11111111-2222-3333-4444-555555555555";

pub const TEAMS_TENANT: &str = "66666666-7777-8888-9999-000000000000";

pub const TEAMS_ALT: &str = "0123456789abcdef0123456789abcdef";

pub const TEAMS_OWNER: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

pub const TEAMS_SIG: &str = "TeamsSigSecret987";

pub fn discord_url() -> String {
    format!("discord://{DISCORD_TOKEN}@123456789012345678")
}

pub fn teams_connector_url() -> String {
    format!(
        "teams://{TEAMS_GROUP}@{TEAMS_TENANT}/{TEAMS_ALT}/{TEAMS_OWNER}?host=example.webhook.office.com&title=Updates"
    )
}

pub fn teams_workflow() -> String {
    format!(
        "https://prod-00.westus.logic.azure.com:443/workflows/wf123/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={TEAMS_SIG}"
    )
}

pub fn teams_workflow_url() -> String {
    let enc: String = url::form_urlencoded::byte_serialize(teams_workflow().as_bytes()).collect();
    format!("teams://?host={enc}")
}

pub fn event(kind: EventKind) -> Event {
    let mut e = Event::new(
        kind,
        "docker:local/web",
        "web",
        "docker_container",
        "2026-11-22T06:00:00Z".parse().expect("timestamp"),
    );
    e.namespace = Some("prod".into());
    e.from = Some("1.0.0".into());
    e.to = Some("1.1.0".into());
    e.decision = "review".into();
    e.reason = "1.0.0 → 1.1.0 is a minor update; the gate for minor is review".into();
    e.correlation_id = Some("corr-42".into());
    e
}

pub fn options() -> NotifyOptions {
    NotifyOptions {
        approve_base_url: Some("https://su.example.com".into()),
        timeout: Duration::from_secs(2),
        attempts: 3,
        queue_capacity: 16,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        max_retry_wait: Duration::from_secs(5),
    }
}

pub const APPROVE: &str = "https://su.example.com/approvals/docker%3Alocal%2Fweb";

pub fn channel(url: &str, server: &MockServer) -> Channel {
    Channel::parse(url)
        .expect("channel URL parses")
        .with_endpoint_override(Url::parse(&server.uri()).expect("server URL"))
}

pub fn title_of(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Applied => "Update applied",
        EventKind::Failed => "Update failed",
        EventKind::RolledBack => "Update rolled back",
        EventKind::ApprovalNeeded => "Approval needed",
    }
}

/// A TCP server that accepts connections and never answers.
pub async fn black_hole() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    (addr, task)
}

/// A local port nothing listens on.
pub fn refused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Answers 404 with the request's own URL in the body, as some servers do: the secret comes
/// back in the error text and must be scrubbed before it is logged.
pub struct EchoUrl;

impl Respond for EchoUrl {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        ResponseTemplate::new(404)
            .set_body_string(format!("no webhook at {}\nFORGED log line", request.url))
    }
}

#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub const SECRETS: [&str; 8] = [
    "T0SECRET1",
    SLACK_P3,
    "BotSecretPart3yyyyyyyyyy",
    DISCORD_TOKEN,
    TEAMS_GROUP,
    TEAMS_SIG,
    "GenericQuerySecret",
    "GenericHeaderSecret",
];

pub fn assert_clean(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows a secret ({s}): {text}");
    }
}
