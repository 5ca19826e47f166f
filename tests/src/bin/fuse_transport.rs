//! What the FUSE transport alone costs on this machine: a file system serving one file from
//! memory (no network, no disk), mounted once per transport, read by fio (4 KiB random
//! reads, O_DIRECT, as `scripts/bench.sh` does) with 1 and 4 jobs. Transports:
//! - `dev1`: one thread reading requests from /dev/fuse and writing the replies (what
//!   fsmount does by default);
//! - `dev2`: two such threads, the second on its own FUSE_DEV_IOC_CLONE descriptor;
//! - `uring`: FUSE over io_uring (kernel 6.14+, `enable_uring` on): one ring and one thread
//!   per CPU queue, pinned to that CPU, 8 entries each; /dev/fuse only for INIT, FORGET and
//!   INTERRUPT, as the kernel requires.
//!
//! `cargo run --release -p e2e-tests --bin fuse_transport [SECONDS] [ROUNDS]` (default 5 s,
//! 3 rounds, transports alternating). Root only. Prints, per transport and job count, the
//! median µs per read over all jobs (1e6 / IOPS) and the daemon's CPU µs per read. Sets
//! /sys/module/fuse/parameters/enable_uring for the uring mounts and puts it back.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Requests answered through /dev/fuse and through the rings (what proves the rings served).
static BY_DEV: AtomicU64 = AtomicU64::new(0);
static BY_RING: AtomicU64 = AtomicU64::new(0);

use io_uring::{cqueue, opcode, squeue, types, IoUring};

const FILE_SIZE: usize = 256 << 20;
const MAX_WRITE: usize = 1 << 20;
const ENTRIES_PER_QUEUE: usize = 8;
const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

// Opcodes (include/uapi/linux/fuse.h).
const LOOKUP: u32 = 1;
const FORGET: u32 = 2;
const GETATTR: u32 = 3;
const OPEN: u32 = 14;
const READ: u32 = 15;
const RELEASE: u32 = 18;
const FLUSH: u32 = 25;
const INIT: u32 = 26;
const OPENDIR: u32 = 27;
const RELEASEDIR: u32 = 29;
const INTERRUPT: u32 = 36;
const DESTROY: u32 = 38;
const BATCH_FORGET: u32 = 42;

const FUSE_ASYNC_READ: u32 = 1 << 0;
const FUSE_BIG_WRITES: u32 = 1 << 5;
const FUSE_MAX_PAGES: u32 = 1 << 22;
const FUSE_INIT_EXT: u32 = 1 << 30;
/// FUSE_OVER_IO_URING is bit 41 of the 64 flag bits: bit 9 of flags2.
const FUSE_OVER_IO_URING_FLAGS2: u32 = 1 << 9;
/// _IOR(229, 0, uint32_t)
const FUSE_DEV_IOC_CLONE: libc::c_ulong = 0x8004_e500;
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// sizeof(struct fuse_uring_req_header): in_out[128], op_in[128], fuse_uring_ent_in_out.
const RING_HEADER: usize = 128 + 128 + 32;
const IN_HEADER: usize = 40;
const OUT_HEADER: usize = 16;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// The fixed part of each opcode's request that precedes its variable payload (what the
/// kernel puts in `op_in` under io_uring).
fn op_len(opcode: u32) -> usize {
    match opcode {
        LOOKUP => 0,
        GETATTR => 16,
        OPEN | OPENDIR => 8,
        READ => 40,
        RELEASE | RELEASEDIR | FLUSH => 24,
        FORGET | INTERRUPT => 8,
        BATCH_FORGET => 8,
        _ => 0,
    }
}

/// `struct fuse_attr` of the root (1) or the file (2) at `at`.
fn attr(out: &mut [u8], at: usize, ino: u64) {
    let a = &mut out[at..at + 88];
    a.fill(0);
    put64(a, 0, ino);
    let (size, mode, nlink) = match ino {
        1 => (0, libc::S_IFDIR | 0o755, 2),
        _ => (FILE_SIZE as u64, libc::S_IFREG | 0o644, 1),
    };
    put64(a, 8, size);
    put64(a, 16, size.div_ceil(512));
    put32(a, 60, mode);
    put32(a, 64, nlink);
    put32(a, 80, 4096);
}

