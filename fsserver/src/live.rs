//! The authenticated connections of the server, each with what it was granted, so that a
//! reload can end exactly the connections it takes something away from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::stats::ConnStats;
use tokio::sync::watch;

/// Given a connection's (export, token name, token secret, export directory), why it must
/// end, if it must.
pub type EndWhy<'a> = dyn Fn(&str, &str, &[u8], &Path) -> Option<String> + 'a;

#[derive(Debug, Default)]
pub struct Live {
    next: AtomicU64,
    by_id: Mutex<HashMap<u64, Entry>>,
}

#[derive(Debug)]
struct Entry {
    export: String,
    dir: PathBuf,
    secret: Vec<u8>,
    /// Set to the reason when the connection must end.
    end: watch::Sender<Option<String>>,
    /// Its figures; also where the token's name is (`stats.token`).
    stats: std::sync::Arc<ConnStats>,
}

/// A registered connection; unregisters when dropped.
pub struct Registration<'a> {
    live: &'a Live,
    id: u64,
    /// Changes to `Some(reason)` when the connection must end.
    pub ended: watch::Receiver<Option<String>>,
}

impl Live {
    /// Registers a connection to `export` (served from `dir`), authenticated with the token
    /// `stats.token` whose secret is `secret`.
    pub fn register(
        &self,
        export: &str,
        dir: &Path,
        secret: &[u8],
        stats: std::sync::Arc<ConnStats>,
    ) -> Registration<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (end, ended) = watch::channel(None);
        self.by_id.lock().insert(
            id,
            Entry {
                export: export.to_string(),
                dir: dir.to_path_buf(),
                secret: secret.to_vec(),
                end,
                stats,
            },
        );
        Registration {
            live: self,
            id,
            ended,
        }
    }

    /// The figures of every connection now registered.
    pub fn connections(&self) -> Vec<std::sync::Arc<ConnStats>> {
        self.by_id
            .lock()
            .values()
            .map(|e| e.stats.clone())
            .collect()
    }

    /// Ends every connection for which `why(export, token, secret, dir)` gives a reason;
    /// returns how many.
    pub fn end_where(&self, why: &EndWhy<'_>) -> usize {
        let by_id = self.by_id.lock();
        let mut ended = 0;
        for e in by_id.values() {
            if let Some(reason) = why(&e.export, &e.stats.token, &e.secret, &e.dir) {
                e.end.send_replace(Some(reason));
                ended += 1;
            }
        }
        ended
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.live.by_id.lock().remove(&self.id);
    }
}
