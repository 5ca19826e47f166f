//! A connection's lane: one thread of its own that runs blocking work (file system calls)
//! in the order it is queued. The connection's ORDERED requests go there: a client's batch
//! of operations it answered locally (an `rm -rf`, a `tar x`) then costs one thread wake-up
//! for the burst, where tokio's blocking pool wakes an idle thread for every job and lets
//! them contend for the same directory.
//!
//! Contract: every job runs exactly once, on the lane or, when the lane is held up, on
//! tokio's blocking pool: a job queued while the lane's current job has run `HELD_UP` or
//! longer, or behind `MAX_QUEUED` others, goes to the pool at once, and a queued job not
//! started within `TAKEN_BACK_AFTER` is taken back and sent there; so a slow disk call
//! delays the jobs behind it by about a millisecond, never for as long as it lasts. A job
//! that panics loses its own result only (`Panicked`). The thread ends once the lane is
//! dropped and its queue is empty.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

/// A job queued behind one that has run this long goes to the blocking pool instead.
const HELD_UP: Duration = Duration::from_millis(1);
/// A queued job not started after this long goes to the blocking pool.
const TAKEN_BACK_AFTER: Duration = Duration::from_millis(2);
/// At most this many jobs wait on the lane; more go to the blocking pool.
const MAX_QUEUED: usize = 64;

type Job = Box<dyn FnOnce() + Send>;

/// The job panicked (on the lane or on the pool).
#[derive(Debug)]
pub struct Panicked;

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request panicked")
    }
}

#[derive(Default)]
struct State {
    /// Queued jobs, each with its number.
    jobs: VecDeque<(u64, Job)>,
    next: u64,
    /// When the job running now started; None while the lane waits for work.
    running_since: Option<Instant>,
    /// The lane's thread is waiting on the condition variable.
    parked: bool,
    /// The lane was dropped: the thread ends when the queue is empty.
    closed: bool,
    /// A thread was started for the lane.
    started: bool,
}

struct Inner {
    state: Mutex<State>,
    work: Condvar,
}

/// One connection's lane (see the module); its thread starts with the first job.
pub struct Lane {
    inner: Arc<Inner>,
    name: String,
}

impl Lane {
    pub fn new(name: String) -> Lane {
        Lane {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                work: Condvar::new(),
            }),
            name,
        }
    }

    /// Runs `f` on the lane, or on the blocking pool when the lane is held up (see the
    /// module); its result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Panicked> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(result.map_err(|_| Panicked));
        });
        let mut rx = std::pin::pin!(rx);
        let on_pool = match self.queue(job) {
            Ok(seq) => match tokio::time::timeout(TAKEN_BACK_AFTER, &mut rx).await {
                Ok(r) => return r.unwrap_or(Err(Panicked)),
                // Still queued behind a slow job: to the pool; started: wait for it.
                Err(_) => self.take_back(seq),
            },
            Err(job) => Some(job),
        };
        if let Some(job) = on_pool {
            tokio::task::spawn_blocking(job)
                .await
                .map_err(|_| Panicked)?;
        }
        rx.await.unwrap_or(Err(Panicked))
    }

    /// Job `seq`, if it is still queued (not started).
    fn take_back(&self, seq: u64) -> Option<Job> {
        let mut st = self.inner.state.lock();
        let at = st.jobs.iter().position(|(s, _)| *s == seq)?;
        st.jobs.remove(at).map(|(_, job)| job)
    }

    /// Queues `job` on the lane (starting its thread, or waking it): its number. The job
    /// back when the lane is held up or its thread cannot be started.
    fn queue(&self, job: Job) -> Result<u64, Job> {
        let mut st = self.inner.state.lock();
        let held_up = st.running_since.is_some_and(|t| t.elapsed() >= HELD_UP);
        if held_up || st.jobs.len() >= MAX_QUEUED {
            return Err(job);
        }
        if !st.started {
            let inner = self.inner.clone();
            let spawned = std::thread::Builder::new()
                .name(self.name.clone())
                .spawn(move || serve(&inner));
            if spawned.is_err() {
                return Err(job);
            }
            st.started = true;
        }
        let seq = st.next;
        st.next += 1;
        st.jobs.push_back((seq, job));
        if st.parked {
            st.parked = false;
            self.inner.work.notify_one();
        }
        Ok(seq)
    }

    /// Jobs queued and not yet started (for tests).
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.inner.state.lock().jobs.len()
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        let mut st = self.inner.state.lock();
        st.closed = true;
        if st.parked {
            st.parked = false;
            self.inner.work.notify_one();
        }
    }
}

