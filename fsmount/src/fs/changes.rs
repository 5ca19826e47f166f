//! Other clients' changes, as the server tells them (Notify frames): what this mount cached
//! of them is dropped at once, and the kernel is told which of its cached names and inodes
//! to drop (`Invalidate`, carried out by the adapter off the FUSE thread). Without these,
//! the same changes are seen when the timeouts run out.

use bytes::Bytes;

use super::{Fs, Ino, Names};

/// What the kernel must drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidate {
    /// The name `name` in directory `parent`.
    Entry(Ino, Bytes),
    /// The inode's attributes and cached pages.
    Inode(Ino),
    /// The inode's attributes only.
    Attrs(Ino),
    /// Nothing to drop: told once the kernel has dropped what came before it.
    Done(Done),
}

/// A wake-up for whoever waits for the kernel to have dropped something.
#[derive(Debug, Clone)]
pub struct Done(pub std::sync::Arc<tokio::sync::Notify>);

impl PartialEq for Done {
    fn eq(&self, other: &Done) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Done {}

/// Invalidation batches queued for the kernel and done (see `Fs::kernel_backlog`).
#[derive(Debug, Default)]
pub struct Backlog {
    pub queued: std::sync::atomic::AtomicU64,
    pub done: std::sync::atomic::AtomicU64,
}

/// How long a call waits for the kernel to drop what it cached (never long: no call must
/// hang on the kernel).
const KERNEL_DROP: std::time::Duration = std::time::Duration::from_secs(2);

impl Fs {
    /// Tells the kernel to drop `batch` and waits until it has, at most `KERNEL_DROP`
    /// (nothing to wait for when the mount has no kernel to tell).
    pub(in crate::fs) async fn kernel_drops(&self, mut batch: Vec<Invalidate>) {
        let Some(tell) = self.kernel.get() else {
            return;
        };
        let done = std::sync::Arc::new(tokio::sync::Notify::new());
        batch.push(Invalidate::Done(Done(done.clone())));
        tell(batch);
        let _ = tokio::time::timeout(KERNEL_DROP, done.notified()).await;
    }

    /// Before an open is answered: the kernel has dropped what it was told to drop so far
    /// (a notice of another client's change is handed to the kernel on a thread of its
    /// own, and may still be queued when the open's reply comes), and, if `stale`, the
    /// attributes of `stale` it holds, which the server's open reply shows changed. The
    /// kernel takes a file's size from its cached attributes and an open does not ask for
    /// them again: without this, `open` after another client's `close` could read the
    /// old length (close-to-open). Costs nothing when nothing is queued or stale.
    pub(in crate::fs) async fn kernel_caught_up(&self, stale: Option<Ino>) {
        use std::sync::atomic::Ordering;
        let backlog = &self.kernel_backlog;
        let behind = backlog.done.load(Ordering::Acquire) < backlog.queued.load(Ordering::Acquire);
        if behind || stale.is_some() {
            self.kernel_drops(stale.into_iter().map(Invalidate::Attrs).collect())
                .await;
        }
    }
}

impl Fs {
    /// Drops what this mount cached of `changes` and returns what the kernel must drop.
    pub fn changed(&self, changes: &[proto::Change]) -> Vec<Invalidate> {
        let mut out = Vec::new();
        for change in changes {
            if change.everything {
                // A recall may have been among what was lost.
                self.give_back_all();
                let mut n = self.names();
                n.attrs.forget_all();
                n.known.clear();
                n.predictions.forget_kept_in(None);
                for ino in n.inodes.all() {
                    self.dropped(&mut n, ino, &mut out);
                }
                continue;
            }
            if !change.name.is_empty() {
                let mut n = self.names();
                let dir = n.inodes.at_path(&change.dir);
                let child = dir.and_then(|d| n.inodes.child(d, &change.name));
                if let Some(dir) = dir {
                    n.known.forget(dir);
                    self.dropped(&mut n, dir, &mut out);
                    out.push(Invalidate::Entry(dir, change.name.clone()));
                }
                if let Some(child) = child {
                    self.dropped(&mut n, child, &mut out);
                }
            }
            if !change.path.is_empty() {
                let mut n = self.names();
                if let Some(ino) = n.inodes.at_path(&change.path) {
                    self.dropped(&mut n, ino, &mut out);
                }
            }
            if let Some(id) = &change.object {
                let mut n = self.names();
                if let Some(ino) = n.inodes.with_identity(id) {
                    self.dropped(&mut n, ino, &mut out);
                }
            }
        }
        out
    }

    /// `ino` changed elsewhere: its attributes and blocks go, here and in the kernel.
    fn dropped(&self, n: &mut Names, ino: Ino, out: &mut Vec<Invalidate>) {
        self.open_ahead.changed(ino);
        n.attrs.forget(ino);
        n.predictions.unpredictable(ino);
        if let Some(cache) = &self.cache {
            cache.invalidate(ino);
        }
        out.push(Invalidate::Inode(ino));
    }
}
