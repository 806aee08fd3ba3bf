//! The hash chain of the audit trail.
//!
//! Every event the updater records (a decision, an approval, an update starting or ending, ...)
//! becomes an [`AuditRecord`] carrying a sequence number and the hash of the record before it.
//! Changing, removing or reordering any stored record therefore breaks the chain, and
//! [`verify`] says where.
//!
//! This module is pure: it computes and checks hashes. It does not store records, read the
//! clock (the caller puts the time in the event) or decide what is worth recording.
//!
//! # What the chain does not prove
//!
//! Removing records from the *end* of the trail leaves a valid, shorter chain. Detecting that
//! needs the head ([`VerifyReport::head`]) to be kept somewhere else as well (printed in a
//! report, sent to a log collector, written in a checkpoint) and compared.
//!
//! # The hash (format 1)
//!
//! `hash = lowercase_hex(sha256(canonical_json(object)))`, where `object` has exactly these
//! keys:
//!
//! | key              | value                                                              |
//! |------------------|--------------------------------------------------------------------|
//! | `action`         | string                                                             |
//! | `actor`          | string                                                             |
//! | `asset_id`       | string or `null`                                                   |
//! | `correlation_id` | string or `null`                                                   |
//! | `details`        | any JSON value                                                     |
//! | `prev_hash`      | string: the previous record's `hash`, or [`GENESIS_HASH`]          |
//! | `seq`            | integer, 1 for the first record                                    |
//! | `timestamp`      | string: RFC 3339 in UTC, `Z`, always 9 fractional digits, e.g.    |
//! |                  | `2024-05-01T12:00:00.000000000Z` (see [`canonical_timestamp`])     |
//!
//! `canonical_json` writes UTF-8 with no whitespace at all; object keys sorted by their UTF-8
//! bytes (at every depth); strings with only `"` `\` and the control characters below U+0020
//! escaped (`\b \f \n \r \t`, the others as `\u00xx` with lowercase hex), everything else
//! written as is (no `\/`, no `\uXXXX` for non-ASCII); integers in plain decimal; other
//! numbers in the shortest decimal form that reads back to the same `f64`, without exponent,
//! and with `.0` added when that form has no fractional part (`1.0`, `0.5`, `-0.0`).
//!
//! For objects without fractional numbers this is byte for byte what Python's
//! `json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` writes, so an
//! auditor can recompute the chain from an export without this program.
//!
//! Whoever reads stored or exported records back must parse numbers exactly: serde_json does
//! so only with its `float_roundtrip` feature (the store crate enables it); without it a
//! fractional number can come back one unit in the last place off, and its record would no
//! longer verify.
//!
//! The encoding is frozen: records hashed today must verify with every later version. The
//! unit test `record_hash_is_stable` pins it to a fixed expected hash.

use std::fmt::{self, Write as _};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record of a trail that was never pruned.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Something that happened, as the caller wants it recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When it happened. Kept to the nanosecond, hashed and stored as [`canonical_timestamp`].
    #[serde(with = "timestamp_serde")]
    pub timestamp: Timestamp,
    /// Who did it: an operator identity such as `cli:alice`, `api:bob`, or `daemon`.
    pub actor: String,
    /// What happened: `decision`, `approval`, `rejection`, `update.started`,
    /// `update.succeeded`, `update.failed`, `rollback`, `health`, `scan`, `import`, ...
    pub action: String,
    pub asset_id: Option<String>,
    /// Ties together the events of one run or one update.
    pub correlation_id: Option<String>,
    /// Free-form facts about the event (versions, rule, reason, error...).
    pub details: serde_json::Value,
}

/// An event as a link of the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// 1-based and contiguous (a pruned trail starts after its checkpoint instead of at 1).
    pub seq: u64,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// The position of this record, as a head other records can link to.
    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }
}

/// A position in the chain: a record's `seq` and `hash`. Used as the head of a trail and as
/// the anchor (checkpoint) a pruned trail continues from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

