//! One test per operation and error case: the same syscalls on a local directory and through
//! the mount must give the same result, errno and metadata.
//!
//! Over 500 lines: one short test per POSIX operation, all on the same `Pair` harness; the
//! list reads as the specification of what the mount gives (docs/SEMANTICS.md).

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use e2e_tests::pair::{errno, meta, Pair};
use e2e_tests::require_mount_support;
use nix::fcntl::{copy_file_range, fallocate, openat, FallocateFlags, OFlag, AT_FDCWD as CWD};
use nix::sys::stat::{mkdirat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{lseek, Whence};

fn pair() -> Pair {
    require_mount_support();
    Pair::new()
}

fn readlink(p: &Path) -> Result<Vec<u8>, i32> {
    fs::read_link(p)
        .map(|t| t.as_os_str().as_bytes().to_vec())
        .map_err(errno)
}

#[test]
fn symlink_targets_round_trip_byte_for_byte() {
    let p = pair();
    let long = "x/".repeat(2000) + "end";
    let targets: Vec<Vec<u8>> = vec![
        b"relative/target".to_vec(),
        b"/absolute/elsewhere".to_vec(),
        b"../../dangling".to_vec(),
        b"\xff\xfe not utf-8".to_vec(),
        long.into_bytes(),
    ];
    let _outcome = p
        .same("symlinks", |root| {
            targets
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let link = root.join(format!("l{i}"));
                    symlink(OsStr::from_bytes(t), &link).map_err(errno)?;
                    let m = meta(&link)?;
                    Ok::<_, i32>((readlink(&link)?, m.mode & libc::S_IFMT, m.size))
                })
                .collect::<Result<Vec<_>, i32>>()
        })
        .expect("succeeds on both");
    for root in p.roots() {
        assert_eq!(readlink(&root.join("l1")).unwrap(), b"/absolute/elsewhere");
    }
}

#[test]
fn hard_links_share_inode_and_nlink() {
    let p = pair();
    let _outcome = p
        .same("hard links", |root| {
            fs::write(root.join("a"), "x").unwrap();
            fs::hard_link(root.join("a"), root.join("b")).map_err(errno)?;
            let (a, b) = (
                fs::metadata(root.join("a")).unwrap(),
                fs::metadata(root.join("b")).unwrap(),
            );
            let same_inode = a.ino() == b.ino();
            // A change through one name is seen through the other at once.
            fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o600)).unwrap();
            let mode_b = fs::metadata(root.join("b")).unwrap().mode() & 0o7777;
            fs::remove_file(root.join("a")).unwrap();
            let after = fs::metadata(root.join("b")).unwrap().nlink();
            Ok::<_, i32>((
                same_inode,
                a.nlink(),
                mode_b,
                after,
                fs::hard_link(root.join("zz"), root.join("c")).map_err(errno),
            ))
        })
        .expect("succeeds on both");
}

#[test]
fn chmod_keeps_setuid_setgid_and_sticky_bits() {
    let p = pair();
    p.same("chmod", |root| {
        fs::write(root.join("f"), "x").unwrap();
        fs::create_dir(root.join("d")).unwrap();
        [0o4755, 0o2755, 0o1777, 0o7777, 0o0000, 0o6711, 0o0644]
            .iter()
            .map(|&mode| {
                let mut out = Vec::new();
                for name in ["f", "d"] {
                    fs::set_permissions(root.join(name), fs::Permissions::from_mode(mode)).unwrap();
                    out.push(meta(&root.join(name)).unwrap().mode);
                }
                out
            })
            .collect::<Vec<_>>()
    });
}

#[test]
fn chown_preserves_numeric_ids_and_lchown_changes_the_link() {
    let p = pair();
    let _outcome = p
        .same("chown", |root| {
            fs::write(root.join("f"), "x").unwrap();
            std::os::unix::fs::chown(root.join("f"), Some(1234), Some(5678)).map_err(errno)?;
            symlink("f", root.join("l")).unwrap();
            std::os::unix::fs::lchown(root.join("l"), Some(4321), Some(8765)).map_err(errno)?;
            let (f, l) = (meta(&root.join("f"))?, meta(&root.join("l"))?);
            // chown by root clears setuid on an executable, as Linux does.
            fs::set_permissions(root.join("f"), fs::Permissions::from_mode(0o4755)).unwrap();
            std::os::unix::fs::chown(root.join("f"), Some(1), None).map_err(errno)?;
            Ok::<_, i32>(((f.uid, f.gid), (l.uid, l.gid), meta(&root.join("f"))?.mode))
        })
        .expect("succeeds on both");
}

