//! Locks across machines, as programs see them: two mounts of one export (two clients) and
//! processes on the server's own disk, with the real tools (`flock(1)`, python's
//! `fcntl.lockf`, `sqlite3`). Each test kills and reaps what it started and unmounts, also
//! when it fails (the `Procs` guard and `Mount`'s drop).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use e2e_tests::fault_proxy::FaultProxy;
use e2e_tests::{bin_dir, poll_until, require_mount_support, sh, Mount, Server};

/// A python process holding locks on one file, driven line by line from stdin:
/// `lock r|w START LEN [wait]`, `unlock START LEN`, `test w START LEN`, `read`;
/// it answers `ok`, `EAGAIN`, `EDEADLK`, `EINTR`, the F_GETLK result, or an errno name.
const LOCKER: &str = r#"
import fcntl, os, signal, struct, sys, errno, time
class Interrupted(Exception): pass
def on_int(sig, frame): raise Interrupted()
signal.signal(signal.SIGINT, on_int)
fd = os.open(sys.argv[1], os.O_RDWR)
print("ready", flush=True)
for line in sys.stdin:
    w = line.split()
    try:
        if w[0] == "lock":
            op = fcntl.LOCK_EX if w[1] == "w" else fcntl.LOCK_SH
            if len(w) < 5: op |= fcntl.LOCK_NB
            t = time.monotonic()
            fcntl.lockf(fd, op, int(w[3]), int(w[2]))
            print("ok %.3f" % (time.monotonic() - t), flush=True)
        elif w[0] == "unlock":
            fcntl.lockf(fd, fcntl.LOCK_UN, int(w[2]), int(w[1]))
            print("ok", flush=True)
        elif w[0] == "test":
            typ = fcntl.F_WRLCK if w[1] == "w" else fcntl.F_RDLCK
            arg = struct.pack("hhqqi", typ, 0, int(w[2]), int(w[3]), 0)
            r = fcntl.fcntl(fd, fcntl.F_GETLK, arg)
            t, _, start, length, pid = struct.unpack("hhqqi", r)
            print("unlocked" if t == fcntl.F_UNLCK else "%s %d %d" % ("w" if t == fcntl.F_WRLCK else "r", start, length), flush=True)
        elif w[0] == "read":
            os.pread(fd, 1, 0)
            print("ok", flush=True)
        elif w[0] == "exit":
            break
    except Interrupted:
        print("EINTR %.3f" % (time.monotonic() - t), flush=True)
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)), flush=True)
"#;

struct Locker {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl Locker {
    fn on(file: &Path) -> Locker {
        let mut child = Command::new("python3")
            .args(["-c", LOCKER])
            .arg(file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "python could not open {}",
            file.display()
        );
        Locker { child, stdin, out }
    }

    fn send(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn answer(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    fn ask(&mut self, cmd: &str) -> String {
        self.send(cmd);
        self.answer()
    }
}

impl Drop for Locker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes a test started in the background, each the leader of its own process group
/// (`bash`), killed with their group and reaped when dropped.
#[derive(Default)]
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            kill_group(c);
        }
    }
}

/// Kills `c` and everything in its process group (flock(1) runs its command as a child,
/// which holds the lock too), and reaps it.
fn kill_group(c: &mut Child) {
    // SAFETY: kill(2) with a negative pid: a signal to a process group this test made.
    unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
    let _ = c.wait();
}

/// `bash -c script` in a process group of its own.
fn bash(script: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new("bash");
    c.args(["-euo", "pipefail", "-c", script]).process_group(0);
    c
}

/// Two mounts of one export (in the fields' order: mounts go before the server).
struct Two {
    a: Mount,
    b: Mount,
    server: Server,
}

impl Two {
    fn new(server_args: &[&str]) -> Two {
        require_mount_support();
        let server = Server::start(server_args);
        let a = Mount::new(&server, "data", &[]);
        let b = Mount::new(&server, "data", &[]);
        Two { a, b, server }
    }