/// Formats a timestamp the way the chain hashes it (and the store keeps it): RFC 3339, UTC,
/// `Z`, exactly 9 fractional digits. Fixed width, so these strings also sort chronologically
/// (for years 0000 to 9999).
pub fn canonical_timestamp(ts: &Timestamp) -> String {
    // jiff's precision flag pads (or clamps) the fraction to exactly 9 digits in UTC with `Z`.
    format!("{ts:.9}")
}

/// Serde for [`AuditEvent::timestamp`]: writes [`canonical_timestamp`], so exported records
/// carry exactly the string that was hashed; reads any RFC 3339 timestamp.
mod timestamp_serde {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::canonical_timestamp(ts))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The hash of a record (format 1, see the module documentation).
pub fn record_hash(seq: u64, event: &AuditEvent, prev_hash: &str) -> String {
    let mut out = String::with_capacity(256);
    // Keys in UTF-8 byte order: action < actor < asset_id < correlation_id < details <
    // prev_hash < seq < timestamp.
    out.push_str("{\"action\":");
    write_json_str(&mut out, &event.action);
    out.push_str(",\"actor\":");
    write_json_str(&mut out, &event.actor);
    out.push_str(",\"asset_id\":");
    write_opt_str(&mut out, event.asset_id.as_deref());
    out.push_str(",\"correlation_id\":");
    write_opt_str(&mut out, event.correlation_id.as_deref());
    out.push_str(",\"details\":");
    write_canonical_json(&mut out, &event.details);
    out.push_str(",\"prev_hash\":");
    write_json_str(&mut out, prev_hash);
    out.push_str(",\"seq\":");
    // Writing to a String cannot fail.
    let _ = write!(out, "{seq}");
    out.push_str(",\"timestamp\":");
    write_json_str(&mut out, &canonical_timestamp(&event.timestamp));
    out.push('}');
    hex::encode(Sha256::digest(out.as_bytes()))
}

/// Writes `value` as canonical JSON (see the module documentation).
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical_json(&mut out, value);
    out
}

fn write_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => write_json_str(out, s),
        None => out.push_str("null"),
    }
}

fn write_canonical_json(out: &mut String, value: &serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_json_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Sorted here rather than trusting the map's order: serde_json keeps insertion
            // order when any crate in the build enables its `preserve_order` feature.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_str(out, key);
                out.push(':');
                write_canonical_json(out, item);
            }
            out.push('}');
        }
    }
}

fn write_number(out: &mut String, n: &serde_json::Number) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        // Rust's `Display` for f64 is the shortest string that parses back to the same value
        // and never uses an exponent. `.0` keeps fractional numbers apart from integers.
        let text = f.to_string();
        out.push_str(&text);
        if !text.contains('.') {
            out.push_str(".0");
        }
    } else {
        // Unreachable with serde_json's standard number representation; written as its own
        // text so that hashing never panics.
        out.push_str(&n.to_string());
    }
}

fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The record that follows `prev` (or starts a new trail when `prev` is `None`).
pub fn next(prev: Option<&AuditRecord>, event: AuditEvent) -> AuditRecord {
    let head = prev.map(AuditRecord::head);
    next_after(head.as_ref(), event)
}

/// The record that follows `head`: the last record, or the checkpoint of a pruned trail whose
/// records are all gone. `None` starts a new trail at seq 1 from [`GENESIS_HASH`].
pub fn next_after(head: Option<&ChainHead>, event: AuditEvent) -> AuditRecord {
    let (seq, prev_hash) = match head {
        Some(h) => (h.seq.saturating_add(1), h.hash.clone()),
        None => (1, GENESIS_HASH.to_string()),
    };
    let hash = record_hash(seq, &event, &prev_hash);
    AuditRecord {
        seq,
        event,
        prev_hash,
        hash,
    }
}

/// What kind of damage [`verify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The first record does not link to the genesis hash or to the checkpoint (anchor).
    BadStart,
    /// Sequence numbers jump: records were deleted.
    Missing,
    /// A sequence number goes backwards or repeats: records were reordered or duplicated.
    OutOfOrder,
    /// A record's `prev_hash` is not the hash of the record before it.
    BrokenLink,
    /// A record's content does not match its hash: it was edited.
    Altered,
    /// A record could not be read at all (reported by the storage layer, see
    /// [`Verifier::unreadable`]).
    Unreadable,
}

