//! The lock table against real files: conflicts, waits, deadlocks, bounds, the disk.
use super::*;

fn who(s: &'static [u8]) -> Who {
    Who {
        session: Bytes::from_static(s),
        token: "t".into(),
    }
}

fn set(owner: u64, typ: Option<LockType>, start: u64, end: u64, wait: bool) -> SetLock {
    SetLock {
        kind: Kind::Posix,
        owner,
        typ,
        start,
        end,
        pid: 7,
        handle: 1,
        wait,
        reclaim: false,
    }
}

fn file() -> (tempfile::TempDir, File, FileKey) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, b"x").unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let key = FileKey::of(&f).unwrap();
    (dir, f, key)
}

const LIMITS: Limits = Limits {
    per_session: 100,
    per_token: 150,
    descriptors: 1000,
};

#[test]
fn owners_conflict_and_a_release_wakes_the_waiter() {
    let (_d, f, key) = file();
    let locks = Locks::new(LIMITS);
    let (a, b) = (who(b"a"), who(b"b"));
    let w = Some(LockType::Write);
    assert!(matches!(
        locks.set(&a, key, &f, &set(1, w, 0, 9, false), None),
        Ok(Outcome::Done)
    ));
    let e = locks
        .set(&b, key, &f, &set(1, w, 5, 5, false), None)
        .unwrap_err();
    assert_eq!(e.errno(), libc::EAGAIN);
    assert!(matches!(
        locks.set(&b, key, &f, &set(1, w, 10, 19, false), None),
        Ok(Outcome::Done)
    ));
    let Ok(Outcome::Blocked(waiter)) = locks.set(&b, key, &f, &set(1, w, 0, 0, true), None) else {
        panic!("queued")
    };
    assert_eq!(locks.summary().waiters, 1);
    // A split unlock that leaves byte 0 held does not wake it.
    locks
        .set(&a, key, &f, &set(1, None, 3, 4, false), None)
        .unwrap();
    assert_eq!(*waiter.state.lock(), WaitState::Waiting);
    assert!(matches!(
        locks.set(&b, key, &f, &set(1, w, 0, 0, true), Some(&waiter)),
        Ok(Outcome::Blocked(_))
    ));
    locks.closed(&a.session, 1);
    assert_eq!(*waiter.state.lock(), WaitState::Woken, "released: woken");
    assert!(matches!(
        locks.set(&b, key, &f, &set(1, w, 0, 0, true), Some(&waiter)),
        Ok(Outcome::Done)
    ));
    let s = locks.summary();
    assert_eq!((s.waiters, s.sessions), (0, 1));
    locks.session_ended(&b.session);
    assert_eq!(locks.summary().ranges, 0);
    assert!(locks.table.lock().files.is_empty());
}

#[test]
fn a_wait_that_closes_a_cycle_is_a_deadlock() {
    let (_d, f, key) = file();
    let locks = Locks::new(LIMITS);
    let (a, b) = (who(b"a"), who(b"b"));
    let w = Some(LockType::Write);
    locks
        .set(&a, key, &f, &set(1, w, 0, 0, false), None)
        .unwrap();
    locks
        .set(&b, key, &f, &set(2, w, 1, 1, false), None)
        .unwrap();
    let Ok(Outcome::Blocked(_)) = locks.set(&a, key, &f, &set(1, w, 1, 1, true), None) else {
        panic!("a waits for b")
    };
    let e = locks
        .set(&b, key, &f, &set(2, w, 0, 0, true), None)
        .unwrap_err();
    assert_eq!(e.errno(), libc::EDEADLK);
    // Owner 3 of session b is another owner: no cycle through it.
    assert!(matches!(
        locks.set(&b, key, &f, &set(3, w, 0, 0, true), None),
        Ok(Outcome::Blocked(_))
    ));
}

#[test]
fn bounds_refuse_with_enolck_and_cancel_ends_waits() {
    let (_d, f, key) = file();
    let locks = Locks::new(LIMITS);
    let a = who(b"a");
    let r = Some(LockType::Read);
    for i in 0..100 {
        locks
            .set(&a, key, &f, &set(1, r, i * 2, i * 2, false), None)
            .unwrap();
    }
    let e = locks
        .set(&a, key, &f, &set(1, r, 1000, 1000, false), None)
        .unwrap_err();
    assert_eq!(e.errno(), libc::ENOLCK);
    // Merging costs nothing more.
    locks
        .set(&a, key, &f, &set(1, r, 1, 1, false), None)
        .unwrap();
    let b = who(b"b");
    let Ok(Outcome::Blocked(waiter)) = locks.set(
        &b,
        key,
        &f,
        &set(9, Some(LockType::Write), 0, 0, true),
        None,
    ) else {
        panic!("queued")
    };
    locks.cancel(&b, key, 9, Kind::Posix);
    assert_eq!(*waiter.state.lock(), WaitState::Cancelled);
    assert_eq!(locks.summary().waiters, 0);
}