enum Answer {
    /// This many bytes of `out` follow the out header.
    Reply(usize),
    Error(i32),
    /// FORGET and INTERRUPT take no reply.
    Nothing,
}

impl Answer {
    /// (body length, error for the out header), or None when no reply is due.
    fn reply(&self) -> Option<(usize, i32)> {
        match *self {
            Answer::Reply(len) => Some((len, 0)),
            Answer::Error(e) => Some((0, -e)),
            Answer::Nothing => None,
        }
    }
}

/// Answers one request of `opcode` on `nodeid`: `op` is its fixed part, `payload` the rest;
/// the reply's body goes into `out`.
fn answer(
    opcode: u32,
    nodeid: u64,
    op: &[u8],
    payload: &[u8],
    data: &[u8],
    out: &mut [u8],
) -> Answer {
    match opcode {
        LOOKUP => {
            let name = payload.split(|b| *b == 0).next().unwrap_or_default();
            if nodeid != 1 || name != b"f" {
                return Answer::Error(libc::ENOENT);
            }
            out[..40].fill(0);
            put64(out, 0, 2);
            put64(out, 16, 3600);
            put64(out, 24, 3600);
            attr(out, 40, 2);
            Answer::Reply(128)
        }
        GETATTR => {
            out[..16].fill(0);
            put64(out, 0, 3600);
            attr(out, 16, nodeid);
            Answer::Reply(104)
        }
        OPEN | OPENDIR => {
            out[..16].fill(0);
            Answer::Reply(16)
        }
        READ => {
            let offset = (u64_at(op, 8) as usize).min(data.len());
            let size = (u32_at(op, 16) as usize)
                .min(data.len() - offset)
                .min(out.len());
            out[..size].copy_from_slice(&data[offset..offset + size]);
            Answer::Reply(size)
        }
        RELEASE | RELEASEDIR | FLUSH | DESTROY => Answer::Reply(0),
        FORGET | BATCH_FORGET | INTERRUPT => Answer::Nothing,
        _ => Answer::Error(libc::ENOSYS),
    }
}

fn out_header(out: &mut [u8], len: usize, error: i32, unique: u64) {
    put32(out, 0, len as u32);
    put32(out, 4, error as u32);
    put64(out, 8, unique);
}

/// Serves requests read from `fd` until the connection ends.
/// A request handed to the worker thread (as fsmount hands a request that waits for the
/// network to its runtime): answered there, the reply written by the worker itself
/// (/dev/fuse) or sent back to the ring's thread to commit (io_uring).
struct Job {
    opcode: u32,
    unique: u64,
    nodeid: u64,
    op: Vec<u8>,
    payload: Vec<u8>,
    /// The ring entry (io_uring).
    entry: u64,
}

/// A reply the worker made for ring entry `entry`.
struct Done {
    entry: u64,
    answer: Answer,
    body: Vec<u8>,
}

/// Where the worker's replies go.
enum ReplyTo {
    Dev(RawFd),
    Ring(std::sync::mpsc::Sender<Done>, RawFd),
}

/// The worker thread: answers jobs until their senders are gone.
fn worker(jobs: std::sync::mpsc::Receiver<Job>, data: Arc<Vec<u8>>, to: ReplyTo) {
    let mut out = vec![0u8; MAX_WRITE + OUT_HEADER];
    for job in jobs {
        let answer = answer(
            job.opcode,
            job.nodeid,
            &job.op,
            &job.payload,
            &data,
            &mut out[OUT_HEADER..],
        );
        match &to {
            ReplyTo::Dev(fd) => {
                let Some((len, error)) = answer.reply() else {
                    continue;
                };
                out_header(&mut out, OUT_HEADER + len, error, job.unique);
                // SAFETY: writes bytes we own.
                unsafe { libc::write(*fd, out.as_ptr().cast(), OUT_HEADER + len) };
            }
            ReplyTo::Ring(done, wake) => {
                let len = match answer {
                    Answer::Reply(len) => len,
                    _ => 0,
                };
                let body = out[OUT_HEADER..OUT_HEADER + len].to_vec();
                if done
                    .send(Done {
                        entry: job.entry,
                        answer,
                        body,
                    })
                    .is_err()
                {
                    return;
                }
                let one = 1u64.to_ne_bytes();
                // SAFETY: writes 8 bytes we own to an eventfd.
                unsafe { libc::write(*wake, one.as_ptr().cast(), 8) };
            }
        }
    }
}