/// The first problem found in a trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyProblem {
    /// The sequence number of the record where the chain breaks.
    pub seq: u64,
    pub kind: ProblemKind,
    /// A sentence for a person.
    pub message: String,
}

impl fmt::Display for VerifyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// No problem found.
    pub ok: bool,
    /// How many records verified correctly (verification stops at the first problem).
    pub checked: u64,
    /// The last record that verified correctly; the anchor when none did; `None` for an empty
    /// trail without anchor. Compare it with a head kept elsewhere to detect records removed
    /// from the end.
    pub head: Option<ChainHead>,
    pub problem: Option<VerifyProblem>,
}

impl VerifyReport {
    pub fn last_seq(&self) -> Option<u64> {
        self.head.as_ref().map(|h| h.seq)
    }

    pub fn last_hash(&self) -> Option<&str> {
        self.head.as_ref().map(|h| h.hash.as_str())
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.problem, &self.head) {
            (Some(p), _) => write!(
                f,
                "audit trail BROKEN at record {}: {} ({} records verified before it)",
                p.seq, p.message, self.checked
            ),
            (None, Some(h)) => write!(
                f,
                "audit trail intact: {} records verified, head is record {} with hash {}",
                self.checked, h.seq, h.hash
            ),
            (None, None) => f.write_str("audit trail intact: it is empty"),
        }
    }
}

/// Checks a trail record by record, in order, keeping only the last record's position: memory
/// does not grow with the trail. [`verify`] is the one-call form; storage layers that read
/// records one at a time (and may fail to decode one) drive a `Verifier` themselves.
#[derive(Debug, Clone)]
pub struct Verifier {
    anchor: Option<ChainHead>,
    head: Option<ChainHead>,
    checked: u64,
    problem: Option<VerifyProblem>,
}

impl Verifier {
    /// `anchor` is the checkpoint a pruned trail continues from; `None` means the trail must
    /// start at seq 1 from [`GENESIS_HASH`].
    pub fn new(anchor: Option<ChainHead>) -> Verifier {
        Verifier {
            head: anchor.clone(),
            anchor,
            checked: 0,
            problem: None,
        }
    }

    /// True once a problem has been found; later records are ignored.
    pub fn is_broken(&self) -> bool {
        self.problem.is_some()
    }

    /// Checks the next record. Returns `false` once the chain is broken (there is no point
    /// reading further: only the first problem is reported).
    pub fn push(&mut self, record: &AuditRecord) -> bool {
        if self.problem.is_some() {
            return false;
        }
        if let Some(problem) = self.check(record) {
            self.problem = Some(problem);
            return false;
        }
        self.checked += 1;
        self.head = Some(record.head());
        true
    }

    /// Records that the record at `seq` could not be read (corrupt storage): the chain cannot
    /// be verified past it.
    pub fn unreadable(&mut self, seq: u64, reason: &str) {
        if self.problem.is_none() {
            self.problem = Some(VerifyProblem {
                seq,
                kind: ProblemKind::Unreadable,
                message: format!("record {seq} cannot be read: {reason}"),
            });
        }
    }

    pub fn finish(self) -> VerifyReport {
        VerifyReport {
            ok: self.problem.is_none(),
            checked: self.checked,
            head: self.head,
            problem: self.problem,
        }
    }