/// The lane's thread: runs jobs in order until the lane is dropped and none is left.
fn serve(inner: &Inner) {
    let mut st = inner.state.lock();
    loop {
        if let Some((_, job)) = st.jobs.pop_front() {
            st.running_since = Some(Instant::now());
            drop(st);
            job(); // it catches its own panic
            st = inner.state.lock();
            st.running_since = None;
            continue;
        }
        if st.closed {
            return;
        }
        st.parked = true;
        inner.work.wait(&mut st);
        st.parked = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_run_once_and_those_on_the_lane_in_order() {
        let lane = Lane::new("lane-test-order".into());
        // On a loaded machine the lane's thread may not run within `TAKEN_BACK_AFTER` and
        // every job of a burst goes to the pool, as designed: bursts are sent until one has
        // run on the lane; each must keep the contract.
        let mut ran_on_lane = 0;
        for _ in 0..50 {
            let order = Arc::new(Mutex::new(Vec::new()));
            // More than the lane queues: the rest go to the pool.
            let calls: Vec<_> = (0..MAX_QUEUED * 3)
                .map(|i| {
                    let order = order.clone();
                    lane.run(move || {
                        let on_lane = std::thread::current().name() == Some("lane-test-order");
                        order.lock().push((i, on_lane));
                        i * 2
                    })
                })
                .collect();
            let results = futures::future::join_all(calls).await;
            for (i, r) in results.into_iter().enumerate() {
                assert_eq!(r.unwrap(), i * 2);
            }
            let mut order = order.lock().clone();
            let on_lane: Vec<usize> = order.iter().filter(|(_, l)| *l).map(|(i, _)| *i).collect();
            assert!(
                on_lane.windows(2).all(|w| w[0] < w[1]),
                "out of queue order"
            );
            assert_eq!(order.len(), MAX_QUEUED * 3, "as many runs as jobs");
            order.sort();
            order.dedup_by_key(|(i, _)| *i);
            assert_eq!(order.len(), MAX_QUEUED * 3, "a job ran twice");
            ran_on_lane += on_lane.len();
            if ran_on_lane > 0 {
                break;
            }
        }
        assert!(ran_on_lane > 0, "nothing ran on the lane in 50 bursts");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_job_does_not_hold_up_the_next_ones() {
        let lane = Arc::new(Lane::new("lane-test".into()));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let started = Arc::new(AtomicUsize::new(0));
        let s = started.clone();
        let slow = tokio::spawn({
            let lane = lane.clone();
            async move {
                lane.run(move || {
                    s.fetch_add(1, Ordering::SeqCst);
                    release_rx.recv().ok();
                })
                .await
            }
        });
        while started.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Queued while the slow job had just started: taken back to the pool after a while.
        let early = {
            let lane = lane.clone();
            tokio::spawn(async move { lane.run(|| 1).await })
        };
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(10), early)
                .await
                .expect("a queued job waited for the slow one")
                .unwrap()
                .unwrap(),
            1
        );
        tokio::time::sleep(HELD_UP * 3).await;
        // The lane is stuck in the slow job: these run on the pool, and finish.
        let quick = tokio::time::timeout(Duration::from_secs(10), async {
            for i in 0..20 {
                assert_eq!(lane.run(move || i + 1).await.unwrap(), i + 1);
            }
        })
        .await;
        assert!(quick.is_ok(), "jobs waited behind a slow one");
        assert_eq!(lane.queued(), 0, "nothing queued behind the slow job");
        release_tx.send(()).unwrap();
        slow.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_job_loses_only_its_own_result() {
        let lane = Lane::new("lane-test".into());
        let bad = lane.run(|| -> u32 { panic!("a job panics") });
        let good = lane.run(|| 7u32);
        let (bad, good) = tokio::join!(bad, good);
        assert!(bad.is_err());
        assert_eq!(good.unwrap(), 7);
        assert_eq!(lane.run(|| 8u32).await.unwrap(), 8, "the lane goes on");
    }

    #[test]
    fn the_thread_ends_when_the_lane_is_dropped() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let lane = Lane::new("lane-test-end".into());
        // The lane's thread (a job it was slow to start may have run on the pool).
        let tid = (0..100)
            .find_map(|_| {
                let job = || {
                    let on_lane = std::thread::current().name() == Some("lane-test-end");
                    on_lane.then(|| nix::unistd::gettid().as_raw())
                };
                rt.block_on(lane.run(job)).unwrap()
            })
            .expect("no job ran on the lane");
        drop(lane);
        let gone = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            !std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
        });
        assert!(gone, "the lane's thread outlived the lane");
    }
}
