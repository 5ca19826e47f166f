//! A request's place among its connection's and its token's running requests. The reader
//! takes a slot before it reads on (`Slots::take`: at most `max_in_flight` per connection,
//! and the token's share across its connections), so a client cannot queue more work than
//! that. A request that must wait for a lease recall gives its connection's slot up while
//! it waits (`Held::parked`), holding a parked slot instead (as many again per connection),
//! so requests parked on another client's lease never stall the connection's other
//! requests, and what one connection keeps in memory stays bounded. It then runs on its
//! parked slot: the requests read meanwhile may all be waiting for it (ordered behind it),
//! holding every running slot, so waiting for one of those again would wait for ever. It
//! keeps its token's slot throughout (never waiting for one again either), so a token's
//! requests never run beyond its share.

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
    /// Held instead of the connection's running slot once it waited for a recall.
    _parked: Option<OwnedSemaphorePermit>,
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
            _parked: None,
        }
    }

    /// Running slots free now (for tests and status).
    pub fn free(&self) -> usize {
        self.in_flight.available_permits()
    }
}

impl Held {
    /// Runs `wait` (a wait for recalls) holding a parked slot instead of the connection's
    /// running one, and keeps it until dropped: it never waits for a slot again (see the
    /// module's comment). With every parked slot taken it waits keeping its running slot,
    /// so a connection keeps at most twice `max_in_flight` requests. A request parks once
    /// at most; a second wait keeps what it holds.
    pub async fn parked<F: Future>(&mut self, wait: F) -> F::Output {
        if self._parked.is_some() {
            return wait.await;
        }
        let Ok(parked) = self.slots.parked.clone().try_acquire_owned() else {
            return wait.await;
        };
        self._in_flight = None;
        self._parked = Some(parked);
        wait.await
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
        self._parked = None;
        let out = wait.await;
        *self = self.slots.take().await;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// `held` parked (on a task) until the sender is used; the task gives it back then.
    fn park_until_released(
        mut held: Held,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Held>,
    ) {
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let parked = tokio::spawn(async move {
            held.parked(async move {
                let _ = released.await;
            })
            .await;
            held
        });
        (release, parked)
    }

    #[tokio::test]
    async fn a_parked_request_gives_its_slot_to_the_next_and_runs_on_its_parked_one() {
        let slots = Slots::new(1, None);
        let first = slots.take().await;
        assert_eq!(slots.free(), 0);
        let (release, parked) = park_until_released(first);
        let second = tokio::time::timeout(Duration::from_secs(1), slots.take())
            .await
            .expect("the slot of a parked request is free");
        // A second parked request finds no parked slot: it waits keeping its running one.
        let mut second = second;
        let s = slots.clone();
        second
            .parked(async move { assert_eq!(s.free(), 0, "still running") })
            .await;
        // The recall ends while the running slot is taken by a request that may be
        // waiting for the first one (ordered behind it): the first goes on regardless.
        release.send(()).unwrap();
        let first = tokio::time::timeout(Duration::from_secs(1), parked)
            .await
            .expect("a request back from a recall waits for no running slot")
            .unwrap();
        assert_eq!(slots.free(), 0, "the second still runs");
        drop(second);
        assert_eq!(slots.free(), 1);
        // Its parked slot is the next parked request's once it ends.
        let mut third = slots.take().await;
        drop(first);
        let s = slots.clone();
        third
            .parked(async move { assert_eq!(s.free(), 1, "parked, its running slot free") })
            .await;
    }

    #[tokio::test]
    async fn a_parked_request_keeps_its_token_s_share() {
        let share = Arc::new(Semaphore::new(1));
        let slots = Slots::new(2, Some(share.clone()));
        let first = slots.take().await;
        let (release, parked) = park_until_released(first);
        tokio::task::yield_now().await;
        assert_eq!(slots.free(), 2, "its connection's slot is free");
        assert!(
            tokio::time::timeout(Duration::from_millis(100), slots.take())
                .await
                .is_err(),
            "the token's share is still taken"
        );
        release.send(()).unwrap();
        let first = parked.await.unwrap();
        assert_eq!(share.available_permits(), 0, "it runs within the share");
        drop(first);
        assert_eq!(share.available_permits(), 1);
    }
}
