//! Which file a name means: every remaining name of a hard-linked inode keeps working after
//! others are removed or renamed (compared with a local directory, for every file type),
//! names removed or replaced by the server's own processes, and an inode number the server
//! reuses for a new file.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use e2e_tests::pair::{errno, meta, Pair};
use e2e_tests::{require_mount_support, Mount, Server};
use nix::sys::stat::{mknod, Mode, SFlag};

fn pair() -> Pair {
    require_mount_support();
    Pair::new()
}

/// The kinds of object a hard link can name.
const KINDS: [&str; 4] = ["file", "fifo", "socket", "chardev"];

fn make(kind: &str, p: &Path) -> Result<(), i32> {
    let mode = Mode::from_bits_truncate(0o644);
    let r = match kind {
        "file" => return fs::write(p, "data").map_err(errno),
        "fifo" => nix::unistd::mkfifo(p, mode),
        "socket" => mknod(p, SFlag::S_IFSOCK, mode, 0),
        _ => mknod(p, SFlag::S_IFCHR, mode, libc::makedev(1, 3)),
    };
    r.map_err(|e| e as i32)
}

/// What `lstat` says of each name: (type and mode, link count, owner) or the errno.
type Seen = Vec<Result<(u32, u64, u32, u32), i32>>;

fn look(dir: &Path, names: &[&str]) -> Seen {
    names
        .iter()
        .map(|n| meta(&dir.join(n)).map(|m| (m.mode, m.nlink, m.uid, m.gid)))
        .collect()
}

fn link(dir: &Path, from: &str, to: &str) -> Result<(), i32> {
    fs::hard_link(dir.join(from), dir.join(to)).map_err(errno)
}

fn unlink(dir: &Path, name: &str) -> Result<(), i32> {
    fs::remove_file(dir.join(name)).map_err(errno)
}

const NAMES: [&str; 3] = ["n0", "n1", "n2"];

#[test]
fn the_reported_sequence_keeps_every_remaining_name_for_every_file_type() {
    let p = pair();
    p.same("links", |root| {
        let mut seen = Vec::new();
        for kind in KINDS {
            let d = root.join(kind);
            fs::create_dir(&d).unwrap();
            make(kind, &d.join("n0"))?;
            seen.push(look(&d, &["n0"]));
            link(&d, "n0", "n1")?;
            seen.push(look(&d, &NAMES));
            link(&d, "n1", "n2")?;
            seen.push(look(&d, &NAMES));
            fs::set_permissions(d.join("n1"), fs::Permissions::from_mode(0o201)).unwrap();
            std::os::unix::fs::lchown(d.join("n1"), Some(65534), Some(65533)).map_err(errno)?;
            seen.push(look(&d, &NAMES));
            unlink(&d, "n0")?;
            seen.push(look(&d, &NAMES));
            unlink(&d, "n2")?;
            seen.push(look(&d, &NAMES));
        }
        Ok::<_, i32>(seen)
    })
    .expect("succeeds on both");
}

#[test]
fn unlinking_in_every_order_leaves_each_remaining_name_working() {
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let p = pair();
    p.same("unlink orders", |root| {
        let mut seen = Vec::new();
        for (i, order) in orders.iter().enumerate() {
            let d = root.join(format!("o{i}"));
            fs::create_dir(&d).unwrap();
            fs::write(d.join("n0"), "x").unwrap();
            link(&d, "n0", "n1")?;
            link(&d, "n0", "n2")?;
            // Half the orders list the directory in between (readdirplus learns every name).
            let list = i % 2 == 0;
            for &n in order {
                if list {
                    let names: Vec<_> = fs::read_dir(&d).unwrap().map(|e| e.unwrap()).collect();
                    seen.push(vec![Ok((names.len() as u32, 0, 0, 0))]);
                }
                unlink(&d, NAMES[n])?;
                seen.push(look(&d, &NAMES));
                // Every remaining name can be opened and read, and linked again.
                for name in NAMES.iter().filter(|m| d.join(m).exists()) {
                    assert_eq!(fs::read_to_string(d.join(name)).unwrap(), "x");
                }
            }
        }
        Ok::<_, i32>(seen)
    })
    .expect("succeeds on both");
}

