//! Open file handles of one connection: a number the client holds, mapped to an open file.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::FsError;

#[derive(Debug, Default)]
pub struct Handles {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<File>>>,
}

impl Handles {
    pub fn insert(&self, file: File) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.open.lock().unwrap().insert(id, Arc::new(file));
        id
    }

    pub fn get(&self, id: u64) -> Result<Arc<File>, FsError> {
        self.open
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .ok_or(FsError::BadHandle(id))
    }

    pub fn remove(&self, id: u64) -> Result<Arc<File>, FsError> {
        self.open
            .lock()
            .unwrap()
            .remove(&id)
            .ok_or(FsError::BadHandle(id))
    }

    pub fn len(&self) -> usize {
        self.open.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
