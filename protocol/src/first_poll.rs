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
//!
//! A thread that hands out results (the mount's reader of replies) may instead poll the
//! tasks it wakes itself (`poll_woken_here`): a task waiting for its first wake that is woken
//! inside that call is polled on this thread when the call returns, outside whatever lock
//! the wake came from, and parked again if it must wait once more. That saves spawning it,
//! and the wake of another runtime thread that would steal it.

use std::cell::RefCell;
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

/// Tasks woken inside `poll_woken_here`, each with its state, in the order of their wakes.
type Woken = Vec<(Arc<FirstPoll>, Task)>;

thread_local! {
    /// Inside `poll_woken_here`: the tasks woken on this thread so far, to poll when it ends.
    static WOKEN_HERE: RefCell<Option<Woken>> = const { RefCell::new(None) };
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
                State::Parked(task) => match queue_here(self, task) {
                    // Polled when `poll_woken_here` returns; a wake before then makes that
                    // poll's end spawn it, as during a first poll.
                    None => {
                        *state = State::Polling;
                        return;
                    }
                    Some(task) => task,
                },
                other => {
                    *state = other;
                    return;
                }
            }
        };
        self.rt.spawn(task);
    }
}

/// Queues `task` for the `poll_woken_here` running on this thread: None, or the task back if
/// none runs (or this thread's locals are being torn down).
fn queue_here(first: &Arc<FirstPoll>, task: Task) -> Option<Task> {
    let mut task = Some(task);
    let _ = WOKEN_HERE.try_with(|woken| {
        if let Some(woken) = woken.borrow_mut().as_mut() {
            woken.extend(task.take().map(|t| (first.clone(), t)));
        }
    });
    task
}

/// Runs `f`; the tasks of `run` still waiting for their first wake that `f` wakes on this
/// thread are polled here once `f` has returned (each once; one that must wait again is
/// parked again). A task that panics here is dropped, as the runtime drops one, and the
/// others still run. Not nested: inside `f`, a call of its own polls nothing more.
pub fn poll_woken_here<R>(f: impl FnOnce() -> R) -> R {
    let outer = WOKEN_HERE.with(|here| here.borrow().is_some());
    if outer {
        return f();
    }
    WOKEN_HERE.with(|here| *here.borrow_mut() = Some(Vec::new()));
    // Taken back even if `f` panics: the tasks it woke then go to the runtime, and a later
    // wake on this thread spawns as usual.
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            let woken = WOKEN_HERE.with(|here| here.borrow_mut().take());
            for (first, task) in woken.unwrap_or_default() {
                *first.lock() = State::Spawned;
                first.rt.spawn(task);
            }
        }
    }
    let leave = Leave;
    let r = f();
    let woken = WOKEN_HERE
        .with(|here| here.borrow_mut().take())
        .unwrap_or_default();
    drop(leave);
    for (first, task) in woken {
        // Not on the budget of the task that calls this (the reader's, spent by a burst of
        // replies): with none left, the reply's receiver would say Pending.
        let polled = std::panic::AssertUnwindSafe(|| poll_here(first, task, Budget::Own));
        if std::panic::catch_unwind(polled).is_err() {
            tracing::error!("a task panicked; it was dropped");
        }
    }
    r
}

/// Polls `task` once on this thread (inside `rt`'s context); if it is not done, hands it to
/// `rt` when it is woken (at once if it was woken during that poll).
pub fn run(rt: &Handle, task: impl Future<Output = ()> + Send + 'static) {
    let first = Arc::new(FirstPoll {
        state: Mutex::new(State::Polling),
        rt: rt.clone(),
    });
    poll_here(first, Box::pin(task), Budget::Caller);
}

/// Whose cooperative budget (tokio's) a poll here spends.
enum Budget {
    /// That of the task this runs in, if any.
    Caller,
    /// None: the poll is unconstrained.
    Own,
}

