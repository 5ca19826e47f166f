//! Runs a request's task on the thread that read the request until it must wait, and gives
//! it to the runtime only when what it waits for is ready (both sides: the mount's FUSE
//! requests, the server's requests from a connection).
//!
//! Spawning a task that waits (most do: for the server's reply, for a worker) wakes a
//! runtime thread only to poll it once more and park it; one that needs no waiting is
//! answered on the thread that read it. Here the task's first poll uses a waker of its own;
//! when that waker fires (say the reply's arrival, on the runtime thread that read it), the task
//! is spawned there, without waking anyone. A wake during the first poll (a task that yields)
//! spawns it as soon as that poll returns. Either way the task is spawned exactly once, and
//! from then on the runtime polls it with its own waker.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use tokio::runtime::Handle;

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

enum State {
    /// Its first poll is running.
    Polling,
    /// Woken while its first poll ran: spawn it when that poll returns.
    WokenWhilePolling,
    /// Waiting for its first wake, not on the runtime.
    Parked(Task),
    /// On the runtime (or done).
    Spawned,
}

struct FirstPoll {
    state: Mutex<State>,
    rt: Handle,
}

impl FirstPoll {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding it can only be in `spawn`; the state is still whole.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Wake for FirstPoll {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let task = {
            let mut state = self.lock();
            match std::mem::replace(&mut *state, State::Spawned) {
                State::Polling => {
                    *state = State::WokenWhilePolling;
                    return;
                }
                State::Parked(task) => task,
                other => {
                    *state = other;
                    return;
                }
            }
        };
        self.rt.spawn(task);
    }
}

/// Polls `task` once on this thread (inside `rt`'s context); if it is not done, hands it to
/// `rt` when it is woken (at once if it was woken during that poll).
pub fn run(rt: &Handle, task: impl Future<Output = ()> + Send + 'static) {
    let mut task: Task = Box::pin(task);
    let first = Arc::new(FirstPoll {
        state: Mutex::new(State::Polling),
        rt: rt.clone(),
    });
    let waker = Waker::from(first.clone());
    let _in_runtime = rt.enter();
    if let Poll::Ready(()) = task.as_mut().poll(&mut Context::from_waker(&waker)) {
        *first.lock() = State::Spawned;
        return;
    }
    let mut state = first.lock();
    match *state {
        State::WokenWhilePolling => {
            *state = State::Spawned;
            drop(state);
            rt.spawn(task);
        }
        _ => *state = State::Parked(task),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// Waits until `done` reaches `n` (panics after 10 s).
    fn until(done: &AtomicUsize, n: usize) {
        let start = std::time::Instant::now();
        while done.load(Ordering::SeqCst) < n {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} of {n} tasks ended",
                done.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn tasks_finish_however_and_wherever_they_are_woken() {
        let rt = runtime();
        let done = Arc::new(AtomicUsize::new(0));
        let n = 2000;
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<tokio::sync::oneshot::Sender<()>>();
        // Woken from a runtime task (as a reply from the reader), one at a time.
        rt.spawn(async move {
            while let Some(s) = rx.recv().await {
                let _ = s.send(());
            }
        });
        for i in 0..n {
            let d = done.clone();
            match i % 4 {
                // Done at once.
                0 => run(rt.handle(), async move {
                    d.fetch_add(1, Ordering::SeqCst);
                }),
                // Yields: woken during its first poll.
                1 => run(rt.handle(), async move {
                    tokio::task::yield_now().await;
                    d.fetch_add(1, Ordering::SeqCst);
                }),
                // Waits for a runtime task, then for a timer, then is done.
                2 => {
                    let (s, r) = tokio::sync::oneshot::channel();
                    tx.send(s).unwrap();
                    run(rt.handle(), async move {
                        r.await.unwrap();
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        d.fetch_add(1, Ordering::SeqCst);
                    });
                }
                // Woken from a plain thread.
                _ => {
                    let (s, r) = tokio::sync::oneshot::channel();
                    run(rt.handle(), async move {
                        r.await.unwrap();
                        d.fetch_add(1, Ordering::SeqCst);
                    });
                    std::thread::spawn(move || s.send(()).unwrap());
                }
            }
        }
        until(&done, n);
    }

    #[test]
    fn a_task_woken_by_several_things_runs_once_to_its_end() {
        let rt = runtime();
        let done = Arc::new(AtomicUsize::new(0));
        let notify = Arc::new(tokio::sync::Notify::new());
        let (d, nf) = (done.clone(), notify.clone());
        // Registers with two things that both fire, the second from a plain thread: the
        // wakes after the first find it on the runtime already.
        run(rt.handle(), async move {
            let (s, r) = tokio::sync::oneshot::channel::<()>();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                let _ = s.send(());
            });
            let _ = tokio::join!(nf.notified(), r);
            d.fetch_add(1, Ordering::SeqCst);
        });
        for _ in 0..3 {
            notify.notify_one();
            std::thread::sleep(Duration::from_millis(10));
        }
        until(&done, 1);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_task_that_panics_in_its_first_poll_unwinds_to_the_caller_and_nothing_else_stops() {
        let rt = runtime();
        let done = Arc::new(AtomicUsize::new(0));
        let notify = Arc::new(tokio::sync::Notify::new());
        let nf = notify.clone();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run(rt.handle(), async move {
                // Registers a waker, then panics.
                let mut waiting = std::pin::pin!(nf.notified());
                let _ = futures_poll_once(waiting.as_mut()).await;
                panic!("in the first poll");
            })
        }));
        assert!(caught.is_err(), "the panic reached the caller");
        // A wake of what it left behind does nothing; others still run to their end.
        notify.notify_waiters();
        for _ in 0..10 {
            let d = done.clone();
            run(rt.handle(), async move {
                tokio::task::yield_now().await;
                d.fetch_add(1, Ordering::SeqCst);
            });
        }
        until(&done, 10);
    }

    /// Polls `f` once, whatever it gives.
    async fn futures_poll_once<F: Future + Unpin>(mut f: F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut f).poll(cx))).await
    }
}
