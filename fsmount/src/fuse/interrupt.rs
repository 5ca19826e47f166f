//! FUSE_INTERRUPT: the process waiting for a call got a signal.
//!
//! Every operation the adapter hands to the runtime is registered in [`Interrupts`] under
//! the kernel's request id, with the caller's thread id, its reply held by an [`Answer`]:
//! whoever comes first takes the reply, the operation's task when it finishes, or the
//! interrupt, which answers EINTR. The kernel interrupts a request it has sent when its
//! caller gets a signal (once per request); what the signal will do decides the answer,
//! read from `/proc/TID/status` as a local disk's interruptible wait would see it:
//!
//! - the process is being killed (SIGKILL pending; a fatal signal becomes one), or a
//!   signal whose default action ends the process is pending: EINTR at once;
//! - a signal it handles is pending: EINTR if the call still waits after the grace
//!   (`-o intr_grace`, 200 ms). A handler installed with SA_RESTART would have the kernel
//!   restart a local call, but a FUSE call answered EINTR is not restarted; the grace keeps
//!   calls the server answers promptly from failing under frequent signals (Go's SIGURG);
//! - nothing such is pending (a stop signal, `strace -p` or a cgroup freeze woke the
//!   caller): no answer; the call goes on.
//!
//! Until the call is answered this is checked again every [`TICK`]: the kernel sends no
//! second interrupt when SIGKILL follows another signal. When `/proc` does not tell (the
//! caller is in another pid namespace), a call still waiting after the grace gets EINTR.
//!
//! Reads get the same watch without an interrupt once they have waited the grace
//! ([`Interrupts::unless_signalled`]): the kernel never interrupts its readahead.
//!
//! The operation itself is never cancelled: what was sent stays sent, and its result is
//! dropped when it comes ([`Answer::take`] gives `None`; the adapter then undoes what the
//! kernel will never learn of: a handle opened is released, a lookup counted is forgotten).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fuser::Errno;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::time::Instant;

use super::reply::ErrorReply;

/// How often an interrupted call still waiting looks at its caller's signals again.
pub const TICK: Duration = Duration::from_millis(50);

/// What the signals pending for a caller will do to it, as a local call would see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signals {
    /// The process dies: SIGKILL, or a signal whose default action ends it.
    Fatal,
    /// A handler runs: the call may return EINTR.
    Handled,
    /// Nothing that ends the call (stopped, traced, frozen, or already delivered).
    Nothing,
}

/// Reads what the signals pending for thread `tid` will do; `None` when `/proc` cannot
/// tell (no such thread in this pid namespace, or no caller: tid 0).
pub fn signals_of(tid: u32) -> Option<Signals> {
    if tid == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    classify(&status)
}

/// The signal masks of a /proc status file, judged.
fn classify(status: &str) -> Option<Signals> {
    let mask = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    let bit = |sig: libc::c_int| 1u64 << (sig - 1);
    let pending = mask("SigPnd:")? | mask("ShdPnd:")?;
    if pending & bit(libc::SIGKILL) != 0 {
        return Some(Signals::Fatal);
    }
    let live = pending & !mask("SigBlk:")? & !mask("SigIgn:")?;
    let caught = live & mask("SigCgt:")?;
    // Default actions that neither end the process nor run anything: stop, ignore.
    let harmless = [
        libc::SIGSTOP,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGCHLD,
        libc::SIGCONT,
        libc::SIGURG,
        libc::SIGWINCH,
    ]
    .into_iter()
    .fold(0, |m, s| m | bit(s));
    Some(if live & !caught & !harmless != 0 {
        Signals::Fatal
    } else if caught != 0 {
        Signals::Handled
    } else {
        Signals::Nothing
    })
}

/// A reply an interrupt may take first.
trait Interruptible: Send + Sync {
    /// Answers EINTR unless answered already; true if it did.
    fn interrupt(&self) -> bool;
    fn answered(&self) -> bool;
}

struct Slot<R>(Mutex<Option<R>>);

impl<R: ErrorReply + Send> Interruptible for Slot<R> {
    fn interrupt(&self) -> bool {
        let reply = self.0.lock().take();
        reply.map(|r| r.fail(Errno::EINTR)).is_some()
    }

    fn answered(&self) -> bool {
        self.0.lock().is_none()
    }
}

/// Reads what a thread's pending signals will do.
type Probe = Box<dyn Fn(u32) -> Option<Signals> + Send + Sync>;

/// A call waiting for its answer.
struct Waiting {
    tid: u32,
    call: Arc<dyn Interruptible>,
}

/// Interrupts so far (`fsmount status`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct InterruptStats {
    /// FUSE_INTERRUPTs the kernel sent: a caller got a signal while its call waited.
    pub received: u64,
    /// Calls answered EINTR (the rest were answered by their operation, or not waiting).
    pub answered_eintr: u64,
}

/// The calls the kernel may interrupt, by request id.
pub struct Interrupts {
    grace: Duration,
    waiting: Mutex<HashMap<u64, Waiting>>,
    /// How the caller's signals are read (tests put in their own).
    probe: Probe,
    received: AtomicU64,
    answered_eintr: AtomicU64,
}

