//! Who a request is for: the calling process's uid, gid and supplementary groups, sent with
//! every request made on its behalf so the server checks permissions as that user (see
//! `protocol::credentials`). The FUSE adapter runs each operation inside
//! [`CALLER`]`.scope(..)`; the client reads [`current`] when it sends a request. A write
//! batch is sent as the caller whose write started it (so setuid bits, reserved blocks and
//! the like are as for that writer), and a reopen after a server restart as the process
//! that opened the file. Other work the mount does on its own (read-ahead, closing) carries
//! none and runs as the export's anonymous user: it only touches files already open, which
//! the server does not check again, as a local kernel does not.
//!
//! Groups come from `/proc/PID/status`, as libfuse's `fuse_req_getgroups` reads them; they
//! are kept per (pid, uid, gid) for [`GROUPS_TTL`] so a busy process does not pay a /proc
//! read per request.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

tokio::task_local! {
    /// The credentials of the process a FUSE operation came from.
    pub static CALLER: proto::Credentials;
}

/// The credentials of the operation being served, if any.
pub fn current() -> Option<proto::Credentials> {
    CALLER.try_with(Clone::clone).ok()
}

/// How long a process's group list is reused before /proc is read again.
pub const GROUPS_TTL: Duration = Duration::from_secs(1);
/// Processes remembered at once; the table is cleared when it is full.
const MAX_REMEMBERED: usize = 4096;
/// Most groups sent (Linux NGROUPS_MAX).
const MAX_GROUPS: usize = protocol::credentials::MAX_GROUPS;

/// A process as FUSE names it: (pid, uid, gid).
type ProcessKey = (u32, u32, u32);

/// Recently seen callers' group lists, with when each was read.
#[derive(Default)]
pub struct Callers {
    groups: Mutex<HashMap<ProcessKey, (Instant, Vec<u32>)>>,
}

impl Callers {
    /// The credentials of the process `pid` running as `uid`/`gid`.
    pub fn of(&self, uid: u32, gid: u32, pid: u32) -> proto::Credentials {
        let key = (pid, uid, gid);
        let now = Instant::now();
        let cached = self
            .groups
            .lock()
            .get(&key)
            .filter(|(at, _)| now.duration_since(*at) < GROUPS_TTL)
            .map(|(_, g)| g.clone());
        let groups = cached.unwrap_or_else(|| {
            let groups = read_groups(pid);
            let mut table = self.groups.lock();
            if table.len() >= MAX_REMEMBERED {
                table.clear();
            }
            table.insert(key, (now, groups.clone()));
            groups
        });
        proto::Credentials { uid, gid, groups }
    }
}

/// The supplementary groups of `pid`, empty when it cannot be read (the process is gone,
/// or the request came from the kernel: pid 0).
fn read_groups(pid: u32) -> Vec<u32> {
    if pid == 0 {
        return Vec::new();
    }
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|status| parse_groups(&status))
        .unwrap_or_default()
}

/// The `Groups:` line of a /proc status file.
fn parse_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|g| g.parse().ok())
                .take(MAX_GROUPS)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_read_from_the_status_file() {
        let status = "Name:\tcat\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 27 1000 \nNgid:\t0\n";
        assert_eq!(parse_groups(status), vec![4, 24, 27, 1000]);
        assert_eq!(parse_groups("Groups:\t\n"), Vec::<u32>::new());
    }

    #[test]
    fn this_process_groups_match_getgroups() {
        let me = std::process::id();
        let mut got = read_groups(me);
        let mut want: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
        let creds = Callers::default().of(5, 6, me);
        assert_eq!((creds.uid, creds.gid), (5, 6));
    }

    #[tokio::test]
    async fn the_scoped_caller_is_current_inside_and_absent_outside() {
        let who = proto::Credentials {
            uid: 7,
            gid: 8,
            groups: vec![9],
        };
        assert_eq!(current(), None);
        let inside = CALLER.scope(who.clone(), async { current() }).await;
        assert_eq!(inside, Some(who));
    }
}