fn utimens(p: &Path, atime: libc::timespec, mtime: libc::timespec, flags: i32) -> Result<i64, i32> {
    let follow = match flags & libc::AT_SYMLINK_NOFOLLOW {
        0 => UtimensatFlags::FollowSymlink,
        _ => UtimensatFlags::NoFollowSymlink,
    };
    let (a, m) = (TimeSpec::from(atime), TimeSpec::from(mtime));
    sys(utimensat(CWD, p, &a, &m, follow)).map(|()| 0)
}

/// A nix call's result as the errno the test compares.
fn sys<T>(r: nix::Result<T>) -> Result<T, i32> {
    r.map_err(|e| e as i32)
}

fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

#[test]
fn utimensat_keeps_nanoseconds_and_honours_now_and_omit() {
    let p = pair();
    let _outcome = p
        .same("utimensat", |root| {
            let f = root.join("f");
            fs::write(&f, "x").unwrap();
            utimens(
                &f,
                ts(1_000_000_000, 123_456_789),
                ts(1_500_000_000, 987_654_321),
                0,
            )?;
            let exact = fs::metadata(&f).unwrap();
            let exact = (
                exact.atime(),
                exact.atime_nsec(),
                exact.mtime(),
                exact.mtime_nsec(),
            );
            // OMIT leaves mtime alone while atime changes.
            utimens(&f, ts(42, 1), ts(0, libc::UTIME_OMIT), 0)?;
            let omit = fs::metadata(&f).unwrap();
            let omit = (
                omit.atime(),
                omit.atime_nsec(),
                omit.mtime(),
                omit.mtime_nsec(),
            );
            // NOW sets the current time.
            let before = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            utimens(&f, ts(0, libc::UTIME_OMIT), ts(0, libc::UTIME_NOW), 0)?;
            let now = fs::metadata(&f).unwrap().mtime();
            // On a symlink itself.
            symlink("f", root.join("l")).unwrap();
            utimens(
                &root.join("l"),
                ts(7, 7),
                ts(8, 8),
                libc::AT_SYMLINK_NOFOLLOW,
            )?;
            let link = meta(&root.join("l"))?.mtime;
            Ok::<_, i32>((
                exact,
                omit,
                (now - before).abs() <= 2,
                link,
                meta(&f)?.mtime.0 != 8,
            ))
        })
        .expect("succeeds on both");
}

#[test]
fn truncate_and_ftruncate_grow_and_shrink() {
    let p = pair();
    let _outcome = p
        .same("truncate", |root| {
            let f = root.join("f");
            fs::write(&f, "0123456789").unwrap();
            sys(nix::unistd::truncate(&f, 4))?;
            let a = fs::read(&f).unwrap();
            let file = OpenOptions::new().write(true).open(&f).unwrap();
            file.set_len(8192).map_err(errno)?;
            file.write_at(b"end", 8192).unwrap();
            drop(file);
            let b = fs::read(&f).unwrap();
            let ro = File::open(&f).unwrap();
            let ftrunc_ro = sys(nix::unistd::ftruncate(&ro, 0));
            Ok::<_, i32>((a, b.len(), b[4..8192].iter().all(|x| *x == 0), ftrunc_ro))
        })
        .expect("succeeds on both");
}

