//! The core against the in-process fake server: write-behind error reporting, write
//! ordering, waiting for queued writes, and reopening handles after a server restart,
//! with faults injected per command and no sockets.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use protocol::Command;

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

/// The names a readdirplus of `dir` gives, from the start.
async fn read_dir_plus(fs: &Arc<Fs>, dir: Ino) -> Vec<Vec<u8>> {
    let fh = fs.opendir(dir).unwrap();
    let mut names = Vec::new();
    fs.readdir(fh, 0, true, |item| {
        names.push(item.name.to_vec());
        false
    })
    .await
    .unwrap();
    names
}

/// Lets every runnable task run (the fake answers without real delays).
async fn settle_tasks() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn writes(fake: &FakeServer) -> Vec<(u64, usize)> {
    fake.log()
        .iter()
        .filter(|l| l.cmd == Command::Write)
        .map(|l| (l.write.1, l.write.2))
        .collect()
}

#[tokio::test]
async fn a_failed_queued_write_is_reported_once_by_the_next_flush() {
    let (fake, fs) = core();
    let (ino, fh) = create(&fs, b"f").await;
    fake.inject(Command::Write, Fault::Fail(libc::ENOSPC), 1);
    let n = fs.write(fh, 0, Bytes::from(vec![7u8; 4096])).await;
    assert_eq!(n.expect("a queued write returns at once"), 4096);
    let first = fs.flush(ino).await.expect_err("the failure is reported");
    assert_eq!(first.errno(), libc::ENOSPC);
    fs.flush(ino).await.expect("reported once, not again");
    // A later write goes through and its flush is clean.
    fs.write(fh, 0, Bytes::from_static(b"ok")).await.unwrap();
    fs.flush(ino).await.unwrap();
    assert_eq!(&fake.file(b"f").unwrap()[..2], b"ok");
    assert_eq!(fs.writeback_stats().unwrap().failed_writes, 1);
}

#[tokio::test]
async fn fsync_reports_a_failed_write_before_asking_the_server() {
    let (fake, fs) = core();
    let (ino, fh) = create(&fs, b"f").await;
    fake.inject(Command::Write, Fault::Fail(libc::EIO), 1);
    fs.write(fh, 0, Bytes::from_static(b"data")).await.unwrap();
    let e = fs
        .fsync(ino, fh, false)
        .await
        .expect_err("fsync reports it");
    assert_eq!(e.errno(), libc::EIO);
    assert!(
        !fake.log().iter().any(|l| l.cmd == Command::Fsync),
        "the failed write is reported without an Fsync round trip"
    );
}

#[tokio::test]
async fn stat_waits_for_queued_writes_and_sees_them() {
    let (fake, fs) = core();
    let (ino, fh) = create(&fs, b"f").await;
    fake.inject(Command::Write, Fault::Hang, 1);
    // Write-behind: the write returns while the server has not answered.
    fs.write(fh, 0, Bytes::from(vec![1u8; 10_000]))
        .await
        .unwrap();
    let stat = tokio::spawn({
        let fs = fs.clone();
        async move { fs.getattr(ino, None).await }
    });
    fake.received(Command::Write, 1).await;
    settle_tasks().await;
    assert!(!stat.is_finished(), "stat waits for the hanging write");
    assert!(
        !fake.log().iter().any(|l| l.cmd == Command::GetAttr),
        "no GetAttr is sent before the write is acknowledged"
    );
    fake.release();
    let attr = stat.await.unwrap().unwrap();
    assert_eq!(attr.size, 10_000);
    assert!(
        !fake.log().iter().any(|l| l.cmd == Command::GetAttr),
        "answered from the attributes the write's acknowledgement carried"
    );
    // After a change this mount made since, the server is asked.
    let change = super::SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    fs.setattr(ino, None, change).await.unwrap();
    fs.write(fh, 10_000, Bytes::from_static(b"more"))
        .await
        .unwrap();
    fs.flush(ino).await.unwrap();
    assert_eq!(fs.getattr(ino, None).await.unwrap().size, 10_004);
}

