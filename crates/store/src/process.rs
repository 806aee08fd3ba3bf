//! This process as the owner of updates ([`this_process`]), and whether another owner's
//! process still runs on this host ([`probe`]). Linux's `/proc` answers both; elsewhere the
//! identity has no PID namespace, so other owners are judged by their lease alone.
//!
//! What this module must not do: decide who may recover an update (that is
//! [`safe_updater_core::lease::standing`]); it only reports what the process table says.

use std::sync::OnceLock;

use jiff::Timestamp;
use safe_updater_core::lease::{Owner, Probe};

/// The clock ticks per second of `/proc/<pid>/stat`'s start time (`USER_HZ`): 100 on every
/// Linux architecture the kernel exports to user space.
const USER_HZ: u64 = 100;

/// This process, read once: host name, pid, boot id and PID namespace, start time.
pub fn this_process() -> Owner {
    static ME: OnceLock<Owner> = OnceLock::new();
    ME.get_or_init(|| {
        let pid = std::process::id();
        let host = read_trimmed("/proc/sys/kernel/hostname")
            .or_else(|| read_trimmed("/etc/hostname"))
            .unwrap_or_else(|| "unknown".to_owned());
        let boot = read_trimmed("/proc/sys/kernel/random/boot_id");
        let ns = std::fs::read_link("/proc/self/ns/pid")
            .ok()
            .map(|p| p.to_string_lossy().into_owned());
        let pid_namespace = match (boot, ns) {
            (Some(b), Some(n)) => format!("{b}/{n}"),
            _ => String::new(),
        };
        let process_start = start_ticks(&format!("/proc/{pid}/stat")).unwrap_or(0);
        let started_at = boot_time()
            .and_then(|btime| {
                let secs = btime + i64::try_from(process_start / USER_HZ).ok()?;
                Timestamp::from_second(secs).ok()
            })
            .unwrap_or(Timestamp::UNIX_EPOCH);
        Owner {
            host,
            pid,
            pid_namespace,
            process_start,
            started_at,
        }
    })
    .clone()
}

/// Whether `owner`'s process runs here: meaningful only when [`Owner::can_probe`] holds for
/// [`this_process`].
pub fn probe(owner: &Owner) -> Probe {
    if !std::path::Path::new("/proc/self/stat").exists() {
        return Probe::Unknown;
    }
    match start_ticks(&format!("/proc/{}/stat", owner.pid)) {
        Some(start) if start == owner.process_start => Probe::Alive,
        // Gone, or the pid was given to a later process.
        Some(_) => Probe::Dead,
        None if !std::path::Path::new(&format!("/proc/{}", owner.pid)).exists() => Probe::Dead,
        None => Probe::Unknown,
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Field 22 of `/proc/<pid>/stat` (the start time), read after the command name, which is in
/// parentheses and may itself hold spaces and parentheses.
fn start_ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    parse_start_ticks(&stat)
}

fn parse_start_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state) onwards: the start time is field 22.
    after.split_whitespace().nth(22 - 3)?.parse().ok()
}

fn boot_time() -> Option<i64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_read_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_ticks(stat), Some(987654));
        assert_eq!(parse_start_ticks("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_is_not() {
        let me = this_process();
        assert_eq!(me.pid, std::process::id());
        if me.pid_namespace.is_empty() {
            return; // Not Linux: nothing to probe.
        }
        assert_eq!(probe(&me), Probe::Alive);
        let reused = Owner {
            process_start: me.process_start + 1,
            ..me.clone()
        };
        assert_eq!(probe(&reused), Probe::Dead);
        let gone = Owner {
            pid: u32::MAX - 1,
            ..me
        };
        assert_eq!(probe(&gone), Probe::Dead);
    }
}