#[test]
fn open_flags_append_excl_trunc() {
    let p = pair();
    let _outcome = p
        .same("open flags", |root| {
            let f = root.join("f");
            fs::write(&f, "abc").unwrap();
            let mut a = OpenOptions::new().append(true).open(&f).unwrap();
            a.seek(SeekFrom::Start(0)).unwrap();
            a.write_all(b"def").unwrap();
            drop(a);
            let appended = fs::read(&f).unwrap();
            let excl = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&f)
                .map(|_| ())
                .map_err(errno);
            let fresh = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o640)
                .open(root.join("g"))
                .map(|_| ())
                .map_err(errno);
            let g_mode = meta(&root.join("g"))?.mode;
            OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&f)
                .unwrap();
            let dir_write = OpenOptions::new()
                .write(true)
                .open(root)
                .map(|_| ())
                .map_err(errno);
            Ok::<_, i32>((
                appended,
                excl,
                fresh,
                g_mode,
                fs::metadata(&f).unwrap().len(),
                dir_write,
            ))
        })
        .expect("succeeds on both");
}

fn rename2(from: &Path, to: &Path, flags: u32) -> Result<i64, i32> {
    let flags = nix::fcntl::RenameFlags::from_bits_retain(flags);
    sys(nix::fcntl::renameat2(CWD, from, CWD, to, flags)).map(|()| 0)
}

#[test]
fn rename_over_files_and_directories_and_with_flags() {
    let p = pair();
    let _outcome = p
        .same("rename", |root| {
            let j = |n: &str| root.join(n);
            fs::write(j("a"), "A").unwrap();
            fs::write(j("b"), "B").unwrap();
            fs::create_dir(j("d1")).unwrap();
            fs::create_dir(j("d2")).unwrap();
            fs::create_dir_all(j("full/x")).unwrap();
            let over_file = fs::rename(j("a"), j("b")).map_err(errno);
            let content = fs::read(j("b")).unwrap();
            let over_empty_dir = fs::rename(j("d1"), j("d2")).map_err(errno);
            let over_full_dir = fs::rename(j("d2"), j("full")).map_err(errno);
            let file_over_dir = fs::rename(j("b"), j("full")).map_err(errno);
            let dir_over_file = fs::rename(j("full"), j("b")).map_err(errno);
            fs::write(j("c"), "C").unwrap();
            let noreplace = rename2(&j("b"), &j("c"), libc::RENAME_NOREPLACE);
            let exchange = rename2(&j("b"), &j("c"), libc::RENAME_EXCHANGE);
            let swapped = (fs::read(j("b")).unwrap(), fs::read(j("c")).unwrap());
            let missing = fs::rename(j("nope"), j("x")).map_err(errno);
            let into_itself = fs::rename(j("full"), j("full/x/y")).map_err(errno);
            Ok::<_, i32>((
                over_file,
                content,
                over_empty_dir,
                over_full_dir,
                file_over_dir,
                dir_over_file,
                noreplace,
                exchange,
                swapped,
                missing,
                into_itself,
            ))
        })
        .expect("succeeds on both");
}

#[test]
fn rename_to_another_filesystem_is_exdev() {
    let p = pair();
    fs::write(p.mount.path.join("f"), "x").unwrap();
    let err = fs::rename(p.mount.path.join("f"), p.local.path().join("f")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EXDEV));
}

#[test]
fn mknod_makes_fifos_and_devices() {
    let p = pair();
    let _outcome = p
        .same("mknod", |root| {
            let fifo = root.join("fifo");
            sys(nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o640)))?;
            let (dev, rdev) = (root.join("null"), libc::makedev(1, 3));
            let rw = Mode::from_bits_truncate(0o666);
            sys(nix::sys::stat::mknod(&dev, SFlag::S_IFCHR, rw, rdev))?;
            let again = sys(nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o640)));
            Ok::<_, i32>((
                {
                    let m = meta(&root.join("fifo"))?;
                    (m.mode, m.nlink, m.uid, m.size)
                },
                meta(&root.join("null"))?.rdev,
                again,
            ))
        })
        .expect("succeeds on both");
}

use e2e_tests::pair::xattr::{list as listxattr, set as setxattr};

fn getxattr(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    e2e_tests::pair::xattr::get_sized(p, name, 65536)
}