#[tokio::test]
async fn overlapping_writes_reach_the_server_in_the_order_they_were_made() {
    let (fake, fs) = core();
    let (ino, fh) = create(&fs, b"f").await;
    // The first write is slow; the overlapping second must not overtake it.
    fake.inject(Command::Write, Fault::Delay(Duration::from_millis(50)), 1);
    fs.write(fh, 0, Bytes::from(vec![b'a'; 8192]))
        .await
        .unwrap();
    fs.write(fh, 4096, Bytes::from(vec![b'b'; 8192]))
        .await
        .unwrap();
    fs.flush(ino).await.unwrap();
    assert_eq!(writes(&fake), vec![(0, 8192), (4096, 8192)]);
    let mut want = vec![b'a'; 4096];
    want.extend(vec![b'b'; 8192]);
    assert_eq!(fake.file(b"f").unwrap(), want);
}

#[tokio::test]
async fn contiguous_writes_are_coalesced_into_one_request() {
    let (fake, fs) = core();
    let (ino, fh) = create(&fs, b"f").await;
    for i in 0..8u64 {
        fs.write(fh, i * 4096, Bytes::from(vec![i as u8; 4096]))
            .await
            .unwrap();
    }
    fs.flush(ino).await.unwrap();
    assert_eq!(writes(&fake), vec![(0, 8 * 4096)]);
}

#[tokio::test]
async fn after_a_restart_handles_are_reopened_by_their_current_path_and_queued_writes_land() {
    let (fake, fs) = core();
    let (ino, fh) = create(&fs, b"f").await;
    fs.rename(Ino::ROOT, b"f", Ino::ROOT, b"g", 0)
        .await
        .unwrap();
    fake.inject(Command::Write, Fault::Hang, 1);
    fs.write(fh, 0, Bytes::from_static(b"survives"))
        .await
        .unwrap();
    fake.received(Command::Write, 1).await;
    fake.restart();
    assert_eq!(fake.open_handles(), 0);
    assert_eq!(fake.reconnect(), 1, "the one open file is reopened");
    fake.release();
    fs.flush(ino)
        .await
        .expect("the write lands on the reopened handle");
    assert_eq!(fake.file(b"g").unwrap(), b"survives");
    // The reopened handle keeps the number the kernel holds.
    fs.release(ino, fh).await.unwrap();
    assert_eq!(fake.open_handles(), 0);
}

#[tokio::test]
async fn a_handle_that_cannot_be_reopened_fails_its_writes_at_flush() {
    let (fake, fs) = core();
    let (ino, fh) = create(&fs, b"f").await;
    fs.remove(Ino::ROOT, b"f", false).await.unwrap();
    fake.inject(Command::Write, Fault::Hang, 1);
    fs.write(fh, 0, Bytes::from_static(b"lost")).await.unwrap();
    fake.received(Command::Write, 1).await;
    fake.restart();
    assert_eq!(
        fake.reconnect(),
        0,
        "an unlinked file has no path to reopen"
    );
    fake.release();
    let e = fs.flush(ino).await.expect_err("the failure is not dropped");
    assert_eq!(e.errno(), libc::ESTALE);
}

#[tokio::test]
async fn a_file_replaced_during_a_restart_is_not_reopened_and_its_writes_fail_with_estale() {
    let (fake, fs) = core();
    let (ino, fh) = create(&fs, b"f").await;
    fake.inject(Command::Write, Fault::Hang, 1);
    fs.write(fh, 0, Bytes::from_static(b"for the old file"))
        .await
        .unwrap();
    fake.received(Command::Write, 1).await;
    fake.restart();
    fake.replace(b"f", b"someone else's");
    assert_eq!(fake.reconnect(), 0, "the path names another file now");
    fake.release();
    let e = fs.flush(ino).await.expect_err("reported at close");
    assert_eq!(e.errno(), libc::ESTALE);
    assert_eq!(
        fake.file(b"f").unwrap(),
        b"someone else's",
        "never written there"
    );
    fs.release(ino, fh)
        .await
        .expect("a stale handle still closes");
}

