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
//! Reads get the same watch without an interrupt once they have waited the grace (see
//! [`Interrupts::register_read`]): the kernel never interrupts its readahead.
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

/// A reply, until taken; and whether an interrupt took it (for the operation to learn of,
/// see [`Answer::interrupted`]).
struct Slot<R> {
    reply: Mutex<Option<R>>,
    by_interrupt: std::sync::atomic::AtomicBool,
    told: tokio::sync::Notify,
}

impl<R: ErrorReply + Send> Interruptible for Slot<R> {
    fn interrupt(&self) -> bool {
        let reply = self.reply.lock().take();
        let Some(reply) = reply else {
            return false;
        };
        reply.fail(Errno::EINTR);
        self.by_interrupt.store(true, Ordering::SeqCst);
        self.told.notify_waiters();
        true
    }

    fn answered(&self) -> bool {
        self.reply.lock().is_none()
    }
}

/// Reads what a thread's pending signals will do.
type Probe = Box<dyn Fn(u32) -> Option<Signals> + Send + Sync>;

/// A call waiting for its answer.
struct Waiting {
    tid: u32,
    call: Arc<dyn Interruptible>,
    /// When it was registered.
    since: Instant,
    /// A READ, which the kernel may never interrupt (see `register_read`).
    read: bool,
    /// Watched already, without an interrupt.
    watched: bool,
}

/// The calls waiting, and whether the sweeper looks for reads waiting past the grace.
#[derive(Default)]
struct Table {
    calls: HashMap<u64, Waiting>,
    sweeping: bool,
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
    waiting: Mutex<Table>,
    /// Where watchers and the sweeper run.
    rt: Handle,
    /// How the caller's signals are read (tests put in their own).
    probe: Probe,
    received: AtomicU64,
    answered_eintr: AtomicU64,
}

impl Interrupts {
    /// Interrupts answered on `rt`.
    pub fn new(grace: Duration, rt: Handle) -> Arc<Interrupts> {
        Interrupts::with_probe(grace, rt, Box::new(signals_of))
    }

    fn with_probe(grace: Duration, rt: Handle, probe: Probe) -> Arc<Interrupts> {
        Arc::new(Interrupts {
            grace,
            waiting: Mutex::new(Table::default()),
            rt,
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
        self.add(unique, tid, reply, false)
    }

    /// `register` for READ request `unique`. The kernel sends the reads of its readahead
    /// in the background and never interrupts them, and a reader waiting for those pages
    /// waits for the page, which only a fatal signal ends (a handled one never does). So a
    /// read still waiting after the grace is watched as if interrupted (by a sweeper that
    /// runs every [`TICK`] while reads wait), and answered EINTR once its reader has a
    /// signal to handle or is being killed: the reader then reads the pages itself, with a
    /// request the kernel does interrupt.
    pub(super) fn register_read<R: ErrorReply + Send + 'static>(
        self: &Arc<Self>,
        unique: u64,
        tid: u32,
        reply: R,
    ) -> Answer<R> {
        self.add(unique, tid, reply, true)
    }

    fn add<R: ErrorReply + Send + 'static>(
        self: &Arc<Self>,
        unique: u64,
        tid: u32,
        reply: R,
        read: bool,
    ) -> Answer<R> {
        let slot = Arc::new(Slot {
            reply: Mutex::new(Some(reply)),
            by_interrupt: Default::default(),
            told: tokio::sync::Notify::new(),
        });
        let waiting = Waiting {
            tid,
            call: slot.clone(),
            since: Instant::now(),
            read,
            watched: false,
        };
        let sweep = {
            let mut t = self.waiting.lock();
            t.calls.insert(unique, waiting);
            read && !std::mem::replace(&mut t.sweeping, true)
        };
        if sweep {
            self.rt.spawn(self.clone().sweep());
        }
        Answer {
            slot,
            unique,
            table: self.clone(),
        }
    }