#[test]
fn xattrs_get_set_list_remove_with_their_errors() {
    let p = pair();
    let _outcome = p
        .same("xattrs", |root| {
            let f = root.join("f");
            fs::write(&f, "x").unwrap();
            setxattr(&f, "user.one", b"1", 0)?;
            setxattr(&f, "user.bin", &[0, 255, 10, 13], 0)?;
            setxattr(&f, "user.big", &vec![7u8; 4000], 0)?;
            setxattr(&f, "trusted.t", b"root only", 0)?;
            let create_existing = setxattr(&f, "user.one", b"2", libc::XATTR_CREATE);
            let replace_missing = setxattr(&f, "user.none", b"2", libc::XATTR_REPLACE);
            let got = (
                getxattr(&f, "user.bin")?,
                getxattr(&f, "user.big")?.len(),
                getxattr(&f, "trusted.t")?,
            );
            let missing = getxattr(&f, "user.none");
            let list = listxattr(&f)?;
            e2e_tests::pair::xattr::remove(&f, "user.one")?;
            let removed = getxattr(&f, "user.one");
            let small =
                e2e_tests::pair::xattr::get_sized(&f, "user.big", 10).map(|v| v.len() as i64);
            symlink("f", root.join("l")).unwrap();
            let on_link = setxattr(&root.join("l"), "user.x", b"1", 0);
            Ok::<_, i32>((
                create_existing,
                replace_missing,
                got,
                missing,
                list,
                removed,
                small,
                on_link,
            ))
        })
        .expect("succeeds on both");
}

#[test]
fn statfs_reports_the_servers_filesystem() {
    let p = pair();
    let st = |root: &Path| {
        let s = nix::sys::statvfs::statvfs(root).unwrap();
        (s.block_size(), s.blocks(), s.files(), s.name_max())
    };
    // The export and the local directory sit on the same disk.
    assert_eq!(st(&p.server.export("data")), st(&p.mount.path));
}

