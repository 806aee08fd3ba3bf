//! Updates in flight belong to the process doing them: one in progress per asset, finished
//! only by its owner, taken over by exactly one other process once the owner is gone, and
//! leases renewed only by the owner. Two `Store`s on one file stand for two processes.

mod common;

use common::{at, ts};
use rusqlite::Connection;
use safe_updater_core::lease::{Gone, Owner, Standing, standing};
use safe_updater_store::{
    Store, StoreError, UpdateOutcome, UpdateStart, UpdateStatus, process, testing,
};
use serde_json::json;

fn start(asset: &str, secs: i64) -> UpdateStart {
    UpdateStart {
        asset_id: asset.into(),
        from_ref: "web:1.0.0".into(),
        to_ref: "web:1.0.1".into(),
        snapshot: json!({"container": "web"}),
        correlation_id: Some("c1".into()),
        actor: "test".into(),
        at: at(secs),
    }
}

fn other_host(pid: u32) -> Owner {
    Owner {
        host: "replica-b".into(),
        pid,
        pid_namespace: "boot-b/pid:[1]".into(),
        process_start: 77,
        started_at: ts("2024-05-01T11:00:00Z"),
    }
}

fn two_processes() -> (tempfile::TempDir, Store, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let mut a = Store::open(&path).expect("a");
    a.act_as(other_host(100));
    let b = Store::open(&path).expect("b");
    (dir, a, b)
}

#[test]
fn an_update_records_its_owner_and_a_lease_from_its_start() {
    let (_d, mut a, _b) = two_processes();
    let id = a
        .begin_update(&start("docker/local/web", 0))
        .expect("begin");
    let u = a.update(id).expect("read").expect("there");
    assert_eq!(u.owner.as_ref(), Some(&other_host(100)));
    assert_eq!(u.lease_until, Some(ts("2024-05-01T12:00:30Z")));
    assert!(a.owns_update(id).expect("owns"));
}