#[tokio::test]
async fn a_lost_reply_is_eio_and_the_next_read_fetches_again() {
    let (fake, fs) = core();
    let (ino, fh) = create(&fs, b"f").await;
    // Larger than an Open brings along, so the read is a Read.
    let big = vec![b'h'; crate::defaults::OPEN_PREFETCH + 1];
    fs.write(fh, 0, Bytes::from(big)).await.unwrap();
    fs.flush(ino).await.unwrap();
    let opened = fs.open(ino, libc::O_RDONLY as u32).await.unwrap();
    fake.inject(Command::Read, Fault::Lose, 1);
    let e = fs.read(ino, opened.fh, 0, 4096).await.expect_err("lost");
    assert_eq!(e.errno(), libc::EIO);
    let data = fs.read(ino, opened.fh, 0, 4096).await.unwrap();
    assert_eq!(&data[..], &[b'h'; 4096][..]);
}

#[tokio::test]
async fn a_small_file_comes_whole_with_its_open_and_is_read_without_a_round_trip() {
    let (fake, fs) = core();
    let (ino, fh) = create(&fs, b"f").await;
    fs.write(fh, 0, Bytes::from_static(b"hello")).await.unwrap();
    fs.flush(ino).await.unwrap();
    let opened = fs.open(ino, libc::O_RDONLY as u32).await.unwrap();
    let data = fs.read(ino, opened.fh, 0, 4096).await.unwrap();
    assert_eq!(&data[..], b"hello");
    let reads = fake.log().iter().filter(|l| l.cmd == Command::Read).count();
    assert_eq!(reads, 0, "served from what the Open reply carried");
    // Opened again with the block cached: nothing asked for, still served.
    let again = fs.open(ino, libc::O_RDONLY as u32).await.unwrap();
    assert_eq!(
        &fs.read(ino, again.fh, 0, 4096).await.unwrap()[..],
        b"hello"
    );
    // Changed by a process on the server (new change token): the next open brings it anew.
    fake.replace(b"f", b"changed");
    let ino2 = fs.lookup(Ino::ROOT, b"f").await.unwrap().ino;
    let third = fs.open(ino2, libc::O_RDONLY as u32).await.unwrap();
    assert_eq!(
        &fs.read(ino2, third.fh, 0, 4096).await.unwrap()[..],
        b"changed"
    );
    let reads = fake.log().iter().filter(|l| l.cmd == Command::Read).count();
    assert_eq!(reads, 0);
}

#[tokio::test]
async fn a_server_error_keeps_its_errno() {
    let (fake, fs) = core();
    fake.inject(Command::Mkdir, Fault::Fail(libc::EDQUOT), 1);
    let e = fs.mkdir(Ino::ROOT, b"d", 0o755).await.expect_err("fails");
    assert_eq!(e.errno(), libc::EDQUOT);
    let e = fs.lookup(Ino::ROOT, b"d").await.expect_err("nothing made");
    assert_eq!(e.errno(), libc::ENOENT);
}

#[tokio::test]
async fn missing_names_in_a_directory_this_mount_created_are_answered_without_asking() {
    let (fake, fs) = core();
    let dir = fs.mkdir(Ino::ROOT, b"d", 0o755).await.expect("mkdir").ino;
    let lookups = |fake: &FakeServer| {
        fake.log()
            .iter()
            .filter(|l| l.cmd == Command::Lookup)
            .count()
    };
    let missing = fs.lookup(dir, b"f").await.expect_err("nothing there yet");
    assert_eq!(missing.errno(), libc::ENOENT);
    assert_eq!(lookups(&fake), 0, "answered from what this mount knows");
    let (entry, _) = fs
        .create(dir, b"f", 0o644, libc::O_RDWR as u32)
        .await
        .expect("create");
    let found = fs.lookup(dir, b"f").await.expect("made here");
    assert_eq!(found.ino, entry.ino);
    assert_eq!(
        lookups(&fake),
        0,
        "a name being made here is answered as made"
    );
    fs.remove(dir, b"f", false).await.expect("unlink");
    assert!(fs.lookup(dir, b"f").await.is_err());
    assert_eq!(lookups(&fake), 0);
    // A directory this mount did not create (the root) is asked about.
    assert!(fs.lookup(Ino::ROOT, b"nothing").await.is_err());
    assert_eq!(lookups(&fake), 1);
}

