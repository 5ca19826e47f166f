//! The locks and atomics of the lease table: parking_lot's and std's, or, with the
//! `shuttle` feature, shuttle's, so a test can explore the interleavings of grants,
//! admissions and recalls (as mountpoint-s3 does). The same API either way.

#[cfg(not(feature = "shuttle"))]
pub use parking_lot::{Mutex, MutexGuard};
#[cfg(not(feature = "shuttle"))]
pub use std::sync::atomic::{AtomicU64, AtomicUsize};

#[cfg(feature = "shuttle")]
pub use shuttle::sync::atomic::{AtomicU64, AtomicUsize};
#[cfg(feature = "shuttle")]
pub use shuttle::sync::MutexGuard;

/// shuttle's mutex with parking_lot's `lock` (no poisoning: a panic under it ends the test).
#[cfg(feature = "shuttle")]
#[derive(Debug, Default)]
pub struct Mutex<T>(shuttle::sync::Mutex<T>);

#[cfg(feature = "shuttle")]
impl<T> Mutex<T> {
    pub fn new(value: T) -> Self {
        Mutex(shuttle::sync::Mutex::new(value))
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
