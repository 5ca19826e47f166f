//! Signals to processes waiting on the mount (FUSE_INTERRUPT): with the server killed, a
//! process blocked in a call ends at once on SIGKILL (`hard` too, and on a user's mount)
//! and gets EINTR from a signal it handles; what the interrupted calls sent still reaches
//! the server once it is back, and nothing they opened stays open there; on a healthy
//! mount, frequent signals with SA_RESTART handlers cause no EINTR.
//!
//! Every process a test starts is killed and reaped on the way out, after the server is
//! started again (so a process still blocked in the mount can finish), and the mount is
//! unmounted: also when an assertion fails.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use e2e_tests::{bin_dir, require_mount_support, send_signal, wait_until, Mount, Server};

/// How soon a blocked call must end after the signal.
const PROMPTLY: Duration = Duration::from_secs(1);

/// A server, a mount of it, and the server's state restored when dropped.
struct Scene {
    // Unmounted before the server stops.
    mount: Mount,
    server: Server,
}

impl Scene {
    fn new(opts: &[&str]) -> Scene {
        require_mount_support();
        let server = Server::start(&[]);
        let mount = Mount::new(&server, "data", opts);
        Scene { mount, server }
    }

    fn mnt(&self, name: &str) -> std::path::PathBuf {
        self.mount.path.join(name)
    }

    fn on_server(&self, name: &str) -> std::path::PathBuf {
        self.server.export("data").join(name)
    }

