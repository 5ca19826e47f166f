//! Open file handles of one connection: a number the client holds, mapped to an open file.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::FsError;

#[derive(Debug, Default)]
pub struct Handles {
    /// Most files open at once (0: no limit); one more open gets EMFILE.
    max_open: usize,
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<File>>>,
    /// Handles of an earlier session that could not be reopened: requests on them fail
    /// with ESTALE until the client closes them.
    stale: Mutex<HashSet<u64>>,
}

impl Handles {
    /// A session's handles, at most `max_open` open at once (0: no limit).
    pub fn with_limit(max_open: usize) -> Handles {
        Handles {
            max_open,
            ..Handles::default()
        }
    }

    /// Adds an open file under `wanted` (the client's choice), or a fresh number if 0.
    pub fn insert(&self, file: File, wanted: u64) -> Result<u64, FsError> {
        let mut open = self.open.lock();
        if self.max_open > 0 && open.len() >= self.max_open {
            return Err(FsError::TooManyOpen(self.max_open));
        }
        let id = match wanted {
            0 => loop {
                let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
                if !open.contains_key(&id) {
                    break id;
                }
            },
            id if open.contains_key(&id) => return Err(FsError::HandleInUse(id)),
            id => id,
        };
        open.insert(id, Arc::new(file));
        Ok(id)
    }

    pub fn get(&self, id: u64) -> Result<Arc<File>, FsError> {
        if let Some(file) = self.open.lock().get(&id) {
            return Ok(file.clone());
        }
        Err(self.missing(id))
    }

    /// Closes `id`; a stale handle is forgotten (Ok(None)).
    pub fn remove(&self, id: u64) -> Result<Option<Arc<File>>, FsError> {
        if let Some(file) = self.open.lock().remove(&id) {
            return Ok(Some(file));
        }
        match self.stale.lock().remove(&id) {
            true => Ok(None),
            false => Err(FsError::BadHandle(id)),
        }
    }

    /// Remembers that handle `id` of an earlier session could not be reopened.
    pub fn mark_stale(&self, id: u64) {
        if id != 0 && !self.open.lock().contains_key(&id) {
            self.stale.lock().insert(id);
        }
    }

    fn missing(&self, id: u64) -> FsError {
        match self.stale.lock().contains(&id) {
            true => FsError::Stale,
            false => FsError::BadHandle(id),
        }
    }

    pub fn len(&self) -> usize {
        self.open.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