#[test]
fn renames_over_links_and_operations_on_the_remaining_names() {
    let p = pair();
    p.same("renames", |root| {
        let d = root.join("r");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("n0"), "orig").unwrap();
        link(&d, "n0", "n1")?;
        link(&d, "n0", "n2")?;
        let mut seen = vec![look(&d, &NAMES)];
        // A rename between two links of one inode changes nothing (POSIX).
        fs::rename(d.join("n0"), d.join("n1")).map_err(errno)?;
        seen.push(look(&d, &NAMES));
        // Another file renamed over a link takes that name; the other links stay.
        fs::write(d.join("other"), "other").unwrap();
        fs::rename(d.join("other"), d.join("n1")).map_err(errno)?;
        seen.push(look(&d, &["n0", "n1", "n2", "other"]));
        // Rename a link to a new name.
        fs::rename(d.join("n2"), d.join("m")).map_err(errno)?;
        seen.push(look(&d, &["n0", "m"]));
        unlink(&d, "n0")?;
        // Everything through the last name, at once.
        let m = d.join("m");
        fs::set_permissions(&m, fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::chown(&m, Some(1234), Some(5678)).map_err(errno)?;
        let t = filetime(&m);
        e2e_tests::pair::xattr::set(&m, "user.k", b"v", 0)?;
        let x = e2e_tests::pair::xattr::get_sized(&m, "user.k", 64)?;
        let text = fs::read_to_string(&m).map_err(errno)?;
        link(&d, "m", "again")?;
        seen.push(look(&d, &["m", "again"]));
        // A link into a missing directory fails on its own; the source keeps its names.
        let into_nowhere = fs::hard_link(&m, d.join("nowhere/x")).map_err(errno);
        seen.push(look(&d, &["m", "again"]));
        seen.push(vec![into_nowhere.map(|()| (0, 0, 0, 0))]);
        Ok::<_, i32>((seen, t, x, text, fs::read_to_string(d.join("n1")).unwrap()))
    })
    .expect("succeeds on both");
}

/// Sets and reads back the modification time of `p`.
fn filetime(p: &Path) -> i64 {
    let f = fs::File::options().write(true).open(p).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000))
        .unwrap();
    fs::metadata(p).unwrap().mtime()
}

#[test]
fn links_across_directories_survive_their_siblings_and_directory_renames() {
    let p = pair();
    p.same("across directories", |root| {
        for d in ["d1", "d2", "d3"] {
            fs::create_dir(root.join(d)).unwrap();
        }
        fs::write(root.join("d1/a"), "shared").unwrap();
        fs::hard_link(root.join("d1/a"), root.join("d2/b")).map_err(errno)?;
        fs::hard_link(root.join("d2/b"), root.join("d3/c")).map_err(errno)?;
        let mut seen = vec![look(root, &["d1/a", "d2/b", "d3/c"])];
        fs::remove_file(root.join("d1/a")).map_err(errno)?;
        fs::remove_dir(root.join("d1")).map_err(errno)?;
        seen.push(look(root, &["d2/b", "d3/c"]));
        fs::rename(root.join("d2"), root.join("d4")).map_err(errno)?;
        seen.push(look(root, &["d4/b", "d3/c"]));
        fs::remove_file(root.join("d3/c")).map_err(errno)?;
        seen.push(look(root, &["d4/b"]));
        fs::set_permissions(root.join("d4/b"), fs::Permissions::from_mode(0o600)).unwrap();
        seen.push(look(root, &["d4/b"]));
        Ok::<_, i32>((seen, fs::read_to_string(root.join("d4/b")).unwrap()))
    })
    .expect("succeeds on both");
}