#[tokio::test]
async fn a_setattr_behind_queued_writes_does_not_wait_for_them_but_is_sent_after_them() {
    let (fake, fs) = core();
    let (ino, fh) = create(&fs, b"f").await;
    fake.inject(Command::Write, Fault::Hang, 1);
    fs.write(fh, 0, Bytes::from(vec![1u8; 4096])).await.unwrap();
    let change = super::SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    let set = tokio::time::timeout(Duration::from_secs(5), fs.setattr(ino, None, change));
    set.await
        .expect("not held up by the unacknowledged write")
        .expect("setattr");
    let order: Vec<Command> = fake
        .log()
        .iter()
        .map(|l| l.cmd)
        .filter(|c| matches!(c, Command::Write | Command::SetAttr))
        .collect();
    assert_eq!(
        order,
        vec![Command::Write, Command::SetAttr],
        "queued in call order"
    );
    fake.release();
    fs.flush(ino).await.expect("the write lands");
    assert_eq!(fake.file(b"f").unwrap().len(), 4096);
}

#[tokio::test]
async fn a_walker_s_second_miss_lists_the_directory_and_later_lookups_are_answered_from_it() {
    let (fake, fs) = core();
    for name in [&b"a"[..], b"b", b"c"] {
        fake.replace(name, b"data");
    }
    let sent = |fake: &FakeServer, cmd| fake.log().iter().filter(|l| l.cmd == cmd).count();
    fs.lookup(Ino::ROOT, b"a").await.expect("a");
    assert_eq!(sent(&fake, Command::Lookup), 1);
    let b = fs.lookup(Ino::ROOT, b"b").await.expect("b");
    assert_eq!(b.attr.size, 4);
    assert_eq!(
        sent(&fake, Command::List),
        1,
        "the second miss lists the directory"
    );
    assert_eq!(sent(&fake, Command::Lookup), 1);
    fs.lookup(Ino::ROOT, b"c")
        .await
        .expect("c, from the listing");
    let gone = fs
        .lookup(Ino::ROOT, b"nothing")
        .await
        .expect_err("not listed");
    assert_eq!(gone.errno(), libc::ENOENT);
    assert_eq!(sent(&fake, Command::Lookup), 1, "no more round trips");
    // A change made by this mount: listed attributes may be stale, names are not.
    let (ino, fh) = create(&fs, b"new").await;
    fs.write(fh, 0, Bytes::from_static(b"x")).await.unwrap();
    fs.flush(ino).await.unwrap();
    fs.lookup(Ino::ROOT, b"c").await.expect("c");
    assert_eq!(
        sent(&fake, Command::Lookup),
        2,
        "attributes asked for again"
    );
    // Known already: a name made here is asked for, never by listing the directory again.
    fs.lookup(Ino::ROOT, b"new").await.expect("new");
    assert_eq!(sent(&fake, Command::Lookup), 3);
    assert_eq!(sent(&fake, Command::List), 1);
    assert!(fs.lookup(Ino::ROOT, b"nothing").await.is_err());
    assert_eq!(sent(&fake, Command::Lookup), 3);
}

