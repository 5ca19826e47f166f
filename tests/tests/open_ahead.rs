//! Open-ahead: a reader walking a directory in listing order has the next small files
//! opened for it. What it promises: every open taken from there gives what an open at that
//! moment would (the same caller's rights, the file's current bytes, also right after
//! another mount or the server's disk changed it), and handles nobody takes are closed.
//! Each test checks through fsmount's metrics that opens were done ahead, so the path it
//! means was taken.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use e2e_tests::{http_get, run_as, sample_value, Mount, Server};

/// A mount with its metrics address.
fn mount(server: &Server, extra: &[&str]) -> (Mount, String) {
    let mut opts = vec!["metrics=127.0.0.1:0"];
    opts.extend_from_slice(extra);
    let m = Mount::new(server, "data", &opts);
    let status = || {
        Command::new(e2e_tests::bin_dir().join("fsmount"))
            .args(["status", "--json"])
            .arg(&m.path)
            .output()
            .unwrap()
    };
    // The mount shows in /proc/mounts a moment before its control socket exists.
    let out = e2e_tests::poll_until(Duration::from_secs(5), || {
        Some(status()).filter(|o| o.status.success())
    })
    .unwrap_or_else(status);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let addr = status["metrics"]
        .as_str()
        .expect("metrics address")
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    (m, addr)
}

/// (sent, taken, unused) opens ahead so far.
fn ahead(metrics: &str) -> (u64, u64, u64) {
    let (status, body) = http_get(metrics, "/metrics");
    assert!(status.contains("200"), "{status}");
    let get =
        |n: &str| sample_value(&body, &format!("fsxp_client_open_ahead_{n}_total")).unwrap() as u64;
    (get("sent"), get("taken"), get("unused"))
}

/// `n` files `f000`... holding their own name, on the server's disk.
fn files(dir: &Path, n: usize) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        fs::write(dir.join(format!("f{i:03}")), format!("f{i:03} v1\n")).unwrap();
    }
}

/// Gives every file in `dir` to uid and gid 1000, with `mode` if given.
fn give_files_to_1000(dir: &Path, mode: Option<u32>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        std::os::unix::fs::chown(&p, Some(1000), Some(1000)).unwrap();
        if let Some(mode) = mode {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

/// A reader of `dir` through a mount: lists it, opens and reads its first `first` files in
/// listing order, says "ready" and waits for a line; then reads the rest, printing
/// "name<TAB>content" (or "name<TAB>ERR errno") for each.
struct Walker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    order: Vec<String>,
}

const WALKER: &str = r#"
import os, sys
d, first = sys.argv[1], int(sys.argv[2])
names = os.listdir(d)
print(" ".join(names), flush=True)
def read(n):
    try:
        with open(os.path.join(d, n)) as f:
            return f.read().strip()
    except OSError as e:
        return "ERR %d" % e.errno
for n in names[:first]:
    read(n)
print("ready", flush=True)
sys.stdin.readline()
for n in names[first:]:
    print("%s\t%s" % (n, read(n)), flush=True)
print("done", flush=True)
"#;

impl Walker {
    fn start(dir: &Path, first: usize, as_user: Option<u32>) -> Walker {
        let mut cmd = match as_user {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={uid}"),
                    &format!("--regid={uid}"),
                    "--clear-groups",
                    "/usr/bin/python3",
                ]);
                c
            }
            None => Command::new("/usr/bin/python3"),
        };
        let mut child = cmd
            // Entered before the ids change: the mount may lie below a path the user
            // cannot traverse.
            .args(["-c", WALKER, ".", &first.to_string()])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let order = line.split_whitespace().map(str::to_string).collect();
        let mut w = Walker {
            child,
            stdin,
            stdout,
            order,
        };
        assert_eq!(w.line(), "ready");
        w
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }

    /// Lets it read the rest: name -> what it read.
    fn finish(mut self) -> Vec<(String, String)> {
        writeln!(self.stdin, "go").unwrap();
        let mut out = Vec::new();
        loop {
            let l = self.line();
            if l == "done" || l.is_empty() {
                break;
            }
            let (n, c) = l.split_once('\t').unwrap();
            out.push((n.to_string(), c.to_string()));
        }
        assert!(self.child.wait().unwrap().success());
        out
    }
}

impl Drop for Walker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Files of the export the server holds open.
/// Files in `dir` the server holds open.
fn server_fds(server: &Server, dir: &Path) -> usize {
    fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.starts_with(dir) && l != dir)
        .count()
}

#[test]
fn a_walk_reads_every_file_whole_through_opens_done_ahead_and_leftovers_are_closed() {
    let server = Server::start(&[]);
    let export = server.export("data");
    files(&export.join("d"), 80);
    let (m, metrics) = mount(&server, &[]);
    let out = e2e_tests::sh(&format!(
        "cp -a {} {}/copy && diff -r {} {}/copy && echo same",
        m.path.join("d").display(),
        m.path.display(),
        export.join("d").display(),
        m.path.display()
    ));
    assert!(out.contains("same"), "{out}");
    let (sent, taken, _) = ahead(&metrics);
    assert!(sent >= 60 && taken >= 60, "sent {sent}, taken {taken}");

    // A walk that stops after a few files leaves opens nobody takes: closed soon after.
    let w = Walker::start(&m.path.join("d"), 3, None);
    let (sent2, _, _) = ahead(&metrics);
    assert!(sent2 > sent, "the walk of three files opened ahead");
    assert!(server_fds(&server, &export.join("d")) > 0);
    let left = || {
        fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .unwrap()
            .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
            .filter(|l| l.starts_with(export.join("d")))
            .collect::<Vec<_>>()
    };
    let closed = e2e_tests::poll_until(Duration::from_secs(5), || {
        (server_fds(&server, &export.join("d")) == 0).then_some(())
    });
    assert!(
        closed.is_some(),
        "opens done ahead still open: {:?}, {:?}",
        left(),
        ahead(&metrics)
    );
    let (_, _, unused) = ahead(&metrics);
    assert!(unused > 0);
    drop(w);
    drop(m);
}

