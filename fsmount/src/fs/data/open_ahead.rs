//! Open-ahead: a reader walking a directory in listing order (`cp -a`, `tar c`, `grep -r`,
//! `rsync` out) has the next small files opened for it, so its own opens need no round trip.
//!
//! What is tracked: the order in which the server listed each recently listed directory's
//! regular files (at most [`ORDER_MAX`] names, of [`DIRS`] directories), and which of them
//! was opened last. An open for reading of the entry right after (or two after) the one
//! opened last is a walk: the next [`AHEAD`] files of at most the Open prefetch size are
//! opened on the server too, as the same caller, for reading, with their bytes (the
//! prefetch). The reader's open of one of them then takes that handle, its attributes and
//! its bytes as if it had just opened it (`Fs::claim_ahead`).
//!
//! Contract: an open taken from here is the same open the server would give now. It was
//! made at most [`CLAIM_WITHIN`] earlier, as the same caller with the same credentials, in
//! the same server session and on the same connection, in a directory whose lease this mount held when it was sent and
//! still holds, with no lease recalled since (nobody else changes a file in a leased
//! directory without recalling its lease first), and nothing this mount learned of the file
//! since (a change notice, a change made through this mount) says it changed. Otherwise it
//! is never taken. Otherwise (another caller, other flags, too old, failed, changed) the open goes
//! to the server as always and the pre-opened handle is closed; a failed pre-open is never
//! reported (the reader's own open reports what the server says then). Handles nobody
//! takes are closed after [`CLAIM_WITHIN`]; at most [`HELD_MAX`] are held at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;
use tokio::sync::watch;

use protocol::rpc;

use crate::fs::error::attr_of;
use crate::fs::{Fh, Fs, Ino, Opened};

/// Files opened ahead of a walker, past the one it opened (at a 10 ms round trip, a reader
/// taking 0.3 ms per file finds each one opened).
pub const AHEAD: usize = 32;
/// Files opened ahead of the first file of a directory opened after its listing (perhaps
/// the only one the reader wants).
pub const FIRST_AHEAD: usize = 4;
/// An open done ahead serves a reader's open at most this long after it was sent.
pub const CLAIM_WITHIN: Duration = Duration::from_secs(1);
/// Handles opened ahead and not yet taken, at most.
pub const HELD_MAX: usize = 64;
/// Directories whose listing order is kept.
const DIRS: usize = 16;
/// Names kept per directory (a longer listing is walked without open-ahead past them).
const ORDER_MAX: usize = 8192;

/// What an open done ahead brought: the server's reply, or None if it failed.
pub type Outcome = Option<proto::OpenReply>;

/// One open done ahead, until a reader takes it or it is closed.
pub struct Ahead {
    pub sent_at: Instant,
    /// Who it was opened as.
    pub caller: proto::Credentials,
    /// `Fs::sessions_lost` when it was sent, and the connection it went on: taken only on
    /// that connection (a cut or a server restart since, and the server may have changed
    /// the file unseen).
    pub session: u64,
    pub connection: u64,
    /// The attribute cache generation before it was sent (its attributes are put under it),
    /// and the block cache's generation of the file then: taken only if the cache still
    /// has that one (nothing newer was seen here, nothing was dropped since).
    pub attr_generation: u64,
    pub cache_generation: u64,
    /// The directory it is in, whose lease was held when it was sent, and `Fs::recalls`
    /// then: taken only while that lease is still held and nothing was recalled since.
    pub dir: Ino,
    pub recalls: u64,
    /// Set when something said the file changed after it was sent.
    pub changed: Arc<AtomicBool>,
    /// Its reply, once it came.
    pub outcome: watch::Receiver<Option<Outcome>>,
}

/// One directory's regular files in listing order, and where a walker is in them.
struct Order {
    names: Vec<Bytes>,
    index: HashMap<Bytes, usize>,
    last_opened: Option<usize>,
}