#[tokio::test]
async fn a_subdirectory_a_walker_meets_in_a_listing_is_listed_ahead_of_it() {
    let (fake, fs) = core();
    let made = fs.mkdir(Ino::ROOT, b"d", 0o755).await.unwrap().ino;
    fake.replace(b"d/f", b"1");
    fake.replace(b"a", b"1");
    fake.replace(b"b", b"1");
    // A fresh mount's view: nothing known yet (this mount made "d": forget that).
    fs.names().known.forget(Ino::ROOT);
    fs.names().known.forget(made);
    let sent = |fake: &FakeServer, cmd| fake.log().iter().filter(|l| l.cmd == cmd).count();
    fs.lookup(Ino::ROOT, b"a").await.unwrap();
    fs.lookup(Ino::ROOT, b"b").await.unwrap(); // second miss: the root is listed
    let d = fs.lookup(Ino::ROOT, b"d").await.unwrap().ino; // from the listing: d is listed ahead
    for _ in 0..100 {
        let generation = fs.attr_generation();
        if fs.names().known.lookup(d, b"f", generation) != super::known_dirs::Known::Unknown {
            break;
        }
        settle_tasks().await;
    }
    let lookups = sent(&fake, Command::Lookup);
    fs.lookup(d, b"f").await.expect("listed ahead");
    assert!(fs.lookup(d, b"g").await.is_err());
    assert_eq!(
        sent(&fake, Command::Lookup),
        lookups,
        "both answered from d's listing"
    );
}

#[tokio::test]
async fn another_client_s_change_drops_what_this_mount_cached_and_tells_the_kernel() {
    use super::Invalidate;
    let (fake, fs) = core();
    let dir = fs.mkdir(Ino::ROOT, b"d", 0o755).await.unwrap().ino;
    let (file, _) = fs
        .create(dir, b"f", 0o644, libc::O_RDWR as u32)
        .await
        .unwrap();
    assert!(fs.lookup(dir, b"new").await.is_err(), "known missing");
    // Another client creates "new" in d and changes f.
    fake.replace(b"d/new", b"1");
    let told = fs.changed(&[
        proto::Change {
            dir: bytes::Bytes::from_static(b"d"),
            name: bytes::Bytes::from_static(b"new"),
            ..Default::default()
        },
        proto::Change {
            path: bytes::Bytes::from_static(b"d/f"),
            ..Default::default()
        },
    ]);
    assert!(told.contains(&Invalidate::Entry(dir, bytes::Bytes::from_static(b"new"))));
    assert!(told.contains(&Invalidate::Inode(dir)));
    assert!(told.contains(&Invalidate::Inode(file.ino)));
    fs.lookup(dir, b"new")
        .await
        .expect("asked again, and found");
    let everything = fs.changed(&[proto::Change {
        everything: true,
        ..Default::default()
    }]);
    assert!(everything.contains(&Invalidate::Inode(Ino::ROOT)));
}

#[tokio::test]
async fn subdirectories_a_readdir_shows_are_listed_ahead_and_their_readdir_needs_no_request() {
    let (fake, fs) = core();
    let d = fs.mkdir(Ino::ROOT, b"d", 0o755).await.unwrap().ino;
    fake.replace(b"d/x", b"1");
    fs.names().known.forget(d); // as on a fresh mount: d not known
    let lists = |fake: &FakeServer| fake.log().iter().filter(|l| l.cmd == Command::List).count();
    let names = read_dir_plus(&fs, Ino::ROOT).await;
    assert!(names.contains(&b"d".to_vec()));
    let before = lists(&fake);
    for _ in 0..100 {
        if fs.names().whole_listing(d).is_some() {
            break;
        }
        settle_tasks().await;
    }
    assert_eq!(lists(&fake), before + 1, "d was listed ahead");
    let inside = read_dir_plus(&fs, d).await;
    assert!(inside.contains(&b"x".to_vec()), "{inside:?}");
    assert_eq!(lists(&fake), before + 1, "served from the listing ahead");
}