impl Interrupts {
    pub fn new(grace: Duration) -> Arc<Interrupts> {
        Interrupts::with_probe(grace, Box::new(signals_of))
    }

    fn with_probe(grace: Duration, probe: Probe) -> Arc<Interrupts> {
        Arc::new(Interrupts {
            grace,
            waiting: Mutex::new(HashMap::new()),
            probe,
            received: AtomicU64::new(0),
            answered_eintr: AtomicU64::new(0),
        })
    }

    pub fn stats(&self) -> InterruptStats {
        InterruptStats {
            received: self.received.load(Ordering::Relaxed),
            answered_eintr: self.answered_eintr.load(Ordering::Relaxed),
        }
    }

    /// Registers request `unique` of thread `tid`, answered through `reply`.
    pub(super) fn register<R: ErrorReply + Send + 'static>(
        self: &Arc<Self>,
        unique: u64,
        tid: u32,
        reply: R,
    ) -> Answer<R> {
        let slot = Arc::new(Slot(Mutex::new(Some(reply))));
        let call = slot.clone();
        self.waiting.lock().insert(unique, Waiting { tid, call });
        Answer {
            slot,
            unique,
            table: self.clone(),
        }
    }

    /// The kernel interrupts request `unique`: answers it EINTR on `rt` when and if its
    /// caller's signals call for it (see the module's doc).
    pub fn interrupt(self: &Arc<Self>, unique: u64, rt: &Handle) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let _in_runtime = rt.enter();
        if !self.watch(unique, Instant::now(), true) {
            tracing::debug!("interrupt of request {unique}: answered already");
        }
    }

    /// Awaits `call`, the work of READ request `unique`, started at `since`. The kernel
    /// sends the reads of its readahead in the background and never interrupts them; a
    /// reader waiting for those pages waits for the page, which only a fatal signal ends
    /// (and a handled one never does). So a read still waiting after the grace is watched
    /// as if interrupted, and answered EINTR once its reader has a signal to handle or is
    /// being killed: the pages are then read again by the reader itself, a request the
    /// kernel interrupts. Runs on the runtime.
    pub(super) async fn unless_signalled<T>(
        self: &Arc<Self>,
        unique: u64,
        call: impl std::future::Future<Output = T>,
    ) -> T {
        let since = Instant::now();
        tokio::pin!(call);
        tokio::select! {
            biased;
            r = &mut call => return r,
            _ = tokio::time::sleep(self.grace) => {}
        }
        self.watch(unique, since, false);
        call.await
    }

    /// Watches call `unique`, interrupted at `since` (`asked`: by the kernel, which saw a
    /// signal), until it is answered: answers it EINTR when its caller's signals call for
    /// it. False if it was answered already. Needs a runtime context.
    fn watch(self: &Arc<Self>, unique: u64, since: Instant, asked: bool) -> bool {
        let waiting = self
            .waiting
            .lock()
            .get(&unique)
            .map(|w| (w.tid, w.call.clone()));
        let Some((tid, call)) = waiting else {
            return false;
        };
        let table = self.clone();
        tokio::spawn(async move {
            loop {
                if call.answered() {
                    return;
                }
                let waited = since.elapsed();
                let now = match (table.probe)(tid) {
                    Some(Signals::Fatal) => true,
                    Some(Signals::Handled) => waited >= table.grace,
                    Some(Signals::Nothing) => false,
                    // Nothing to tell by: the kernel's word that a signal came.
                    None if asked => waited >= table.grace,
                    None => return,
                };
                if now {
                    break;
                }
                let nap = match table.grace.checked_sub(waited) {
                    Some(left) if !left.is_zero() => left.min(TICK),
                    _ => TICK,
                };
                tokio::time::sleep(nap).await;
            }
            if call.interrupt() {
                table.answered_eintr.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    "request {unique} of thread {tid} interrupted: answered EINTR after {:?}",
                    since.elapsed()
                );
            }
        });
        true
    }

    fn done(&self, unique: u64) {
        self.waiting.lock().remove(&unique);
    }
}

/// The reply to one call, unless an interrupt answered it first.
pub(super) struct Answer<R: ErrorReply + Send + 'static> {
    slot: Arc<Slot<R>>,
    unique: u64,
    table: Arc<Interrupts>,
}

impl<R: ErrorReply + Send + 'static> Answer<R> {
    /// The reply, or `None` if the call was answered EINTR: its result is then nobody's.
    pub fn take(self) -> Option<R> {
        self.slot.0.lock().take()
    }

    /// Runs `f` on the reply while it is still this call's (a listing fills it entry by
    /// entry); `None` once the call was answered EINTR.
    pub fn with<T>(&self, f: impl FnOnce(&mut R) -> T) -> Option<T> {
        self.slot.0.lock().as_mut().map(f)
    }
}