    fn check(&self, record: &AuditRecord) -> Option<VerifyProblem> {
        let seq = record.seq;
        let problem = |kind, message: String| Some(VerifyProblem { seq, kind, message });
        let is_first = self.checked == 0;
        // The position the record must link to: the previous record, else the anchor.
        let (expected_seq, expected_prev) = match &self.head {
            Some(h) => (h.seq.saturating_add(1), h.hash.as_str()),
            None => (1, GENESIS_HASH),
        };

        if is_first {
            match &self.anchor {
                None if seq != 1 => {
                    return problem(
                        ProblemKind::BadStart,
                        format!(
                            "the trail starts at record {seq}, but a trail without a checkpoint \
                             must start at record 1: records 1 to {} are missing",
                            seq.saturating_sub(1)
                        ),
                    );
                }
                None if record.prev_hash != GENESIS_HASH => {
                    return problem(
                        ProblemKind::BadStart,
                        "record 1 does not start from the genesis hash: the beginning of the \
                         trail has been replaced"
                            .to_string(),
                    );
                }
                Some(a) if seq != expected_seq => {
                    return problem(
                        ProblemKind::BadStart,
                        format!(
                            "the trail continues from the checkpoint at record {}, so it must \
                             start at record {expected_seq}, but it starts at record {seq}",
                            a.seq
                        ),
                    );
                }
                Some(a) if record.prev_hash != a.hash => {
                    return problem(
                        ProblemKind::BadStart,
                        format!(
                            "record {seq} does not link to the checkpoint at record {}: its \
                             prev_hash differs from the checkpoint's hash",
                            a.seq
                        ),
                    );
                }
                _ => {}
            }
        } else if seq < expected_seq {
            return problem(
                ProblemKind::OutOfOrder,
                format!(
                    "record {seq} comes after record {}: the records are out of order or \
                     duplicated",
                    expected_seq - 1
                ),
            );
        } else if seq > expected_seq {
            let missing = if seq - expected_seq == 1 {
                format!("record {expected_seq} is missing")
            } else {
                format!("records {expected_seq} to {} are missing", seq - 1)
            };
            return problem(
                ProblemKind::Missing,
                format!(
                    "{missing}: record {seq} follows record {} (deleted, or out of order)",
                    expected_seq - 1
                ),
            );
        } else if record.prev_hash != expected_prev {
            return problem(
                ProblemKind::BrokenLink,
                format!(
                    "record {seq} does not link to record {}: its prev_hash differs from the \
                     hash of record {}, so a record was altered, replaced or moved",
                    seq - 1,
                    seq - 1
                ),
            );
        }

        if record_hash(seq, &record.event, &record.prev_hash) != record.hash {
            return problem(
                ProblemKind::Altered,
                format!("record {seq} has been altered: its content no longer matches its hash"),
            );
        }
        None
    }
}

