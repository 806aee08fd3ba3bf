//! What a notification is about: an [`Event`] the daemon hands to the notifier, and the words
//! every channel shows for it. Plain data; no IO, and nothing here knows any channel's format.

use serde::{Deserialize, Serialize};

/// The four moments an operator is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An update was applied and verified.
    Applied,
    /// An update failed (and could not be rolled back, or rollback was not attempted).
    Failed,
    /// An update failed verification and the previous version was restored.
    RolledBack,
    /// An update waits for an operator's approval.
    ApprovalNeeded,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        EventKind::Applied,
        EventKind::Failed,
        EventKind::RolledBack,
        EventKind::ApprovalNeeded,
    ];

    /// The name used in JSON payloads and in a channel URL's `events=` filter.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Applied => "applied",
            EventKind::Failed => "failed",
            EventKind::RolledBack => "rolled_back",
            EventKind::ApprovalNeeded => "approval_needed",
        }
    }

    /// Reads a name as written in an `events=` filter; `-` and `_` are the same, case is ignored.
    pub fn parse(name: &str) -> Option<EventKind> {
        let norm = name.trim().to_ascii_lowercase().replace('-', "_");
        EventKind::ALL.into_iter().find(|k| k.as_str() == norm)
    }

    /// A short heading for people.
    pub fn title(self) -> &'static str {
        match self {
            EventKind::Applied => "Update applied",
            EventKind::Failed => "Update failed",
            EventKind::RolledBack => "Update rolled back",
            EventKind::ApprovalNeeded => "Approval needed",
        }
    }

    pub(crate) fn emoji(self) -> &'static str {
        match self {
            EventKind::Applied => "\u{2705}",            // check mark
            EventKind::Failed => "\u{274c}",             // cross
            EventKind::RolledBack => "\u{21a9}\u{fe0f}", // return arrow
            EventKind::ApprovalNeeded => "\u{23f3}",     // hourglass
        }
    }

    /// RGB colour of the side bar (Discord, Slack, Teams).
    pub(crate) fn rgb(self) -> u32 {
        match self {
            EventKind::Applied => 0x2e_b8_86,
            EventKind::Failed => 0xd6_05_10,
            EventKind::RolledBack => 0xff_8c_00,
            EventKind::ApprovalNeeded => 0x24_88_ff,
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that happened to one asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// The store's asset id (stable; used in the approve link).
    pub asset_id: String,
    /// The name people know the asset by (container, workload or release name).
    pub asset_name: String,
    /// `docker_container`, `deployment`, `helm_release`, ... as the adapters name it.
    pub asset_kind: String,
    pub namespace: Option<String>,
    /// The version (tag) before the update.
    pub from: Option<String>,
    /// The version (tag) the update goes, or went, to.
    pub to: Option<String>,
    /// The decision's gate or outcome (`auto`, `review`, `approved`, `rolled_back`, ...).
    pub decision: String,
    /// A sentence saying why, as the engine wrote it.
    pub reason: String,
    /// The id that ties this event to its log lines and audit records.
    pub correlation_id: Option<String>,
    pub timestamp: jiff::Timestamp,
}

impl Event {
    /// An event with the required fields; the optional ones start empty.
    pub fn new(
        kind: EventKind,
        asset_id: impl Into<String>,
        asset_name: impl Into<String>,
        asset_kind: impl Into<String>,
        timestamp: jiff::Timestamp,
    ) -> Event {
        Event {
            kind,
            asset_id: asset_id.into(),
            asset_name: asset_name.into(),
            asset_kind: asset_kind.into(),
            namespace: None,
            from: None,
            to: None,
            decision: String::new(),
            reason: String::new(),
            correlation_id: None,
            timestamp,
        }
    }

    /// `namespace/name`, or the name alone.
    pub fn qualified_name(&self) -> String {
        match &self.namespace {
            Some(ns) if !ns.is_empty() => format!("{ns}/{}", self.asset_name),
            _ => self.asset_name.clone(),
        }
    }

    /// `1.0.0 → 1.0.1`; a side that is not known shows as `?`.
    pub fn versions(&self) -> String {
        format!(
            "{} \u{2192} {}",
            self.from.as_deref().unwrap_or("?"),
            self.to.as_deref().unwrap_or("?")
        )
    }

    /// One line saying it all: `Update applied: prod/web 1.0.0 → 1.0.1`.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} {}",
            self.kind.title(),
            self.qualified_name(),
            self.versions()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("Rolled-Back"), Some(EventKind::RolledBack));
        assert_eq!(EventKind::parse("nope"), None);
    }

    #[test]
    fn summary_names_asset_and_versions() {
        let mut e = Event::new(
            EventKind::Applied,
            "id1",
            "web",
            "docker_container",
            jiff::Timestamp::UNIX_EPOCH,
        );
        e.from = Some("1.0.0".into());
        assert_eq!(e.summary(), "Update applied: web 1.0.0 \u{2192} ?");
        e.namespace = Some("prod".into());
        e.to = Some("1.0.1".into());
        assert_eq!(e.summary(), "Update applied: prod/web 1.0.0 \u{2192} 1.0.1");
    }
}
