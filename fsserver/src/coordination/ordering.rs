//! The order of one connection's requests. The server runs requests concurrently, but:
//!
//! - **On a handle**, a client may send a SetAttr (or Fsync, Fallocate, Close) right behind
//!   Writes on it without waiting for their replies: such a request runs only after every
//!   request on that handle received before it, and the ones received after it wait for it.
//!   Writes between two of them still run concurrently with each other. So a `futimens`
//!   queued after a file's last Write is not undone by that Write's mtime. A Create or Open
//!   is a barrier on the handle it names, so Writes sent behind it wait for it.
//! - **A request with the ORDERED flag** (a client sends the operations it answered itself
//!   under a directory lease with it, in the order it answered them) runs after every
//!   request received before it that it may depend on: every earlier request naming the
//!   same path, a path above it (the mkdir of its directory) or below it (what is in a
//!   directory it renames or removes), counting a request through a handle as naming the
//!   path the handle was created or opened at. Unrelated ones (the next file of an untar)
//!   run beside it. An ORDERED request naming no path (a Lease giving directories back)
//!   runs after everything received before it, and every later ORDERED request after it,
//!   except that it passes a request once that one waits for another session's lease
//!   (`Turn::let_pass`): the other session's give-back may itself wait behind a request
//!   waiting for this client's, and both would wait for the recall timeout. Such a request
//!   is none the client owes on a lease it holds: two sessions' leases never nest (see
//!   `leases`), so what it answered under its own reaches into no other's. Requests that
//!   name its path still wait for it, and let give-backs pass them too while they do.
//!
//! Requests are given their turn by the connection's reader, in the order they arrive
//! (`turn`, synchronous), and wait for it in their own task (`Turn::wait`). A turn ends when
//! its `Turn` is dropped, however the request ends. What is remembered is bounded by the
//! requests in flight (ended ones are pruned) and a cap on handles' paths: a handle whose
//! path is not known orders like a request naming no path.

use std::collections::HashMap;

use bytes::Bytes;
use protocol::Command;
use tokio::sync::watch;

/// A request's end (its sender dropped), and whether a request that follows everything may
/// pass it already (true: see `Turn::let_pass`).
type Done = watch::Receiver<bool>;

/// A request's place in the connection's order.
pub struct Turn {
    /// The requests it must wait for (their senders drop when they end), each with whether
    /// it waits only as one following everything (it may pass one that lets it).
    after: Vec<(Done, bool)>,
    /// Dropped when this request ends.
    done: Option<watch::Sender<bool>>,
}