/// Serves requests read from `fd` until the connection ends; with `handoff`, the worker
/// answers (and replies).
fn serve_dev(fd: RawFd, data: Arc<Vec<u8>>, handoff: Option<std::sync::mpsc::Sender<Job>>) {
    let mut buf = vec![0u8; MAX_WRITE + 4096];
    let mut out = vec![0u8; MAX_WRITE + OUT_HEADER];
    loop {
        // SAFETY: reads into a buffer we own, of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR | libc::EAGAIN | libc::ENOENT) => continue,
                _ => return, // ENODEV: unmounted
            }
        }
        let req = &buf[..n as usize];
        BY_DEV.fetch_add(1, Ordering::Relaxed);
        let (opcode, unique, nodeid) = (u32_at(req, 4), u64_at(req, 8), u64_at(req, 16));
        let body = &req[IN_HEADER..];
        let split = op_len(opcode).min(body.len());
        if let (Some(h), false) = (
            &handoff,
            matches!(opcode, FORGET | BATCH_FORGET | INTERRUPT),
        ) {
            let job = Job {
                opcode,
                unique,
                nodeid,
                op: body[..split].to_vec(),
                payload: body[split..].to_vec(),
                entry: 0,
            };
            if h.send(job).is_err() {
                return;
            }
            continue;
        }
        let reply = answer(
            opcode,
            nodeid,
            &body[..split],
            &body[split..],
            &data,
            &mut out[OUT_HEADER..],
        )
        .reply();
        let Some((len, error)) = reply else {
            continue;
        };
        out_header(&mut out, OUT_HEADER + len, error, unique);
        // SAFETY: writes bytes we own.
        unsafe { libc::write(fd, out.as_ptr().cast(), OUT_HEADER + len) };
    }
}

/// One io_uring entry: the header and payload buffers registered with the kernel.
struct Entry {
    header: Box<[u8; RING_HEADER]>,
    payload: Vec<u8>,
    iov: Box<[libc::iovec; 2]>,
}

fn uring_cmd(
    fd: RawFd,
    cmd_op: u32,
    qid: u16,
    commit_id: u64,
    iov: Option<*const libc::iovec>,
    ud: u64,
) -> squeue::Entry128 {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    let mut op = opcode::UringCmd80::new(types::Fd(fd), cmd_op).cmd(cmd);
    if let Some(iov) = iov {
        op = op.addr(Some(iov as u64));
    }
    let entry = op.build().user_data(ud);
    // The crate has no setter for sqe->len, which REGISTER needs (2: the two iovecs).
    // SAFETY: Entry128 is repr(C): the 64-byte io_uring_sqe (len at byte 24) then 64 bytes.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(entry) };
    if iov.is_some() {
        raw[24..28].copy_from_slice(&2u32.to_ne_bytes());
    }
    // SAFETY: the same bytes back, as they came.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
}