pub struct OpenAhead {
    inner: Mutex<Inner>,
    /// A sweeper task is running.
    sweeping: AtomicBool,
    /// Opens done ahead still on the server or on their way: held, being taken, or being
    /// closed. At most [`HELD_MAX`].
    outstanding: std::sync::atomic::AtomicUsize,
    pub sent: AtomicU64,
    pub taken: AtomicU64,
    pub unused: AtomicU64,
}

struct Inner {
    orders: LruCache<Ino, Order>,
    held: HashMap<Ino, Ahead>,
    /// Taken by a reader that waits for its reply: a change meanwhile still counts.
    claiming: HashMap<Ino, Arc<AtomicBool>>,
}

impl Default for OpenAhead {
    fn default() -> Self {
        OpenAhead {
            inner: Mutex::new(Inner {
                orders: LruCache::new(std::num::NonZeroUsize::new(DIRS).expect("DIRS > 0")),
                held: HashMap::new(),
                claiming: HashMap::new(),
            }),
            sweeping: Default::default(),
            outstanding: Default::default(),
            sent: Default::default(),
            taken: Default::default(),
            unused: Default::default(),
        }
    }
}

/// True for the flags of an open that only reads (what an open done ahead can stand for).
pub fn reads_only(flags: u32) -> bool {
    // O_NOATIME: an open done ahead read the file as any reader does.
    let writes_or_more = (libc::O_TRUNC
        | libc::O_NOATIME
        | libc::O_APPEND
        | libc::O_CREAT
        | libc::O_EXCL
        | libc::O_DIRECT
        | libc::O_SYNC
        | libc::O_DSYNC
        | libc::O_PATH) as u32;
    flags & libc::O_ACCMODE as u32 == libc::O_RDONLY as u32 && flags & writes_or_more == 0
}

impl OpenAhead {
    /// Directory `dir` was listed (again from its start when `first`): `entries` come next in
    /// its order; regular files of at most `small` bytes are the ones worth opening ahead.
    pub fn listed(&self, dir: Ino, first: bool, entries: &[proto::DirEntry], small: u64) {
        let mut inner = self.inner.lock();
        if first {
            inner.orders.put(
                dir,
                Order {
                    names: Vec::new(),
                    index: HashMap::new(),
                    last_opened: None,
                },
            );
        }
        let Some(order) = inner.orders.get_mut(&dir) else {
            return;
        };
        for e in entries {
            let Some(attr) = &e.attr else { continue };
            if attr.mode & libc::S_IFMT != libc::S_IFREG || attr.size > small {
                continue;
            }
            if order.names.len() >= ORDER_MAX {
                break;
            }
            if order.index.contains_key(&e.name) {
                continue;
            }
            order.index.insert(e.name.clone(), order.names.len());
            order.names.push(e.name.clone());
        }
    }

    /// `name` in `dir` is being opened for reading: if that continues a walk, the names to
    /// open ahead of it (not yet opened ahead, up to the cap on held handles).
    pub fn walked(&self, dir: Ino, name: &[u8]) -> Vec<Bytes> {
        let room = HELD_MAX.saturating_sub(self.outstanding.load(Ordering::SeqCst));
        let mut inner = self.inner.lock();
        let Some(order) = inner.orders.get_mut(&dir) else {
            return Vec::new();
        };
        let Some(&i) = order.index.get(name) else {
            return Vec::new();
        };
        // The first file of a fresh listing may start a walk: a few; the next in order
        // confirms it: the whole window. (What is held already is not sent again: `hold`.)
        let ahead = match order.last_opened {
            None if i == 0 => FIRST_AHEAD,
            Some(l) if l < i && i - l <= 2 => AHEAD,
            _ => 0,
        };
        order.last_opened = Some(i);
        let to = (i + 1 + ahead).min(order.names.len());
        order.names[(i + 1).min(to)..to]
            .iter()
            .take(room)
            .cloned()
            .collect()
    }