#[tokio::test]
async fn a_listing_serves_readdir_after_changes_elsewhere_but_not_after_changes_to_what_it_lists() {
    let (fake, fs) = core();
    let a = fs.mkdir(Ino::ROOT, b"a", 0o755).await.unwrap().ino;
    let b = fs.mkdir(Ino::ROOT, b"b", 0o755).await.unwrap().ino;
    fake.replace(b"a/x", b"1");
    fake.replace(b"b/y", b"2");
    // As on a fresh mount: neither directory known.
    fs.names().known.forget(a);
    fs.names().known.forget(b);
    let lists = |fake: &FakeServer| fake.log().iter().filter(|l| l.cmd == Command::List).count();
    read_dir_plus(&fs, a).await;
    read_dir_plus(&fs, b).await;
    let listed = lists(&fake);
    assert_eq!(read_dir_plus(&fs, b).await.len(), 3, ". .. y");
    assert_eq!(lists(&fake), listed, "served from b's listing");
    // A change in a (as rm -rf makes before it reads b) leaves b's listing good.
    fs.remove(a, b"x", false).await.unwrap();
    assert_eq!(read_dir_plus(&fs, b).await.len(), 3);
    assert_eq!(lists(&fake), listed, "b listed again after a change in a");
    // A change to what b lists (y's attributes) does not.
    let y = fs.lookup(b, b"y").await.unwrap().ino;
    let listed = lists(&fake);
    fs.names().attrs.forget(y);
    read_dir_plus(&fs, b).await;
    assert_eq!(
        lists(&fake),
        listed + 1,
        "b's listing served after y changed"
    );
    // Nor does a change to b itself.
    read_dir_plus(&fs, b).await;
    let listed = lists(&fake);
    fs.names().attrs.forget(b);
    read_dir_plus(&fs, b).await;
    assert_eq!(
        lists(&fake),
        listed + 1,
        "b's listing served after b changed"
    );
}