#[test]
fn a_second_update_of_the_same_asset_is_refused_naming_the_owner() {
    let (_d, mut a, mut b) = two_processes();
    let id = a
        .begin_update(&start("docker/local/web", 0))
        .expect("begin");
    let err = b
        .begin_update(&start("docker/local/web", 1))
        .expect_err("refused");
    match &err {
        StoreError::UpdateInProgress {
            asset_id,
            update_id,
            owner,
            ..
        } => {
            assert_eq!(asset_id, "docker/local/web");
            assert_eq!(*update_id, id.0);
            assert_eq!(**owner, other_host(100));
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("pid 100 on host replica-b"), "{text}");
    // Nothing was written, and other assets proceed.
    assert_eq!(b.unfinished_updates().expect("list").len(), 1);
    b.begin_update(&start("docker/local/api", 1))
        .expect("another asset");
}

#[test]
fn only_the_owner_finishes_and_renews() {
    let (_d, mut a, mut b) = two_processes();
    let id = a
        .begin_update(&start("docker/local/web", 0))
        .expect("begin");
    let err = b
        .finish_update(id, UpdateOutcome::RolledBack, None, at(5), "test")
        .expect_err("not b's");
    assert!(matches!(err, StoreError::NotOwner { .. }), "{err:?}");
    assert!(!b.renew_lease(id, at(5)).expect("renew"));
    assert!(a.renew_lease(id, at(20)).expect("renew"));
    assert_eq!(
        a.update(id).expect("read").expect("there").lease_until,
        Some(ts("2024-05-01T12:00:50Z"))
    );
    a.finish_update(id, UpdateOutcome::Succeeded, None, at(25), "test")
        .expect("a finishes");
    assert!(!a.renew_lease(id, at(30)).expect("renew"), "finished");
}

#[test]
fn exactly_one_process_takes_over_an_orphan_and_the_old_owner_is_locked_out() {
    let (_d, mut a, mut b) = two_processes();
    let path = b.path().expect("file").to_path_buf();
    let mut c = Store::open(&path).expect("c");
    c.act_as(other_host(300));
    let id = a
        .begin_update(&start("docker/local/web", 0))
        .expect("begin");
    let u = b.update(id).expect("read").expect("there");
    // Past the lease, from another host: gone.
    let seen = standing(
        u.owner.as_ref(),
        u.lease_until,
        b.owner(),
        at(31),
        process::probe,
    );
    assert!(
        matches!(seen, Standing::Orphaned(Gone::Expired { .. })),
        "{seen:?}"
    );
    let won_b = b
        .take_over_update(id, u.owner.as_ref(), "expired", at(31), "test")
        .expect("b tries");
    let won_c = c
        .take_over_update(id, u.owner.as_ref(), "expired", at(31), "test")
        .expect("c tries");
    assert!(won_b && !won_c, "b {won_b}, c {won_c}");
    assert!(b.owns_update(id).expect("owns"));
    // The stalled owner wakes up: it can neither renew nor finish.
    assert!(!a.renew_lease(id, at(32)).expect("renew"));
    assert!(matches!(
        a.finish_update(id, UpdateOutcome::Succeeded, None, at(33), "test"),
        Err(StoreError::NotOwner { .. })
    ));
    b.finish_update(id, UpdateOutcome::RolledBack, None, at(34), "test")
        .expect("b finishes");
    assert_eq!(
        b.update(id).expect("read").map(|u| u.status),
        Some(UpdateStatus::RolledBack)
    );
    let actions: Vec<String> = b
        .audit_records(0, 100)
        .expect("audit")
        .into_iter()
        .map(|r| r.event.action)
        .collect();
    assert!(
        actions.contains(&"update.taken_over".to_owned()),
        "{actions:?}"
    );
    assert!(b.verify_audit().expect("verify").ok);
}

#[test]
fn a_dead_process_of_this_host_is_gone_before_its_lease_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let mut crashed = Store::open(&path).expect("crashed");
    crashed.act_as(testing::departed_process());
    let now = jiff::Timestamp::now();
    let mut s = start("docker/local/web", 0);
    s.at = now;
    let id = crashed.begin_update(&s).expect("begin");
    drop(crashed);
    let next = Store::open(&path).expect("next");
    let u = next.update(id).expect("read").expect("there");
    let seen = standing(
        u.owner.as_ref(),
        u.lease_until,
        next.owner(),
        now,
        process::probe,
    );
    assert!(
        matches!(seen, Standing::Orphaned(Gone::Dead { .. })),
        "{seen:?}"
    );
    // And a live process of this host (this one) holds its update whatever the lease says.
    let mine_elsewhere = Store::open(&path).expect("third");
    let mut me = Store::open(&path).expect("me");
    me.begin_update(&start("docker/local/api", 0))
        .expect("begin, with a lease long expired");
    let mine = me
        .unfinished_updates()
        .expect("list")
        .into_iter()
        .find(|u| u.asset_id == "docker/local/api")
        .expect("there");
    let mut as_other = mine_elsewhere;
    as_other.act_as(Owner {
        pid: std::process::id() + 1,
        ..process::this_process()
    });
    let seen = standing(
        mine.owner.as_ref(),
        mine.lease_until,
        as_other.owner(),
        now,
        process::probe,
    );
    if !process::this_process().pid_namespace.is_empty() {
        assert!(matches!(seen, Standing::Held { .. }), "{seen:?}");
    }
}

#[test]
fn updates_of_earlier_releases_have_no_owner_and_can_be_taken_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    testing::migrate_file_to(&path, 5).expect("v5");
    Connection::open(&path)
        .expect("open")
        .execute_batch(
            "INSERT INTO updates (asset_id, from_ref, to_ref, status, started_by, started_at)
             VALUES ('docker/local/web', 'web:1', 'web:2', 'in_progress', 'old',
                     '2024-05-01T12:00:00.000000000Z');
             INSERT INTO approvals (asset_id, candidate, verdict, operator, at)
             VALUES ('docker/local/web', '2', 'rejected', 'cli:alice',
                     '2024-05-01T12:00:00.000000000Z');",
        )
        .expect("old rows");
    let mut s = Store::open(&path).expect("migrated");
    let u = s.unfinished_updates().expect("list").remove(0);
    assert_eq!(u.owner, None);
    assert_eq!(
        standing(None, None, s.owner(), at(0), process::probe),
        Standing::Orphaned(Gone::NoOwner)
    );
    assert!(
        s.take_over_update(u.id, None, "no owner", at(1), "test")
            .expect("take")
    );
    assert!(s.owns_update(u.id).expect("owns"));
    let approval = s
        .approval_for("docker/local/web", "2")
        .expect("read")
        .expect("there");
    assert_eq!(approval.origin, safe_updater_store::ApprovalOrigin::Review);
}