    /// `fsmount status --json`, parsed.
    fn status(&self) -> serde_json::Value {
        let out = Command::new(bin_dir().join("fsmount"))
            .args(["status", "--json"])
            .arg(&self.mount.path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The server's metrics, through its control socket.
    fn server_metrics(&self) -> String {
        let out = Command::new(bin_dir().join("fsserver"))
            .args(["status", "--metrics", "--token-file"])
            .arg(&self.server.token_file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        // A call still waiting for the server (the test failed) finishes once it is back.
        if !self.server.is_running() {
            self.server.restart();
        }
    }
}

/// The value of metric sample `name` (labels included), 0 when not exposed.
fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            (n == name).then(|| v.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// A process of the test's, talking line by line; killed and reaped when dropped.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdin: Option<ChildStdin>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the process");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let stdin = child.stdin.take();
        Proc {
            child,
            lines,
            stdin,
        }
    }

    /// `python3 -c script args...`.
    fn python(script: &str, args: &[&Path]) -> Proc {
        let mut cmd = Command::new("python3");
        cmd.arg("-c").arg(script).args(args);
        Proc::spawn(cmd)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line the process prints, within `limit`.
    fn line(&self, limit: Duration) -> Option<String> {
        self.lines.recv_timeout(limit).ok()
    }

    /// Waits (up to 30 s) for the next line, which must start with `want`; returns it.
    fn expect(&self, want: &str) -> String {
        let line = self
            .line(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("no line {want:?} from the process"));
        assert!(line.starts_with(want), "expected {want:?}, got {line:?}");
        line
    }

    fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits until the process sleeps in the kernel inside the mount: for a FUSE answer,
    /// or for a page a FUSE read fills (its kernel stack, as root reads it).
    fn wait_blocked(&self) {
        let stack = format!("/proc/{}/stack", self.pid());
        wait_until(
            "the process blocks in the mount",
            Duration::from_secs(10),
            || {
                std::fs::read_to_string(&stack).is_ok_and(|s| {
                    ["request_wait_answer", "fuse_", "folio_wait"]
                        .iter()
                        .any(|f| s.contains(f))
                })
            },
        );
        // Blocked for a moment, not passing through.
        std::thread::sleep(Duration::from_millis(300));
        let s = std::fs::read_to_string(&stack).unwrap_or_default();
        assert!(
            s.contains("request_wait_answer") || s.contains("folio_wait"),
            "still blocked in the mount: {s}"
        );
    }

    /// How long the process took to end, if within `limit`.
    fn ends_within(&mut self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        e2e_tests::poll_until(limit, || self.child.try_wait().unwrap())?;
        Some(start.elapsed())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        // One still blocked in the mount ends when the server is back (the scene restarts
        // it); this gives up rather than hang the test.
        let _ = self.ends_within(Duration::from_secs(3));
    }
}

/// Writes a random file of `len` bytes on the server's side of the export.
fn server_file(scene: &Scene, name: &str, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    getrandom::fill(&mut data).unwrap();
    std::fs::write(scene.on_server(name), &data).unwrap();
    data
}

#[test]
fn sigkill_ends_a_stat_waiting_for_a_dead_server_at_once_also_on_a_hard_mount() {
    for opts in [&["hard"][..], &[]] {
        let mut scene = Scene::new(opts);
        std::fs::create_dir(scene.on_server("d")).unwrap();
        scene.server.kill();
        // Nothing of this path is known to the mount: the lookup waits for the server.
        let mut cmd = Command::new("stat");
        cmd.arg(scene.mnt("d/never-looked-up"));
        let mut stat = Proc::spawn(cmd);
        stat.wait_blocked();
        send_signal(stat.pid(), libc::SIGKILL);
        let took = stat.ends_within(Duration::from_secs(20));
        eprintln!("-o {opts:?}: stat ended {took:?} after SIGKILL");
        assert!(
            took.is_some_and(|t| t < PROMPTLY),
            "-o {opts:?}: SIGKILL ended the stat after {took:?}"
        );
        // Back, the mount answers as before.
        scene.server.restart();
        assert!(std::fs::metadata(scene.mnt("d")).unwrap().is_dir());
        assert!(!scene.mnt("d/never-looked-up").exists());
    }
}

/// The account scripts/test.sh creates for unprivileged mounts.
const USER_NAME: &str = "fsxp-test";

/// fsmount run by the test user, through fusermount3, on a mount point of theirs: fuser
/// then serves the user alone (`SessionACL::Owner`), and the kernel sends FUSE_INTERRUPT
/// as uid 0. Unmounted and stopped when dropped.
struct UserMount {
    child: Child,
    mnt: std::path::PathBuf,
    ids: (u32, u32),
    _dir: tempfile::TempDir,
}

impl UserMount {
    fn new(server: &Server, opts: &str) -> UserMount {
        use std::os::unix::fs::{chown, PermissionsExt};
        let user = nix::unistd::User::from_name(USER_NAME)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no user {USER_NAME}: scripts/test.sh creates it"));
        let ids = (user.uid.as_raw(), user.gid.as_raw());
        let dir = tempfile::Builder::new()
            .prefix("fsxp-user")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let (mnt, token) = (dir.path().join("mnt"), dir.path().join("token"));
        std::fs::create_dir(&mnt).unwrap();
        std::fs::copy(&server.token_file, &token).unwrap();
        for p in [&mnt, &token] {
            chown(p, Some(ids.0), Some(ids.1)).unwrap();
        }
        let child = UserMount::as_user(ids, &bin_dir().join("fsmount"))
            .arg(server.source("data"))
            .arg(&mnt)
            .arg("-o")
            .arg(format!("token_file={},{opts}", token.display()))
            .arg("-f")
            .env_remove("XDG_RUNTIME_DIR")
            .env("HOME", dir.path())
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("fsmount.log")).unwrap())
            .spawn()
            .unwrap();
        let m = UserMount {
            child,
            mnt,
            ids,
            _dir: dir,
        };
        wait_until("the user's mount", Duration::from_secs(15), || {
            e2e_tests::is_mounted(&m.mnt)
        });
        m
    }

    /// `program` run as the user (ids `ids`, no supplementary groups).
    fn as_user(ids: (u32, u32), program: &Path) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", ids.0))
            .arg(format!("--regid={}", ids.1))
            .arg("--clear-groups")
            .arg(program);
        cmd
    }
}