    /// Holds an open sent ahead for `ino`; false (nothing held) if one is held already or
    /// [`HELD_MAX`] are outstanding. Each one held is outstanding until [`released`].
    ///
    /// [`released`]: OpenAhead::released
    pub fn hold(&self, ino: Ino, ahead: Ahead) -> bool {
        let mut inner = self.inner.lock();
        if inner.held.contains_key(&ino) || self.outstanding.load(Ordering::SeqCst) >= HELD_MAX {
            return false;
        }
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        inner.held.insert(ino, ahead);
        self.sent.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Takes what is held for `ino`, if anything, with the flag a change sets until
    /// [`OpenAhead::claimed`].
    pub fn take(&self, ino: Ino) -> Option<(Ahead, Arc<AtomicBool>)> {
        let mut inner = self.inner.lock();
        let a = inner.held.remove(&ino)?;
        let changed = a.changed.clone();
        inner.claiming.insert(ino, changed.clone());
        Some((a, changed))
    }

    /// The reader that took `ino`'s open is done with it.
    pub fn claimed(&self, ino: Ino) {
        self.inner.lock().claiming.remove(&ino);
    }

    /// An open done ahead is off the books: taken as a reader's open, failed, or closed.
    pub fn released(&self) {
        let _ = self
            .outstanding
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// `ino` changed (as the server or this mount says): an open held for it is not taken.
    pub fn changed(&self, ino: Ino) {
        let inner = self.inner.lock();
        if let Some(a) = inner.held.get(&ino) {
            a.changed.store(true, Ordering::Relaxed);
        }
        if let Some(c) = inner.claiming.get(&ino) {
            c.store(true, Ordering::Relaxed);
        }
    }

    /// Everything held, to be closed (a lost session: nothing to close on the server).
    pub fn take_all(&self) -> Vec<Ahead> {
        self.inner.lock().held.drain().map(|(_, a)| a).collect()
    }

    /// What has been held longer than [`CLAIM_WITHIN`] (to be closed).
    pub fn expired(&self, now: Instant) -> Vec<Ahead> {
        let mut inner = self.inner.lock();
        let old: Vec<Ino> = inner
            .held
            .iter()
            .filter(|(_, a)| now.duration_since(a.sent_at) > CLAIM_WITHIN)
            .map(|(ino, _)| *ino)
            .collect();
        old.into_iter()
            .filter_map(|ino| inner.held.remove(&ino))
            .collect()
    }

    /// Handles held now.
    pub fn held(&self) -> usize {
        self.inner.lock().held.len()
    }

    /// Opens done ahead not yet released.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::SeqCst)
    }
}

/// The reply of an open done ahead, once it came (None: it failed).
async fn answer(mut rx: watch::Receiver<Option<Outcome>>) -> Outcome {
    rx.wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|o| o.clone())
        .flatten()
}

/// Counts of opens done ahead (for `fsmount status` and the metrics).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct OpenAheadStats {
    /// Opens sent ahead of a walker.
    pub sent: u64,
    /// Of those, taken by a reader's open.
    pub taken: u64,
    /// Of those, closed unused (not taken in time, taken by another caller, changed).
    pub unused: u64,
    /// Handles held now.
    pub held: usize,
}

impl Fs {
    /// An open for reading of `ino` that goes to the server: if it continues a walk of its
    /// directory, the next files are opened ahead, as the caller.
    pub(in crate::fs) fn walk_ahead(self: &Arc<Self>, ino: Ino, flags: u32) {
        if !self.options.open_ahead || !reads_only(flags) || self.cache.is_none() {
            return;
        }
        let Some(caller) = crate::credentials::current() else {
            return;
        };
        let (dir, children) = {
            let n = self.names();
            let Some((parent, name)) = n.inodes.first_name(ino) else {
                return;
            };
            // Only under the directory's lease: nobody else changes a file there without
            // recalling it first, so an open done ahead stays what an open now would give.
            let names = match n.known.holds_dir(parent) {
                true => self.open_ahead.walked(parent, &name),
                false => return,
            };
            let children: Vec<Ino> = names
                .iter()
                .filter_map(|name| n.inodes.child(parent, name))
                // Open here already, or being created: its own open is what it needs.
                .filter(|c| n.inodes.open_handle(*c).is_none() && !n.predictions.busy(*c))
                .collect();
            (parent, children)
        };
        let recalls = self.recalls.load(Ordering::SeqCst);
        for child in children {
            self.open_one_ahead(child, caller.clone(), (dir, recalls));
        }
    }

