//! Harness for end-to-end tests: a real `fsserver` process on `127.0.0.1:0`, real `fsmount`
//! FUSE mounts, and a raw protocol client for what the mount can not send. Every guard
//! cleans up on drop (also when the test panics): mounts are unmounted (`fusermount3 -u`,
//! then `umount -l`), processes stopped by PID.

pub mod fault_proxy;
pub mod hostile;
pub mod pair;
pub mod raw;
pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Directory holding the built `fsserver` and `fsmount`; builds them once per test run.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // target/<profile>/deps/<test binary>, or target/<profile>/<bench binary>
        let exe = std::env::current_exe().expect("test binary path");
        let mut dir = exe.parent().expect("target/<profile>").to_path_buf();
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir.pop();
        }
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "fsserver", "-p", "fsmount"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building fsserver and fsmount failed");
        dir
    })
}

/// `delay_proxy` (`exe`: the test's `env!("CARGO_BIN_EXE_delay_proxy")`) in front of
/// `target`, delaying each direction `one_way_ms`; ended when dropped.
pub struct DelayProxy {
    child: Child,
    /// Where it listens.
    pub addr: String,
}

impl DelayProxy {
    pub fn start(exe: &str, target: &str, one_way_ms: u64) -> DelayProxy {
        let mut child = Command::new(exe)
            .args([target, &one_way_ms.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start delay_proxy");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("its stdout"))
            .read_line(&mut line)
            .expect("delay_proxy's first line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .expect("delay_proxy says where it listens")
            .to_string();
        DelayProxy { child, addr }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails the test unless the mount prerequisites are present: mount tests never skip.
pub fn require_mount_support() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: mount tests need FUSE (run scripts/test.sh)"
    );
    assert!(
        Command::new("fusermount3").arg("-V").output().is_ok(),
        "fusermount3 is missing: install the fuse3 package (scripts/test.sh does)"
    );
    assert!(nix::unistd::geteuid().is_root(), "mount tests run as root");
}

/// A running fsserver over its own temporary export directories.
pub struct Server {
    child: Child,
    pub addr: String,
    /// Lines fsserver printed on stdout after the first "listening on".
    stdout: Arc<Mutex<Vec<String>>>,
    pub token_file: PathBuf,
    pub dir: tempfile::TempDir,
    stderr_log: PathBuf,
    /// Arguments besides `--listen`, to restart it alike.
    args: Vec<std::ffi::OsString>,
    /// `HOME` for the server, when not the test's.
    home: Option<PathBuf>,
}

/// The lines fsserver prints after the first "listening on" (more addresses, the metrics
/// address), collected as they come.
fn lines_as_they_come(stdout: BufReader<std::process::ChildStdout>) -> Arc<Mutex<Vec<String>>> {
    let rest = Arc::new(Mutex::new(Vec::new()));
    let sink = rest.clone();
    std::thread::spawn(move || {
        for l in stdout.lines().map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    rest
}

/// Starts fsserver with `args` on `listen` (retrying while the port is still taken after a
/// kill); its stderr is appended to `log`. Returns the child and the address it listens on.
fn spawn_server(
    args: &[std::ffi::OsString],
    listen: &str,
    log: &Path,
    home: Option<&Path>,
) -> (Child, String, Arc<Mutex<Vec<String>>>) {
    let start = Instant::now();
    loop {
        let mut cmd = Command::new(bin_dir().join("fsserver"));
        if let Some(home) = home {
            cmd.env("HOME", home);
        }
        // An exports file names its own listen addresses.
        if !args.iter().any(|a| a == "--config") {
            cmd.args(["--listen", listen]);
        }
        cmd.args(args);
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        cmd.stdout(Stdio::piped()).stderr(err);
        let mut child = cmd.spawn().expect("start fsserver");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        if let Some(a) = line.trim().strip_prefix("fsserver: listening on ") {
            return (child, a.to_string(), lines_as_they_come(stdout));
        }
        let _ = child.kill();
        let _ = child.wait();
        if start.elapsed() > Duration::from_secs(10) {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("fsserver did not start: {line:?}\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Server {
    /// Starts fsserver exporting `data` (at `self.export("data")`) plus `extra` arguments.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_exports(&["data"], extra)
    }

    /// Starts fsserver with one export per name, each a fresh directory under `dir/exports`.
    /// Each export trusts the client's root (`--no-root-squash`): tests run as root and
    /// compare ownership with a local disk. [`Server::start_squashing`] keeps the default.
    pub fn start_exports(names: &[&str], extra: &[&str]) -> Server {
        let mut args: Vec<&str> = Vec::new();
        for name in names {
            args.extend(["--no-root-squash", name]);
        }
        args.extend(extra);
        Server::start_squashing(names, &args)
    }

    /// Starts fsserver with one export per name and the server's own identity defaults (root
    /// squashed) unless `extra` says otherwise.
    pub fn start_squashing(names: &[&str], extra: &[&str]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("fsxp-server")
            .tempdir()
            .unwrap();
        let token_file = dir.path().join("token");
        let mut args: Vec<std::ffi::OsString> =
            vec!["--token-file".into(), token_file.clone().into()];
        for name in names {
            let export = dir.path().join("exports").join(name);
            std::fs::create_dir_all(&export).unwrap();
            args.push("--export".into());
            args.push(format!("{name}={}", export.display()).into());
        }
        args.extend(extra.iter().map(|a| a.into()));
        Server::spawn(dir, token_file, args, "127.0.0.1:0")
    }

    /// Starts fsserver with `args` on `listen`, its log in `dir`.
    fn spawn(
        dir: tempfile::TempDir,
        token_file: PathBuf,
        args: Vec<std::ffi::OsString>,
        listen: &str,
    ) -> Server {
        Server::spawn_in(dir, token_file, args, listen, None)
    }

    /// `spawn` with `HOME` set to `home` for the server.
    fn spawn_in(
        dir: tempfile::TempDir,
        token_file: PathBuf,
        args: Vec<std::ffi::OsString>,
        listen: &str,
        home: Option<PathBuf>,
    ) -> Server {
        let stderr_log = dir.path().join("server.log");
        let (child, addr, stdout) = spawn_server(&args, listen, &stderr_log, home.as_deref());
        Server {
            child,
            addr,
            stdout,
            token_file,
            dir,
            stderr_log,
            args,
            home,
        }
    }

    /// Starts fsserver with `--config FILE` as [`Server::start_config`] does, with `HOME` set
    /// to `home` and the token file the default one there (the file should name none).
    pub fn start_config_in_home(toml: &str, home: &Path) -> Server {
        Server::start_config_with(toml, Some(home))
    }

    /// Starts fsserver from flags alone (`--export data=DIR`, no token or TLS paths) with
    /// `HOME` set to `home`: everything it needs it makes under `home`.
    pub fn start_flags_in_home(home: &Path) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("fsxp-server")
            .tempdir()
            .unwrap();
        let export = dir.path().join("exports").join("data");
        std::fs::create_dir_all(&export).unwrap();
        let args: Vec<std::ffi::OsString> = vec![
            "--export".into(),
            format!("data={}", export.display()).into(),
        ];
        let token_file = home.join(".config/fsserver/token");
        Server::spawn_in(
            dir,
            token_file,
            args,
            "127.0.0.1:0",
            Some(home.to_path_buf()),
        )
    }

    /// The path of the exports file of a server started from one.
    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("fsserver.toml")
    }

    /// Starts fsserver with `--config FILE`, FILE holding `toml` in which `{dir}` stands for
    /// a fresh directory of the server's (with `exports/` in it). The token file is
    /// `{dir}/token` when the file names no other.
    pub fn start_config(toml: &str) -> Server {
        Server::start_config_with(toml, None)
    }

    /// `start_config`, with `HOME` set to `home` (and the default token file there) if given.
    fn start_config_with(toml: &str, home: Option<&Path>) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("fsxp-server")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("exports")).unwrap();
        let config = dir.path().join("fsserver.toml");
        std::fs::write(&config, toml.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
        let token_file = match home {
            Some(home) => home.join(".config/fsserver/token"),
            None => dir.path().join("token"),
        };
        let args: Vec<std::ffi::OsString> = vec!["--config".into(), config.into()];
        Server::spawn_in(dir, token_file, args, "", home.map(Path::to_path_buf))
    }

    /// Kills fsserver with SIGKILL (no draining, no goodbye) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts fsserver again on the same address, exports and token (after `kill`).
    pub fn restart(&mut self) {
        assert!(!self.is_running(), "restart after kill");
        let (child, addr, stdout) = spawn_server(
            &self.args,
            &self.addr,
            &self.stderr_log,
            self.home.as_deref(),
        );
        self.stdout = stdout;
        assert_eq!(addr, self.addr);
        self.child = child;
    }

    /// Kills fsserver (SIGKILL) and starts it again on the same address, for a caller that
    /// holds descriptors of files on a mount of it with writes in flight. `restart` forks
    /// from the caller, and the exec closes the child's copies of those descriptors, each
    /// close a FLUSH that waits for the writes to reach the server, which is down: the new
    /// server would never start. Here its process is made while the old one still runs (so
    /// those closes complete) and waits in a shell that execs it once the old one is gone.
    pub fn kill_and_restart_holding_files(&mut self) {
        let standby = self.standby();
        self.kill_and_start(standby);
    }

    /// A process ready to become this server's replacement, made now, while the server
    /// runs (see `kill_and_restart_holding_files`); `kill_and_start` puts it in place.
    /// Dropped unused, it ends without having started a server.
    pub fn standby(&self) -> Standby {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("echo ready && read go && exec \"$0\" \"$@\"")
            .arg(bin_dir().join("fsserver"));
        if let Some(home) = &self.home {
            cmd.env("HOME", home);
        }
        if !self.args.iter().any(|a| a == "--config") {
            cmd.args(["--listen", &self.addr]);
        }
        cmd.args(&self.args);
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_log)
            .unwrap();
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(err);
        let mut child = cmd.spawn().expect("start the standby shell");
        // The shell runs once its exec (and those closes) is over.
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n", "the standby shell runs");
        Standby {
            child: Some(child),
            stdout: Some(stdout),
        }
    }

    /// Kills fsserver (SIGKILL, also when it is stopped) and lets `standby` become the
    /// server on the same address.
    pub fn kill_and_start(&mut self, mut standby: Standby) {
        self.kill();
        let mut child = standby.child.take().unwrap();
        let mut stdout = standby.stdout.take().unwrap();
        let mut go = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut go, b"go\n").unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("fsserver: listening on ");
        assert_eq!(
            addr,
            Some(self.addr.as_str()),
            "fsserver restarted: {line:?}"
        );
        self.stdout = lines_as_they_come(stdout);
        self.child = child;
    }

    pub fn export(&self, name: &str) -> PathBuf {
        self.dir.path().join("exports").join(name)
    }

    pub fn source(&self, name: &str) -> String {
        format!("{}:/{}", self.addr, name)
    }

    pub fn token(&self) -> Vec<u8> {
        protocol::auth::token_from_file_contents(&std::fs::read(&self.token_file).unwrap()).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// The address a line fsserver printed after starting names after `prefix` (waits up
    /// to 5 s for it), e.g. "fsserver: metrics on http://".
    pub fn printed(&self, prefix: &str) -> String {
        poll_until(Duration::from_secs(5), || {
            self.stdout
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.strip_prefix(prefix).map(str::to_string))
        })
        .unwrap_or_else(|| panic!("fsserver printed no line starting {prefix:?}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        send_signal(self.child.id(), libc::SIGTERM);
        wait_timeout(&mut self.child, Duration::from_secs(20))
            .expect("fsserver exits after SIGTERM")
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.is_running() {
            // A test that stopped it (SIGSTOP) and failed before continuing it.
            send_signal(self.child.id(), libc::SIGCONT);
            send_signal(self.child.id(), libc::SIGTERM);
            if wait_timeout(&mut self.child, Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        // The notes a server leaves beside its default control socket for the next start
        // (locks and leases held, exclusive creates made): nothing of a test stays in /run.
        if let Ok(token) = self.token_file.canonicalize() {
            let hash = crc32fast::hash(token.as_os_str().as_encoded_bytes());
            for note in ["sock", "locks", "leases", "creates.0", "creates.1"] {
                let _ = std::fs::remove_file(format!("/run/fsserver/control-{hash:08x}.{note}"));
            }
        }
    }
}

/// A shell waiting to exec fsserver (`Server::standby`).
pub struct Standby {
    child: Option<Child>,
    stdout: Option<BufReader<std::process::ChildStdout>>,
}

impl Drop for Standby {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How soon another client is served while one floods: 50 ms for a release build of the
/// server; a debug build (the suite's) runs the same code several times slower, and four
/// tests share the 2 cores. The flaws these tests caught cost seconds.
pub const PROMPT: Duration = if cfg!(debug_assertions) {
    Duration::from_millis(250)
} else {
    Duration::from_millis(50)
};

/// Polls `probe` every 10 ms until it yields a value; `None` once `limit` has passed.
pub fn poll_until<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `condition` holds, polling every 10 ms; panics saying `what` did not happen
/// once `limit` has passed. Returns how long it took.
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    poll_until(limit, || condition().then_some(()))
        .unwrap_or_else(|| panic!("{what}: not within {limit:?}"));
    start.elapsed()
}

/// Waits for `child` up to `limit`.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    poll_until(limit, || child.try_wait().unwrap())
}

/// True if something is mounted exactly on `path`.
pub fn is_mounted(path: &Path) -> bool {
    let want = path.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want))
}

/// `fsmount sync MNT`: waits until everything the mount on `mnt` accepted is on the
/// server (or reports what failed); its output.
pub fn fsmount_sync(mnt: &Path) -> std::process::Output {
    Command::new(bin_dir().join("fsmount"))
        .arg("sync")
        .arg(mnt)
        .output()
        .expect("run fsmount sync")
}

/// `fsmount sync` of `mount` succeeds: every write and change made through it reached the
/// server (the message carries the mount's log).
pub fn assert_synced(mount: &Mount) {
    let synced = fsmount_sync(&mount.path);
    assert!(
        synced.status.success(),
        "fsmount sync: {}{}\n{}",
        String::from_utf8_lossy(&synced.stdout),
        String::from_utf8_lossy(&synced.stderr),
        mount.log()
    );
}

/// Stops process `pid` (SIGSTOP) until the returned guard is dropped (SIGCONT), also when
/// the test fails first.
pub fn stopped(pid: u32) -> Stopped {
    send_signal(pid, libc::SIGSTOP);
    Stopped(pid)
}

/// See `stopped`.
pub struct Stopped(u32);

impl Drop for Stopped {
    fn drop(&mut self) {
        send_signal(self.0, libc::SIGCONT);
    }
}

/// Unmounts `path` if mounted: `fusermount3 -u`, then `umount -l` as a last resort.
pub fn force_unmount(path: &Path) {
    if !is_mounted(path) {
        return;
    }
    let ok = Command::new("fusermount3")
        .arg("-u")
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok || is_mounted(path) {
        let _ = Command::new("umount").arg("-l").arg(path).status();
    }
}

/// A mounted fsmount in the foreground (`-f`), as a child process of the test.
pub struct Mount {
    child: Option<Child>,
    pub path: PathBuf,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Mount {
    /// Mounts `server`'s export `name` with `-o token_file=...` plus `opts`.
    pub fn new(server: &Server, name: &str, opts: &[&str]) -> Mount {
        Mount::via(server, &server.addr, name, opts)
    }

    /// `new`, connecting to `addr` (a proxy in front of `server`) instead.
    pub fn via(server: &Server, addr: &str, name: &str, opts: &[&str]) -> Mount {
        Mount::with_token(&server.token_file, addr, name, opts)
    }

    /// Mounts export `name` of whatever listens on `addr`, proving the token in
    /// `token_file`.
    pub fn with_token(token_file: &Path, addr: &str, name: &str, opts: &[&str]) -> Mount {
        let dir = tempfile::Builder::new()
            .prefix("fsxp-mnt")
            .tempdir()
            .unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let log = dir.path().join("fsmount.log");
        let mut o = format!("token_file={}", token_file.display());
        for opt in opts {
            o.push(',');
            o.push_str(opt);
        }
        let child = Command::new(bin_dir().join("fsmount"))
            .arg(format!("{addr}:/{name}"))
            .arg(&path)
            .args(["-o", &o, "-f"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start fsmount");
        let mut m = Mount {
            child: Some(child),
            path,
            _dir: dir,
            log,
        };
        m.wait_mounted();
        m
    }

    fn wait_mounted(&mut self) {
        let mounted = poll_until(Duration::from_secs(15), || {
            if is_mounted(&self.path) {
                return Some(true);
            }
            let child = self.child.as_mut().unwrap();
            child
                .try_wait()
                .unwrap()
                .map(|status| panic!("fsmount exited ({status}) before mounting: {}", self.log()))
        });
        assert!(
            mounted.is_some(),
            "fsmount did not mount within 15 s: {}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Unmounts with `fusermount3 -u` and returns fsmount's exit status. EBUSY is tried
    /// again for a while: the kernel holds the mount until the daemon has answered the
    /// RELEASE of a file just closed, which it sends in the background.
    pub fn unmount(mut self) -> std::process::ExitStatus {
        let started = Instant::now();
        let out = loop {
            let out = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.path)
                .output()
                .unwrap();
            let busy = String::from_utf8_lossy(&out.stderr).contains("busy");
            if out.status.success() || !busy || started.elapsed() > Duration::from_secs(5) {
                break out;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            out.status.success(),
            "fusermount3 -u: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut child = self.child.take().unwrap();
        wait_timeout(&mut child, Duration::from_secs(10)).expect("fsmount exits after unmount")
    }

    /// Sends `signal` to fsmount and returns its exit status.
    pub fn signal(mut self, signal: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        send_signal(child.id(), signal);
        wait_timeout(&mut child, Duration::from_secs(10)).expect("fsmount exits after the signal")
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        force_unmount(&self.path);
        if let Some(mut child) = self.child.take() {
            if wait_timeout(&mut child, Duration::from_secs(5)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A tmpfs mounted with `opts` (e.g. `size=8m` or `size=2m,nr_inodes=200`) on a fresh
/// directory, unmounted when dropped.
pub struct Tmpfs(pub tempfile::TempDir);

impl Tmpfs {
    pub fn new(opts: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        sh(&format!(
            "mount -t tmpfs -o {opts} fsxp-test-tmpfs '{}'",
            dir.path().display()
        ));
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Runs a shell command line; panics with its output unless it succeeds. Returns stdout.
pub fn sh(script: &str) -> String {
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "command failed ({}): {script}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `sha256sum` of a file, through the real tool.
pub fn sha256(path: &Path) -> String {
    let out = sh(&format!("sha256sum '{}'", path.display()));
    out.split_whitespace().next().unwrap().to_string()
}

/// Writes `len` random bytes to `path`.
pub fn random_file(path: &Path, len: usize) {
    let mut data = vec![0u8; len];
    getrandom::fill(&mut data).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Reads (and discards) until the peer closes the connection or `limit` passes; true if the
/// peer closed it (EOF or reset).
pub fn peer_closes(stream: &mut std::net::TcpStream, limit: Duration) -> bool {
    use std::io::ErrorKind::*;
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == Interrupted => {}
            Err(e) if matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe) => {
                return true
            }
            Err(e) if matches!(e.kind(), WouldBlock | TimedOut) => return false,
            Err(e) => panic!("unexpected read error while waiting for the peer to close: {e}"),
        }
    }
}

/// One datagram from `socket` into `buf`, waiting up to `within`: its length. A receive
/// with a timeout is not restarted after a signal handler runs (signal(7)), and a test
/// process has some (SIGCHLD, when any test's child ends): it is tried again until then.
pub fn recv_within(
    socket: &std::os::unix::net::UnixDatagram,
    buf: &mut [u8],
    within: Duration,
) -> std::io::Result<usize> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Sends signal number `signal` to process `pid` (one this test started).
pub fn send_signal(pid: u32, signal: i32) {
    if let Ok(sig) = nix::sys::signal::Signal::try_from(signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
    }
}

/// What a command run as another user gave: exit code, stdout, stderr.
#[derive(Debug)]
pub struct RunAs {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `script` with `sh -c` in directory `dir` as `uid`/`gid` with exactly `groups` as its
/// supplementary groups (util-linux `setpriv`). The directory is entered before the ids
/// change, so it may lie below a path that user could not traverse.
pub fn run_as(uid: u32, gid: u32, groups: &[u32], dir: &Path, script: &str) -> RunAs {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    let out = cmd
        .args(["sh", "-c", script])
        .current_dir(dir)
        .output()
        .expect("setpriv (util-linux) runs");
    RunAs {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Checks a systemd unit file with `systemd-analyze verify` (man pages not required);
/// panics with what it said about the unit. Only lines naming the unit count: the host's
/// other units are not ours to judge.
pub fn systemd_verify(unit: &Path) {
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
        .expect("systemd-analyze (package systemd) runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let name = unit.file_name().unwrap().to_string_lossy();
    let ours: Vec<&str> = said.lines().filter(|l| l.contains(&*name)).collect();
    assert!(out.status.success() && ours.is_empty(), "{said}");
}

/// The machine-wide lock of the tests that change the system itself rather than temporary
/// directories: the mount helper in /sbin (tests/lifecycle.rs) and the fsxp package
/// (tests/package.rs). One holder at a time, across the test binaries of one run and across
/// runs (another checkout's suite, a second `cargo test`, nextest's processes); the kernel
/// releases it when the holder drops it or dies.
pub struct SystemLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

/// Waits (up to 20 min, saying so every minute) for the [`SystemLock`] and takes it.
pub fn system_lock() -> SystemLock {
    use nix::fcntl::{Flock, FlockArg};
    let dir = if Path::new("/run/lock").is_dir() {
        "/run/lock"
    } else {
        "/tmp"
    };
    let path = PathBuf::from(dir).join("fsxp-e2e-system.lock");
    let start = Instant::now();
    let mut said = 0;
    loop {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return SystemLock(lock),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {}
            Err((_, e)) => panic!("flock {}: {e}", path.display()),
        }
        let waited = start.elapsed().as_secs() / 60;
        assert!(
            waited < 20,
            "{} has been held for 20 min by another test (this run's or another's)",
            path.display()
        );
        if waited > said {
            said = waited;
            eprintln!("waiting for {} ({waited} min)", path.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `(uid, gid)` of `path`, not following a symlink.
pub fn owner_of(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid())
}

/// One HTTP GET; returns the status line and the body.
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// The value of the sample `name` (labels included, exactly as exposed), if exposed.
pub fn sample_value(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (n, v) = l.rsplit_once(' ')?;
        (n == name).then(|| v.parse().ok())?
    })
}