#[test]
fn names_removed_or_replaced_on_the_server_leave_the_others_working() {
    require_mount_support();
    let server = Server::start(&[]);
    let mount = Mount::new(&server, "data", &[]);
    let (m, s) = (mount.path.clone(), server.export("data"));
    fs::write(m.join("n0"), "mine").unwrap();
    fs::hard_link(m.join("n0"), m.join("n1")).unwrap();
    fs::hard_link(m.join("n1"), m.join("n2")).unwrap();
    // A process on the server removes the name the mount learned last...
    fs::remove_file(s.join("n2")).unwrap();
    fs::set_permissions(m.join("n1"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(fs::metadata(s.join("n1")).unwrap().mode() & 0o7777, 0o640);
    assert_eq!(fs::read_to_string(m.join("n1")).unwrap(), "mine");
    // ...and replaces another with a different file: changes through a remaining name
    // reach the linked file, never the one that took the name.
    fs::write(s.join("other"), "theirs").unwrap();
    fs::set_permissions(s.join("other"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::rename(s.join("other"), s.join("n1")).unwrap();
    fs::set_permissions(m.join("n0"), fs::Permissions::from_mode(0o604)).unwrap();
    std::os::unix::fs::chown(m.join("n0"), Some(4321), None).unwrap();
    e2e_tests::pair::xattr::set(&m.join("n0"), "user.who", b"mine", 0).unwrap();
    let mine = fs::metadata(s.join("n0")).unwrap();
    let theirs = fs::metadata(s.join("n1")).unwrap();
    assert_eq!((mine.mode() & 0o7777, mine.uid()), (0o604, 4321));
    assert_eq!((theirs.mode() & 0o7777, theirs.uid()), (0o644, 0));
    assert_eq!(
        e2e_tests::pair::xattr::get_sized(&s.join("n1"), "user.who", 64),
        Err(libc::ENODATA)
    );
    assert_eq!(fs::read_to_string(m.join("n0")).unwrap(), "mine");
}

/// A small ext4 filesystem of the test's own (a loop-mounted image), so that no other test
/// allocates inodes on it: ext4 hands a freed inode number out again, deterministically.
struct OwnExt4(tempfile::TempDir);

impl OwnExt4 {
    fn new() -> OwnExt4 {
        let dir = tempfile::tempdir().unwrap();
        let (img, mnt) = (dir.path().join("img"), dir.path().join("fs"));
        fs::create_dir(&mnt).unwrap();
        e2e_tests::sh(&format!(
            "truncate -s 32M '{i}' && mkfs.ext4 -q -F '{i}' && mount -o loop '{i}' '{m}'",
            i = img.display(),
            m = mnt.display()
        ));
        OwnExt4(dir)
    }

    fn root(&self) -> std::path::PathBuf {
        self.0.path().join("fs")
    }
}

impl Drop for OwnExt4 {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.root())
            .status();
    }
}

#[test]
fn an_inode_number_reused_on_the_server_is_a_new_file_to_the_mount() {
    require_mount_support();
    let ext4 = OwnExt4::new();
    let s = ext4.root().join("export");
    fs::create_dir(&s).unwrap();
    let export = format!("own={}", s.display());
    let server = Server::start(&["--export", &export, "--no-root-squash", "own"]);
    // Long timeouts: the kernel keeps the old name's entry while the server reuses its inode.
    let mount = Mount::new(&server, "own", &["entry_timeout=60", "attr_timeout=60"]);
    let m = mount.path.clone();
    fs::write(m.join("f"), "old contents").unwrap();
    let old_local = fs::metadata(m.join("f")).unwrap();
    assert_eq!(fs::read_to_string(m.join("f")).unwrap(), "old contents");
    let server_ino = fs::metadata(s.join("f")).unwrap().ino();
    // The mount closes its handles asynchronously: an inode the server still holds open
    // cannot be freed, let alone reused.
    let fds = format!("/proc/{}/fd", server.pid());
    let target = s.join("f");
    e2e_tests::wait_until("fsserver closes f", Duration::from_secs(10), || {
        fs::read_dir(&fds)
            .unwrap()
            .filter_map(|e| fs::read_link(e.unwrap().path()).ok())
            .all(|l| l != target)
    });
    fs::remove_file(s.join("f")).unwrap();
    // Create files on the server until its filesystem hands out the same inode number.
    let reused = (0..1000).find_map(|i| {
        let g = s.join(format!("g{i}"));
        fs::write(&g, "brand new").unwrap();
        (fs::metadata(&g).unwrap().ino() == server_ino).then_some(g)
    });
    let reused = reused.expect("the server's filesystem reuses a freed inode number");
    fs::rename(&reused, s.join("g")).unwrap();
    let g = fs::metadata(m.join("g")).unwrap();
    assert_ne!(g.ino(), old_local.ino(), "a new inode to the kernel");
    assert_eq!(fs::read_to_string(m.join("g")).unwrap(), "brand new");
    assert_eq!(g.len(), 9);
    // Changing the old name (the kernel still has its entry) never reaches the new file.
    let _ = fs::set_permissions(m.join("f"), fs::Permissions::from_mode(0o600));
    assert_eq!(fs::metadata(s.join("g")).unwrap().mode() & 0o7777, 0o644);
    mount.unmount();
}

#[test]
fn the_server_acts_only_on_the_object_a_request_expects() {
    use e2e_tests::raw::RawClient;
    use protocol::Command;
    let server = Server::start(&[]);
    let s = server.export("data");
    fs::write(s.join("a"), "original").unwrap();
    let mut c = RawClient::authenticated(&server.addr, "data", &server.token()).unwrap();
    let getattr = |c: &mut RawClient, expect| {
        c.call::<proto::AttrReply>(
            Command::GetAttr,
            &proto::GetAttrRequest {
                path: b"a".to_vec().into(),
                expect,
                ..Default::default()
            },
        )
    };
    let attr = getattr(&mut c, None).unwrap().attr.unwrap();
    assert_ne!(attr.generation, 0, "this filesystem records birth times");
    let me = proto::Identity {
        dev: attr.dev,
        ino: attr.ino,
        generation: attr.generation,
    };
    assert!(getattr(&mut c, Some(me)).is_ok());
    // Replaced by another file: every request expecting the old one gets ESTALE, and an
    // open for truncation truncates nothing.
    fs::remove_file(s.join("a")).unwrap();
    fs::write(s.join("a"), "replacement").unwrap();
    assert_eq!(getattr(&mut c, Some(me)).err(), Some(libc::ESTALE));
    let open = c.call::<proto::OpenReply>(
        Command::Open,
        &proto::OpenRequest {
            path: b"a".to_vec().into(),
            flags: (libc::O_WRONLY | libc::O_TRUNC) as u32,
            expect: Some(me),
            ..Default::default()
        },
    );
    assert_eq!(open.err(), Some(libc::ESTALE));
    assert_eq!(fs::read_to_string(s.join("a")).unwrap(), "replacement");
    // Gone altogether: ESTALE too (the name no longer reaches it), while a request without
    // an expectation gets the plain ENOENT.
    fs::remove_file(s.join("a")).unwrap();
    assert_eq!(getattr(&mut c, Some(me)).err(), Some(libc::ESTALE));
    assert_eq!(getattr(&mut c, None).err(), Some(libc::ENOENT));
}