    fn open_one_ahead(
        self: &Arc<Self>,
        ino: Ino,
        caller: proto::Credentials,
        (dir, recalls): (Ino, u64),
    ) {
        let (Some(connection), Some(cache)) = (self.remote.connection(), &self.cache) else {
            return;
        };
        let (tx, rx) = watch::channel(None);
        let flags = libc::O_RDONLY as u32;
        let handle = self.open_files.new_handle().0;
        let ahead = Ahead {
            sent_at: Instant::now(),
            caller: caller.clone(),
            session: self.sessions_lost.load(Ordering::Relaxed),
            connection,
            attr_generation: self.attr_generation(),
            cache_generation: cache.generation(ino),
            dir,
            recalls,
            changed: Default::default(),
            outcome: rx,
        };
        if !self.open_ahead.hold(ino, ahead) {
            return;
        }
        let fs = self.clone();
        let open = async move {
            let outcome = fs.open_on_server(ino, flags, handle).await;
            if let Err(e) = &outcome {
                tracing::debug!(
                    "{ino}: an open ahead failed (its reader's own open will say): {e}"
                );
            }
            let _ = tx.send(Some(outcome.ok()));
        };
        tokio::spawn(crate::credentials::CALLER.scope(caller, open));
        self.sweep_ahead();
    }

    /// The reader's open of `ino` (`flags`), if an open done ahead can stand for it: its
    /// handle, attributes and bytes, as `open` would have set them up.
    pub(in crate::fs) async fn claim_ahead(
        self: &Arc<Self>,
        ino: Ino,
        flags: u32,
    ) -> Option<Opened> {
        if !reads_only(flags) {
            return None;
        }
        let (a, changed) = self.open_ahead.take(ino)?;
        let same_caller = crate::credentials::current().as_ref() == Some(&a.caller);
        let session = self.sessions_lost.load(Ordering::Relaxed);
        // Under the names lock `n` (a change made here takes it too).
        let usable = |a: &Ahead, n: &crate::fs::Names| {
            same_caller
                && a.session == session
                && self.remote.connection() == Some(a.connection)
                && a.sent_at.elapsed() <= CLAIM_WITHIN
                && !changed.load(Ordering::SeqCst)
                && self.recalls.load(Ordering::SeqCst) == a.recalls
                && n.known.holds_dir(a.dir)
                && self
                    .cache
                    .as_ref()
                    .is_some_and(|c| c.generation(ino) == a.cache_generation)
        };
        if !usable(&a, &self.names()) {
            self.open_ahead.claimed(ino);
            self.close_ahead(a);
            return None;
        }
        let outcome = answer(a.outcome.clone()).await;
        let Some(reply) = outcome else {
            // It failed: the reader's own open says what the server says now.
            self.open_ahead.claimed(ino);
            self.open_ahead.released();
            return None;
        };
        let attr = attr_of(reply.attr).ok().filter(|_| reply.handle != 0);
        let fh = Fh(reply.handle);
        // Checked again and set up under the names lock: nothing said "changed" meanwhile.
        let set_up = {
            let mut n = self.names();
            let set_up = attr.filter(|_| usable(&a, &n)).map(|attr| {
                let prefetched = reply.prefetched;
                self.set_up_open(
                    &mut n,
                    ino,
                    flags,
                    (fh, &attr),
                    a.attr_generation,
                    prefetched,
                )
            });
            self.open_ahead.claimed(ino);
            set_up
        };
        let Some((keep_cache, stale)) = set_up else {
            self.close_ahead(a);
            return None;
        };
        self.open_ahead.released();
        self.open_ahead.taken.fetch_add(1, Ordering::Relaxed);
        self.kernel_caught_up(stale.then_some(ino)).await;
        Some(Opened { fh, keep_cache })
    }