    fn on_server(&self, name: &str) -> PathBuf {
        self.server.export("data").join(name)
    }
}

#[test]
fn flock_from_two_mounts_counts_to_exactly_1000_and_nb_fails_while_held() {
    let two = Two::new(&[]);
    // In a directory both mounts list, so hold leases on in turn (the root is never leased).
    std::fs::create_dir(two.on_server("d")).unwrap();
    std::fs::write(two.on_server("d/counter"), "0\n").unwrap();
    std::fs::write(two.on_server("d/lock"), "").unwrap();
    let mut procs = Procs::default();
    for m in [&two.a, &two.b] {
        let dir = m.path.join("d");
        let dir = dir.display();
        let child = bash(&format!(
            "cd '{dir}'; for i in $(seq 500); do \
               flock -x lock sh -c 'n=$(cat counter); echo $((n + 1)) > counter'; done"
        ))
        .spawn()
        .unwrap();
        procs.0.push(child);
    }
    for c in &mut procs.0 {
        assert!(c.wait().unwrap().success());
    }
    let total = std::fs::read_to_string(two.on_server("d/counter")).unwrap();
    assert_eq!(total.trim(), "1000", "increments were lost");

    // While one mount holds it, the other's flock -n fails at once, and succeeds after.
    let mut holder = bash(&format!(
        "exec flock -x '{}' sleep 30",
        two.a.path.join("d/lock").display()
    ))
    .spawn()
    .unwrap();
    let b_lock = two.b.path.join("d/lock");
    let held = e2e_tests::poll_until(Duration::from_secs(5), || {
        let s = Command::new("flock")
            .args(["-n"])
            .arg(&b_lock)
            .arg("true")
            .status()
            .unwrap();
        (!s.success()).then_some(())
    });
    kill_group(&mut holder);
    assert!(held.is_some(), "flock -n on the other mount never failed");
    sh(&format!("flock -w 5 '{}' true", b_lock.display()));
}

/// Read-modify-write of a counter inside the locked file, through descriptors held open
/// the whole time: each side must see the other's last write (the pages it cached before
/// are dropped when it takes the lock) and its own write must reach the server before its
/// unlock does (no fsync).
const COUNTER: &str = r#"
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
for _ in range(500):
    fcntl.lockf(fd, fcntl.LOCK_EX)
    n = int(os.pread(fd, 16, 0).decode().strip() or "0")
    os.pwrite(fd, ("%-15d\n" % (n + 1)).encode(), 0)
    fcntl.lockf(fd, fcntl.LOCK_UN)
"#;

#[test]
fn a_counter_in_the_locked_file_through_open_descriptors_reaches_1000() {
    let two = Two::new(&[]);
    std::fs::write(two.on_server("n"), format!("{:<15}\n", 0)).unwrap();
    let mut procs = Procs::default();
    for m in [&two.a, &two.b] {
        let child = Command::new("python3")
            .args(["-c", COUNTER])
            .arg(m.path.join("n"))
            .spawn()
            .unwrap();
        procs.0.push(child);
    }
    for c in &mut procs.0 {
        assert!(c.wait().unwrap().success());
    }
    let total = std::fs::read_to_string(two.on_server("n")).unwrap();
    assert_eq!(
        total.trim(),
        "1000",
        "an increment read stale data or was lost"
    );
}