impl<R: ErrorReply + Send + 'static> Drop for Answer<R> {
    fn drop(&mut self) {
        self.table.done(self.unique);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A status file with these masks.
    fn status(pending: u64, shared: u64, blocked: u64, ignored: u64, caught: u64) -> String {
        format!(
            "Name:\tcat\nSigQ:\t0/31402\nSigPnd:\t{pending:016x}\nShdPnd:\t{shared:016x}\n\
             SigBlk:\t{blocked:016x}\nSigIgn:\t{ignored:016x}\nSigCgt:\t{caught:016x}\n"
        )
    }

    fn bit(sig: libc::c_int) -> u64 {
        1 << (sig - 1)
    }

    #[test]
    fn pending_signals_are_judged_as_a_local_call_would() {
        let judge = |p, s, b, i, c| classify(&status(p, s, b, i, c));
        let (kill, int, term, quit) = (
            bit(libc::SIGKILL),
            bit(libc::SIGINT),
            bit(libc::SIGTERM),
            bit(libc::SIGQUIT),
        );
        assert_eq!(judge(kill, 0, 0, 0, int), Some(Signals::Fatal));
        assert_eq!(judge(0, kill, 0, 0, 0), Some(Signals::Fatal));
        // A handled SIGINT: a handler runs; unhandled, the process dies.
        assert_eq!(judge(0, int, 0, 0, int), Some(Signals::Handled));
        assert_eq!(judge(0, int, 0, 0, 0), Some(Signals::Fatal));
        assert_eq!(judge(0, quit, 0, 0, 0), Some(Signals::Fatal));
        assert_eq!(
            judge(bit(libc::SIGURG), 0, 0, 0, bit(libc::SIGURG)),
            Some(Signals::Handled)
        );
        // Stopped, or a default that ignores, or blocked, or ignored: nothing to answer.
        for quiet in [libc::SIGSTOP, libc::SIGTSTP, libc::SIGCHLD, libc::SIGWINCH] {
            assert_eq!(judge(0, bit(quiet), 0, 0, 0), Some(Signals::Nothing));
        }
        assert_eq!(judge(0, term, term, 0, 0), Some(Signals::Nothing));
        assert_eq!(judge(0, term, 0, term, 0), Some(Signals::Nothing));
        assert_eq!(judge(0, 0, 0, 0, int), Some(Signals::Nothing));
        // Real-time signals end the process by default.
        assert_eq!(judge(1 << 40, 0, 0, 0, 0), Some(Signals::Fatal));
        assert_eq!(classify("Name:\tx\n"), None);
    }

    #[test]
    fn this_thread_has_nothing_pending() {
        let tid = nix::unistd::gettid().as_raw() as u32;
        assert_eq!(signals_of(tid), Some(Signals::Nothing));
        assert_eq!(signals_of(0), None);
    }

    /// A reply that records how it was answered.
    struct Recorded(Arc<AtomicU32>);

    impl ErrorReply for Recorded {
        fn fail(self, errno: Errno) {
            self.0.store(errno.code() as u32, Ordering::SeqCst);
        }
    }

    /// Registers a call, interrupts it with `signals` pending, and returns when (after how
    /// long) it was answered EINTR, if within `limit`.
    async fn interrupted_after(signals: Option<Signals>, limit: Duration) -> Option<Duration> {
        let table = Interrupts::with_probe(Duration::from_millis(200), Box::new(move |_| signals));
        let got = Arc::new(AtomicU32::new(0));
        let answer = table.register(7, 1234, Recorded(got.clone()));
        let start = Instant::now();
        table.interrupt(7, &Handle::current());
        while start.elapsed() < limit {
            if got.load(Ordering::SeqCst) == libc::EINTR as u32 {
                assert!(answer.take().is_none(), "the late result is nobody's");
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(answer.take().is_some());
        None
    }

    // Real time (tokio's test-util is not a dependency): the bounds leave room for a busy
    // machine.
    #[tokio::test]
    async fn interrupts_are_answered_as_the_signals_call_for() {
        let ms = Duration::from_millis;
        let killed = interrupted_after(Some(Signals::Fatal), ms(2000)).await;
        assert!(killed.is_some_and(|t| t < ms(150)), "{killed:?}");
        let handled = interrupted_after(Some(Signals::Handled), ms(2000)).await;
        assert!(handled.is_some_and(|t| t >= ms(200)), "{handled:?}");
        let unknown = interrupted_after(None, ms(2000)).await;
        assert!(unknown.is_some_and(|t| t >= ms(200)), "{unknown:?}");
        assert_eq!(
            interrupted_after(Some(Signals::Nothing), ms(600)).await,
            None
        );
    }

    #[tokio::test]
    async fn a_call_answered_in_time_is_not_interrupted_and_leaves_the_table() {
        let handled = Box::new(|_| Some(Signals::Handled));
        let table = Interrupts::with_probe(Duration::from_millis(200), handled);
        let got = Arc::new(AtomicU32::new(0));
        let answer = table.register(9, 1, Recorded(got.clone()));
        table.interrupt(9, &Handle::current());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(answer.take().is_some(), "answered by its task");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(got.load(Ordering::SeqCst), 0);
        let stats = table.stats();
        assert_eq!((stats.received, stats.answered_eintr), (1, 0));
        assert!(table.waiting.lock().is_empty());
        // An interrupt for a call answered already finds nothing.
        table.interrupt(9, &Handle::current());
    }
}