    /// Closes a handle opened ahead and not taken, once its open has been answered.
    fn close_ahead(self: &Arc<Self>, a: Ahead) {
        self.open_ahead.unused.fetch_add(1, Ordering::Relaxed);
        let fs = self.clone();
        tokio::spawn(async move {
            let reply = answer(a.outcome).await;
            if let Some(reply) = reply {
                let req = proto::CloseRequest {
                    handle: reply.handle,
                };
                if let Err(e) = fs.ask::<rpc::Close>(&req).await {
                    tracing::debug!("closing handle {} opened ahead: {e}", reply.handle);
                }
            }
            // Only now is it off the server: until then it counts toward the cap.
            fs.open_ahead.released();
        });
    }

    /// Closes, from a task of its own while any are held, what nobody took in time.
    fn sweep_ahead(self: &Arc<Self>) {
        if self.open_ahead.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let fs = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(CLAIM_WITHIN / 2).await;
                let Some(fs) = fs.upgrade() else { return };
                for a in fs.open_ahead.expired(Instant::now()) {
                    fs.close_ahead(a);
                }
                if fs.open_ahead.held() == 0 {
                    fs.open_ahead.sweeping.store(false, Ordering::Release);
                    // Held again meanwhile: go on (its sender saw `sweeping` set).
                    if fs.open_ahead.held() == 0
                        || fs.open_ahead.sweeping.swap(true, Ordering::AcqRel)
                    {
                        return;
                    }
                }
            }
        });
    }

    /// The server lost this mount's session: what was opened ahead is not taken (closed
    /// in case a resent open made it again).
    pub(in crate::fs) fn open_ahead_lost(self: &Arc<Self>) {
        for a in self.open_ahead.take_all() {
            self.close_ahead(a);
        }
    }

    pub fn open_ahead_stats(&self) -> OpenAheadStats {
        OpenAheadStats {
            sent: self.open_ahead.sent.load(Ordering::Relaxed),
            taken: self.open_ahead.taken.load(Ordering::Relaxed),
            unused: self.open_ahead.unused.load(Ordering::Relaxed),
            held: self.open_ahead.held(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, mode: u32, size: u64) -> proto::DirEntry {
        proto::DirEntry {
            name: Bytes::copy_from_slice(name.as_bytes()),
            attr: Some(proto::Attr {
                mode,
                size,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn files(n: usize) -> Vec<proto::DirEntry> {
        (0..n)
            .map(|i| entry(&format!("f{i:03}"), libc::S_IFREG | 0o644, 10))
            .collect()
    }

    #[test]
    fn a_walk_in_listing_order_opens_ahead_and_a_jump_does_not() {
        let oa = OpenAhead::default();
        let dir = Ino(5);
        oa.listed(dir, true, &files(40), 1000);
        let names = |r: std::ops::Range<usize>| -> Vec<Bytes> {
            r.map(|i| Bytes::from(format!("f{i:03}"))).collect()
        };
        // The first file of the listing: a few.
        assert_eq!(oa.walked(dir, b"f000"), names(1..1 + FIRST_AHEAD));
        // The next one confirms the walk: the whole window (to the listing's end).
        assert_eq!(oa.walked(dir, b"f001"), names(2..2 + AHEAD.min(38)));
        assert_eq!(oa.walked(dir, b"f003"), names(4..4 + AHEAD));
        // A jump backwards or far ahead is no walk.
        assert!(oa.walked(dir, b"f000").is_empty());
        assert!(oa.walked(dir, b"f030").is_empty());
        // A walk that resumes (after a subdirectory) asks for its window again.
        assert_eq!(oa.walked(dir, b"f031"), names(32..40));
        // Unknown directory or name: nothing.
        assert!(oa.walked(Ino(6), b"f001").is_empty());
        assert!(oa.walked(dir, b"nope").is_empty());
    }

    #[test]
    fn only_small_regular_files_are_in_the_order_and_it_is_bounded() {
        let oa = OpenAhead::default();
        let dir = Ino(5);
        let mut e = vec![
            entry("a", libc::S_IFREG | 0o644, 10),
            entry("big", libc::S_IFREG | 0o644, 10_000),
            entry("d", libc::S_IFDIR | 0o755, 10),
            entry("l", libc::S_IFLNK | 0o777, 10),
            entry("b", libc::S_IFREG | 0o644, 10),
            entry("c", libc::S_IFREG | 0o644, 10),
        ];
        e.push(proto::DirEntry {
            name: "noattr".into(),
            ..Default::default()
        });
        oa.listed(dir, true, &e, 1000);
        assert_eq!(
            oa.walked(dir, b"a"),
            vec![Bytes::from("b"), Bytes::from("c")]
        );
        assert_eq!(oa.walked(dir, b"b"), vec![Bytes::from("c")]);
        // A listing continued (not first) appends; a new listing starts over.
        oa.listed(dir, false, &[entry("z", libc::S_IFREG, 1)], 1000);
        assert_eq!(oa.walked(dir, b"c"), vec![Bytes::from("z")]);
        oa.listed(dir, true, &files(ORDER_MAX + 10), 1000);
        let inner = oa.inner.lock();
        assert_eq!(inner.orders.peek(&dir).unwrap().names.len(), ORDER_MAX);
    }

    fn ahead(at: Instant) -> Ahead {
        Ahead {
            sent_at: at,
            caller: Default::default(),
            session: 0,
            connection: 0,
            attr_generation: 0,
            cache_generation: 0,
            dir: Ino(1),
            recalls: 0,
            changed: Default::default(),
            outcome: watch::channel(None).1,
        }
    }

    #[test]
    fn held_handles_are_capped_taken_once_and_expire() {
        let oa = OpenAhead::default();
        let now = Instant::now();
        for i in 0..HELD_MAX as u64 {
            assert!(oa.hold(Ino(100 + i), ahead(now)));
        }
        assert!(!oa.hold(Ino(1), ahead(now)), "over the cap");
        // A walk asks for no more than there is room for.
        oa.listed(Ino(5), true, &files(20), 1000);
        assert!(oa.walked(Ino(5), b"f000").is_empty());
        assert!(oa.walked(Ino(5), b"f001").is_empty());
        // Taken from the table is not off the server: still outstanding until released.
        assert!(oa.take(Ino(150)).is_some());
        assert!(!oa.hold(Ino(1), ahead(now)), "still over the cap");
        oa.released();
        assert!(oa.hold(Ino(1), ahead(now)));
        assert!(oa.take(Ino(1)).is_some());
        oa.released();
        assert!(!oa.hold(Ino(100), ahead(now)), "held already");
        assert!(oa.take(Ino(100)).is_some());
        assert!(oa.take(Ino(100)).is_none());
        oa.changed(Ino(101));
        let (a, changed) = oa.take(Ino(101)).unwrap();
        assert!(a.changed.load(Ordering::Relaxed));
        // A change while its reader waits for the reply still counts.
        let (_, waiting) = oa.take(Ino(102)).unwrap();
        oa.changed(Ino(102));
        assert!(waiting.load(Ordering::Relaxed));
        oa.claimed(Ino(102));
        drop(changed);
        assert!(oa.expired(now).is_empty());
        let later = now + CLAIM_WITHIN + Duration::from_millis(1);
        assert_eq!(oa.expired(later).len(), HELD_MAX - 4);
        assert_eq!(oa.held(), 0);
    }

    #[test]
    fn only_plain_reads_can_be_stood_for() {
        assert!(reads_only(libc::O_RDONLY as u32));
        assert!(reads_only(
            (libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_LARGEFILE) as u32
        ));
        assert!(!reads_only(libc::O_RDWR as u32));
        assert!(!reads_only(libc::O_WRONLY as u32));
        assert!(!reads_only((libc::O_RDONLY | libc::O_TRUNC) as u32));
        assert!(!reads_only((libc::O_RDONLY | libc::O_DIRECT) as u32));
        assert!(!reads_only((libc::O_RDONLY | libc::O_NOATIME) as u32));
    }
}
