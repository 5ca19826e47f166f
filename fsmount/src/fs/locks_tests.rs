//! Locks against the in-process fake server: conflicts, what close and release give back,
//! waits cancelled by an interrupt, grants undone, and reclaims after a server restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::lock_ranges::{END, F_RDLCK, F_UNLCK, F_WRLCK};
use protocol::Command;

use super::locks::{LockCall, FLOCK, POSIX};
use super::{Fh, Fs, FsOptions, Ino};
use crate::remote::fake::{FakeServer, Fault};
use crate::remote::Remote;

fn core() -> (Arc<FakeServer>, Arc<Fs>) {
    let fake = Arc::new(FakeServer::new());
    let remote: Arc<dyn Remote> = fake.clone();
    let fs = Arc::new(Fs::new(remote, &fake.root(), 1 << 20, FsOptions::default()));
    fs.install_reopen();
    (fake, fs)
}

async fn create(fs: &Arc<Fs>, name: &[u8]) -> (Ino, Fh) {
    let (entry, fh) = fs
        .create(Ino::ROOT, name, 0o644, libc::O_RDWR as u32)
        .await
        .expect("create");
    (entry.ino, fh)
}

/// A POSIX lock call of `owner` through `fh`.
fn posix(ino: Ino, fh: Fh, owner: u64, typ: u32, (start, end): (u64, u64)) -> LockCall {
    LockCall {
        ino,
        fh,
        owner,
        flock: false,
        typ,
        start,
        end,
        pid: owner as u32,
        wait: false,
    }
}

/// Never completes: a call nobody interrupts.
fn never() -> std::future::Pending<()> {
    std::future::pending()
}

fn locks_sent(fake: &FakeServer) -> usize {
    fake.log().iter().filter(|l| l.cmd == Command::Lock).count()
}

#[tokio::test]
async fn owners_conflict_and_f_getlk_names_the_holder_of_this_mount() {
    let (fake, fs) = core();
    let (ino, fh) = create(&fs, b"f").await;
    fs.setlk(posix(ino, fh, 100, F_WRLCK, (0, 99)), never())
        .await
        .expect("granted");
    assert_eq!(fake.locks_of(b"f", 100, POSIX), vec![(0, 99, F_WRLCK)]);
    let other = fs
        .setlk(posix(ino, fh, 200, F_RDLCK, (50, 60)), never())
        .await
        .expect_err("conflict");
    assert_eq!(other.errno(), libc::EAGAIN);
    let c = fs
        .getlk(posix(ino, fh, 200, F_RDLCK, (50, 60)))
        .await
        .unwrap();
    assert_eq!((c.typ, c.start, c.end, c.pid), (F_WRLCK, 0, 99, 100));
    // The holder itself sees nothing in its way; a range beyond is free.
    let free = fs
        .getlk(posix(ino, fh, 200, F_WRLCK, (100, END)))
        .await
        .unwrap();
    assert_eq!(free.typ, F_UNLCK);
    // flock and fcntl locks never conflict.
    let mut flock = posix(ino, fh, 200, F_WRLCK, (0, END));
    flock.flock = true;
    fs.setlk(flock, never()).await.expect("another kind");
    let status = fs.lock_status();
    assert_eq!((status.held, status.waiting), (2, 0));
    assert_eq!(status.list[0].file, "f");
    assert_eq!(status.counts.granted, 2);
}