/// Polls `task`, whose state is `Polling`, on this thread; if it is not done, parks it for
/// its next wake, or spawns it if it was woken meanwhile.
fn poll_here(first: Arc<FirstPoll>, mut task: Task, budget: Budget) {
    let waker = Waker::from(first.clone());
    let _in_runtime = first.rt.enter();
    let mut cx = Context::from_waker(&waker);
    let polled = match budget {
        Budget::Caller => task.as_mut().poll(&mut cx),
        Budget::Own => {
            let once = std::future::poll_fn(|cx| task.as_mut().poll(cx));
            std::pin::pin!(tokio::task::unconstrained(once)).poll(&mut cx)
        }
    };
    if let Poll::Ready(()) = polled {
        *first.lock() = State::Spawned;
        return;
    }
    let mut state = first.lock();
    match *state {
        State::WokenWhilePolling => {
            *state = State::Spawned;
            drop(state);
            first.rt.spawn(task);
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

    /// A task of `run` that waits for the sender returned, then counts itself in `done`.
    fn counted_waiter(rt: &Handle, done: &Arc<AtomicUsize>) -> tokio::sync::oneshot::Sender<()> {
        let (s, r) = tokio::sync::oneshot::channel::<()>();
        let d = done.clone();
        run(rt, async move {
            r.await.unwrap();
            d.fetch_add(1, Ordering::SeqCst);
        });
        s
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

    #[test]
    fn tasks_woken_inside_poll_woken_here_run_on_that_thread_before_it_returns() {
        let rt = runtime();
        let here = std::thread::current().id();
        let ran_on = Arc::new(Mutex::new(Vec::new()));
        let mut senders = Vec::new();
        for _ in 0..3 {
            let (s, r) = tokio::sync::oneshot::channel::<()>();
            let ran_on = ran_on.clone();
            run(rt.handle(), async move {
                r.await.unwrap();
                ran_on.lock().unwrap().push(std::thread::current().id());
            });
            senders.push(s);
        }
        let returned = poll_woken_here(|| {
            for s in senders {
                s.send(()).unwrap();
            }
            // Not yet: polled once this returns, outside it.
            assert!(ran_on.lock().unwrap().is_empty());
            7
        });
        assert_eq!(returned, 7);
        assert_eq!(*ran_on.lock().unwrap(), vec![here; 3]);
    }

    #[test]
    fn a_task_polled_here_that_waits_again_is_finished_by_whoever_wakes_it_next() {
        let rt = runtime();
        let done = Arc::new(AtomicUsize::new(0));
        let (s1, r1) = tokio::sync::oneshot::channel::<()>();
        let (s2, r2) = tokio::sync::oneshot::channel::<()>();
        let (s3, r3) = tokio::sync::oneshot::channel::<()>();
        let d = done.clone();
        run(rt.handle(), async move {
            r1.await.unwrap();
            d.fetch_add(1, Ordering::SeqCst);
            r2.await.unwrap();
            d.fetch_add(1, Ordering::SeqCst);
            r3.await.unwrap();
            d.fetch_add(1, Ordering::SeqCst);
        });
        poll_woken_here(|| s1.send(()).unwrap());
        assert_eq!(
            done.load(Ordering::SeqCst),
            1,
            "polled here up to its next wait"
        );
        // Woken here again, then from a plain thread (spawned on the runtime).
        poll_woken_here(|| s2.send(()).unwrap());
        assert_eq!(done.load(Ordering::SeqCst), 2);
        std::thread::spawn(move || s3.send(()).unwrap());
        until(&done, 3);
    }

    #[test]
    fn a_task_woken_here_and_elsewhere_at_once_runs_once_to_its_end() {
        let rt = runtime();
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..500 {
            let notify = Arc::new(tokio::sync::Notify::new());
            let (s, r) = tokio::sync::oneshot::channel::<()>();
            let (d, nf) = (done.clone(), notify.clone());
            run(rt.handle(), async move {
                let _ = tokio::join!(nf.notified(), r);
                d.fetch_add(1, Ordering::SeqCst);
            });
            // The other wake races the one here from a plain thread.
            let other = std::thread::spawn(move || notify.notify_one());
            poll_woken_here(|| s.send(()).unwrap());
            other.join().unwrap();
        }
        until(&done, 500);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(done.load(Ordering::SeqCst), 500);
    }

    #[test]
    fn a_task_that_panics_when_polled_here_is_dropped_and_the_others_still_run() {
        let rt = runtime();
        let done = Arc::new(AtomicUsize::new(0));
        let mut senders = Vec::new();
        for i in 0..3 {
            let (s, r) = tokio::sync::oneshot::channel::<()>();
            let d = done.clone();
            run(rt.handle(), async move {
                r.await.unwrap();
                assert!(i != 1, "the second task panics");
                d.fetch_add(1, Ordering::SeqCst);
            });
            senders.push(s);
        }
        poll_woken_here(|| senders.drain(..).for_each(|s| s.send(()).unwrap()));
        assert_eq!(done.load(Ordering::SeqCst), 2);
        // Nothing is left in this thread's state: the next wake here spawns as usual.
        counted_waiter(rt.handle(), &done).send(()).unwrap();
        until(&done, 3);
    }

    #[test]
    fn a_reader_that_spent_its_budget_still_finishes_what_it_wakes() {
        let rt = runtime();
        let done = Arc::new(AtomicUsize::new(0));
        let s = counted_waiter(rt.handle(), &done);
        let seen = done.clone();
        let finished_here = rt
            .block_on(rt.spawn(async move {
                // Spent as a burst of replies would spend it.
                let permits = tokio::sync::Semaphore::new(1 << 20);
                while tokio::task::coop::has_budget_remaining() {
                    permits.acquire().await.unwrap().forget();
                }
                poll_woken_here(|| s.send(()).unwrap());
                seen.load(Ordering::SeqCst)
            }))
            .unwrap();
        assert_eq!(finished_here, 1, "finished on the reader's thread");
    }

    #[test]
    fn tasks_woken_before_the_call_panics_go_to_the_runtime() {
        let rt = runtime();
        let done = Arc::new(AtomicUsize::new(0));
        let s = counted_waiter(rt.handle(), &done);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            poll_woken_here(|| {
                s.send(()).unwrap();
                panic!("after a wake");
            })
        }));
        assert!(caught.is_err());
        until(&done, 1);
    }

    #[test]
    fn a_task_polled_here_may_wake_others_and_calls_may_nest() {
        let rt = runtime();
        let done = Arc::new(AtomicUsize::new(0));
        let (s1, r1) = tokio::sync::oneshot::channel::<()>();
        let s2 = counted_waiter(rt.handle(), &done);
        let s3 = counted_waiter(rt.handle(), &done);
        let d = done.clone();
        // Woken here first; wakes the third, still parked.
        run(rt.handle(), async move {
            r1.await.unwrap();
            s3.send(()).unwrap();
            d.fetch_add(1, Ordering::SeqCst);
        });
        poll_woken_here(|| {
            s1.send(()).unwrap();
            poll_woken_here(|| s2.send(()).unwrap());
        });
        until(&done, 3);
    }

    /// Panics if polled by two threads at once or after its end.
    struct Guarded<F> {
        inner: Pin<Box<F>>,
        busy: std::sync::atomic::AtomicBool,
        ended: bool,
    }

    impl<F: Future<Output = ()>> Future for Guarded<F> {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            assert!(!self.ended, "polled after its end");
            assert!(
                !self.busy.swap(true, Ordering::SeqCst),
                "polled by two threads"
            );
            std::thread::yield_now();
            let r = self.inner.as_mut().poll(cx);
            self.busy.store(false, Ordering::SeqCst);
            self.ended = r.is_ready();
            r
        }
    }

    #[test]
    fn tasks_of_many_steps_woken_here_and_elsewhere_each_run_once_to_their_end() {
        let rt = runtime();
        let done = Arc::new(AtomicUsize::new(0));
        let (n, steps) = (1000, 4);
        let (to_reader, from_tasks) =
            std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>();
        let noise: Arc<Vec<tokio::sync::Notify>> =
            Arc::new((0..n).map(|_| tokio::sync::Notify::new()).collect());
        // A reader on the runtime: four wakes in five inside `poll_woken_here`.
        let reader = rt.spawn(async move {
            let mut k = 0usize;
            loop {
                match from_tasks.try_recv() {
                    Ok(s) => {
                        k += 1;
                        if k.is_multiple_of(5) {
                            let _ = s.send(());
                        } else {
                            poll_woken_here(|| {
                                let _ = s.send(());
                            });
                        }
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => tokio::task::yield_now().await,
                    Err(_) => return,
                }
            }
        });
        // Spurious wakes from a plain thread meanwhile.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let noisy = {
            let (noise, stop) = (noise.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    noise.iter().step_by(7).for_each(|nf| nf.notify_waiters());
                }
            })
        };
        for i in 0..n {
            let (d, tx, noise) = (done.clone(), to_reader.clone(), noise.clone());
            let task = async move {
                for _ in 0..steps {
                    let (s, r) = tokio::sync::oneshot::channel::<()>();
                    tx.send(s).unwrap();
                    let mut r = std::pin::pin!(r);
                    loop {
                        tokio::select! {
                            v = &mut r => { v.unwrap(); break; }
                            _ = noise[i].notified() => {}
                        }
                    }
                }
                d.fetch_add(1, Ordering::SeqCst);
            };
            run(
                rt.handle(),
                Guarded {
                    inner: Box::pin(task),
                    busy: Default::default(),
                    ended: false,
                },
            );
        }
        drop(to_reader);
        until(&done, n);
        stop.store(true, Ordering::Relaxed);
        noisy.join().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(done.load(Ordering::SeqCst), n);
        reader.abort();
    }

    /// Polls `f` once, whatever it gives.
    async fn futures_poll_once<F: Future + Unpin>(mut f: F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut f).poll(cx))).await
    }
}
