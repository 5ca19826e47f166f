//! Other clients' changes, as the server tells them (Notify frames): what this mount cached
//! of them is dropped at once, and the kernel is told which of its cached names and inodes
//! to drop (`Invalidate`, carried out by the adapter off the FUSE thread). Without these,
//! the same changes are seen when the timeouts run out.

use bytes::Bytes;

use super::{Fs, Ino};

/// What the kernel must drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidate {
    /// The name `name` in directory `parent`.
    Entry(Ino, Bytes),
    /// The inode's attributes and cached pages.
    Inode(Ino),
    /// The inode's attributes only.
    Attrs(Ino),
}

impl Fs {
    /// Drops what this mount cached of `changes` and returns what the kernel must drop.
    pub fn changed(&self, changes: &[proto::Change]) -> Vec<Invalidate> {
        let mut out = Vec::new();
        for change in changes {
            if change.everything {
                // A recall may have been among what was lost.
                self.give_back_all();
                self.attrs.lock().forget_all();
                self.known.lock().clear();
                self.predictions.forget_kept_in(None);
                let all = self.inodes.lock().all();
                for ino in all {
                    self.dropped(ino, &mut out);
                }
                continue;
            }
            if !change.name.is_empty() {
                let (dir, child) = {
                    let inodes = self.inodes.lock();
                    let dir = inodes.at_path(&change.dir);
                    (dir, dir.and_then(|d| inodes.child(d, &change.name)))
                };
                if let Some(dir) = dir {
                    self.known.lock().forget(dir);
                    self.dropped(dir, &mut out);
                    out.push(Invalidate::Entry(dir, change.name.clone()));
                }
                if let Some(child) = child {
                    self.dropped(child, &mut out);
                }
            }
            if !change.path.is_empty() {
                let ino = self.inodes.lock().at_path(&change.path);
                if let Some(ino) = ino {
                    self.dropped(ino, &mut out);
                }
            }
            if let Some(id) = &change.object {
                let ino = self.inodes.lock().with_identity(id);
                if let Some(ino) = ino {
                    self.dropped(ino, &mut out);
                }
            }
        }
        out
    }

    /// `ino` changed elsewhere: its attributes and blocks go, here and in the kernel.
    fn dropped(&self, ino: Ino, out: &mut Vec<Invalidate>) {
        self.attrs.lock().forget(ino);
        self.predictions.unpredictable(ino);
        if let Some(cache) = &self.cache {
            cache.invalidate(ino);
        }
        out.push(Invalidate::Inode(ino));
    }
}