    /// The kernel interrupts request `unique`: answers it EINTR when and if its caller's
    /// signals call for it (see the module's doc).
    /// False if `unique` is not waiting: answered already, or (with several threads
    /// reading requests) not registered yet.
    pub fn interrupt(self: &Arc<Self>, unique: u64) -> bool {
        self.received.fetch_add(1, Ordering::Relaxed);
        let waiting = self.watch(unique, Instant::now(), true);
        if !waiting {
            tracing::debug!("interrupt of request {unique}: not waiting");
        }
        waiting
    }

    /// Every [`TICK`] while reads wait: watches those waiting past the grace.
    async fn sweep(self: Arc<Self>) {
        loop {
            tokio::time::sleep(TICK).await;
            let due: Vec<(u64, Instant)> = {
                let mut t = self.waiting.lock();
                let mut reads = false;
                let mut due = Vec::new();
                for (unique, w) in t.calls.iter_mut().filter(|(_, w)| w.read) {
                    reads = true;
                    if !w.watched && w.since.elapsed() >= self.grace {
                        w.watched = true;
                        due.push((*unique, w.since));
                    }
                }
                if !reads {
                    // Under the lock: the next read registered starts a sweeper again.
                    t.sweeping = false;
                    return;
                }
                due
            };
            for (unique, since) in due {
                self.watch(unique, since, false);
            }
        }
    }