#[test]
fn fsync_fdatasync_and_copy_file_range() {
    let p = pair();
    let _outcome = p
        .same("fsync and copy_file_range", |root| {
            let mut f = File::create(root.join("src")).unwrap();
            f.write_all(&(0..300_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>())
                .unwrap();
            let sync = (f.sync_all().map_err(errno), f.sync_data().map_err(errno));
            drop(f);
            let src = File::open(root.join("src")).unwrap();
            let dst = File::create(root.join("dst")).unwrap();
            let (mut off_in, mut off_out) = (1000i64, 0i64);
            let n = sys(copy_file_range(
                &src,
                Some(&mut off_in),
                &dst,
                Some(&mut off_out),
                200_000,
            ))?;
            let past_end = sys(copy_file_range(
                &src,
                Some(&mut 400_000i64),
                &dst,
                Some(&mut 0i64),
                10,
            ))?;
            let copied = fs::read(root.join("dst")).unwrap();
            Ok::<_, i32>((
                sync,
                n,
                past_end,
                copied == fs::read(root.join("src")).unwrap()[1000..201_000],
            ))
        })
        .expect("succeeds on both");
}

#[test]
fn unlinked_open_file_stays_readable_and_writable() {
    let p = pair();
    p.same("unlinked while open", |root| {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(root.join("f"))
            .unwrap();
        f.write_all(b"before").unwrap();
        fs::remove_file(root.join("f")).unwrap();
        f.write_all(b" after").unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        let m = f.metadata().unwrap();
        (s, m.nlink(), m.len(), root.join("f").exists())
    });
}

#[test]
fn names_are_bytes_long_names_and_deep_paths_round_trip() {
    let p = pair();
    let _outcome = p
        .same("names", |root| {
            let odd = [
                &b"\xff\xfe latin1 \xe9"[..],
                b"new\nline",
                b"-dash",
                b" space ",
                b"*?[]",
                "日本語".as_bytes(),
            ];
            let mut out = Vec::new();
            for n in odd {
                let path = root.join(OsStr::from_bytes(n));
                fs::write(&path, n).unwrap();
                out.push(fs::read(&path).unwrap() == n);
            }
            let n255 = "n".repeat(255);
            out.push(fs::write(root.join(&n255), "x").is_ok());
            let too_long = fs::write(root.join("n".repeat(256)), "x").map_err(errno);
            let mut names: Vec<Vec<u8>> = fs::read_dir(root)
                .unwrap()
                .map(|e| e.unwrap().file_name().as_bytes().to_vec())
                .collect();
            names.sort();
            // 120 levels of 40-byte names: over 4900 bytes, beyond PATH_MAX, walked relative.
            let level = "d".repeat(40);
            let mut dir = File::open(root).unwrap();
            for _ in 0..120 {
                let c = CString::new(level.clone()).unwrap();
                sys(mkdirat(&dir, c.as_c_str(), Mode::from_bits_truncate(0o755)))?;
                let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
                dir = File::from(sys(openat(&dir, c.as_c_str(), flags, Mode::empty()))?);
            }
            let leaf = CString::new("leaf").unwrap();
            let create = OFlag::O_CREAT | OFlag::O_WRONLY;
            let mode = Mode::from_bits_truncate(0o644);
            let mut f = File::from(sys(openat(&dir, leaf.as_c_str(), create, mode))?);
            f.write_all(b"deep").unwrap();
            drop(f);
            let mut deep = Vec::new();
            dir.seek(SeekFrom::Start(0)).ok();
            let fd = sys(openat(
                &dir,
                leaf.as_c_str(),
                OFlag::O_RDONLY,
                Mode::empty(),
            ))?;
            File::from(fd).read_to_end(&mut deep).unwrap();
            Ok::<_, i32>((out, too_long, names, deep))
        })
        .expect("succeeds on both");
}

#[test]
fn error_codes_match_the_local_kernel() {
    let p = pair();
    let got = p.same("errors", |root| {
        let j = |n: &str| root.join(n);
        fs::create_dir(j("d")).unwrap();
        fs::write(j("d/f"), "x").unwrap();
        symlink("loop2", j("loop1")).unwrap();
        symlink("loop1", j("loop2")).unwrap();
        symlink("d/f", j("link")).unwrap();
        (
            fs::create_dir(j("d")).map_err(errno),
            fs::metadata(j("missing")).map_err(errno).map(|_| ()),
            fs::remove_dir(j("d")).map_err(errno),
            fs::remove_file(j("d")).map_err(errno),
            fs::remove_dir(j("d/f")).map_err(errno),
            fs::metadata(j("d/f/x")).map_err(errno).map(|_| ()),
            fs::read(j("loop1")).map_err(errno),
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(j("link"))
                .map(|_| ())
                .map_err(errno),
            fs::read_dir(j("d/f")).map(|_| ()).map_err(errno),
            fs::write(j("d"), "x").map_err(errno),
            fs::hard_link(j("d"), j("dl")).map_err(errno),
        )
    });
    let want = (
        Err(libc::EEXIST),
        Err(libc::ENOENT),
        Err(libc::ENOTEMPTY),
        Err(libc::EISDIR),
        Err(libc::ENOTDIR),
        Err(libc::ENOTDIR),
        Err(libc::ELOOP),
        Err(libc::ELOOP),
        Err(libc::ENOTDIR),
        Err(libc::EISDIR),
        Err(libc::EPERM),
    );
    assert_eq!(got, want);
}

/// Runs `script` with `sh -c` as user `nobody` (65534) and returns (exit code, stderr with
/// the root path replaced by "ROOT").
fn as_nobody(root: &Path, script: &str) -> (Option<i32>, String) {
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .current_dir(root)
        .output()
        .expect("setpriv (util-linux) runs");
    let err = String::from_utf8_lossy(&out.stderr).replace(root.to_str().unwrap(), "ROOT");
    (out.status.code(), err)
}

#[test]
fn permission_checks_for_a_non_root_user_match_a_local_disk() {
    let p = pair();
    p.same("permissions", |root| {
        let j = |n: &str| root.join(n);
        fs::write(j("rootfile"), "secret").unwrap();
        fs::set_permissions(j("rootfile"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(j("public"), "hello").unwrap();
        fs::set_permissions(j("public"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::create_dir(j("tmp")).unwrap();
        fs::set_permissions(j("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::write(j("tmp/roots"), "r").unwrap();
        fs::create_dir(j("closed")).unwrap();
        fs::set_permissions(j("closed"), fs::Permissions::from_mode(0o700)).unwrap();
        // ACLs: an entry granting nobody access to a 0600 file, one denying it on a 0666
        // file, and a directory whose default ACL lets nobody create and passes on.
        fs::write(j("acl_granted"), "granted").unwrap();
        fs::set_permissions(j("acl_granted"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(j("acl_denied"), "denied").unwrap();
        fs::set_permissions(j("acl_denied"), fs::Permissions::from_mode(0o666)).unwrap();
        fs::create_dir(j("acl_dir")).unwrap();
        e2e_tests::sh(&format!(
            "setfacl -m u:65534:rw '{0}/acl_granted' && setfacl -m u:65534:- '{0}/acl_denied' && setfacl -m u:65534:rwx -d -m u:65534:rwx '{0}/acl_dir'",
            root.display()
        ));
        let cases = [
            "cat rootfile",
            "cat public",
            "echo x >> public",
            "chmod 777 public",
            "chown 65534 public",
            "touch -d 2001-01-01 public",
            "touch tmp/mine && ls -ln tmp/mine | cut -d' ' -f3,4",
            "mkdir tmp/mydir && stat -c '%u %g %a' tmp/mydir",
            "rm tmp/roots",
            "mv tmp/roots tmp/x",
            "mkdir newdir",
            "ls closed",
            "rm -f public",
            "ln -s public tmp/l && chmod 600 tmp/mine && cat tmp/mine",
            "cat acl_granted && echo more >> acl_granted",
            "cat acl_denied",
            "touch acl_dir/inherits && getfacl -cp acl_dir/inherits",
        ];
        cases
            .iter()
            .map(|c| (c, as_nobody(root, c)))
            .map(|(c, r)| format!("{c}: {r:?}"))
            .collect::<Vec<_>>()
    });
}

#[test]
fn fallocate_and_seek_data_hole_match() {
    let p = pair();
    let _outcome = p
        .same("fallocate and SEEK_DATA/SEEK_HOLE", |root| {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(root.join("f"))
                .unwrap();
            sys(fallocate(&f, FallocateFlags::empty(), 0, 1 << 20))?;
            let size = f.metadata().unwrap().len();
            let keep = FallocateFlags::FALLOC_FL_KEEP_SIZE;
            sys(fallocate(&f, keep, 1 << 20, 1 << 20))?;
            let kept = f.metadata().unwrap().len();
            f.write_at(&[1u8; 8192], 0).unwrap();
            let punch = FallocateFlags::FALLOC_FL_PUNCH_HOLE | keep;
            sys(fallocate(&f, punch, 0, 4096))?;
            let punched = {
                let mut b = [9u8; 8];
                f.read_at(&mut b, 0).unwrap();
                b
            };
            // A sparse file: data at 1 MiB only.
            let s = File::create(root.join("sparse")).unwrap();
            s.set_len(4 << 20).unwrap();
            s.write_at(b"data", 1 << 20).unwrap();
            s.sync_all().unwrap();
            let s = File::open(root.join("sparse")).unwrap();
            let data = sys(lseek(&s, 0, Whence::SeekData))?;
            let hole = sys(lseek(&s, data, Whence::SeekHole))?;
            let past = sys(lseek(&s, 8 << 20, Whence::SeekData));
            Ok::<_, i32>((size, kept, punched, data, hole, past))
        })
        .expect("succeeds on both");
}

#[test]
fn a_write_removes_a_file_capability_as_locally() {
    let p = pair();
    // vfs_cap_data revision 2, effective, permitted = CAP_NET_RAW (bit 13).
    let mut cap = vec![0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00];
    cap.resize(20, 0);
    let _outcome = p
        .same("security.capability and writes", |root| {
            let f = root.join("f");
            fs::write(&f, "x").unwrap();
            // The client remembers this new file has no capability; setting one must show.
            setxattr(&f, "security.capability", &cap, 0)?;
            let set = getxattr(&f, "security.capability")?;
            OpenOptions::new()
                .append(true)
                .open(&f)
                .unwrap()
                .write_all(b"y")
                .unwrap();
            let after_write = getxattr(&f, "security.capability");
            Ok::<_, i32>((set, after_write))
        })
        .expect("succeeds on both");
}
