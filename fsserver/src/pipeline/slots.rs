//! A request's place among its connection's and its token's running requests. The reader
//! takes a slot before it reads on (`Slots::take`: at most `max_in_flight` per connection,
//! and the token's share across its connections), so a client cannot queue more work than
//! that. A request that must wait for a lease recall gives its slots up while it waits
//! (`Held::parked`), holding a parked slot instead (as many again per connection), so
//! requests parked on another client's lease never stall the connection's other requests,
//! and what one connection keeps in memory stays bounded.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The semaphores of one connection (and its token's, when several tokens share the
/// workers).
#[derive(Clone)]
pub struct Slots {
    in_flight: Arc<Semaphore>,
    token: Option<Arc<Semaphore>>,
    parked: Arc<Semaphore>,
}

/// The slots one request holds; given back when dropped.
pub struct Held {
    slots: Slots,
    _in_flight: Option<OwnedSemaphorePermit>,
    _token: Option<OwnedSemaphorePermit>,
}

impl Slots {
    pub fn new(max_in_flight: usize, token: Option<Arc<Semaphore>>) -> Slots {
        Slots {
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            token,
            parked: Arc::new(Semaphore::new(max_in_flight)),
        }
    }

    /// A running slot, and the token's (waits until both are free).
    pub async fn take(&self) -> Held {
        let in_flight = self.in_flight.clone().acquire_owned().await.ok();
        let token = match &self.token {
            Some(share) => share.clone().acquire_owned().await.ok(),
            None => None,
        };
        Held {
            slots: self.clone(),
            _in_flight: in_flight,
            _token: token,
        }
    }

    /// Running slots free now (for tests and status).
    pub fn free(&self) -> usize {
        self.in_flight.available_permits()
    }
}

impl Held {
    /// Runs `wait` (a wait for recalls) holding a parked slot instead of the running ones,
    /// then takes running slots again. With every parked slot taken it waits keeping its
    /// running slots (never waiting for a parked slot: a parked request waiting to run
    /// again and a running one waiting to park would wait for each other), so a
    /// connection keeps at most twice `max_in_flight` requests.
    pub async fn parked<F: Future>(&mut self, wait: F) -> F::Output {
        let Ok(parked) = self.slots.parked.clone().try_acquire_owned() else {
            return wait.await;
        };
        self._in_flight = None;
        self._token = None;
        let out = wait.await;
        let again = self.slots.take().await;
        *self = again;
        drop(parked);
        out
    }
}

impl Held {
    /// Runs `wait` holding no slot at all, then takes running slots again: for a lock
    /// wait, which may last as long as another client holds the lock, and whose number
    /// the lock table bounds (per session and token), not the connection. A connection
    /// whose every slot were taken by waits could not read the unlock that ends them.
    pub async fn apart<F: Future>(&mut self, wait: F) -> F::Output {
        self._in_flight = None;
        self._token = None;
        let out = wait.await;
        *self = self.slots.take().await;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_parked_request_gives_its_slot_to_the_next_and_takes_one_again() {
        let slots = Slots::new(1, None);
        let mut first = slots.take().await;
        assert_eq!(slots.free(), 0);
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let s = slots.clone();
        let parked = tokio::spawn(async move {
            first
                .parked(async move {
                    let _ = released.await;
                })
                .await;
            assert_eq!(s.free(), 0, "running again");
            first
        });
        let second = tokio::time::timeout(Duration::from_secs(1), slots.take())
            .await
            .expect("the slot of a parked request is free");
        // A second parked request finds no parked slot: it waits keeping its running one.
        let mut second = second;
        let s = slots.clone();
        second
            .parked(async move { assert_eq!(s.free(), 0, "still running") })
            .await;
        drop(second);
        release.send(()).unwrap();
        let first = parked.await.unwrap();
        drop(first);
        assert_eq!(slots.free(), 1);
    }
}