#[test]
fn fcntl_byte_ranges_exclude_only_where_they_overlap() {
    let two = Two::new(&[]);
    std::fs::write(two.on_server("f"), vec![0u8; 100]).unwrap();
    let mut a = Locker::on(&two.a.path.join("f"));
    let mut b = Locker::on(&two.b.path.join("f"));
    assert!(a.ask("lock w 0 10").starts_with("ok"));
    assert!(b.ask("lock w 10 10").starts_with("ok"), "disjoint ranges");
    assert_eq!(b.ask("lock w 5 1"), "EAGAIN");
    assert_eq!(
        b.ask("lock r 9 1"),
        "EAGAIN",
        "a read lock under a write lock"
    );
    assert_eq!(
        b.ask("test w 0 100"),
        "w 0 10",
        "F_GETLK names the other side's lock"
    );
    // Split: a lets go of 3..=6 only.
    assert_eq!(a.ask("unlock 3 4"), "ok");
    assert!(b.ask("lock w 3 4").starts_with("ok"));
    assert_eq!(b.ask("lock w 2 1"), "EAGAIN");
    assert_eq!(b.ask("lock w 7 1"), "EAGAIN");
    // Shared locks share.
    assert!(a.ask("lock r 50 10").starts_with("ok"));
    assert!(b.ask("lock r 55 10").starts_with("ok"));
    assert_eq!(a.ask("test w 60 5"), "r 55 10");
}