impl Drop for UserMount {
    fn drop(&mut self) {
        e2e_tests::force_unmount(&self.mnt);
        if e2e_tests::wait_timeout(&mut self.child, Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn sigkill_ends_a_stat_waiting_for_a_dead_server_on_a_users_mount() {
    require_mount_support();
    let mut server = Restarted(Server::start(&[]));
    let home = server.0.export("data").join("home");
    std::fs::create_dir(&home).unwrap();
    let user = UserMount::new(&server.0, "hard");
    let (uid, gid) = user.ids;
    std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
    server.0.kill();
    let mut cmd = UserMount::as_user(user.ids, Path::new("stat"));
    cmd.arg(user.mnt.join("home/never-looked-up"));
    let mut stat = Proc::spawn(cmd);
    stat.wait_blocked();
    send_signal(stat.pid(), libc::SIGKILL);
    let took = stat.ends_within(Duration::from_secs(20));
    eprintln!("a user's stat ended {took:?} after SIGKILL");
    assert!(
        took.is_some_and(|t| t < PROMPTLY),
        "SIGKILL ended it after {took:?}"
    );
}

/// A server started again when dropped, if it is down: calls still waiting finish.
struct Restarted(Server);

impl Drop for Restarted {
    fn drop(&mut self) {
        if !self.0.is_running() {
            self.0.restart();
        }
    }
}

/// Opens argv[1] read-only, then on "read" reads 64 KiB at 8 MiB; a SIGINT handler
/// raises. Prints "opened", "reading", then "read N" or "interrupted KIND".
const READER: &str = r#"
import os, signal, sys
class Interrupted(Exception): pass
def on_int(sig, frame): raise Interrupted()
signal.signal(signal.SIGINT, on_int)
fd = os.open(sys.argv[1], os.O_RDONLY)
print("opened", flush=True)
sys.stdin.readline()
print("reading", flush=True)
try:
    print("read", len(os.pread(fd, 65536, 8 << 20)), flush=True)
except (Interrupted, InterruptedError) as e:
    print("interrupted", type(e).__name__, flush=True)
sys.stdin.readline()
"#;

#[test]
fn sigint_makes_a_read_waiting_for_a_dead_server_fail_with_eintr() {
    // Also with two threads reading FUSE requests, each on its own /dev/fuse clone.
    for opts in [&[][..], &["hard"], &["fuse_threads=2"]] {
        let mut scene = Scene::new(opts);
        let data = server_file(&scene, "big", 16 << 20);
        let mut reader = Proc::python(READER, &[&scene.mnt("big")]);
        reader.expect("opened");
        scene.server.kill();
        reader.say("read");
        reader.expect("reading");
        // Neither the kernel's page cache nor the mount's block cache holds 8 MiB in.
        reader.wait_blocked();
        let sent = Instant::now();
        send_signal(reader.pid(), libc::SIGINT);
        let got = reader.line(Duration::from_secs(20));
        let took = sent.elapsed();
        eprintln!("-o {opts:?}: {got:?} {took:?} after SIGINT");
        assert_eq!(
            got.as_deref(),
            Some("interrupted Interrupted"),
            "-o {opts:?}"
        );
        assert!(
            took < PROMPTLY,
            "-o {opts:?}: EINTR came {took:?} after SIGINT"
        );

        // Back, the same open file reads what the server has.
        scene.server.restart();
        let read = std::fs::read(scene.mnt("big")).unwrap();
        assert!(read == data, "-o {opts:?}: the file reads back whole");
        reader.say("exit");
        assert!(reader.ends_within(Duration::from_secs(20)).is_some());
    }
}

/// Writes 256 KiB chunks to argv[1], chunk i being byte i repeated: "N" chunks on "write
/// N", then on "more" chunks until a write is interrupted (SIGINT, whose handler
/// raises); "close" closes the file. Prints "wrote N", "interrupted N" (chunks written
/// whole), "closed".
const WRITER: &str = r#"
import os, signal, sys
class Interrupted(Exception): pass
def on_int(sig, frame): raise Interrupted()
signal.signal(signal.SIGINT, on_int)
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
chunks = 0
def chunk():
    global chunks
    data = bytes([chunks % 256]) * (256 << 10)
    assert os.write(fd, data) == len(data)
    chunks += 1
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "write":
        for _ in range(int(cmd[1])):
            chunk()
        print("wrote", chunks, flush=True)
    elif cmd[0] == "more":
        print("writing", flush=True)
        try:
            while True:
                chunk()
        except Interrupted:
            print("interrupted", chunks, flush=True)
    elif cmd[0] == "close":
        os.close(fd)
        print("closed", flush=True)
        break
"#;

/// `n` chunks as WRITER writes them.
fn chunks(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| std::iter::repeat_n(i as u8, 256 << 10))
        .collect()
}

#[test]
fn a_write_interrupted_while_the_server_is_dead_still_lands_after_the_writes_before_it() {
    // At most 1 MiB unacknowledged: the fifth chunk written while the server is down waits
    // for room.
    let mut scene = Scene::new(&["dirty_limit=1M"]);
    let mut writer = Proc::python(WRITER, &[&scene.mnt("f")]);
    writer.say("write 4");
    writer.expect("wrote 4");
    assert!(e2e_tests::fsmount_sync(&scene.mount.path).status.success());
    scene.server.kill();
    writer.say("more");
    writer.expect("writing");
    writer.wait_blocked();
    let sent = Instant::now();
    send_signal(writer.pid(), libc::SIGINT);
    let got = writer.line(Duration::from_secs(20));
    let took = sent.elapsed();
    eprintln!("{got:?} {took:?} after SIGINT");
    let whole: usize = got
        .as_deref()
        .and_then(|l| l.strip_prefix("interrupted "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the write was interrupted: {got:?}"));
    assert!(took < PROMPTLY, "EINTR came {took:?} after SIGINT");
    assert!(whole >= 8, "4 chunks before the kill, 4 more fit: {whole}");

    scene.server.restart();
    writer.say("close");
    writer.expect("closed");
    assert!(e2e_tests::fsmount_sync(&scene.mount.path).status.success());
    // The write that got EINTR was under way: it still lands, after everything before it.
    let want = chunks(whole + 1);
    let on_server = std::fs::read(scene.on_server("f")).unwrap();
    assert_eq!(on_server.len(), want.len());
    assert!(on_server == want, "the server has every chunk, in order");
    let through_mount = std::fs::read(scene.mnt("f")).unwrap();
    assert!(through_mount == want);
    // And the mount works on.
    std::fs::write(scene.mnt("g"), "after").unwrap();
    assert_eq!(std::fs::read(scene.on_server("g")).unwrap(), b"after");
}

#[test]
fn a_writer_killed_while_the_server_is_dead_ends_at_once_and_its_writes_land() {
    for opts in [&["hard"][..], &[]] {
        let mut scene = Scene::new(opts);
        let mut writer = Proc::python(WRITER, &[&scene.mnt("f")]);
        writer.say("write 2");
        writer.expect("wrote 2");
        scene.server.kill();
        // Accepted while the server is down (write-behind): queued in fsmount.
        writer.say("write 6");
        writer.expect("wrote 8");
        // Ending, the process closes the file: that close waits for the writes, and is
        // answered at once for a process being killed.
        send_signal(writer.pid(), libc::SIGKILL);
        let took = writer.ends_within(Duration::from_secs(20));
        eprintln!("-o {opts:?}: the writer ended {took:?} after SIGKILL");
        assert!(
            took.is_some_and(|t| t < PROMPTLY),
            "-o {opts:?}: SIGKILL ended the writer after {took:?}"
        );
        scene.server.restart();
        assert!(e2e_tests::fsmount_sync(&scene.mount.path).status.success());
        let on_server = std::fs::read(scene.on_server("f")).unwrap();
        assert!(
            on_server == chunks(8),
            "-o {opts:?}: every accepted write landed"
        );
    }
}

/// With the names cached (`entry_timeout`, `negative_timeout`), opens existing argv[1]
/// and creates missing argv[2] on "open" and "create", a SIGINT handler raising. Prints
/// "ready", then per call "opened"/"created" or "interrupted".
const OPENER: &str = r#"
import os, signal, sys
class Interrupted(Exception): pass
def on_int(sig, frame): raise Interrupted()
signal.signal(signal.SIGINT, on_int)
os.stat(sys.argv[1])
try:
    os.stat(sys.argv[2])
except FileNotFoundError:
    pass
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "exit":
        break
    print("calling", flush=True)
    try:
        if cmd == "open":
            fd = os.open(sys.argv[1], os.O_RDONLY)
            print("opened", flush=True)
        else:
            fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            print("created", flush=True)
    except Interrupted:
        print("interrupted", flush=True)
"#;

#[test]
fn an_interrupted_open_or_create_leaves_no_handle_open_on_the_server() {
    // Names cached for a minute, so the kernel sends OPEN and CREATE without a lookup
    // first; every create goes to the server (no leases).
    let opts = [
        "noleases",
        "entry_timeout=60",
        "attr_timeout=60",
        "negative_timeout=60",
    ];
    let mut scene = Scene::new(&opts);
    std::fs::write(scene.on_server("old"), "old").unwrap();
    let mut opener = Proc::python(OPENER, &[&scene.mnt("old"), &scene.mnt("new")]);
    opener.expect("ready");
    scene.server.kill();
    for call in ["open", "create"] {
        opener.say(call);
        opener.expect("calling");
        opener.wait_blocked();
        let sent = Instant::now();
        send_signal(opener.pid(), libc::SIGINT);
        let got = opener.line(Duration::from_secs(20));
        let took = sent.elapsed();
        eprintln!("{call}: {got:?} {took:?} after SIGINT");
        assert_eq!(got.as_deref(), Some("interrupted"), "{call}");
        assert!(took < PROMPTLY, "{call}: EINTR came {took:?} after SIGINT");
    }

    // The server gets both calls when it is back (they were sent), and the handles they
    // opened are closed again: the process that made them got EINTR and holds none.
    scene.server.restart();
    let mut metrics = String::new();
    let settled = e2e_tests::poll_until(Duration::from_secs(20), || {
        metrics = scene.server_metrics();
        let n = |c: &str| {
            metric(
                &metrics,
                &format!("fsxp_server_requests_total{{command=\"{c}\"}}"),
            )
        };
        let done = n("Open") >= 1.0 && n("Create") >= 1.0 && n("Close") >= 2.0;
        (done && metric(&metrics, "fsxp_server_open_files") == 0.0).then_some(())
    });
    assert!(
        settled.is_some(),
        "handles left open on the server:\n{metrics}"
    );
    assert!(
        scene.on_server("new").exists(),
        "the create ran on the server"
    );
    // The process is still there, holding nothing in the mount: its calls failed.
    let held: Vec<_> = std::fs::read_dir(format!("/proc/{}/fd", opener.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.starts_with(&scene.mount.path))
        .collect();
    assert!(held.is_empty(), "{held:?}");
    opener.say("exit");
    assert!(opener.ends_within(Duration::from_secs(20)).is_some());
}

/// Installs a SIGUSR1 handler with SA_RESTART (signal.siginterrupt False), then copies
/// each file of argv[2] into the mount argv[1] and back within it, and checks the copy,
/// for argv[3] seconds, through libc directly (Python retries calls that fail with EINTR
/// itself). Prints "ready", then "done ROUNDS SIGNALS" or "FAIL ...".
const COPIER: &str = r#"
import ctypes, hashlib, os, signal, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.read.restype = libc.write.restype = ctypes.c_ssize_t
libc.read.argtypes = libc.write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
libc.open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
signals = 0
def on_usr1(sig, frame):
    global signals
    signals += 1
signal.signal(signal.SIGUSR1, on_usr1)
signal.siginterrupt(signal.SIGUSR1, False)
mnt, src, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
def ok(r, what):
    if r < 0:
        e = ctypes.get_errno()
        print("FAIL", what, os.strerror(e), flush=True)
        sys.exit(1)
    return r
buf = ctypes.create_string_buffer(1 << 16)
def copy(a, b):
    fi = ok(libc.open(a.encode(), os.O_RDONLY, 0), "open " + a)
    fo = ok(libc.open(b.encode(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), "create " + b)
    while True:
        n = ok(libc.read(fi, buf, len(buf)), "read " + a)
        if n == 0:
            break
        done = 0
        while done < n:
            done += ok(libc.write(fo, ctypes.addressof(buf) + done, n - done), "write " + b)
    ok(libc.close(fi), "close " + a)
    ok(libc.close(fo), "close " + b)
def digest(path):
    fd = ok(libc.open(path.encode(), os.O_RDONLY, 0), "open " + path)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    h = hashlib.sha256()
    while True:
        n = ok(libc.read(fd, buf, len(buf)), "read " + path)
        if n == 0:
            break
        h.update(buf.raw[:n])
    ok(libc.close(fd), "close " + path)
    return h.hexdigest()
print("ready", flush=True)
sys.stdin.readline()
rounds, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    for name in sorted(os.listdir(src)):
        a = os.path.join(src, name)
        b = os.path.join(mnt, "%s.%d" % (name, rounds))
        c = b + ".again"
        copy(a, b)
        copy(b, c)
        if digest(c) != digest(a):
            print("FAIL data of", c, flush=True)
            sys.exit(1)
    rounds += 1
print("done", rounds, signals, flush=True)
"#;

#[test]
fn sigusr1_every_millisecond_on_a_healthy_mount_makes_no_call_fail() {
    // With two threads reading FUSE requests too: an interrupt may be read before its
    // request is registered (it is asked for again), and must be neither lost nor fatal.
    for opts in [&[][..], &["fuse_threads=2"]] {
        signals_on_a_healthy_mount(opts);
    }
}

fn signals_on_a_healthy_mount(opts: &[&str]) {
    let scene = Scene::new(opts);
    let src = tempfile::tempdir().unwrap();
    for (i, len) in [0, 1, 4096, 100_000, 1 << 20].into_iter().enumerate() {
        e2e_tests::random_file(&src.path().join(format!("f{i}")), len);
    }
    let mut copier = Proc::python(COPIER, &[&scene.mount.path, src.path(), Path::new("4")]);
    copier.expect("ready");
    let pid = copier.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                send_signal(pid, libc::SIGUSR1);
                sent += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            sent
        })
    };
    copier.say("go");
    let got = copier.line(Duration::from_secs(120));
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    let status = scene.status();
    eprintln!(
        "-o {opts:?}: {got:?}; {sent} SIGUSR1 sent; interrupts: {}",
        status["interrupts"]
    );
    let got = got.expect("the copier finishes");
    assert!(got.starts_with("done "), "{got}");
    let handled: u64 = got.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(handled > 1000, "the copier handled {handled} signals");
    // The kernel interrupted calls in flight; every one was answered by the server, in
    // time, none with EINTR.
    let received = status["interrupts"]["received"].as_u64();
    assert!(received.is_some_and(|n| n > 0), "{status}");
    assert_eq!(status["interrupts"]["answered_eintr"], 0, "{status}");
}