/// Serves queue `qid` through its own ring until the connection ends.
fn serve_uring(
    fd: RawFd,
    qid: u16,
    data: Arc<Vec<u8>>,
    payload_size: usize,
    handoff: bool,
) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET on a set we own; sched_setaffinity of this thread.
    unsafe {
        libc::CPU_SET(qid as usize, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }
    let mut ring: IoUring<squeue::Entry128, cqueue::Entry> =
        IoUring::builder().build(2 * ENTRIES_PER_QUEUE as u32)?;
    let mut entries: Vec<Entry> = (0..ENTRIES_PER_QUEUE)
        .map(|_| {
            let mut e = Entry {
                header: Box::new([0u8; RING_HEADER]),
                payload: vec![0u8; payload_size],
                iov: Box::new(
                    [libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 0,
                    }; 2],
                ),
            };
            e.iov[0] = libc::iovec {
                iov_base: e.header.as_mut_ptr().cast(),
                iov_len: RING_HEADER,
            };
            e.iov[1] = libc::iovec {
                iov_base: e.payload.as_mut_ptr().cast(),
                iov_len: payload_size,
            };
            e
        })
        .collect();
    for (i, e) in entries.iter().enumerate() {
        let sqe = uring_cmd(fd, CMD_REGISTER, qid, 0, Some(e.iov.as_ptr()), i as u64);
        // SAFETY: the buffers the entry points at live as long as `entries`, past the ring.
        unsafe {
            ring.submission()
                .push(&sqe)
                .expect("room for the registrations")
        };
    }
    // With a handoff: this queue's worker, and the eventfd it wakes this thread with (read
    // through the ring, so one wait covers both).
    const WAKE: u64 = u64::MAX;
    let mut wake_buf = Box::new([0u8; 8]);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Done>();
    // SAFETY: eventfd(2) has no memory arguments.
    let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    let jobs = handoff.then(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let d = data.clone();
        let to = ReplyTo::Ring(done_tx.clone(), wake);
        std::thread::spawn(move || worker(rx, d, to));
        tx
    });
    let arm = |ring: &mut IoUring<squeue::Entry128, cqueue::Entry>, buf: &mut [u8; 8]| {
        let read = opcode::Read::new(types::Fd(wake), buf.as_mut_ptr(), 8)
            .build()
            .user_data(WAKE);
        // SAFETY: the buffer lives as long as the ring (it is this function's).
        unsafe {
            ring.submission()
                .push(&squeue::Entry128::from(read))
                .expect("room")
        };
    };
    if handoff {
        arm(&mut ring, &mut wake_buf);
    }
    ring.submit()?;
    loop {
        ring.submit_and_wait(1)?;
        let done: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (ud, res) in done {
            if ud == WAKE {
                for d in done_rx.try_iter() {
                    let e = &mut entries[d.entry as usize];
                    let h = &mut e.header;
                    let (unique, commit_id) = (u64_at(&h[..], 8), u64_at(&h[..], 256 + 8));
                    let (len, error) = d.answer.reply().unwrap_or((0, 0));
                    e.payload[..len].copy_from_slice(&d.body);
                    out_header(&mut h[..], OUT_HEADER + len, error, unique);
                    put32(&mut h[..], 256 + 16, len as u32);
                    let sqe = uring_cmd(fd, CMD_COMMIT_AND_FETCH, qid, commit_id, None, d.entry);
                    // SAFETY: as below: the entry's buffers outlive the ring.
                    unsafe { ring.submission().push(&sqe).expect("one slot per entry") };
                }
                arm(&mut ring, &mut wake_buf);
                continue;
            }
            if res < 0 {
                if res == -libc::EAGAIN {
                    continue;
                }
                // ENOTCONN, ECANCELED: the connection is going away.
                return Ok(());
            }
            let e = &mut entries[ud as usize];
            BY_RING.fetch_add(1, Ordering::Relaxed);
            let h = &mut e.header;
            let (opcode, unique, nodeid) =
                (u32_at(&h[..], 4), u64_at(&h[..], 8), u64_at(&h[..], 16));
            let commit_id = u64_at(&h[..], 256 + 8);
            let payload_len = (u32_at(&h[..], 256 + 16) as usize).min(e.payload.len());
            let op = h[128..128 + op_len(opcode)].to_vec();
            let input = e.payload[..payload_len].to_vec();
            if let Some(jobs) = &jobs {
                let job = Job {
                    opcode,
                    unique,
                    nodeid,
                    op,
                    payload: input,
                    entry: ud,
                };
                if jobs.send(job).is_err() {
                    return Ok(());
                }
                continue;
            }
            let (len, error) = answer(opcode, nodeid, &op, &input, &data, &mut e.payload)
                .reply()
                .unwrap_or((0, 0));
            out_header(&mut h[..], OUT_HEADER + len, error, unique);
            put32(&mut h[..], 256 + 16, len as u32);
            let sqe = uring_cmd(fd, CMD_COMMIT_AND_FETCH, qid, commit_id, None, ud);
            // SAFETY: as above: the entry's buffers outlive the ring.
            unsafe { ring.submission().push(&sqe).expect("one slot per entry") };
        }
    }
}