impl Turn {
    /// Waits until every request this one must follow has ended (or let it pass). Waiting
    /// behind one that lets give-backs pass, it lets them pass too: it waits, in the end,
    /// for the same recall.
    pub async fn wait(&mut self) {
        while let Some((rx, may_pass)) = self.after.last_mut() {
            loop {
                if *rx.borrow_and_update() {
                    if *may_pass {
                        break;
                    }
                    if let Some(tx) = self.done.as_ref().filter(|tx| !*tx.borrow()) {
                        tx.send_replace(true);
                    }
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
            self.after.pop();
        }
    }

    /// From now on a request that follows everything (a lease give-back) need not wait for
    /// this one; those that name its paths or handle still do. For a request that waits
    /// for another session's lease.
    pub fn let_pass(&self) {
        if let Some(tx) = &self.done {
            tx.send_replace(true);
        }
    }
}

#[derive(Default)]
struct Chain {
    /// The last ordering request (SetAttr, Fsync...) on the handle.
    barrier: Option<Done>,
    /// Writes received since that barrier.
    writes: Vec<Done>,
}

impl Chain {
    fn idle(&self) -> bool {
        self.barrier.as_ref().is_none_or(ended) && self.writes.iter().all(ended)
    }
}

fn ended(rx: &Done) -> bool {
    rx.has_changed().is_err()
}

/// What a request is, for its turn: decoded once by the reader.
pub struct Request<'a> {
    pub cmd: Option<Command>,
    /// The handle it acts through (see `on_handle`).
    pub on_handle: Option<(Command, u64)>,
    /// The paths it names (see `request::Request::paths`).
    pub paths: &'a [Bytes],
    pub ordered: bool,
    /// A Rename with RENAME_EXCHANGE: its two paths swap.
    pub exchange: bool,
}

/// Requests since the last ORDERED one, per path. Paths are keyed by their hash
/// (`request::prefix_hashes`): a request's ancestors cost one pass over its path. Two paths
/// of one hash only make a request wait for more than it must, never for less.
#[derive(Default)]
struct PathOrder {
    hasher: std::collections::hash_map::RandomState,
    /// Per path: the requests naming it since the last ORDERED one that did (included).
    on: HashMap<u64, Vec<Done>>,
    /// Per directory path: the requests naming something below it since the last ORDERED
    /// one naming it.
    below: HashMap<u64, Vec<Done>>,
    /// The path each open handle was created or opened at.
    handles: HashMap<u64, Bytes>,
    /// Bytes of those paths (copies: a path kept must not keep its request frame alive).
    handle_bytes: usize,
    /// The last ORDERED request naming no path.
    full: Option<Done>,
    /// Every request received since it.
    since_full: Vec<Done>,
    /// A request through a handle of unknown path was received since `full`: the next
    /// ORDERED request follows everything.
    full_due: bool,
    /// Sizes at which ended requests are next pruned from `on`, `below`, `since_full`
    /// (counted in entries: one hot path's list grows as much as many paths do).
    prune_at: (usize, usize, usize),
    /// Entries added to `on` and `below` since they were last pruned, plus those kept then
    /// (an upper bound on what they hold).
    entries: (usize, usize),
}

/// Chains kept before idle ones are dropped; remembered requests before ended ones are.
const PRUNE_AT: usize = 64;
/// Handles whose path is remembered, at most, and the bytes of those paths: beyond, a
/// handle's path is unknown and the next ORDERED request follows everything (slower,
/// never wrong).
const MAX_HANDLE_PATHS: usize = 65536;
const MAX_HANDLE_PATH_BYTES: usize = 16 << 20;

/// Drops ended requests from `map` once its `entries` reach `at`: amortized, each entry is
/// looked at a bounded number of times, and what is kept is what is in flight.
fn prune(map: &mut HashMap<u64, Vec<Done>>, entries: &mut usize, at: &mut usize) {
    if *entries < (*at).max(PRUNE_AT) {
        return;
    }
    map.retain(|_, v| {
        v.retain(|r| !ended(r));
        !v.is_empty()
    });
    *entries = map.values().map(Vec::len).sum();
    *at = *entries * 2;
    // A burst's peak would otherwise make every later pass cost that much.
    if map.capacity() > 4 * map.len().max(PRUNE_AT) {
        map.shrink_to(2 * map.len());
    }
}

impl PathOrder {
    /// What request `r` must wait for, recording it as `rx`: each with whether `r` waits for
    /// it only as one following everything.
    fn turn(&mut self, r: &Request, rx: &Done, after: &mut Vec<(Done, bool)>) {
        let mut named: Vec<Bytes> = r.paths.to_vec();
        let mut unknown = false;
        if let Some((cmd, h)) = r.on_handle {
            match (cmd, r.paths.first()) {
                (Command::Create | Command::Open, Some(p)) => {
                    if self.handles.len() < MAX_HANDLE_PATHS
                        && self.handle_bytes + p.len() <= MAX_HANDLE_PATH_BYTES
                    {
                        self.handle_bytes += p.len();
                        let old = self.handles.insert(h, Bytes::copy_from_slice(p));
                        self.handle_bytes -= old.map_or(0, |o| o.len());
                    }
                }
                _ => match self.handles.get(&h) {
                    Some(p) => named.push(p.clone()),
                    None => unknown = true,
                },
            }
            if cmd == Command::Close {
                if let Some(p) = self.handles.remove(&h) {
                    self.handle_bytes -= p.len();
                }
            }
        }
        if let (Some(Command::Rename), [from, to]) = (r.cmd, r.paths) {
            self.renamed(from, to, r.exchange);
        }
        if r.ordered && (named.is_empty() || unknown || self.full_due) {
            // After everything received before it. What names a path stays recorded: a
            // request it lets pass still goes before those naming its path.
            after.extend(self.full.take().filter(|d| !ended(d)).map(|d| (d, false)));
            after.extend(
                self.since_full
                    .drain(..)
                    .filter(|d| !ended(d))
                    .map(|d| (d, true)),
            );
            self.full = Some(rx.clone());
            self.full_due = false;
            return;
        }
        if r.ordered {
            let full = self.full.iter().filter(|d| !ended(d));
            after.extend(full.map(|d| (d.clone(), false)));
        }
        self.since_full.push(rx.clone());
        if self.since_full.len() >= self.prune_at.2.max(PRUNE_AT) {
            self.since_full.retain(|d| !ended(d));
            self.prune_at.2 = self.since_full.len() * 2;
        }
        if unknown {
            // No path entry can say so: the next ORDERED request follows everything.
            self.full_due = true;
            return;
        }
        // What it waits for first, then where it is recorded (never after itself).
        let hashed: Vec<Vec<(usize, u64)>> = named
            .iter()
            .map(|p| {
                use std::hash::BuildHasher;
                crate::request::prefix_hashes(self.hasher.build_hasher(), p)
            })
            .collect();
        for prefixes in hashed.iter().filter(|_| r.ordered) {
            let Some(((_, own), ancestors)) = prefixes.split_last() else {
                continue;
            };
            let same = self.on.remove(own).into_iter().flatten();
            let inside = self.below.remove(own).into_iter().flatten();
            after.extend(same.chain(inside).filter(|d| !ended(d)).map(|d| (d, false)));
            for (_, a) in ancestors {
                if let Some(v) = self.on.get(a) {
                    after.extend(v.iter().filter(|d| !ended(d)).map(|d| (d.clone(), false)));
                }
            }
        }
        for prefixes in &hashed {
            let Some(((_, own), ancestors)) = prefixes.split_last() else {
                continue;
            };
            self.on.entry(*own).or_default().push(rx.clone());
            self.entries.0 += 1;
            for (_, a) in ancestors {
                self.below.entry(*a).or_default().push(rx.clone());
                self.entries.1 += 1;
            }
        }
        prune(&mut self.on, &mut self.entries.0, &mut self.prune_at.0);
        prune(&mut self.below, &mut self.entries.1, &mut self.prune_at.1);
    }