#[test]
fn flock_and_posix_do_not_conflict_and_the_disk_sees_both() {
    let (_d, f, key) = file();
    let locks = Locks::new(LIMITS);
    let (a, b) = (who(b"a"), who(b"b"));
    let mut fl = set(1, Some(LockType::Write), 0, END, false);
    fl.kind = Kind::Flock;
    locks.set(&a, key, &f, &fl, None).unwrap();
    locks
        .set(
            &b,
            key,
            &f,
            &set(1, Some(LockType::Write), 0, END, false),
            None,
        )
        .unwrap();
    let seen = locks
        .test(&who(b"c"), key, &f, Kind::Posix, 1, LockType::Read, 0, 0)
        .unwrap();
    // Another session learns of the lock, not of a pid that means nothing to it.
    assert_eq!(seen.map(|s| (s.0, s.3)), Some((LockType::Write, 0)));
    let own = locks
        .test(&b, key, &f, Kind::Posix, 2, LockType::Read, 0, 0)
        .unwrap();
    assert_eq!(own.map(|s| (s.0, s.3)), Some((LockType::Write, 7)));
    // A process on the server's disk is refused the flock a client holds.
    let local = OwnedFd::from(File::open(_d.path().join("f")).unwrap());
    assert_eq!(
        disk_locks::set_whole(&local, Some(LockType::Read)),
        Ok(false)
    );
}

#[test]
fn splitting_unlocks_are_held_to_the_bound_and_a_granted_wait_gives_its_place_back() {
    let (_d, f, key) = file();
    let limits = Limits {
        per_session: 3,
        per_token: 10,
        descriptors: 10,
    };
    let locks = Locks::new(limits);
    let (a, b) = (who(b"a"), who(b"b"));
    let w = Some(LockType::Write);
    locks
        .set(&a, key, &f, &set(1, w, 0, 99, false), None)
        .unwrap();
    locks
        .set(&a, key, &f, &set(1, None, 10, 10, false), None)
        .unwrap();
    locks
        .set(&a, key, &f, &set(1, None, 20, 20, false), None)
        .unwrap();
    assert_eq!(locks.summary().ranges, 3);
    let e = locks
        .set(&a, key, &f, &set(1, None, 30, 30, false), None)
        .unwrap_err();
    assert_eq!(e.errno(), libc::ENOLCK, "a fourth range by splitting");
    // b: two ranges and a wait, at its bound; the wait granted takes the wait's place.
    locks
        .set(&b, key, &f, &set(2, w, 200, 200, false), None)
        .unwrap();
    locks
        .set(&b, key, &f, &set(2, w, 202, 202, false), None)
        .unwrap();
    let Ok(Outcome::Blocked(waiter)) = locks.set(&b, key, &f, &set(2, w, 5, 5, true), None) else {
        panic!("queued")
    };
    locks.closed(&a.session, 1);
    assert!(matches!(
        locks.set(&b, key, &f, &set(2, w, 5, 5, true), Some(&waiter)),
        Ok(Outcome::Done)
    ));
    assert_eq!(locks.summary().ranges, 3);
    assert_eq!(locks.summary().waiters, 0);
}

#[test]
fn owners_that_let_go_are_forgotten_by_their_handle() {
    let (_d, f, key) = file();
    let locks = Locks::new(LIMITS);
    let a = who(b"a");
    for owner in 0..1000 {
        let r = Some(LockType::Read);
        locks
            .set(&a, key, &f, &set(owner, r, 0, 0, false), None)
            .unwrap();
        locks
            .set(&a, key, &f, &set(owner, None, 0, END, false), None)
            .unwrap();
    }
    let t = locks.table.lock();
    let held: usize = t.sessions.values().map(|s| s.handles.len()).sum();
    assert_eq!(held, 0, "handles remember owners holding nothing");
    assert!(t.files.is_empty());
    drop(t);
    assert_eq!(locks.fds.load(Ordering::Relaxed), 0);
}
