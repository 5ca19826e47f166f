//! Open file handles of one connection: a number the client holds, mapped to an open file.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::FsError;

#[derive(Debug, Default)]
pub struct Handles {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<File>>>,
}

impl Handles {
    /// Adds an open file under `wanted` (the client's choice), or a fresh number if 0.
    pub fn insert(&self, file: File, wanted: u64) -> Result<u64, FsError> {
        let mut open = self.open.lock();
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
        self.open
            .lock()
            .get(&id)
            .cloned()
            .ok_or(FsError::BadHandle(id))
    }

    pub fn remove(&self, id: u64) -> Result<Arc<File>, FsError> {
        self.open.lock().remove(&id).ok_or(FsError::BadHandle(id))
    }

    pub fn len(&self) -> usize {
        self.open.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