#[test]
fn a_file_another_mount_changed_during_the_walk_is_read_as_changed() {
    let server = Server::start(&[]);
    let export = server.export("data");
    files(&export.join("d"), 60);
    let (a, metrics) = mount(&server, &[]);
    let b = Mount::new(&server, "data", &[]);
    let w = Walker::start(&a.path.join("d"), 2, None);
    let (sent, _, _) = ahead(&metrics);
    assert!(sent > 0, "nothing was opened ahead");
    // Within the window opened ahead: the 5th and 20th files of A's walk.
    let changed = [w.order[4].clone(), w.order[19].clone()];
    for name in &changed {
        fs::write(b.path.join("d").join(name), format!("{name} v2\n")).unwrap();
    }
    let read = w.finish();
    assert_eq!(read.len(), 58);
    for (name, content) in read {
        let v = if changed.contains(&name) { "v2" } else { "v1" };
        assert_eq!(content, format!("{name} {v}"));
    }
    let (_, _, unused) = ahead(&metrics);
    assert!(
        unused > 0,
        "the changed files' opens done ahead were not taken"
    );
}

#[test]
fn a_change_on_the_servers_disk_during_the_walk_is_read_as_changed() {
    let server = Server::start(&[]);
    let export = server.export("data");
    files(&export.join("d"), 60);
    let (a, metrics) = mount(&server, &[]);
    let w = Walker::start(&a.path.join("d"), 2, None);
    assert!(ahead(&metrics).0 > 0, "nothing was opened ahead");
    let name = w.order[6].clone();
    fs::write(export.join("d").join(&name), format!("{name} v2\n")).unwrap();
    // The disk watch tells the mount as it tells of any change on the disk.
    std::thread::sleep(Duration::from_millis(300));
    let read = w.finish();
    let got: Vec<_> = read.iter().filter(|(n, _)| *n == name).collect();
    assert_eq!(got[0].1, format!("{name} v2"));
}

#[test]
fn an_open_done_ahead_for_one_user_is_never_anothers() {
    let server = Server::start_squashing(&["data"], &[]);
    let export = server.export("data");
    let dir = export.join("d");
    files(&dir, 40);
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    // Every file is 1000's alone.
    give_files_to_1000(&dir, Some(0o600));
    let (m, metrics) = mount(&server, &["allow_other"]);
    let w = Walker::start(&m.path.join("d"), 2, Some(1000));
    assert!(ahead(&metrics).0 > 0, "nothing was opened ahead");
    // 1001 opens files 1000's walk opened ahead: refused, as the server refuses them.
    for name in &w.order[2..8] {
        let r = run_as(
            1001,
            1001,
            &[],
            Path::new("/"),
            &format!("cat {}", m.path.join("d").join(name).display()),
        );
        assert_ne!(r.code, Some(0), "1001 read 1000's {name}: {}", r.stdout);
    }
    // 1000's own walk still reads them all.
    for (name, content) in w.finish() {
        assert_eq!(content, format!("{name} v1"));
    }
}

#[test]
fn opens_done_ahead_across_a_server_restart_are_not_taken() {
    let mut server = Server::start(&[]);
    let export = server.export("data");
    files(&export.join("d"), 60);
    let (m, metrics) = mount(&server, &[]);
    let w = Walker::start(&m.path.join("d"), 2, None);
    assert!(ahead(&metrics).0 > 0, "nothing was opened ahead");
    let name = w.order[5].clone();
    server.kill();
    fs::write(export.join("d").join(&name), format!("{name} v2\n")).unwrap();
    server.restart();
    let read = w.finish();
    assert_eq!(read.len(), 58);
    for (n, content) in read {
        let v = if n == name { "v2" } else { "v1" };
        assert_eq!(content, format!("{n} {v}"));
    }
    drop(m);
}

#[test]
fn nothing_is_opened_ahead_without_the_directory_s_lease_or_with_noopen_ahead() {
    let server = Server::start(&[]);
    let export = server.export("data");
    files(&export.join("d"), 40);
    for opt in ["noleases", "noopen_ahead"] {
        let (m, metrics) = mount(&server, &[opt]);
        let w = Walker::start(&m.path.join("d"), 4, None);
        for (name, content) in w.finish() {
            assert_eq!(content, format!("{name} v1"));
        }
        assert_eq!(ahead(&metrics), (0, 0, 0), "{opt}");
    }
}

#[test]
fn a_chmod_through_the_mount_mid_walk_is_obeyed() {
    let server = Server::start_squashing(&["data"], &[]);
    let export = server.export("data");
    let dir = export.join("d");
    files(&dir, 40);
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    give_files_to_1000(&dir, None);
    let (m, metrics) = mount(&server, &["allow_other"]);
    let w = Walker::start(&m.path.join("d"), 2, Some(1000));
    assert!(ahead(&metrics).0 > 0, "nothing was opened ahead");
    // The owner takes its own read permission away, through the same mount.
    let name = w.order[5].clone();
    let r = run_as(
        1000,
        1000,
        &[],
        Path::new("/"),
        &format!("chmod 0200 {}", m.path.join("d").join(&name).display()),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    for (n, content) in w.finish() {
        match n == name {
            true => assert_eq!(content, format!("ERR {}", libc::EACCES)),
            false => assert_eq!(content, format!("{n} v1")),
        }
    }
}