    /// Handles opened at or below `from` are now at `to`, and with `exchange` those at or
    /// below `to` at `from` (a walk over at most `MAX_HANDLE_PATH_BYTES`).
    fn renamed(&mut self, from: &Bytes, to: &Bytes, exchange: bool) {
        for p in self.handles.values_mut() {
            let moved = match moved(p, from, to) {
                Some(m) => m,
                None if exchange => match moved(p, to, from) {
                    Some(m) => m,
                    None => continue,
                },
                None => continue,
            };
            self.handle_bytes = (self.handle_bytes + moved.len()).saturating_sub(p.len());
            *p = moved;
        }
    }
}

/// `path` with its prefix `from` replaced by `to`, if it is `from` or below it.
fn moved(path: &[u8], from: &[u8], to: &[u8]) -> Option<Bytes> {
    if path == from {
        return Some(Bytes::copy_from_slice(to));
    }
    if !(path.starts_with(from) && path.get(from.len()) == Some(&b'/')) {
        return None;
    }
    let mut moved = to.to_vec();
    moved.extend_from_slice(&path[from.len()..]);
    Some(moved.into())
}

/// Handles with requests in order, and requests in path order, for one connection.
#[derive(Default)]
pub struct HandleOrder {
    chains: HashMap<u64, Chain>,
    paths: PathOrder,
}

impl HandleOrder {
    /// The turn of request `r`, just received: Writes follow the last barrier on their
    /// handle; a barrier follows everything before it on its handle. An ORDERED request
    /// follows every earlier request it may depend on (see the module). CopyRange is not
    /// ordered on its handle (the client waits for the writes of both its files first).
    pub fn turn_of(&mut self, r: &Request) -> Turn {
        let (tx, rx) = watch::channel(false);
        let mut after = Vec::new();
        self.paths.turn(r, &rx, &mut after);
        let handle = match r.on_handle {
            Some((Command::CopyRange, _)) | None => None,
            Some((cmd, handle)) => Some((handle, cmd != Command::Write)),
        };
        if let Some((handle, barrier)) = handle {
            if self.chains.len() >= PRUNE_AT {
                self.chains.retain(|_, c| !c.idle());
            }
            let chain = self.chains.entry(handle).or_default();
            let last_barrier = chain.barrier.iter().filter(|r| !ended(r));
            after.extend(last_barrier.map(|r| (r.clone(), false)));
            if barrier {
                after.extend(
                    chain
                        .writes
                        .drain(..)
                        .filter(|r| !ended(r))
                        .map(|r| (r, false)),
                );
                chain.barrier = Some(rx);
            } else {
                chain.writes.retain(|r| !ended(r));
                chain.writes.push(rx);
            }
        }
        Turn {
            after,
            done: Some(tx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use prost::Message;
    use protocol::Frame;
    use protocol::{Flags, StreamId};
    use std::time::Duration;

    impl HandleOrder {
        /// The turn of `frame`, decoded here as the connection's reader does.
        fn turn(&mut self, frame: &Frame) -> Turn {
            let request = crate::request::Request::decode(frame).expect("a valid request");
            let paths = request.paths();
            self.turn_of(&Request {
                cmd: Some(request.command),
                on_handle: request.on_handle(),
                paths: &paths,
                ordered: request.ordered,
                exchange: request.renamed().is_some_and(|r| r.exchange),
            })
        }
    }

    fn write(handle: u64) -> Frame {
        let req = proto::WriteRequest {
            handle,
            offset: 0,
            budgeted: false,
            verifier: 0,
        };
        Frame::request(Command::Write, StreamId(1), &req, Bytes::from_static(b"x"))
    }

    fn setattr(handle: u64) -> Frame {
        let req = proto::SetAttrRequest {
            handle,
            has_handle: true,
            mode: Some(0o600),
            ..Default::default()
        };
        Frame::request(Command::SetAttr, StreamId(2), &req, Bytes::new())
    }

    async fn waits(turn: &mut Turn) -> bool {
        tokio::time::timeout(Duration::from_millis(50), turn.wait())
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_barrier_waits_for_earlier_writes_and_later_writes_wait_for_it() {
        let mut order = HandleOrder::default();
        let (mut w1, mut w2) = (order.turn(&write(7)), order.turn(&write(7)));
        let mut other = order.turn(&write(8));
        let mut barrier = order.turn(&setattr(7));
        let mut w3 = order.turn(&write(7));
        assert!(
            !waits(&mut w1).await && !waits(&mut w2).await,
            "writes run together"
        );
        assert!(!waits(&mut other).await, "another handle is not held up");
        assert!(
            waits(&mut barrier).await,
            "the barrier waits for both writes"
        );
        drop(w1);
        assert!(waits(&mut barrier).await);
        drop(w2);
        assert!(!waits(&mut barrier).await);
        assert!(waits(&mut w3).await, "a later write waits for the barrier");
        drop(barrier);
        assert!(!waits(&mut w3).await);
    }

    #[tokio::test]
    async fn path_requests_and_reads_are_free_and_idle_chains_are_dropped() {
        let mut order = HandleOrder::default();
        let by_path = proto::SetAttrRequest {
            path: b"f".to_vec().into(),
            ..Default::default()
        };
        let frame = Frame::request(Command::SetAttr, StreamId(3), &by_path, Bytes::new());
        assert!(order.turn(&frame).after.is_empty());
        let free = order.turn(&frame);
        assert!(
            free.after.is_empty(),
            "unordered requests do not wait for each other"
        );
        drop(free);
        for h in 0..(PRUNE_AT as u64 * 3) {
            drop(order.turn(&write(h)));
        }
        assert!(order.chains.len() <= PRUNE_AT);
        for i in 0..1000 {
            drop(order.turn(&create("d", &i.to_string(), i)));
        }
        assert!(order.paths.on.len() <= PRUNE_AT * 2 && order.paths.below.len() <= PRUNE_AT);
        assert!(order.paths.since_full.len() <= PRUNE_AT * 2);
        // One path asked about again and again, by requests that end: its list stays short.
        let mut kept = Vec::new();
        for i in 0..10_000 {
            let t = order.turn(&frame);
            if i % 1000 == 0 {
                kept.push(t);
            }
        }
        let remembered = |m: &HashMap<u64, Vec<Done>>| m.values().map(Vec::len).sum::<usize>();
        assert!(
            remembered(&order.paths.on) <= PRUNE_AT * 2,
            "{} entries for one path",
            remembered(&order.paths.on)
        );
        assert!(remembered(&order.paths.below) <= PRUNE_AT * 2);
    }

    fn ordered(cmd: Command, msg: &impl Message) -> Frame {
        let mut f = Frame::request(cmd, StreamId(5), msg, Bytes::new());
        f.flags = f.flags.with(Flags::ORDERED);
        f
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn create(dir: &str, name: &str, handle: u64) -> Frame {
        let req = proto::CreateRequest {
            parent: b(dir),
            name: b(name),
            handle,
            ..Default::default()
        };
        ordered(Command::Create, &req)
    }

    /// A SetAttr of `path` without the ORDERED flag (its client waits for the reply).
    fn unordered_utimes(path: &str) -> Frame {
        let req = proto::SetAttrRequest {
            path: b(path),
            ..Default::default()
        };
        Frame::request(Command::SetAttr, StreamId(6), &req, Bytes::new())
    }

    fn lease_give_back() -> Frame {
        ordered(Command::Lease, &proto::LeaseRequest::default())
    }

    fn utimes(path: &str) -> Frame {
        let req = proto::SetAttrRequest {
            path: b(path),
            ..Default::default()
        };
        ordered(Command::SetAttr, &req)
    }

    #[tokio::test]
    async fn ordered_requests_wait_for_what_they_depend_on_by_path_and_no_more() {
        let mut order = HandleOrder::default();
        let mkdir = proto::MkdirRequest {
            parent: b(""),
            name: b("d"),
            ..Default::default()
        };
        let mut d = order.turn(&ordered(Command::Mkdir, &mkdir));
        let mut f1 = order.turn(&create("d", "f1", 1));
        let mut w1 = order.turn(&write(1));
        let mut f2 = order.turn(&create("d", "f2", 2));
        let mut t1 = order.turn(&utimes("d/f1"));
        let mut t2 = order.turn(&utimes("d/f2"));
        assert!(!waits(&mut d).await);
        assert!(
            waits(&mut f1).await && waits(&mut f2).await,
            "the mkdir first"
        );
        drop(d);
        assert!(
            !waits(&mut f1).await && !waits(&mut f2).await,
            "side by side"
        );
        assert!(waits(&mut w1).await, "the write waits for its create");
        drop(f1);
        assert!(!waits(&mut w1).await);
        assert!(waits(&mut t1).await, "f1's times wait for its write");
        drop(f2);
        assert!(!waits(&mut t2).await, "f2's do not");
        drop(w1);
        assert!(!waits(&mut t1).await);
        // Giving a lease back names no path: after everything.
        let mut lease = order.turn(&lease_give_back());
        assert!(waits(&mut lease).await);
        drop((t1, t2));
        assert!(!waits(&mut lease).await);
        let mut after = order.turn(&create("e", "x", 3));
        assert!(waits(&mut after).await, "and everything after it");
        drop(lease);
        assert!(!waits(&mut after).await);
    }

    #[tokio::test]
    async fn an_exchange_swaps_the_handles_of_both_sides() {
        let mut order = HandleOrder::default();
        drop(order.turn(&create("a", "f", 1)));
        drop(order.turn(&create("b", "g", 2)));
        let swap = proto::RenameRequest {
            parent: b(""),
            name: b("a"),
            new_parent: b(""),
            new_name: b("b"),
            flags: libc::RENAME_EXCHANGE,
        };
        drop(order.turn(&ordered(Command::Rename, &swap)));
        let w1 = order.turn(&write(1));
        let w2 = order.turn(&write(2));
        let mut at_b = order.turn(&utimes("b/f"));
        let mut at_a = order.turn(&utimes("a/g"));
        drop(w2);
        assert!(waits(&mut at_b).await, "a/f moved to b/f: after its write");
        assert!(!waits(&mut at_a).await, "b/g moved to a/g: its write ended");
        drop(w1);
        assert!(!waits(&mut at_b).await);
    }

    #[tokio::test]
    async fn a_handle_follows_its_file_through_a_rename_and_a_directory_waits_for_its_names() {
        let mut order = HandleOrder::default();
        drop(order.turn(&create("d", "f", 1)));
        let rename = proto::RenameRequest {
            parent: b("d"),
            name: b("f"),
            new_parent: b("e"),
            new_name: b("g"),
            ..Default::default()
        };
        drop(order.turn(&ordered(Command::Rename, &rename)));
        let mut w = order.turn(&write(1));
        let mut t = order.turn(&utimes("e/g"));
        assert!(waits(&mut t).await, "the write on the renamed file first");
        drop(w);
        assert!(!waits(&mut t).await);
        let unlink = proto::RemoveRequest {
            parent: b("e"),
            name: b("g"),
            dir: false,
        };
        let mut u = order.turn(&ordered(Command::Remove, &unlink));
        let rmdir = proto::RemoveRequest {
            parent: b(""),
            name: b("e"),
            dir: true,
        };
        let mut r = order.turn(&ordered(Command::Remove, &rmdir));
        assert!(waits(&mut u).await, "after the utimes");
        drop(t);
        assert!(!waits(&mut u).await);
        assert!(waits(&mut r).await, "the rmdir after the unlink in it");
        drop(u);
        assert!(!waits(&mut r).await);
        drop(r);
        w = order.turn(&write(77));
        let mut o = order.turn(&create("z", "y", 4));
        assert!(
            waits(&mut o).await,
            "a handle of unknown path: after everything"
        );
        drop(w);
        assert!(!waits(&mut o).await);
    }

    #[tokio::test]
    async fn an_ordered_request_waits_for_everything_before_it() {
        let mut order = HandleOrder::default();
        let mut w = order.turn(&write(7));
        let create = proto::CreateRequest {
            name: Bytes::from_static(b"x"),
            handle: 9,
            ..Default::default()
        };
        let mut c = Frame::request(Command::Create, StreamId(4), &create, Bytes::new());
        c.flags = c.flags.with(Flags::ORDERED);
        let mut created = order.turn(&c);
        let mut behind = order.turn(&write(9));
        let mut unrelated = order.turn(&write(8));
        assert!(!waits(&mut w).await && !waits(&mut unrelated).await);
        assert!(
            waits(&mut created).await,
            "the ordered create waits for the write"
        );
        assert!(
            waits(&mut behind).await,
            "a write on the new handle waits for the create"
        );
        drop(w);
        assert!(!waits(&mut created).await);
        drop(created);
        assert!(!waits(&mut behind).await);
    }

    #[tokio::test]
    async fn a_give_back_passes_a_request_waiting_for_a_recall_and_nothing_else_does() {
        let mut order = HandleOrder::default();
        // Waiting for a recall: nothing the client answered under a lease of its own.
        let plain = unordered_utimes("d/f");
        let waiting = order.turn(&plain);
        let other = order.turn(&plain);
        let mut give_back = order.turn(&lease_give_back());
        let mut same_path = order.turn(&utimes("d/f"));
        let mut below = order.turn(&create("d/f", "x", 11));
        assert!(waits(&mut give_back).await, "it follows everything");
        waiting.let_pass();
        assert!(
            waits(&mut give_back).await,
            "the other one has not let it pass"
        );
        drop(other);
        assert!(
            !waits(&mut give_back).await,
            "a request waiting for a recall does not hold up a give-back"
        );
        drop(give_back);
        assert!(
            waits(&mut same_path).await && waits(&mut below).await,
            "what names its path still waits for it"
        );
        drop(waiting);
        assert!(!waits(&mut same_path).await);
        drop(same_path);
        assert!(!waits(&mut below).await);
        drop(below);
        // A request that does not wait for a recall is waited for until it ends.
        let mut owed = order.turn(&utimes("e"));
        let mut give_back = order.turn(&lease_give_back());
        owed.wait().await;
        assert!(waits(&mut give_back).await);
        drop(owed);
        assert!(!waits(&mut give_back).await);
    }

    #[tokio::test]
    async fn a_request_waiting_behind_one_that_lets_give_backs_pass_lets_them_pass_too() {
        let mut order = HandleOrder::default();
        let plain = unordered_utimes("y/f");
        let parked = order.turn(&plain);
        // Ordered behind it by path: waits for it, as its task does on the server.
        let mut behind = order.turn(&utimes("y/f"));
        let mut give_back = order.turn(&lease_give_back());
        let behind = tokio::spawn(async move {
            behind.wait().await;
            behind
        });
        tokio::task::yield_now().await;
        assert!(waits(&mut give_back).await);
        parked.let_pass();
        assert!(
            !waits(&mut give_back).await,
            "both wait for the same recall: the give-back passes both"
        );
        assert!(!behind.is_finished(), "it still waits for the parked one");
        drop(parked);
        drop(behind.await.unwrap());
    }
}
