//! The work queue: one open entry per asset, atomic claims, restart recovery; review notices
//! once; interrupted updates not counted as failures. Against real SQLite files.

mod common;

use common::at;
use safe_updater_store::{
    Enqueued, NewQueueEntry, QueueEnd, QueueState, Store, UpdateOutcome, UpdateStart,
};
use serde_json::json;

fn entry(asset: &str, target: &str, priority: i64) -> NewQueueEntry {
    NewQueueEntry {
        asset_id: asset.into(),
        target: target.into(),
        change: "patch".into(),
        reason: "auto".into(),
        priority,
        correlation_id: Some("c1".into()),
    }
}

fn file_store() -> (tempfile::TempDir, std::path::PathBuf, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let store = Store::open(&path).expect("open");
    (dir, path, store)
}

#[test]
fn one_open_entry_per_asset_newer_target_supersedes_queued_not_in_flight() {
    let (_d, _p, mut s) = file_store();
    let r = s
        .enqueue(&[entry("a", "1.0.1", 0), entry("b", "2.0.1", 5)], at(0))
        .expect("enqueue");
    let (Enqueued::Added(a1), Enqueued::Added(b1)) = (r[0], r[1]) else {
        panic!("both added: {r:?}");
    };
    // The same target again: present, priority brought up to date.
    let r = s
        .enqueue(&[entry("a", "1.0.1", 9)], at(1))
        .expect("enqueue");
    assert_eq!(r, vec![Enqueued::Present(a1)]);
    // A newer target replaces the queued one.
    let r = s
        .enqueue(&[entry("a", "1.0.2", 9)], at(2))
        .expect("enqueue");
    let Enqueued::Superseded { dropped, added: a2 } = r[0] else {
        panic!("superseded: {r:?}");
    };
    assert_eq!(dropped, a1);
    let old = s.queue_entry(a1).expect("read").expect("kept");
    assert_eq!(old.state, QueueState::Dropped);
    assert_eq!(old.detail.as_deref(), Some("superseded by 1.0.2"));
    // In flight: a newer target is not queued beside it.
    assert!(s.claim_queued(b1, at(3)).expect("claim"));
    let r = s
        .enqueue(&[entry("b", "2.0.2", 0)], at(4))
        .expect("enqueue");
    assert_eq!(r, vec![Enqueued::Busy(b1)]);
    let open = s.open_queue().expect("open");
    assert_eq!(
        open.iter()
            .map(|e| (e.asset_id.as_str(), e.target.as_str(), e.priority, e.state))
            .collect::<Vec<_>>(),
        vec![
            ("a", "1.0.2", 9, QueueState::Queued),
            ("b", "2.0.1", 5, QueueState::InFlight)
        ],
        "higher priority first"
    );
    assert_eq!(open[0].id, a2);
}

#[test]
fn a_claim_is_taken_once_and_an_entry_finishes_once() {
    let (_d, path, mut s) = file_store();
    let id = match s
        .enqueue(&[entry("a", "1.0.1", 0)], at(0))
        .expect("enqueue")[0]
    {
        Enqueued::Added(id) => id,
        other => panic!("{other:?}"),
    };
    // Two connections race for the same entry: exactly one wins.
    let mut other = Store::open(&path).expect("second connection");
    let first = s.claim_queued(id, at(1)).expect("claim");
    let second = other.claim_queued(id, at(1)).expect("claim");
    assert!(first && !second);
    let e = s.queue_entry(id).expect("read").expect("there");
    assert_eq!(
        (e.state, e.attempts, e.claimed_at),
        (QueueState::InFlight, 1, Some(at(1)))
    );
    assert!(
        s.finish_queued(id, QueueEnd::Done, Some("succeeded"), None, at(2))
            .expect("finish")
    );
    assert!(
        !other
            .finish_queued(id, QueueEnd::Dropped, None, Some("late"), at(3))
            .expect("finish again"),
        "the first end stands"
    );
    let e = s.queue_entry(id).expect("read").expect("there");
    assert_eq!(e.state, QueueState::Done);
    assert_eq!(e.outcome.as_deref(), Some("succeeded"));
    assert_eq!(e.finished_at, Some(at(2)));
    assert!(!s.claim_queued(id, at(4)).expect("claim"), "done is final");
    // A finished entry no longer blocks a new one for the asset.
    assert!(matches!(
        s.enqueue(&[entry("a", "1.0.2", 0)], at(5))
            .expect("enqueue")[0],
        Enqueued::Added(_)
    ));
}

#[test]
fn entries_in_flight_when_the_process_died_are_requeued_on_reopen() {
    let (_d, path, mut s) = file_store();
    let r = s
        .enqueue(
            &[
                entry("a", "1.0.1", 0),
                entry("b", "1.0.1", 0),
                entry("c", "1.0.1", 0),
            ],
            at(0),
        )
        .expect("enqueue");
    let ids: Vec<i64> = r
        .iter()
        .map(|e| match e {
            Enqueued::Added(id) => *id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(s.claim_queued(ids[0], at(1)).expect("claim"));
    assert!(s.claim_queued(ids[1], at(1)).expect("claim"));
    assert!(
        s.finish_queued(ids[1], QueueEnd::Done, Some("succeeded"), None, at(2))
            .expect("finish")
    );
    drop(s);
    let mut s = Store::open(&path).expect("reopen");
    let requeued = s.requeue_in_flight().expect("requeue");
    assert_eq!(requeued.len(), 1);
    assert_eq!(requeued[0].id, ids[0]);
    assert_eq!(requeued[0].state, QueueState::Queued);
    assert_eq!(requeued[0].attempts, 1, "the attempt is remembered");
    assert!(s.requeue_in_flight().expect("again").is_empty());
    let open: Vec<i64> = s.open_queue().expect("open").iter().map(|e| e.id).collect();
    assert_eq!(open, vec![ids[0], ids[2]]);
    // Claimed again: a second attempt.
    assert!(s.claim_queued(ids[0], at(3)).expect("claim"));
    assert_eq!(
        s.queue_entry(ids[0])
            .expect("read")
            .expect("there")
            .attempts,
        2
    );
    // Released (could not start): back in the queue, attempt kept.
    assert!(
        s.release_claim(ids[0], "engine unreachable")
            .expect("release")
    );
    let e = s.queue_entry(ids[0]).expect("read").expect("there");
    assert_eq!((e.state, e.attempts), (QueueState::Queued, 2));
    let listed = s.queue_entries(10).expect("list");
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].id, ids[2], "newest first");
}