    /// Watches call `unique`, interrupted at `since` (`asked`: by the kernel, which saw a
    /// signal), until it is answered: answers it EINTR when its caller's signals call for
    /// it. False if it was answered already.
    fn watch(self: &Arc<Self>, unique: u64, since: Instant, asked: bool) -> bool {
        let waiting = self
            .waiting
            .lock()
            .calls
            .get(&unique)
            .map(|w| (w.tid, w.call.clone()));
        let Some((tid, call)) = waiting else {
            return false;
        };
        let table = self.clone();
        self.rt.spawn(async move {
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
        self.waiting.lock().calls.remove(&unique);
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
        self.slot.reply.lock().take()
    }

    /// Runs `f` on the reply while it is still this call's (a listing fills it entry by
    /// entry); `None` once the call was answered EINTR.
    pub fn with<T>(&self, f: impl FnOnce(&mut R) -> T) -> Option<T> {
        self.slot.reply.lock().as_mut().map(f)
    }

    /// Completes once an interrupt has answered this call EINTR (never, if it is not):
    /// an operation that waits on the server (a lock wait) then tells the server to stop.
    pub fn interrupted(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let slot = self.slot.clone();
        async move {
            loop {
                let told = slot.told.notified();
                tokio::pin!(told);
                told.as_mut().enable();
                if slot.by_interrupt.load(Ordering::SeqCst) {
                    return;
                }
                told.await;
            }
        }
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

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Registers a call (a read: `read`), interrupts it unless it is a read, with `signals`
    /// pending, and returns when (after how long) it was answered EINTR, if within `limit`.
    async fn eintr_after(
        signals: Option<Signals>,
        read: bool,
        limit: Duration,
    ) -> Option<Duration> {
        let probe = Box::new(move |_| signals);
        let table = Interrupts::with_probe(ms(200), Handle::current(), probe);
        let got = Arc::new(AtomicU32::new(0));
        let answer = match read {
            true => table.register_read(7, 1234, Recorded(got.clone())),
            false => table.register(7, 1234, Recorded(got.clone())),
        };
        let start = Instant::now();
        if !read {
            table.interrupt(7);
        }
        while start.elapsed() < limit {
            if got.load(Ordering::SeqCst) == libc::EINTR as u32 {
                assert!(answer.take().is_none(), "the late result is nobody's");
                assert!(table.waiting.lock().calls.is_empty());
                return Some(start.elapsed());
            }
            tokio::time::sleep(ms(1)).await;
        }
        assert!(answer.take().is_some());
        assert!(table.waiting.lock().calls.is_empty());
        None
    }

    // Real time (tokio's test-util is not a dependency): the bounds leave room for a busy
    // machine.
    #[tokio::test]
    async fn interrupts_are_answered_as_the_signals_call_for() {
        let killed = eintr_after(Some(Signals::Fatal), false, ms(2000)).await;
        assert!(killed.is_some_and(|t| t < ms(150)), "{killed:?}");
        let handled = eintr_after(Some(Signals::Handled), false, ms(2000)).await;
        assert!(handled.is_some_and(|t| t >= ms(200)), "{handled:?}");
        let unknown = eintr_after(None, false, ms(2000)).await;
        assert!(unknown.is_some_and(|t| t >= ms(200)), "{unknown:?}");
        assert_eq!(
            eintr_after(Some(Signals::Nothing), false, ms(600)).await,
            None
        );
    }

    #[tokio::test]
    async fn a_read_waiting_past_the_grace_is_answered_eintr_only_for_a_signal() {
        let handled = eintr_after(Some(Signals::Handled), true, ms(2000)).await;
        assert!(handled.is_some_and(|t| t >= ms(200)), "{handled:?}");
        let killed = eintr_after(Some(Signals::Fatal), true, ms(2000)).await;
        assert!(killed.is_some_and(|t| t >= ms(200)), "{killed:?}");
        // No interrupt and nothing pending, or nothing to tell by: the read goes on.
        assert_eq!(
            eintr_after(Some(Signals::Nothing), true, ms(600)).await,
            None
        );
        assert_eq!(eintr_after(None, true, ms(600)).await, None);
    }

    #[tokio::test]
    async fn the_operation_learns_that_an_interrupt_answered_its_call() {
        let killed = Box::new(|_| Some(Signals::Fatal));
        let table = Interrupts::with_probe(ms(200), Handle::current(), killed);
        let got = Arc::new(AtomicU32::new(0));
        let answer = table.register(11, 1, Recorded(got.clone()));
        let interrupted = answer.interrupted();
        let before = tokio::time::timeout(ms(50), answer.interrupted()).await;
        assert!(before.is_err(), "not interrupted yet");
        table.interrupt(11);
        tokio::time::timeout(ms(2000), interrupted)
            .await
            .expect("told");
        assert_eq!(got.load(Ordering::SeqCst), libc::EINTR as u32);
        // Asked after the fact, it completes at once.
        tokio::time::timeout(ms(50), answer.interrupted())
            .await
            .expect("told");
        assert!(answer.take().is_none());
        // A call its operation answers is never told.
        let answered = table.register(12, 1, Recorded(got.clone()));
        let never = answered.interrupted();
        assert!(answered.take().is_some());
        assert!(tokio::time::timeout(ms(50), never).await.is_err());
    }

    #[tokio::test]
    async fn a_call_answered_in_time_is_not_interrupted_and_leaves_the_table() {
        let handled = Box::new(|_| Some(Signals::Handled));
        let table = Interrupts::with_probe(ms(200), Handle::current(), handled);
        let got = Arc::new(AtomicU32::new(0));
        let answer = table.register(9, 1, Recorded(got.clone()));
        let read = table.register_read(10, 1, Recorded(got.clone()));
        table.interrupt(9);
        tokio::time::sleep(ms(100)).await;
        assert!(answer.take().is_some(), "answered by its task");
        assert!(read.take().is_some(), "answered by its task");
        tokio::time::sleep(ms(500)).await;
        assert_eq!(got.load(Ordering::SeqCst), 0);
        let stats = table.stats();
        assert_eq!((stats.received, stats.answered_eintr), (1, 0));
        let t = table.waiting.lock();
        assert!(t.calls.is_empty() && !t.sweeping, "the sweeper stopped");
        drop(t);
        // An interrupt for a call answered already finds nothing.
        table.interrupt(9);
    }
}
