//! Who owns an update in flight, and when someone else may take it over.
//!
//! An update in progress belongs to the process that began it: its [`Owner`] (host, process,
//! when it started) is stored with the update, together with a lease the owner renews while
//! it works. Another process (a second CLI command, the daemon's next cycle, a replica) may
//! recover the update — restore its snapshot — only when the owner is gone: its lease expired,
//! or it is provably dead on this host. [`standing`] is that rule, as a pure function: the
//! caller passes the stored owner and lease, its own identity, the time, and the answer of a
//! local process probe.
//!
//! What this module must not do: look at processes or the clock itself (the store's adapter
//! reads `/proc`), or decide anything about the update other than who may touch it.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// How long a lease lasts without renewal. Owners renew every [`LEASE_RENEW_EVERY`], so a
/// live owner keeps it with two renewals to spare; a crashed owner on another host is taken
/// over at most this long after it died.
pub const LEASE_DURATION: Duration = Duration::from_secs(30);

/// How often an owner renews its leases.
pub const LEASE_RENEW_EVERY: Duration = Duration::from_secs(10);

/// The process that began an update.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// The host name, as the kernel reports it.
    pub host: String,
    /// The process id, meaningful only within [`Owner::pid_namespace`].
    pub pid: u32,
    /// Where process ids mean the same thing: boot id and PID namespace (empty when unknown).
    /// Two owners with the same non-empty value can probe each other's process.
    pub pid_namespace: String,
    /// When the process started, in the kernel's clock ticks since boot: tells a restarted
    /// process that reused the pid from the owner (0 when unknown).
    pub process_start: u64,
    /// When the process began acting (wall clock), for people reading it.
    pub started_at: Timestamp,
}

impl Owner {
    /// Whether `other` is this very process.
    pub fn is(&self, other: &Owner) -> bool {
        self.host == other.host
            && self.pid == other.pid
            && self.pid_namespace == other.pid_namespace
            && self.process_start == other.process_start
    }

    /// Whether this process can tell by looking at its own process table whether `other` is
    /// alive.
    pub fn can_probe(&self, other: &Owner) -> bool {
        !self.pid_namespace.is_empty()
            && self.pid_namespace == other.pid_namespace
            && self.host == other.host
            && other.process_start != 0
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} on host {} (started {})",
            self.pid,
            self.host,
            self.started_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        )
    }
}

/// What the local process table says of an owner's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A process with that pid and start time runs.
    Alive,
    /// No process with that pid, or one that started at another time.
    Dead,
    /// The table cannot be read.
    Unknown,
}

/// Why an update's owner counts as gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "why")]
pub enum Gone {
    /// Written by a release that did not record owners.
    NoOwner,
    /// The owner's process no longer runs on this host.
    Dead { owner: Owner },
    /// The owner did not renew its lease in time.
    Expired {
        owner: Owner,
        lease_until: Timestamp,
    },
}

impl fmt::Display for Gone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gone::NoOwner => f.write_str("it records no owner"),
            Gone::Dead { owner } => write!(f, "its owner, {owner}, no longer runs"),
            Gone::Expired { owner, lease_until } => write!(
                f,
                "its owner, {owner}, let its lease expire at {}",
                lease_until.strftime("%Y-%m-%dT%H:%M:%SZ")
            ),
        }
    }
}

/// Who may act on an update in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// This process owns it.
    Mine,
    /// Another live process owns it: leave it alone.
    Held {
        owner: Owner,
        lease_until: Timestamp,
    },
    /// Its owner is gone: whoever takes it over first may recover it.
    Orphaned(Gone),
}

/// Who may act on an update whose stored owner is `owner` with its lease until `lease_until`,
/// as seen by `me` at `now`. `probe` is asked only when `me` can see the owner's process
/// table ([`Owner::can_probe`]); a probe that cannot tell falls back to the lease.
pub fn standing(
    owner: Option<&Owner>,
    lease_until: Option<Timestamp>,
    me: &Owner,
    now: Timestamp,
    probe: impl FnOnce(&Owner) -> Probe,
) -> Standing {
    let Some(owner) = owner else {
        return Standing::Orphaned(Gone::NoOwner);
    };
    if me.is(owner) {
        return Standing::Mine;
    }
    // Without a lease time (which the store always writes with an owner) only a probe can
    // keep the update: the epoch has passed.
    let lease_until = lease_until.unwrap_or(Timestamp::UNIX_EPOCH);
    if me.can_probe(owner) {
        match probe(owner) {
            Probe::Alive => {
                return Standing::Held {
                    owner: owner.clone(),
                    lease_until,
                };
            }
            Probe::Dead => {
                return Standing::Orphaned(Gone::Dead {
                    owner: owner.clone(),
                });
            }
            Probe::Unknown => {}
        }
    }
    if now >= lease_until {
        Standing::Orphaned(Gone::Expired {
            owner: owner.clone(),
            lease_until,
        })
    } else {
        Standing::Held {
            owner: owner.clone(),
            lease_until,
        }
    }
}