struct Mounted {
    path: tempfile::TempDir,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path.path()).status();
    }
}

/// Mounts the file system with `transport`; its threads serve until the unmount.
fn mount(transport: &str) -> Mounted {
    let dir = tempfile::tempdir().expect("a mount point");
    // SAFETY: open(2) of a constant path.
    let fd = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    assert!(
        fd >= 0,
        "open /dev/fuse: {}",
        std::io::Error::last_os_error()
    );
    let opts = CString::new(format!(
        "fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other"
    ))
    .expect("no NUL");
    let target = CString::new(dir.path().as_os_str().as_encoded_bytes()).expect("no NUL");
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::mount(
            c"fuse_transport".as_ptr(),
            target.as_ptr(),
            c"fuse.fuse_transport".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            opts.as_ptr().cast(),
        )
    };
    assert_eq!(r, 0, "mount: {}", std::io::Error::last_os_error());
    let data: Arc<Vec<u8>> = Arc::new((0..FILE_SIZE).map(|i| (i * 31 % 251) as u8).collect());

    // INIT, on the first descriptor.
    let mut buf = vec![0u8; MAX_WRITE + 4096];
    // SAFETY: reads into a buffer we own.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n > 0 && u32_at(&buf, 4) == INIT, "no INIT");
    let unique = u64_at(&buf, 8);
    let init_in = &buf[IN_HEADER..];
    let (minor, readahead, flags, flags2) = (
        u32_at(init_in, 4),
        u32_at(init_in, 8),
        u32_at(init_in, 12),
        u32_at(init_in, 16),
    );
    let uring = transport.starts_with("uring");
    let handoff = transport.ends_with("handoff");
    assert!(
        !uring || flags2 & FUSE_OVER_IO_URING_FLAGS2 != 0,
        "the kernel does not offer io_uring ({ENABLE_URING})"
    );
    let mut out = [0u8; OUT_HEADER + 64];
    let o = &mut out[OUT_HEADER..];
    put32(o, 0, 7);
    put32(o, 4, minor);
    put32(o, 8, readahead);
    put32(
        o,
        12,
        flags & (FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_MAX_PAGES | FUSE_INIT_EXT),
    );
    o[16..18].copy_from_slice(&16u16.to_ne_bytes()); // max_background
    o[18..20].copy_from_slice(&12u16.to_ne_bytes()); // congestion_threshold
    put32(o, 20, MAX_WRITE as u32);
    put32(o, 24, 1); // time_gran
    o[28..30].copy_from_slice(&((MAX_WRITE / 4096) as u16).to_ne_bytes()); // max_pages
    put32(o, 32, if uring { FUSE_OVER_IO_URING_FLAGS2 } else { 0 });
    let len = out.len();
    out_header(&mut out, len, 0, unique);
    // SAFETY: writes bytes we own.
    let w = unsafe { libc::write(fd, out.as_ptr().cast(), out.len()) };
    assert_eq!(
        w,
        out.len() as isize,
        "INIT reply: {}",
        std::io::Error::last_os_error()
    );

    let threads = match transport {
        "dev2" => 2,
        _ => 1,
    };
    for i in 0..threads {
        let qfd = if i == 0 {
            fd
        } else {
            // SAFETY: open(2) of a constant path; the ioctl reads the u32 we pass.
            unsafe {
                let c = libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
                let src = fd as u32;
                assert_eq!(libc::ioctl(c, FUSE_DEV_IOC_CLONE, &src), 0, "clone");
                c
            }
        };
        let d = data.clone();
        let jobs = (handoff && !uring).then(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            let d = data.clone();
            std::thread::spawn(move || worker(rx, d, ReplyTo::Dev(qfd)));
            tx
        });
        std::thread::spawn(move || serve_dev(qfd, d, jobs));
    }
    if uring {
        // The kernel sizes each entry's payload as max(8 KiB, max_write, max_pages pages).
        let payload = MAX_WRITE.max(8192);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        for qid in 0..cpus {
            let d = data.clone();
            std::thread::spawn(move || {
                if let Err(e) = serve_uring(fd, qid as u16, d, payload, handoff) {
                    eprintln!("queue {qid}: {e}");
                }
            });
        }
        // The ring is ready once every queue has registered its entries.
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    // The descriptors are the threads' now; they close with the process.
    Mounted { path: dir }
}