#[test]
fn a_review_is_announced_once_across_connections() {
    let (_d, path, mut s) = file_store();
    let pairs = vec![
        ("a".to_owned(), "1.1.0".to_owned()),
        ("b".to_owned(), "2.0.0".to_owned()),
    ];
    assert_eq!(
        s.mark_reviews_notified(&pairs, at(0)).expect("mark"),
        vec![true, true]
    );
    drop(s);
    let mut s = Store::open(&path).expect("reopen");
    let more = vec![
        ("a".to_owned(), "1.1.0".to_owned()),
        ("a".to_owned(), "1.2.0".to_owned()),
    ];
    assert_eq!(
        s.mark_reviews_notified(&more, at(1)).expect("mark"),
        vec![false, true]
    );
}

#[test]
fn an_interrupted_update_does_not_fail_its_target_until_it_recurs() {
    let (_d, _p, mut s) = file_store();
    let start = |to: &str| UpdateStart {
        asset_id: "a".into(),
        from_ref: "r/web:1.0.0".into(),
        to_ref: to.into(),
        snapshot: json!({"x": 1}),
        correlation_id: None,
        actor: "daemon".into(),
        at: at(0),
    };
    let cut_short = |s: &mut Store, to: &str| {
        let id = s.begin_update(&start(to)).expect("begin");
        s.finish_update(
            id,
            UpdateOutcome::RolledBack,
            Some("interrupted".into()),
            at(1),
            "daemon",
        )
        .expect("finish");
        s.mark_interrupted(id).expect("mark");
    };
    cut_short(&mut s, "r/web:1.0.1");
    assert!(s.failed_targets("a").expect("read").is_empty());
    cut_short(&mut s, "r/web:1.0.1");
    assert!(s.failed_targets("a").expect("read").is_empty());
    cut_short(&mut s, "r/web:1.0.1");
    assert_eq!(
        s.failed_targets("a").expect("read"),
        vec!["r/web:1.0.1".to_owned()],
        "the third interruption counts"
    );
    // A real failure counts at once, interrupted ones beside it or not.
    let id = s.begin_update(&start("r/web:1.0.2")).expect("begin");
    s.finish_update(
        id,
        UpdateOutcome::Failed,
        Some("health".into()),
        at(2),
        "daemon",
    )
    .expect("finish");
    cut_short(&mut s, "r/web:1.0.3");
    assert_eq!(
        s.failed_targets("a").expect("read"),
        vec!["r/web:1.0.1".to_owned(), "r/web:1.0.2".to_owned()]
    );
}

/// A backup holds the scheduling state too: after export and import into a new file, the queue
/// (with its states), the reviews already announced and the interrupted updates are the same,
/// so a restored daemon neither announces a review again nor counts a crash as a failure.
#[test]
fn the_state_dump_carries_the_queue_notices_and_interruptions() {
    let (_d, _p, mut s) = file_store();
    let r = s
        .enqueue(&[entry("a", "1.0.1", 2), entry("b", "2.0.1", 0)], at(0))
        .expect("enqueue");
    let Enqueued::Added(b) = r[1] else {
        panic!("added: {r:?}")
    };
    assert!(s.claim_queued(b, at(1)).expect("claim"));
    s.finish_queued(b, QueueEnd::Done, Some("succeeded"), None, at(2))
        .expect("finish");
    s.mark_reviews_notified(&[("a".into(), "1.1.0".into())], at(3))
        .expect("notice");
    let id = s
        .begin_update(&UpdateStart {
            asset_id: "a".into(),
            from_ref: "r/web:1.0.0".into(),
            to_ref: "r/web:1.0.1".into(),
            snapshot: json!({"x": 1}),
            correlation_id: None,
            actor: "daemon".into(),
            at: at(4),
        })
        .expect("begin");
    s.finish_update(
        id,
        UpdateOutcome::RolledBack,
        Some("interrupted".into()),
        at(5),
        "daemon",
    )
    .expect("finish");
    s.mark_interrupted(id).expect("mark");

    let dump = s.export_state().expect("export");
    assert_eq!(dump.queue.len(), 2);
    assert_eq!(dump.review_notices.len(), 1);
    assert_eq!(dump.interrupted_updates.len(), 1);
    let text = serde_json::to_string(&dump).expect("serialise");
    let back = serde_json::from_str(&text).expect("parse");
    let (_d2, _p2, mut copy) = file_store();
    copy.import_state(&back, false).expect("import");
    assert_eq!(copy.export_state().expect("export again"), dump);
    // Restored, they still act: the review is not new, the crash is not a failure, and the
    // open entry is still the asset's one open entry.
    assert_eq!(
        copy.mark_reviews_notified(&[("a".into(), "1.1.0".into())], at(6))
            .expect("notice"),
        vec![false]
    );
    assert!(copy.failed_targets("a").expect("read").is_empty());
    let open = copy.open_queue().expect("open");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].target, "1.0.1");
}