/// The lease end for a lease taken or renewed at `now`.
pub fn lease_end(now: Timestamp) -> Timestamp {
    now.checked_add(jiff::SignedDuration::try_from(LEASE_DURATION).unwrap_or_default())
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn owner(host: &str, pid: u32, ns: &str, start: u64) -> Owner {
        Owner {
            host: host.into(),
            pid,
            pid_namespace: ns.into(),
            process_start: start,
            started_at: ts("2026-12-08T00:00:00Z"),
        }
    }

    const NOW: &str = "2026-12-08T01:00:00Z";

    fn never(_: &Owner) -> Probe {
        panic!("the probe must not be asked")
    }

    #[test]
    fn my_own_update_is_mine() {
        let me = owner("a", 10, "boot1/ns1", 500);
        let s = standing(Some(&me.clone()), None, &me, ts(NOW), never);
        assert_eq!(s, Standing::Mine);
    }

    #[test]
    fn a_live_process_on_this_host_holds_it_even_past_its_lease() {
        let me = owner("a", 10, "boot1/ns1", 500);
        let other = owner("a", 11, "boot1/ns1", 600);
        let s = standing(
            Some(&other),
            Some(ts("2026-12-08T00:59:00Z")),
            &me,
            ts(NOW),
            |_| Probe::Alive,
        );
        assert!(matches!(s, Standing::Held { .. }), "{s:?}");
    }

    #[test]
    fn a_dead_process_on_this_host_gives_it_up_before_its_lease_ends() {
        let me = owner("a", 10, "boot1/ns1", 500);
        let other = owner("a", 11, "boot1/ns1", 600);
        let s = standing(
            Some(&other),
            Some(ts("2026-12-08T01:00:20Z")),
            &me,
            ts(NOW),
            |o| {
                assert_eq!(o.pid, 11);
                Probe::Dead
            },
        );
        assert_eq!(s, Standing::Orphaned(Gone::Dead { owner: other }));
    }

    #[test]
    fn another_host_or_namespace_is_judged_by_its_lease_alone() {
        let me = owner("a", 10, "boot1/ns1", 500);
        for other in [
            owner("b", 11, "boot1/ns1", 600),
            owner("a", 11, "boot1/ns2", 600),
            owner("a", 11, "", 600),
        ] {
            let live = standing(
                Some(&other),
                Some(ts("2026-12-08T01:00:01Z")),
                &me,
                ts(NOW),
                never,
            );
            assert!(matches!(live, Standing::Held { .. }), "{live:?}");
            let expired = standing(Some(&other), Some(ts(NOW)), &me, ts(NOW), never);
            assert!(
                matches!(expired, Standing::Orphaned(Gone::Expired { .. })),
                "{expired:?}"
            );
        }
    }

    #[test]
    fn a_probe_that_cannot_tell_falls_back_to_the_lease() {
        let me = owner("a", 10, "boot1/ns1", 500);
        let other = owner("a", 11, "boot1/ns1", 600);
        let held = standing(
            Some(&other),
            Some(ts("2026-12-08T01:00:05Z")),
            &me,
            ts(NOW),
            |_| Probe::Unknown,
        );
        assert!(matches!(held, Standing::Held { .. }));
        let gone = standing(
            Some(&other),
            Some(ts("2026-12-08T00:00:05Z")),
            &me,
            ts(NOW),
            |_| Probe::Unknown,
        );
        assert!(matches!(gone, Standing::Orphaned(Gone::Expired { .. })));
    }

    #[test]
    fn the_same_pid_started_at_another_time_is_another_process() {
        let me = owner("a", 10, "boot1/ns1", 500);
        let before_reboot = owner("a", 10, "boot1/ns1", 400);
        assert!(!me.is(&before_reboot));
        let s = standing(Some(&before_reboot), None, &me, ts(NOW), |_| Probe::Dead);
        assert!(matches!(s, Standing::Orphaned(Gone::Dead { .. })));
    }

    #[test]
    fn an_update_without_an_owner_is_orphaned() {
        let me = owner("a", 10, "boot1/ns1", 500);
        assert_eq!(
            standing(None, None, &me, ts(NOW), never),
            Standing::Orphaned(Gone::NoOwner)
        );
    }

    #[test]
    fn owners_read_as_people_expect() {
        let o = owner("ci-1", 4242, "x", 1);
        assert_eq!(
            o.to_string(),
            "pid 4242 on host ci-1 (started 2026-12-08T00:00:00Z)"
        );
        assert_eq!(lease_end(ts(NOW)), ts("2026-12-08T01:00:30Z"));
    }
}