#[test]
fn sqlite_from_two_mounts_keeps_every_row_and_its_integrity() {
    let two = Two::new(&[]);
    let init = "PRAGMA journal_mode=DELETE; CREATE TABLE t (who TEXT, n INTEGER);";
    sh(&format!(
        "sqlite3 '{}' '{init}' >/dev/null",
        two.a.path.join("db").display()
    ));
    let mut procs = Procs::default();
    for (m, who) in [(&two.a, "a"), (&two.b, "b")] {
        let sql: String = (0..1000)
            .map(|i| format!("INSERT INTO t VALUES ('{who}', {i});\n"))
            .collect();
        let script = format!(".timeout 60000\nPRAGMA journal_mode=DELETE;\n{sql}");
        let mut child = Command::new("sqlite3")
            .arg(m.path.join("db"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        procs.0.push(child);
    }
    for c in &mut procs.0 {
        assert!(c.wait().unwrap().success(), "an insert failed");
    }
    let check = |db: &Path| {
        sh(&format!(
            "sqlite3 '{}' 'PRAGMA integrity_check; SELECT count(*) FROM t; \
             SELECT count(DISTINCT n) FROM t WHERE who = \"a\"; \
             SELECT count(DISTINCT n) FROM t WHERE who = \"b\";'",
            db.display()
        ))
    };
    assert_eq!(check(&two.b.path.join("db")), "ok\n2000\n1000\n1000\n");
    assert_eq!(check(&two.on_server("db")), "ok\n2000\n1000\n1000\n");
}

#[test]
fn a_flock_on_the_server_s_disk_excludes_the_mount_and_the_other_way() {
    let two = Two::new(&[]);
    let on_disk = two.on_server("f");
    std::fs::write(&on_disk, "x").unwrap();
    let mut procs = Procs::default();
    procs.0.push(
        bash(&format!("exec flock -x '{}' sleep 30", on_disk.display()))
            .spawn()
            .unwrap(),
    );
    let through = two.a.path.join("f");
    let refused = e2e_tests::poll_until(Duration::from_secs(5), || {
        let s = Command::new("flock")
            .arg("-n")
            .arg(&through)
            .arg("true")
            .status()
            .unwrap();
        (!s.success()).then_some(())
    });
    assert!(
        refused.is_some(),
        "the mount took a flock the server's disk holds"
    );
    // A blocking flock through the mount goes on once the local holder lets go.
    let t = Instant::now();
    let mut waiting = bash(&format!("flock -w 20 '{}' true", through.display()))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut local = procs.0.pop().unwrap();
    kill_group(&mut local);
    assert!(waiting.wait().unwrap().success());
    assert!(t.elapsed() < Duration::from_secs(5));
    // And the other way: a mount's lock is seen by a process on the server.
    procs.0.push(
        bash(&format!("exec flock -x '{}' sleep 30", through.display()))
            .spawn()
            .unwrap(),
    );
    let excluded = e2e_tests::poll_until(Duration::from_secs(5), || {
        let s = Command::new("flock")
            .arg("-n")
            .arg(&on_disk)
            .arg("true")
            .status()
            .unwrap();
        (!s.success()).then_some(())
    });
    assert!(
        excluded.is_some(),
        "a process on the server took a flock a mount holds"
    );
    // fcntl too: a mount's byte-range lock is seen by lockf on the server's disk.
    let mut a = Locker::on(&two.a.path.join("f"));
    assert!(a.ask("lock w 100 10").starts_with("ok"));
    let mut local = Locker::on(&on_disk);
    assert_eq!(local.ask("lock w 105 1"), "EAGAIN");
    assert!(local.ask("lock w 0 10").starts_with("ok"));
}

#[test]
fn kill_int_of_a_process_waiting_in_f_setlkw_returns_eintr_within_a_second() {
    let two = Two::new(&[]);
    std::fs::write(two.on_server("f"), vec![0u8; 10]).unwrap();
    let mut a = Locker::on(&two.a.path.join("f"));
    let mut b = Locker::on(&two.b.path.join("f"));
    assert!(a.ask("lock w 0 10").starts_with("ok"));
    b.send("lock w 0 10 wait");
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    e2e_tests::send_signal(b.child.id(), libc::SIGINT);
    let answer = b.answer();
    let took = t.elapsed();
    assert!(answer.starts_with("EINTR"), "{answer}");
    assert!(took < Duration::from_secs(1), "EINTR after {took:?}");
    // The wait is gone from the server: a lets go, and b does not hold the range.
    assert_eq!(a.ask("unlock 0 10"), "ok");
    std::thread::sleep(Duration::from_millis(200));
    let mut c = Locker::on(&two.a.path.join("f"));
    assert!(
        c.ask("lock w 0 10").starts_with("ok"),
        "the interrupted wait took the lock after all"
    );
}

#[test]
fn a_lock_outlives_a_cut_and_ends_with_its_killed_client_s_session() {
    require_mount_support();
    let server = Server::start(&["--session-grace", "3"]);
    std::fs::write(server.export("data").join("f"), "x").unwrap();
    let proxy = FaultProxy::start(&server.addr);
    let a = Mount::via(&server, &proxy.addr, "data", &[]);
    let b = Mount::new(&server, "data", &[]);
    let mut procs = Procs::default();
    procs.0.push(
        bash(&format!(
            "exec flock -x '{}' sleep 60",
            a.path.join("f").display()
        ))
        .spawn()
        .unwrap(),
    );
    let b_file = b.path.join("f");
    let nb = |path: &Path| {
        Command::new("flock")
            .arg("-n")
            .arg(path)
            .arg("true")
            .status()
            .unwrap()
            .success()
    };
    assert!(
        e2e_tests::poll_until(Duration::from_secs(5), || (!nb(&b_file)).then_some(())).is_some()
    );
    // A cut: a resumes its session, and its lock stays.
    proxy.cut_now();
    for _ in 0..10 {
        assert!(!nb(&b_file), "the lock went with the cut");
        std::thread::sleep(Duration::from_millis(200));
    }
    // a's fsmount dies: its session ends after the grace period, and the lock with it.
    let t = Instant::now();
    e2e_tests::send_signal(a.pid(), libc::SIGKILL);
    assert!(
        e2e_tests::poll_until(Duration::from_secs(10), || nb(&b_file).then_some(())).is_some(),
        "the dead client's lock was never let go"
    );
    let took = t.elapsed();
    assert!(took < Duration::from_secs(8), "let go after {took:?}");
    drop(procs);
    drop(a);
}

#[test]
fn after_a_server_restart_the_holder_reclaims_and_a_new_lock_waits_for_the_grace() {
    require_mount_support();
    let mut server = Server::start(&["--lock-grace", "4"]);
    std::fs::write(server.export("data").join("f"), vec![0u8; 10]).unwrap();
    let a = Mount::new(&server, "data", &[]);
    let b = Mount::new(&server, "data", &[]);
    let mut la = Locker::on(&a.path.join("f"));
    assert!(la.ask("lock w 0 10").starts_with("ok"));
    // The server crashes and comes back.
    server.kill();
    server.restart();
    // b asks at once: its lock waits for the grace period, then finds a's lock reclaimed.
    let mut lb = Locker::on(&b.path.join("f"));
    let t = Instant::now();
    let answer = lb.ask("lock w 0 10");
    let took = t.elapsed();
    assert_eq!(
        answer,
        "EAGAIN",
        "a's lock was not reclaimed\n{}\n{}",
        a.log(),
        server.log()
    );
    // (It waits until a has reclaimed, which ends the grace: the last run noted one
    // session holding locks.)
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert_eq!(lb.ask("lock w 0 1"), "EAGAIN", "still a's after the grace");
    // a still holds it, and lets it go.
    assert_eq!(la.ask("unlock 0 10"), "ok");
    assert!(lb.ask("lock w 0 10").starts_with("ok"));
}

/// `fsmount status --json MOUNTPOINT`, parsed.
fn mount_status(m: &Mount) -> serde_json::Value {
    let out = Command::new(bin_dir().join("fsmount"))
        .args(["status", "--json"])
        .arg(&m.path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `fsserver status --json` (or `--metrics`) of `server`, through its control socket.
fn server_status(server: &Server, what: &str) -> String {
    let out = Command::new(bin_dir().join("fsserver"))
        .args(["status", what, "--token-file"])
        .arg(&server.token_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn status_and_metrics_show_locks_held_and_waits_on_both_sides() {
    let two = Two::new(&[]);
    std::fs::write(two.on_server("f"), vec![0u8; 10]).unwrap();
    let mut a = Locker::on(&two.a.path.join("f"));
    let mut b = Locker::on(&two.b.path.join("f"));
    assert!(a.ask("lock w 0 10").starts_with("ok"));
    b.send("lock w 0 10 wait");
    let waiting = poll_until(Duration::from_secs(5), || {
        let st = mount_status(&two.b);
        (st["locks"]["waiting"] == 1).then_some(st)
    })
    .expect("b's status shows its wait");
    let shown = &waiting["locks"]["list"][0];
    assert_eq!(shown["file"], "f", "{waiting}");
    assert_eq!(shown["typ"], "write");
    assert!(shown["waiting_seconds"].is_number());
    let held = mount_status(&two.a);
    assert_eq!(held["locks"]["held"], 1, "{held}");
    assert_eq!(held["locks"]["list"][0]["start"], 0);
    assert_eq!(held["locks"]["list"][0]["end"], 9);
    let st: serde_json::Value =
        serde_json::from_str(&server_status(&two.server, "--json")).unwrap();
    assert_eq!(st["locks"]["ranges"], 1, "{st}");
    assert_eq!(st["locks"]["waiters"], 1, "{st}");
    let metrics = server_status(&two.server, "--metrics");
    assert!(metrics.contains("fsxp_server_lock_waiters 1"), "{metrics}");
    // a lets go: b holds it, and the counts say so.
    assert_eq!(a.ask("unlock 0 10"), "ok");
    assert!(b.answer().starts_with("ok"));
    let st = mount_status(&two.b);
    assert_eq!(st["locks"]["held"], 1, "{st}");
    assert_eq!(st["locks"]["waiting"], 0);
    assert!(st["locks"]["counts"]["waits"].as_u64() >= Some(1));
    let metrics = server_status(&two.server, "--metrics");
    assert!(
        metrics.contains("fsxp_server_lock_waits_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("fsxp_server_lock_waiters 0"), "{metrics}");
}

#[test]
fn a_lock_a_server_process_took_during_a_restart_fails_the_file_with_eio() {
    require_mount_support();
    let mut server = Server::start(&["--lock-grace", "5"]);
    let on_disk = server.export("data").join("f");
    std::fs::write(&on_disk, vec![0u8; 10]).unwrap();
    let a = Mount::new(&server, "data", &[]);
    let mut la = Locker::on(&a.path.join("f"));
    assert!(la.ask("lock w 0 10").starts_with("ok"));
    assert_eq!(la.ask("read"), "ok");
    server.kill();
    // While the server is down, a process on its disk takes the range.
    let mut local = Locker::on(&on_disk);
    assert!(local.ask("lock w 0 10").starts_with("ok"));
    server.restart();
    // a's reclaim is refused: the file fails with EIO from then on, never silently
    // unlocked.
    let lost = poll_until(Duration::from_secs(15), || {
        let r = la.ask("read");
        (r == "EIO").then_some(r)
    });
    assert!(
        lost.is_some(),
        "reads went on after the lock was lost\n{}",
        a.log()
    );
    assert_eq!(la.ask("lock w 0 10"), "EIO");
    let st = mount_status(&a);
    assert_eq!(st["locks"]["counts"]["lost"], 1, "{st}");
    assert!(a.log().contains("refused"), "{}", a.log());
    // A new open of the file is not affected.
    let mut again = Locker::on(&a.path.join("f"));
    assert_eq!(again.ask("read"), "ok");
    drop(la);
}

#[test]
fn after_an_orderly_restart_the_grace_ends_once_the_holder_has_reclaimed() {
    require_mount_support();
    let mut server = Server::start(&["--lock-grace", "60"]);
    std::fs::write(server.export("data").join("f"), vec![0u8; 10]).unwrap();
    let a = Mount::new(&server, "data", &[]);
    let b = Mount::new(&server, "data", &[]);
    let mut la = Locker::on(&a.path.join("f"));
    let mut lb = Locker::on(&b.path.join("f"));
    assert!(la.ask("lock w 0 10").starts_with("ok"));
    assert!(server.terminate().success());
    server.restart();
    // One session held locks at the stop: once a has reclaimed, the grace is over, long
    // before its 60 s.
    let t = Instant::now();
    assert_eq!(
        lb.ask("lock w 0 10"),
        "EAGAIN",
        "a's lock was not reclaimed"
    );
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert!(
        lb.ask("lock w 20 10").starts_with("ok"),
        "elsewhere: granted"
    );
    assert_eq!(la.ask("unlock 0 10"), "ok");
    assert!(lb.ask("lock w 0 10 wait").starts_with("ok"));
}

/// The count of sessions holding locks is noted as it changes, not only at an orderly
/// stop: after a crash too the grace ends once the holder has reclaimed, long before its
/// 60 s; and a crash of a server where every lock had been let go gives no grace at all
/// (before: every run that ever granted a lock made the next one wait the whole grace, and
/// a server restarted more often than that held every new lock for ever).
#[test]
fn after_a_crash_the_grace_ends_once_the_holders_have_reclaimed() {
    require_mount_support();
    let mut server = Server::start(&["--lock-grace", "60"]);
    std::fs::write(server.export("data").join("f"), vec![0u8; 10]).unwrap();
    std::fs::write(server.export("data").join("g"), vec![0u8; 10]).unwrap();
    let a = Mount::new(&server, "data", &[]);
    let b = Mount::new(&server, "data", &[]);
    let mut la = Locker::on(&a.path.join("f"));
    let mut lb = Locker::on(&b.path.join("f"));
    assert!(la.ask("lock w 0 10").starts_with("ok"));
    server.kill();
    server.restart();
    let t = Instant::now();
    assert_eq!(
        lb.ask("lock w 0 10"),
        "EAGAIN",
        "a's lock was not reclaimed"
    );
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    // Every lock let go, then a crash: no grace.
    assert_eq!(la.ask("unlock 0 10"), "ok");
    // The unlock may be sent behind: on the server before the crash. (One still on its way
    // when the server dies leaves the count noted: the next run waits its whole grace.)
    assert!(e2e_tests::fsmount_sync(&a.path).status.success());
    server.kill();
    server.restart();
    let mut lg = Locker::on(&b.path.join("g"));
    let t = Instant::now();
    assert!(lg.ask("lock w 0 10").starts_with("ok"));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "a new lock waited {:?} after a crash with none held\n{}",
        t.elapsed(),
        server.log()
    );
}