/// This process's CPU seconds so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// fio 4 KiB random reads of `file`: (µs per read over all jobs, reads).
fn fio(file: &Path, jobs: u32, seconds: u32) -> (f64, f64) {
    let out = Command::new("fio")
        .args([
            "--name=r",
            "--rw=randread",
            "--bs=4k",
            "--direct=1",
            "--ioengine=psync",
            "--time_based",
            "--group_reporting",
            "--output-format=terse",
            "--terse-version=3",
        ])
        .arg(format!("--filename={}", file.display()))
        .arg(format!("--numjobs={jobs}"))
        .arg(format!("--runtime={seconds}"))
        .output()
        .expect("fio runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let iops: f64 = text
        .split(';')
        .nth(7)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(
        iops > 0.0,
        "fio: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (1e6 / iops, iops * seconds as f64)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let was = std::fs::read_to_string(ENABLE_URING).unwrap_or_default();
    let transports = ["dev1", "dev2", "uring", "dev1-handoff", "uring-handoff"];
    let mut results: std::collections::BTreeMap<(usize, u32), (Vec<f64>, Vec<f64>)> =
        Default::default();
    for _ in 0..rounds {
        for (t, transport) in transports.iter().enumerate() {
            let on = if transport.starts_with("uring") {
                "Y"
            } else {
                "N"
            };
            std::fs::write(ENABLE_URING, on).expect("root: enable_uring");
            let m = mount(transport);
            let file = m.path.path().join("f");
            for jobs in [1, 4] {
                let (dev0, ring0) = (
                    BY_DEV.load(Ordering::Relaxed),
                    BY_RING.load(Ordering::Relaxed),
                );
                let cpu0 = cpu_seconds();
                let (us, reads) = fio(&file, jobs, seconds);
                let cpu = (cpu_seconds() - cpu0) * 1e6 / reads;
                let dev = BY_DEV.load(Ordering::Relaxed) - dev0;
                let ring = BY_RING.load(Ordering::Relaxed) - ring0;
                // Each transport must have served what it is named for.
                let (mine, other) = if transport.starts_with("uring") {
                    (ring, dev)
                } else {
                    (dev, ring)
                };
                assert!(
                    mine as f64 >= 0.99 * reads && other < 100,
                    "{transport}: {dev} requests by /dev/fuse, {ring} by rings, {reads} reads"
                );
                let r = results.entry((t, jobs)).or_default();
                r.0.push(us);
                r.1.push(cpu);
            }
            drop(m);
        }
    }
    let _ = std::fs::write(ENABLE_URING, was.trim());
    println!(
        "| transport | fio jobs | µs per read (median of {rounds}) | daemon CPU µs per read |"
    );
    println!("|---|---|---|---|");
    for ((t, jobs), (us, cpu)) in results.iter_mut() {
        println!(
            "| {} | {jobs} | {:.2} | {:.2} |",
            transports[*t],
            median(us),
            median(cpu)
        );
    }
}