#[tokio::test]
async fn close_gives_back_the_closing_process_s_posix_locks_and_costs_nothing_otherwise() {
    let (fake, fs) = core();
    let (ino, fh) = create(&fs, b"f").await;
    fs.write(fh, 0, Bytes::from_static(b"data")).await.unwrap();
    let before = locks_sent(&fake);
    fs.flush_owner(ino, fh, 7).await.unwrap();
    assert_eq!(locks_sent(&fake), before, "no lock held: no round trip");

    fs.setlk(posix(ino, fh, 7, F_WRLCK, (0, 9)), never())
        .await
        .unwrap();
    fs.setlk(posix(ino, fh, 7, F_RDLCK, (20, 29)), never())
        .await
        .unwrap();
    fs.setlk(posix(ino, fh, 8, F_RDLCK, (40, 49)), never())
        .await
        .unwrap();
    fs.write(fh, 0, Bytes::from_static(b"under lock"))
        .await
        .unwrap();
    fs.flush_owner(ino, fh, 7).await.unwrap();
    assert_eq!(fake.locks_of(b"f", 7, POSIX), vec![], "all of owner 7's");
    assert_eq!(fake.locks_of(b"f", 8, POSIX), vec![(40, 49, F_RDLCK)]);
    let log = fake.lock_log();
    let last = log.last().unwrap();
    assert_eq!(
        (last.owner, last.r#type, last.start, last.end),
        (7, F_UNLCK, 0, END)
    );
    // The data went first.
    let order: Vec<Command> = fake.log().iter().map(|l| l.cmd).collect();
    assert_eq!(order.last(), Some(&Command::Lock));
    assert_eq!(fake.file(b"f").unwrap(), b"under lock");
    assert_eq!(fs.lock_status().held, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_gives_back_flock_locks_at_once_even_while_the_close_waits_for_writes() {
    let (fake, fs) = core();
    let (ino, fh) = create(&fs, b"f").await;
    let mut flock = posix(ino, fh, 0xf11e, F_WRLCK, (0, END));
    flock.flock = true;
    fs.setlk(flock, never()).await.unwrap();
    assert_eq!(fake.locks_of(b"f", 0xf11e, FLOCK), vec![(0, END, F_WRLCK)]);
    // A write the server holds: the Close waits for it.
    fake.inject(Command::Write, Fault::Hang, 1);
    fs.write(fh, 0, Bytes::from_static(b"slow")).await.unwrap();
    let released = tokio::spawn({
        let fs = fs.clone();
        async move { fs.release(ino, fh).await }
    });
    let start = Instant::now();
    while !fake.locks_of(b"f", 0xf11e, FLOCK).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(2), "flock given back");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !released.is_finished(),
        "the Close still waits for the write"
    );
    fake.release();
    released.await.unwrap().unwrap();
    assert_eq!(fs.lock_status().held, 0);
}

#[tokio::test]
async fn an_interrupted_wait_is_cancelled_on_the_server_and_ends_at_once() {
    let (fake, fs) = core();
    let (ino, fh) = create(&fs, b"f").await;
    fs.setlk(posix(ino, fh, 1, F_WRLCK, (0, END)), never())
        .await
        .unwrap();
    let (interrupt, interrupted) = tokio::sync::oneshot::channel::<()>();
    let mut wait = posix(ino, fh, 2, F_WRLCK, (0, 0));
    wait.wait = true;
    let waiting = tokio::spawn({
        let fs = fs.clone();
        async move {
            let interrupted = async {
                let _ = interrupted.await;
            };
            fs.setlk(wait, interrupted).await
        }
    });
    let start = Instant::now();
    while fs.lock_status().waiting == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let shown = fs.lock_status();
    assert!(shown
        .list
        .iter()
        .any(|l| l.waiting_seconds.is_some() && l.owner == 2));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "waits while owner 1 holds it");
    let interrupted_at = Instant::now();
    interrupt.send(()).unwrap();
    let r = waiting.await.unwrap();
    assert_eq!(r.expect_err("cancelled").errno(), libc::EINTR);
    assert!(interrupted_at.elapsed() < Duration::from_secs(1));
    let cancel = fake
        .lock_log()
        .into_iter()
        .find(|l| l.op == 2)
        .expect("CANCEL");
    assert_eq!((cancel.handle, cancel.owner, cancel.kind), (fh.0, 2, POSIX));
    assert_eq!(fake.locks_of(b"f", 2, POSIX), vec![]);
    let status = fs.lock_status();
    assert_eq!((status.waiting, status.counts.cancelled), (0, 1));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_wait_granted_goes_on_and_a_grant_nobody_hears_of_is_given_back_exactly() {
    let (fake, fs) = core();
    let (ino, fh) = create(&fs, b"f").await;
    fs.setlk(posix(ino, fh, 1, F_WRLCK, (0, END)), never())
        .await
        .unwrap();
    let mut wait = posix(ino, fh, 2, F_RDLCK, (0, 99));
    wait.wait = true;
    let waiting = tokio::spawn({
        let fs = fs.clone();
        async move { fs.setlk(wait, never()).await }
    });
    while fs.lock_status().waiting == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    fs.setlk(posix(ino, fh, 1, F_UNLCK, (0, END)), never())
        .await
        .unwrap();
    waiting.await.unwrap().expect("granted once owner 1 let go");
    assert_eq!(fake.locks_of(b"f", 2, POSIX), vec![(0, 99, F_RDLCK)]);
    // An upgrade of the middle, granted after its call was answered EINTR: given back,
    // the read lock over that range with it (as on Linux NFS).
    let upgrade = posix(ino, fh, 2, F_WRLCK, (10, 19));
    fs.setlk(upgrade, never()).await.unwrap();
    fs.undo(upgrade).await;
    assert_eq!(
        fake.locks_of(b"f", 2, POSIX),
        vec![(0, 9, F_RDLCK), (20, 99, F_RDLCK)]
    );
    assert_eq!(fs.lock_status().held, 2);
}

#[tokio::test]
async fn a_lock_on_a_file_created_under_a_lease_waits_for_its_create() {
    let (fake, fs) = core();
    let dir = fs.mkdir(Ino::ROOT, b"d", 0o755).await.unwrap().ino;
    fake.inject(Command::Create, Fault::Delay(Duration::from_millis(100)), 1);
    let (entry, fh) = fs
        .create(dir, b"f", 0o644, libc::O_RDWR as u32)
        .await
        .unwrap();
    assert!(fs.answered_here(entry.ino), "answered locally");
    fs.setlk(posix(entry.ino, fh, 3, F_WRLCK, (0, END)), never())
        .await
        .expect("the handle exists on the server by then");
    assert_eq!(fake.locks_of(b"d/f", 3, POSIX), vec![(0, END, F_WRLCK)]);
}

#[tokio::test]
async fn after_a_restart_locks_are_taken_again() {
    let (fake, fs) = core();
    let (ino, fh) = create(&fs, b"f").await;
    fs.setlk(posix(ino, fh, 5, F_WRLCK, (0, 9)), never())
        .await
        .unwrap();
    fs.setlk(posix(ino, fh, 5, F_RDLCK, (100, END)), never())
        .await
        .unwrap();
    fake.restart();
    assert_eq!(fake.locks_of(b"f", 5, POSIX), vec![]);
    assert_eq!(fake.reconnect(), 1);
    assert_eq!(
        fake.locks_of(b"f", 5, POSIX),
        vec![(0, 9, F_WRLCK), (100, END, F_RDLCK)]
    );
    assert!(fake.lock_log().iter().filter(|l| l.reclaim).count() == 2);
    fs.read(ino, fh, 0, 10).await.expect("still usable");
    assert_eq!(fs.lock_status().counts.reclaimed, 2);
}

#[tokio::test]
async fn a_lock_the_server_will_not_give_back_fails_the_open_file_with_eio() {
    let (fake, fs) = core();
    let (ino, fh) = create(&fs, b"f").await;
    let (other, ofh) = create(&fs, b"g").await;
    fs.setlk(posix(ino, fh, 5, F_WRLCK, (0, END)), never())
        .await
        .unwrap();
    fake.restart();
    fake.refuse_reclaims(true);
    fake.reconnect();
    let eio = |r: super::Result<()>| r.expect_err("lost").errno();
    assert_eq!(eio(fs.read(ino, fh, 0, 1).await.map(|_| ())), libc::EIO);
    assert_eq!(
        eio(fs.write(fh, 0, Bytes::from_static(b"x")).await.map(|_| ())),
        libc::EIO
    );
    assert_eq!(eio(fs.fsync(ino, fh, false).await), libc::EIO);
    let relock = fs.setlk(posix(ino, fh, 5, F_WRLCK, (0, 0)), never()).await;
    assert_eq!(eio(relock), libc::EIO);
    assert_eq!(eio(fs.flush_owner(ino, fh, 5).await), libc::EIO);
    // Other files are not concerned.
    fs.write(ofh, 0, Bytes::from_static(b"ok")).await.unwrap();
    fs.flush_owner(other, ofh, 5).await.unwrap();
    let status = fs.lock_status();
    assert_eq!((status.held, status.counts.lost), (0, 1));
    fs.release(ino, fh).await.unwrap();
}