/// A directory made by this mount (leased, known empty) and a file created in it,
/// answered locally.
async fn leased_file(fs: &Arc<Fs>, name: &[u8]) -> (Ino, Ino, Fh) {
    let dir = fs.mkdir(Ino::ROOT, b"d", 0o755).await.expect("mkdir").ino;
    let (entry, fh) = fs
        .create(dir, name, 0o644, libc::O_WRONLY as u32)
        .await
        .expect("create");
    (dir, entry.ino, fh)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_create_goes_out_at_once_and_a_local_remove_may_be_held() {
    let (fake, fs) = core();
    let (dir, ino, _fh) = leased_file(&fs, b"f").await;
    assert!(fs.answered_here(ino), "the create was answered locally");
    // What a close reports (its create failed) must be able to arrive before the close.
    assert!(
        !fake.sent_behind().contains(&Command::Create),
        "the create was held: {:?}",
        fake.sent_behind()
    );
    fs.remove(dir, b"f", false).await.unwrap();
    assert_eq!(fake.sent_behind(), vec![Command::Remove]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_answered_locally_never_overtakes_a_write_batch_on_its_way_out() {
    let (fake, fs) = core();
    let (_, ino, fh) = leased_file(&fs, b"f").await;
    assert!(fs.answered_here(ino), "the create was answered locally");
    fs.write(fh, 0, Bytes::from(vec![5u8; 8192])).await.unwrap();
    // The batch's linger timer takes it out and is held before it is queued, as a
    // thread preempted there would be; the close comes meanwhile.
    fake.inject(Command::Write, Fault::Stall(Duration::from_millis(300)), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    fs.flush(ino).await.expect("close");
    fs.release(ino, fh).await.expect("release");
    let synced = fs.sync_all().await;
    synced.expect("every write landed");
    let order: Vec<Command> = fake.log().iter().map(|l| l.cmd).collect();
    let (w, c) = (
        order.iter().rposition(|c| *c == Command::Write),
        order.iter().rposition(|c| *c == Command::Close),
    );
    assert!(
        w < c,
        "the write reaches the server before the close: {order:?}"
    );
    assert_eq!(fake.file(b"d/f").unwrap(), vec![5u8; 8192]);
    assert_eq!(fs.writeback_stats().unwrap().failed_writes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_failing_after_its_close_returned_is_kept_for_sync_and_status_by_name() {
    let (fake, fs) = core();
    let (_, ino, fh) = leased_file(&fs, b"f").await;
    // Failing only well after the close returned, however the threads are scheduled: a
    // failure that arrives before the close is the close's to report.
    fake.inject(
        Command::Write,
        Fault::FailAfter(Duration::from_millis(300), libc::EIO),
        1,
    );
    fs.write(fh, 0, Bytes::from(vec![1u8; 4096])).await.unwrap();
    fs.flush(ino).await.ok();
    fs.release(ino, fh).await.unwrap();
    let e = fs.sync_all().await.expect_err("fsmount sync fails");
    assert_eq!(e.errno(), libc::EIO);
    let (_, failed, described) = fs.local_answers();
    assert!(failed >= 1);
    assert!(
        described.iter().any(|d| d.contains("d/f")),
        "status names the file: {described:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_its_inode_budget_a_create_waits_for_the_server_and_gets_its_enospc() {
    let (fake, fs) = core();
    fake.set_budget(1 << 20, 2);
    let dir = fs.mkdir(Ino::ROOT, b"d", 0o755).await.unwrap().ino;
    for name in [&b"a"[..], b"b"] {
        let (entry, _) = fs
            .create(dir, name, 0o644, libc::O_WRONLY as u32)
            .await
            .unwrap();
        assert!(
            fs.answered_here(entry.ino),
            "within the budget: answered locally"
        );
    }
    fake.inject(Command::Create, Fault::Fail(libc::ENOSPC), 1);
    let e = fs
        .create(dir, b"c", 0o644, libc::O_WRONLY as u32)
        .await
        .expect_err("the server's answer");
    assert_eq!(e.errno(), libc::ENOSPC);
    fs.sync_all()
        .await
        .expect("nothing answered locally failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_its_byte_budget_a_close_waits_for_the_writes_and_reports_their_enospc() {
    let (fake, fs) = core();
    fake.set_budget(8192, 100);
    let (_, ino, fh) = leased_file(&fs, b"f").await;
    fs.write(fh, 0, Bytes::from(vec![1u8; 8192])).await.unwrap();
    assert!(fs.answered_here(ino), "8 KiB fit");
    fake.inject(Command::Write, Fault::Fail(libc::ENOSPC), 1);
    fs.write(fh, 8192, Bytes::from(vec![2u8; 4096]))
        .await
        .unwrap();
    assert!(!fs.answered_here(ino), "the next 4 KiB do not: close waits");
    let e = fs.flush(ino).await.expect_err("close reports it");
    assert_eq!(e.errno(), libc::ENOSPC);
    fs.release(ino, fh).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_local_create_is_reported_by_its_errno_not_by_its_writes_ebadf() {
    let (fake, fs) = core();
    let dir = fs.mkdir(Ino::ROOT, b"d", 0o755).await.unwrap().ino;
    fake.inject(Command::Create, Fault::Delay(Duration::from_millis(30)), 1);
    let (entry, fh) = fs
        .create(dir, b"f", 0o644, libc::O_WRONLY as u32)
        .await
        .unwrap();
    // The server made the name meanwhile (as a process on its disk could).
    fake.replace(b"d/f", b"theirs");
    fs.write(fh, 0, Bytes::from_static(b"mine")).await.unwrap();
    let e = fs.fsync(entry.ino, fh, false).await.expect_err("fails");
    assert_eq!(e.errno(), libc::EEXIST, "the create's errno");
    assert_eq!(fake.file(b"d/f").unwrap(), b"theirs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_on_the_fuse_thread_sees_a_local_rename_whole_or_not_at_all() {
    let (_fake, fs) = core();
    let (dir, ino, fh) = leased_file(&fs, b"f").await;
    fs.flush(ino).await.unwrap();
    fs.release(ino, fh).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looker = {
        let (fs, stop) = (fs.clone(), stop.clone());
        let rt = tokio::runtime::Handle::current();
        std::thread::spawn(move || {
            let _rt = rt.enter();
            let mut looked = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                looked += 1;
                for name in [&b"f"[..], b"g"] {
                    if let Some(Ok(e)) = fs.lookup_now(dir, name) {
                        assert_eq!(e.ino, ino, "{} names another inode", name[0] as char);
                    }
                }
            }
            looked
        })
    };
    for _ in 0..2000 {
        fs.rename(dir, b"f", dir, b"g", 0).await.unwrap();
        fs.rename(dir, b"g", dir, b"f", 0).await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(looker.join().expect("no lookup saw a half-done rename") > 0);
    fs.sync_all().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_create_the_server_refuses_reports_the_server_s_errno_at_fsync_and_sync() {
    for errno in [libc::ENOSPC, libc::EDQUOT, libc::EACCES, libc::EEXIST] {
        let (fake, fs) = core();
        let dir = fs.mkdir(Ino::ROOT, b"d", 0o755).await.unwrap().ino;
        fake.inject(Command::Create, Fault::Fail(errno), 1);
        let (entry, fh) = fs
            .create(dir, b"f", 0o644, libc::O_WRONLY as u32)
            .await
            .expect("answered locally");
        fs.write(fh, 0, Bytes::from_static(b"data")).await.unwrap();
        let e = fs.fsync(entry.ino, fh, false).await.expect_err("fails");
        assert_eq!(e.errno(), errno, "fsync: the server's errno, not EBADF");
        fs.release(entry.ino, fh).await.unwrap();
        let e = fs.sync_all().await.expect_err("sync fails too");
        assert_eq!(e.errno(), errno);
        assert!(fake.file(b"d/f").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_set_on_a_leased_directory_gives_its_lease_back() {
    let (fake, fs) = core();
    let dir = fs.mkdir(Ino::ROOT, b"d", 0o777).await.unwrap().ino;
    let (entry, _) = fs
        .create(dir, b"a", 0o644, libc::O_WRONLY as u32)
        .await
        .unwrap();
    assert!(fs.answered_here(entry.ino), "leased: answered locally");
    let set = fs.setxattr(dir, b"system.posix_acl_access", b"\x02\0\0\0", 0);
    tokio::time::timeout(Duration::from_secs(5), set)
        .await
        .expect("does not hang")
        .unwrap();
    settle_tasks().await;
    assert!(
        fake.log().iter().any(|l| l.cmd == Command::Lease),
        "the lease went back"
    );
    let (b, _) = fs
        .create(dir, b"b", 0o644, libc::O_WRONLY as u32)
        .await
        .unwrap();
    assert!(
        !fs.answered_here(b.ino),
        "a create there now goes to the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_handle_s_close_may_be_held_and_a_writer_s_is_not() {
    let (fake, fs) = core();
    let (ino, fh) = create(&fs, b"f").await;
    fs.write(fh, 0, Bytes::from_static(b"hello")).await.unwrap();
    fs.flush(ino).await.unwrap();
    fs.release(ino, fh).await.unwrap();
    assert!(
        !fake.sent_behind().contains(&Command::Close),
        "a written handle's close was held: {:?}",
        fake.sent_behind()
    );
    let reader = fs.open(ino, libc::O_RDONLY as u32).await.unwrap();
    let writer = fs.open(ino, libc::O_WRONLY as u32).await.unwrap();
    fs.release(ino, writer.fh).await.unwrap();
    assert!(!fake.sent_behind().contains(&Command::Close));
    fs.release(ino, reader.fh).await.unwrap();
    assert_eq!(fake.sent_behind(), vec![Command::Close]);
    // Both closed on the server all the same.
    let closes = fake
        .log()
        .iter()
        .filter(|l| l.cmd == Command::Close)
        .count();
    assert_eq!(closes, 3);
}
