//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use jiff::Timestamp;
use safe_updater_core::asset::{Asset, AssetKind};
use safe_updater_core::audit::AuditEvent;
use serde_json::json;

pub fn ts(s: &str) -> Timestamp {
    s.parse().expect("test timestamp")
}

/// `base` plus `secs` seconds.
pub fn at(secs: i64) -> Timestamp {
    ts("2024-05-01T12:00:00Z") + jiff::SignedDuration::from_secs(secs)
}

pub fn asset(id: &str, kind: AssetKind, namespace: Option<&str>, name: &str) -> Asset {
    Asset {
        id: id.to_string(),
        kind,
        location: "prod".to_string(),
        namespace: namespace.map(str::to_string),
        name: name.to_string(),
        container: Some("app".to_string()),
        image: format!("registry.example/{name}:1.2.3"),
        digest: Some(format!("sha256:{}", "ab".repeat(32))),
        labels: BTreeMap::from([("app".to_string(), name.to_string())]),
        annotations: BTreeMap::from([("safe-updater/policy".to_string(), "patch".to_string())]),
        first_seen: at(0),
        last_seen: at(0),
        extra: json!({"owner": ["ReplicaSet", "web-123"], "ratio": 0.1}),
    }
}

pub fn event(n: u64) -> AuditEvent {
    AuditEvent {
        timestamp: at(n as i64),
        actor: "daemon".to_string(),
        action: "scan".to_string(),
        asset_id: Some(format!("docker/local/app{}", n % 7)),
        correlation_id: Some(format!("run-{}", n / 10)),
        details: json!({"n": n, "note": "line\nbreak, \"quoted\"", "f": 1.0 / 3.0}),
    }
}