/// Verifies a trail given in seq order. `anchor` is `(seq, hash)` of the checkpoint a pruned
/// trail continues from, `None` for a trail that starts at genesis. Stops at the first
/// problem; memory stays constant however long the trail.
pub fn verify(
    records: impl IntoIterator<Item = AuditRecord>,
    anchor: Option<(u64, String)>,
) -> VerifyReport {
    let mut verifier = Verifier::new(anchor.map(|(seq, hash)| ChainHead { seq, hash }));
    for record in records {
        if !verifier.push(&record) {
            break;
        }
    }
    verifier.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    fn event(n: u64) -> AuditEvent {
        AuditEvent {
            timestamp: ts("2024-05-01T12:00:00Z") + jiff::SignedDuration::from_secs(n as i64),
            actor: "daemon".into(),
            action: "decision".into(),
            asset_id: Some(format!("docker/local/app{n}")),
            correlation_id: None,
            details: json!({"n": n}),
        }
    }

    fn chain(len: u64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for n in 0..len {
            let r = next(out.last(), event(n));
            out.push(r);
        }
        out
    }

    #[test]
    fn record_hash_is_stable() {
        // Pinned: if this changes, every stored trail stops verifying. Never update the
        // expected value; add a new format instead. The value was also computed independently
        // with Python's json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        // and hashlib.sha256, as the module documentation says an auditor can.
        let e = AuditEvent {
            timestamp: ts("2024-05-01T12:00:00.5Z"),
            actor: "cli:alice".into(),
            action: "approval".into(),
            asset_id: Some("k8s/prod/shop/Deployment/web/app".into()),
            correlation_id: None,
            details: json!({
                "z": [1, -2, 1.5, true, null],
                "candidate": "1.2.4",
                "note": "naïve \"quote\"\n\ttab \u{1} é",
                "nested": {"b": {}, "a": []}
            }),
        };
        assert_eq!(
            canonical_json(&e.details),
            "{\"candidate\":\"1.2.4\",\"nested\":{\"a\":[],\"b\":{}},\
             \"note\":\"naïve \\\"quote\\\"\\n\\ttab \\u0001 é\",\"z\":[1,-2,1.5,true,null]}"
        );
        assert_eq!(
            record_hash(7, &e, GENESIS_HASH),
            "51649f0c08c33c2b294fa5f78f7079aee87f6b924304106163dbe92c6ac1c8a4"
        );
    }

    #[test]
    fn canonical_timestamp_is_fixed_width() {
        assert_eq!(
            canonical_timestamp(&ts("2024-05-01T12:00:00Z")),
            "2024-05-01T12:00:00.000000000Z"
        );
        assert_eq!(
            canonical_timestamp(&ts("2024-05-01T14:00:00.123+02:00")),
            "2024-05-01T12:00:00.123000000Z"
        );
    }

    #[test]
    fn numbers_are_canonical() {
        assert_eq!(canonical_json(&json!(1.0)), "1.0");
        assert_eq!(canonical_json(&json!(-0.0)), "-0.0");
        assert_eq!(canonical_json(&json!(1e21)), "1000000000000000000000.0");
        assert_eq!(canonical_json(&json!(u64::MAX)), "18446744073709551615");
        assert_eq!(canonical_json(&json!(i64::MIN)), "-9223372036854775808");
        assert_eq!(canonical_json(&json!(0.1)), "0.1");
    }

    #[test]
    fn record_serializes_flat_with_canonical_timestamp() {
        let r = next(None, event(0));
        let v = serde_json::to_value(&r).expect("serialize");
        assert_eq!(v["timestamp"], "2024-05-01T12:00:00.000000000Z");
        assert_eq!(v["seq"], 1);
        assert_eq!(v["prev_hash"], GENESIS_HASH);
        let back: AuditRecord = serde_json::from_value(v).expect("deserialize");
        assert_eq!(back, r);
    }

    #[test]
    fn next_links_records() {
        let c = chain(3);
        assert_eq!(c[0].seq, 1);
        assert_eq!(c[0].prev_hash, GENESIS_HASH);
        assert_eq!(c[1].prev_hash, c[0].hash);
        assert_eq!(c[2].seq, 3);
        assert_eq!(c[2].hash, record_hash(3, &c[2].event, &c[1].hash));
    }

    #[test]
    fn valid_chain_verifies() {
        let c = chain(5);
        let report = verify(c.clone(), None);
        assert!(report.ok, "{report}");
        assert_eq!(report.checked, 5);
        assert_eq!(report.head, Some(c[4].head()));
        assert!(report.to_string().contains("intact"));
    }

    #[test]
    fn empty_chain_verifies() {
        let report = verify(Vec::new(), None);
        assert!(report.ok);
        assert_eq!(report.head, None);
        let report = verify(Vec::new(), Some((9, "ab".into())));
        assert!(report.ok);
        assert_eq!(report.last_seq(), Some(9));
    }

    #[test]
    fn edit_is_reported_as_altered() {
        let mut c = chain(5);
        c[2].event.actor = "mallory".into();
        let report = verify(c, None);
        assert!(!report.ok);
        let p = report.problem.as_ref().expect("problem");
        assert_eq!((p.seq, p.kind), (3, ProblemKind::Altered));
        assert_eq!(report.checked, 2);
        assert_eq!(report.last_seq(), Some(2));
        assert!(
            report.to_string().contains("record 3 has been altered"),
            "{report}"
        );
    }

    #[test]
    fn rehashed_edit_breaks_the_next_link() {
        let mut c = chain(5);
        c[2].event.actor = "mallory".into();
        c[2].hash = record_hash(3, &c[2].event, &c[2].prev_hash);
        let p = verify(c, None).problem.expect("problem");
        assert_eq!((p.seq, p.kind), (4, ProblemKind::BrokenLink));
    }

    #[test]
    fn delete_is_reported_as_missing() {
        let mut c = chain(6);
        c.remove(2);
        let p = verify(c, None).problem.expect("problem");
        assert_eq!((p.seq, p.kind), (4, ProblemKind::Missing));
        assert!(p.message.contains("record 3 is missing"), "{}", p.message);
        let mut c = chain(6);
        c.drain(1..4);
        let p = verify(c, None).problem.expect("problem");
        assert!(
            p.message.contains("records 2 to 4 are missing"),
            "{}",
            p.message
        );
    }

    #[test]
    fn swap_is_reported() {
        let mut c = chain(6);
        c.swap(1, 3);
        let p = verify(c, None).problem.expect("problem");
        assert_eq!(p.seq, 4);
        assert_eq!(p.kind, ProblemKind::Missing);
        let mut c = chain(6);
        c.swap(2, 3);
        let p = verify(c, None).problem.expect("problem");
        assert_eq!(p.kind, ProblemKind::Missing);
        // Swapped contents with the seq numbers left in place (what a database edit does).
        let mut c = chain(6);
        let (a, b) = (c[2].clone(), c[3].clone());
        c[2] = AuditRecord { seq: 3, ..b };
        c[3] = AuditRecord { seq: 4, ..a };
        let p = verify(c, None).problem.expect("problem");
        assert_eq!((p.seq, p.kind), (3, ProblemKind::BrokenLink));
    }

    #[test]
    fn duplicate_is_out_of_order() {
        let mut c = chain(4);
        let dup = c[1].clone();
        c.insert(2, dup);
        let p = verify(c, None).problem.expect("problem");
        assert_eq!((p.seq, p.kind), (2, ProblemKind::OutOfOrder));
    }

    #[test]
    fn first_record_must_link_to_genesis() {
        let c = chain(5);
        let p = verify(c[2..].to_vec(), None).problem.expect("problem");
        assert_eq!((p.seq, p.kind), (3, ProblemKind::BadStart));
        assert!(
            p.message.contains("records 1 to 2 are missing"),
            "{}",
            p.message
        );

        let mut c = chain(3);
        c[0].prev_hash = "f".repeat(64);
        c[0].hash = record_hash(1, &c[0].event, &c[0].prev_hash);
        let p = verify(c, None).problem.expect("problem");
        assert_eq!((p.seq, p.kind), (1, ProblemKind::BadStart));
    }

    #[test]
    fn pruned_trail_verifies_from_its_anchor() {
        let c = chain(6);
        let anchor = (c[2].seq, c[2].hash.clone());
        let report = verify(c[3..].to_vec(), Some(anchor.clone()));
        assert!(report.ok, "{report}");
        assert_eq!(report.checked, 3);
        assert_eq!(report.last_seq(), Some(6));

        // Records after the checkpoint deleted.
        let p = verify(c[4..].to_vec(), Some(anchor))
            .problem
            .expect("problem");
        assert_eq!((p.seq, p.kind), (5, ProblemKind::BadStart));
        // Wrong anchor hash.
        let p = verify(c[3..].to_vec(), Some((3, "00".into())))
            .problem
            .expect("problem");
        assert_eq!((p.seq, p.kind), (4, ProblemKind::BadStart));
    }

    #[test]
    fn next_after_continues_from_a_checkpoint() {
        let c = chain(3);
        let r = next_after(Some(&c[2].head()), event(9));
        assert_eq!(r.seq, 4);
        assert_eq!(r.prev_hash, c[2].hash);
        assert!(verify(vec![r], Some((3, c[2].hash.clone()))).ok);
    }

    #[test]
    fn verifier_reports_unreadable_records() {
        let c = chain(3);
        let mut v = Verifier::new(None);
        assert!(v.push(&c[0]));
        v.unreadable(2, "bad timestamp");
        assert!(v.is_broken());
        assert!(!v.push(&c[1]));
        let report = v.finish();
        let p = report.problem.expect("problem");
        assert_eq!((p.seq, p.kind), (2, ProblemKind::Unreadable));
        assert_eq!(report.checked, 1);
    }

    fn arb_details() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            (-1.0e6f64..1.0e6).prop_map(serde_json::Value::from),
            "[a-z\"\\\\\n é]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_event() -> impl Strategy<Value = AuditEvent> {
        (
            0i64..4_000_000_000,
            0i32..1_000_000_000,
            "[a-z:]{1,10}",
            "[a-z.]{1,12}",
            proptest::option::of("[a-z/]{1,12}"),
            proptest::option::of("[0-9a-f]{8}"),
            arb_details(),
        )
            .prop_map(
                |(secs, nanos, actor, action, asset_id, correlation_id, details)| AuditEvent {
                    timestamp: Timestamp::new(secs, nanos).unwrap_or(Timestamp::UNIX_EPOCH),
                    actor,
                    action,
                    asset_id,
                    correlation_id,
                    details,
                },
            )
    }

    fn build(events: Vec<AuditEvent>) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::with_capacity(events.len());
        for e in events {
            let r = next(out.last(), e);
            out.push(r);
        }
        out
    }

    fn flip_first(hash: &str) -> String {
        let flipped = if hash.starts_with('0') { "1" } else { "0" };
        format!("{flipped}{}", hash.get(1..).unwrap_or_default())
    }

    /// One edit of one field of one record, always to a different value.
    fn edit(record: &mut AuditRecord, field: u8) {
        let e = &mut record.event;
        match field % 9 {
            0 => e.actor.push('x'),
            1 => e.action.push('x'),
            2 => e.asset_id = Some(format!("{}x", e.asset_id.clone().unwrap_or_default())),
            3 => {
                e.correlation_id =
                    Some(format!("{}x", e.correlation_id.clone().unwrap_or_default()))
            }
            4 => e.timestamp += jiff::SignedDuration::from_nanos(1),
            5 => e.details = serde_json::json!({"tampered": e.details.clone()}),
            6 => record.seq += 1,
            7 => record.prev_hash = flip_first(&record.prev_hash),
            _ => record.hash = flip_first(&record.hash),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn valid_chains_verify(events in prop::collection::vec(arb_event(), 0..20)) {
            let c = build(events);
            let report = verify(c.clone(), None);
            prop_assert!(report.ok, "{}", report);
            prop_assert_eq!(report.checked, c.len() as u64);
        }

        #[test]
        fn any_single_edit_is_detected(
            events in prop::collection::vec(arb_event(), 1..20),
            at in any::<prop::sample::Index>(),
            field in any::<u8>(),
        ) {
            let mut c = build(events);
            let i = at.index(c.len());
            let before = c[i].clone();
            edit(&mut c[i], field);
            prop_assert_ne!(&before, &c[i]);
            let report = verify(c, None);
            prop_assert!(!report.ok);
            let p = report.problem.expect("a problem");
            // Found at the edited record, or (for a renumbered record) the one that
            // claims its place.
            prop_assert!(p.seq == before.seq || p.seq == before.seq + 1, "{:?}", p);
        }

        #[test]
        fn any_single_delete_is_detected(
            events in prop::collection::vec(arb_event(), 1..20),
            at in any::<prop::sample::Index>(),
        ) {
            let original = build(events);
            let head = original.last().map(AuditRecord::head);
            let mut c = original.clone();
            let i = at.index(c.len());
            c.remove(i);
            let report = verify(c, None);
            if i + 1 < original.len() {
                prop_assert!(!report.ok);
                prop_assert_eq!(report.problem.expect("a problem").seq, original[i + 1].seq);
            } else {
                // Removing the last record leaves a valid shorter chain: only the head, kept
                // elsewhere, tells.
                prop_assert!(report.ok);
                prop_assert_ne!(report.head, head);
            }
        }

        #[test]
        fn any_swap_is_detected(
            events in prop::collection::vec(arb_event(), 2..20),
            a in any::<prop::sample::Index>(),
            b in any::<prop::sample::Index>(),
        ) {
            let mut c = build(events);
            let (i, j) = (a.index(c.len()), b.index(c.len()));
            prop_assume!(i != j);
            c.swap(i, j);
            prop_assert!(!verify(c.clone(), None).ok);
            // Also with the contents swapped but the seq numbers left in place.
            let (si, sj) = (c[i].seq, c[j].seq);
            c[i].seq = sj;
            c[j].seq = si;
            prop_assert!(!verify(c, None).ok);
        }
    }
}
