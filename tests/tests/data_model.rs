//! File data through real mounts against a model held in memory (in the manner of fsx): a
//! seeded random run of pwrite, O_APPEND writes, ftruncate, stores through a shared mapping,
//! fallocate (holes punched, ranges zeroed, space allocated past the end), copy_file_range
//! between the files, pread, fsync, close and reopen on a few files through one mount,
//! where every read must give the model's bytes; and the files handed between two mounts
//! of the export (all handles of one closed before the other opens: close-to-open), with
//! the other mount's caches warm with older contents. What it exercises: the block cache
//! and its generations, read-ahead, write-behind and write coalescing, the Open's
//! prefetched first block, truncates among them, and the kernel's page cache for mappings.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use e2e_tests::{require_mount_support, Mount, Server};

/// xorshift64*: a reproducible stream of numbers from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Mostly small numbers, sometimes up to `max`: sizes and offsets near block edges
    /// and well past them.
    fn size(&mut self, max: u64) -> u64 {
        match self.below(4) {
            0 => self.below(4097),
            1 => {
                let edges = [4095u64, 4096, 4097, 65535, 65536, 131071, 131072, 131073];
                edges[self.below(edges.len() as u64) as usize].min(max)
            }
            _ => self.below(max + 1),
        }
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

/// Largest file the run makes.
const MAX_SIZE: u64 = 3 << 20;
/// Longest single write or read.
const MAX_IO: u64 = 400 << 10;
const FILES: usize = 3;

/// One file's open descriptors on the mount that has it now.
#[derive(Default)]
struct Handles {
    rw: Option<File>,
    append: Option<File>,
    ro: Option<File>,
}

impl Handles {
    fn close_all(&mut self) {
        *self = Handles::default();
    }
}

pub struct Run {
    seed: u64,
    rng: Rng,
    mounts: [PathBuf; 2],
    /// The same directory on the server's disk.
    disk: PathBuf,
    /// Which mount each file is used through now.
    on: [usize; FILES],
    model: Vec<Vec<u8>>,
    handles: Vec<Handles>,
    /// The last operations, for the failure message.
    log: Vec<String>,
    /// Stores through a mapping, fallocates and copies that changed a file: each kind must
    /// have run (a mode the filesystem lacks is not counted).
    mapped: usize,
    allocated: usize,
    copied: usize,
    /// Files made during the run with O_CREAT|O_EXCL, written whole and closed at once:
    /// (name, mount made through, contents). Never changed after; checked at the end.
    created: Vec<(String, usize, Vec<u8>)>,
    /// Set by a test while the server is stopped: the steps are then those a mount may
    /// answer without it (writes, closes, new files), which race the stop and the restart.
    server_stopped: bool,
    /// Steps may make new files (`new_file`).
    new_files: bool,
}

impl Run {
    fn path(&self, f: usize) -> PathBuf {
        self.mounts[self.on[f]].join(format!("f{f}"))
    }

    fn note(&mut self, what: String) {
        self.log.push(what);
    }

    /// The last 40 operations on the file `what` names (all files' if it names none).
    fn file_log(&self, what: &str) -> Vec<String> {
        let words = |s: &str| -> Vec<String> {
            s.split(|c: char| !c.is_alphanumeric())
                .map(str::to_string)
                .collect()
        };
        let file = (0..FILES)
            .map(|f| format!("f{f}"))
            .find(|n| words(what).first() == Some(n));
        let mine: Vec<String> = self
            .log
            .iter()
            .filter(|op| file.as_ref().is_none_or(|n| words(op).contains(n)))
            .cloned()
            .collect();
        mine[mine.len().saturating_sub(40)..].to_vec()
    }

    fn fail(&self, what: &str) -> ! {
        let sizes: Vec<String> = (0..FILES)
            .map(|f| {
                let name = format!("f{f}");
                let size = |d: &Path| {
                    std::fs::metadata(d.join(&name))
                        .map_or("-".to_string(), |m| m.len().to_string())
                };
                format!(
                    "{name}: model {}, mount 0 {}, mount 1 {}, server {}",
                    self.model[f].len(),
                    size(&self.mounts[0]),
                    size(&self.mounts[1]),
                    size(&self.disk)
                )
            })
            .collect();
        // What the server's disk holds, once what is queued has had time to land.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let disk: Vec<String> = (0..FILES)
            .map(|f| {
                let on_disk = std::fs::read(self.disk.join(format!("f{f}"))).unwrap_or_default();
                let m = &self.model[f];
                match on_disk.iter().zip(m.iter()).position(|(a, b)| a != b) {
                    Some(at) => format!("f{f}: the disk differs from the model at {at}"),
                    None if on_disk.len() != m.len() => {
                        format!("f{f}: the disk has {} bytes", on_disk.len())
                    }
                    None => format!("f{f}: the disk matches the model"),
                }
            })
            .collect();
        // Each mount's log (`Mount` keeps it beside its mount point) ends the message.
        let logs: Vec<String> = self
            .mounts
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let log = m.ancestors().nth(2).map(|d| d.join("fsmount.log"));
                let text = log
                    .and_then(|l| std::fs::read_to_string(l).ok())
                    .unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n    ");
                format!("mount {i}'s log, last lines:\n    {tail}")
            })
            .collect();
        panic!(
            "seed {:#x}: {what}\nsizes now: {}\n{}\nthe last operations on its file:\n  {}\n{}",
            self.seed,
            sizes.join("; "),
            disk.join("; "),
            self.file_log(what).join("\n  "),
            logs.join("\n")
        );
    }

    fn rw(&mut self, f: usize) -> &File {
        let path = self.path(f);
        self.handles[f].rw.get_or_insert_with(|| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
        })
    }

    fn check_read(&mut self, f: usize, file: &File, offset: u64, len: usize, via: &str) {
        let mut got = vec![0u8; len];
        let mut n = 0;
        while n < len {
            match file.read_at(&mut got[n..], offset + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => self.fail(&format!("read f{f} at {offset} +{len} ({via}): {e}")),
            }
        }
        let model = &self.model[f];
        let end = (offset as usize + len).min(model.len());
        let want = model.get(offset as usize..end).unwrap_or(&[]);
        if &got[..n] != want {
            let first = got[..n]
                .iter()
                .zip(want)
                .position(|(a, b)| a != b)
                .unwrap_or(n.min(want.len()));
            let zeros = got[..n].iter().filter(|b| **b == 0).count();
            self.fail(&format!(
                "f{f} ({via}) at {offset} +{len}: read {n} bytes, the model has {}; first \
                 difference at {} (file offset {}); {zeros} of the bytes read are zero",
                want.len(),
                first,
                offset + first as u64
            ));
        }
    }

    /// Stores through a shared mapping of the read-write descriptor, within the file's size;
    /// sometimes `msync`ed, always unmapped.
    fn mmap_write(&mut self, f: usize) {
        let size = self.model[f].len() as u64;
        if size == 0 {
            return;
        }
        let offset = self.rng.below(size);
        let len = self.rng.size(MAX_IO).clamp(1, size - offset) as usize;
        let sync = self.rng.below(2) == 0;
        let data = self.rng.bytes(len);
        self.note(format!("mmap write f{f} at {offset} +{len} (msync {sync})"));
        let page = 4096u64;
        let start = offset / page * page;
        let span = (offset + len as u64 - start) as usize;
        let fd = std::os::fd::AsRawFd::as_raw_fd(self.rw(f));
        // SAFETY: a fresh shared mapping of `span` bytes of a file at least that long, used
        // only here and unmapped before this returns.
        unsafe {
            let at = libc::mmap(
                std::ptr::null_mut(),
                span,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                start as libc::off_t,
            );
            if at == libc::MAP_FAILED {
                let e = std::io::Error::last_os_error();
                self.fail(&format!("mmap f{f}: {e}"));
            }
            let dst = (at as *mut u8).add((offset - start) as usize);
            std::ptr::copy_nonoverlapping(data.as_ptr(), dst, len);
            if sync && libc::msync(at, span, libc::MS_SYNC) != 0 {
                let e = std::io::Error::last_os_error();
                self.fail(&format!("msync f{f}: {e}"));
            }
            libc::munmap(at, span);
        }
        self.model[f][offset as usize..offset as usize + len].copy_from_slice(&data);
        self.mapped += 1;
    }

    /// fallocate: a hole punched or a range zeroed inside the file, or space allocated past
    /// its end (the size grows). A mode the server's filesystem lacks changes nothing.
    fn fallocate(&mut self, f: usize) {
        let size = self.model[f].len() as u64;
        let (mode, name) = match self.rng.below(4) {
            0 => (
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                "punch hole",
            ),
            1 => (libc::FALLOC_FL_ZERO_RANGE, "zero range"),
            2 => (
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                "zero range, keep size",
            ),
            _ => (0, "allocate"),
        };
        let offset = self.rng.size(MAX_SIZE - 1);
        let len = self.rng.size(MAX_IO).max(1).min(MAX_SIZE - offset);
        self.note(format!("fallocate f{f} {name} at {offset} +{len}"));
        let fd = std::os::fd::AsRawFd::as_raw_fd(self.rw(f));
        // SAFETY: fallocate on an open descriptor; no memory is passed.
        let r = unsafe { libc::fallocate(fd, mode, offset as libc::off_t, len as libc::off_t) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                return;
            }
            self.fail(&format!("fallocate f{f} {name}: {e}"));
        }
        self.allocated += 1;
        let end = offset + len;
        let m = &mut self.model[f];
        let keep = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        if !keep && end > size {
            m.resize(end as usize, 0);
        }
        if mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0 {
            let stop = end.min(m.len() as u64) as usize;
            if (offset as usize) < stop {
                m[offset as usize..stop].fill(0);
            }
        }
    }

    /// copy_file_range from another file into this one, both through their read-write
    /// descriptors (on the same mount or not: across mounts the kernel copies itself).
    fn copy_range(&mut self, f: usize) {
        let g = (f + 1 + self.rng.below(FILES as u64 - 1) as usize) % FILES;
        let from_size = self.model[g].len() as u64;
        let from = self.rng.below(from_size + 1);
        let len = self.rng.size(MAX_IO).min(MAX_SIZE - 1);
        let to = self.rng.size(MAX_SIZE - 1 - len);
        self.note(format!(
            "copy_file_range f{g} at {from} +{len} to f{f} at {to}"
        ));
        // As `cp` does, the source's size first: the kernel clamps a copy to the size it
        // holds, which it fetches again only when asked (an fstat, a read past it): without
        // this, a copy right after the mount dropped its attributes (another mount's change,
        // a server restart) may copy nothing (docs/SEMANTICS.md). The size must be right.
        let size = self.rw(g).metadata().map(|m| m.len());
        if size.as_ref().ok() != Some(&from_size) {
            self.fail(&format!(
                "f{g}: fstat says {size:?} before a copy, the model {from_size}"
            ));
        }
        let fd_in = std::os::fd::AsRawFd::as_raw_fd(self.rw(g));
        let fd_out = std::os::fd::AsRawFd::as_raw_fd(self.rw(f));
        let (mut off_in, mut off_out) = (from as libc::loff_t, to as libc::loff_t);
        let mut copied = 0u64;
        while copied < len {
            // SAFETY: both offsets are locals that outlive the call; descriptors are open.
            let n = unsafe {
                libc::copy_file_range(
                    fd_in,
                    &mut off_in,
                    fd_out,
                    &mut off_out,
                    (len - copied) as usize,
                    0,
                )
            };
            match n {
                0 => break,
                n if n > 0 => copied += n as u64,
                _ => {
                    let e = std::io::Error::last_os_error();
                    self.fail(&format!("copy_file_range: {e} after {copied} bytes"));
                }
            }
        }
        let want = len.min(from_size - from);
        if copied != want {
            self.fail(&format!(
                "copy_file_range f{g} -> f{f}: copied {copied}, the model has {want} to copy"
            ));
        }
        if copied == 0 {
            return;
        }
        self.copied += 1;
        let bytes = self.model[g][from as usize..(from + copied) as usize].to_vec();
        let m = &mut self.model[f];
        let end = (to + copied) as usize;
        if m.len() < end {
            m.resize(end, 0);
        }
        m[to as usize..end].copy_from_slice(&bytes);
    }

    /// A new file beside the others (O_CREAT|O_EXCL), written and closed: through a mount
    /// that made the directory, a create and close answered without a round trip.
    fn new_file(&mut self, f: usize) {
        let m = self.on[f];
        let name = format!("new{}", self.created.len());
        let len = self.rng.size(96 << 10) as usize;
        let data = self.rng.bytes(len);
        self.note(format!("new file {name} on mount {m} +{}", data.len()));
        let path = self.mounts[m].join(&name);
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, &data));
        if let Err(e) = written {
            self.fail(&format!("new file {name}: {e}"));
        }
        self.created.push((name, m, data));
    }

    /// Every file `new_file` made, whole through both mounts and on the server's disk.
    fn check_created(&self) {
        for (name, made_on, data) in &self.created {
            let places = [&self.mounts[0], &self.mounts[1], &self.disk];
            for (i, dir) in places.into_iter().enumerate() {
                let got = std::fs::read(dir.join(name));
                if got.as_ref().ok() != Some(data) {
                    let what = match got {
                        Ok(g) => format!("{} bytes, {} wanted", g.len(), data.len()),
                        Err(e) => e.to_string(),
                    };
                    let via = ["mount 0", "mount 1", "the server's disk"][i];
                    self.fail(&format!(
                        "{name} (made on mount {made_on}) via {via}: {what}"
                    ));
                }
            }
        }
    }

    fn step(&mut self) {
        let f = self.rng.below(FILES as u64) as usize;
        let kind = match self.server_stopped {
            // A pwrite, an append, a close, a new file.
            true => [0, 30, 80, 120][self.rng.below(4) as usize],
            // New files only where a test asks (`new_files`): the other runs keep the
            // sequences their seeds have always given.
            false if self.new_files => self.rng.below(124),
            false => self.rng.below(120),
        };
        match kind {
            120..=123 => self.new_file(f),
            100..=106 => self.mmap_write(f),
            107..=113 => self.fallocate(f),
            114..=119 => self.copy_range(f),
            // pwrite through the read-write descriptor
            0..=29 => {
                let len = self.rng.size(MAX_IO) as usize;
                let offset = self.rng.size(MAX_SIZE - len as u64);
                let data = self.rng.bytes(len);
                self.note(format!("pwrite f{f} at {offset} +{len}"));
                if let Err(e) = self.rw(f).write_all_at(&data, offset) {
                    self.fail(&format!("pwrite: {e}"));
                }
                let m = &mut self.model[f];
                let end = offset as usize + len;
                if m.len() < end {
                    m.resize(end, 0);
                }
                m[offset as usize..end].copy_from_slice(&data);
            }
            // write through an O_APPEND descriptor
            30..=36 => {
                let len = self.rng.size(64 << 10) as usize;
                if self.model[f].len() + len > MAX_SIZE as usize {
                    return;
                }
                let data = self.rng.bytes(len);
                self.note(format!("append f{f} +{len}"));
                let path = self.path(f);
                let file = self.handles[f]
                    .append
                    .get_or_insert_with(|| OpenOptions::new().append(true).open(&path).unwrap());
                if let Err(e) = std::io::Write::write_all(&mut &*file, &data) {
                    self.fail(&format!("append: {e}"));
                }
                self.model[f].extend_from_slice(&data);
            }
            // ftruncate, shorter or longer
            37..=44 => {
                let size = self.rng.size(MAX_SIZE);
                self.note(format!("ftruncate f{f} to {size}"));
                if let Err(e) = self.rw(f).set_len(size) {
                    self.fail(&format!("ftruncate: {e}"));
                }
                self.model[f].resize(size as usize, 0);
            }
            // pread through the read-write or a read-only descriptor
            45..=69 => {
                let len = self.rng.size(MAX_IO) as usize;
                let offset = self.rng.size(MAX_SIZE);
                let read_only = self.rng.below(2) == 0;
                self.note(format!(
                    "pread f{f} at {offset} +{len} ({})",
                    if read_only { "read-only" } else { "read-write" }
                ));
                let path = self.path(f);
                let file = if read_only {
                    self.handles[f]
                        .ro
                        .get_or_insert_with(|| File::open(&path).unwrap())
                        .try_clone()
                        .unwrap()
                } else {
                    self.rw(f).try_clone().unwrap()
                };
                let via = if read_only { "read-only" } else { "read-write" };
                self.check_read(f, &file, offset, len, via);
            }
            // the size, by fstat and by path
            70..=74 => {
                self.note(format!("stat f{f}"));
                let by_fd = self.rw(f).metadata().unwrap().len();
                let by_path = std::fs::metadata(self.path(f)).unwrap().len();
                let want = self.model[f].len() as u64;
                if by_fd != want || by_path != want {
                    self.fail(&format!(
                        "f{f}: size {by_fd} by fstat, {by_path} by path, the model {want}"
                    ));
                }
            }
            75..=79 => {
                self.note(format!("fsync f{f}"));
                if let Err(e) = self.rw(f).sync_all() {
                    self.fail(&format!("fsync: {e}"));
                }
            }
            // close every descriptor of the file
            80..=87 => {
                self.note(format!("close f{f}"));
                self.handles[f].close_all();
            }
            // close, and read it whole through a fresh descriptor
            88..=93 => {
                self.note(format!("close f{f}, read it whole"));
                self.handles[f].close_all();
                let file = File::open(self.path(f)).unwrap();
                let len = self.model[f].len() + 4096;
                self.check_read(f, &file, 0, len, "fresh open");
            }
            // hand the file to the other mount: close here, read it whole there
            _ => {
                let other = 1 - self.on[f];
                self.note(format!("f{f} to mount {other}"));
                self.handles[f].close_all();
                self.on[f] = other;
                // As `cat`, `cp` and Python read a file: open, fstat, read.
                let file = File::open(self.path(f)).unwrap();
                let size = file.metadata().unwrap().len();
                if size != self.model[f].len() as u64 {
                    self.fail(&format!(
                        "f{f} (other mount, after close): fstat says {size}"
                    ));
                }
                let len = self.model[f].len() + 4096;
                self.check_read(f, &file, 0, len, "other mount, after close");
            }
        }
    }
}

/// `between(step)` runs before each step (a server restart, for one test).
fn run(
    seed: u64,
    steps: usize,
    mounts: [&Path; 2],
    disk: &Path,
    mut between: impl FnMut(usize, &mut Run),
) {
    let mut run = Run {
        seed,
        rng: Rng(seed),
        mounts: [mounts[0].to_path_buf(), mounts[1].to_path_buf()],
        disk: disk.to_path_buf(),
        on: [0; FILES],
        model: vec![Vec::new(); FILES],
        handles: (0..FILES).map(|_| Handles::default()).collect(),
        log: Vec::new(),
        mapped: 0,
        allocated: 0,
        copied: 0,
        created: Vec::new(),
        server_stopped: false,
        new_files: false,
    };
    for f in 0..FILES {
        let path = run.path(f);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    }
    let mut slowest = (std::time::Duration::ZERO, String::new());
    for i in 0..steps {
        between(i, &mut run);
        let began = std::time::Instant::now();
        run.step();
        if began.elapsed() > slowest.0 {
            slowest = (began.elapsed(), run.log.last().cloned().unwrap_or_default());
        }
    }
    eprintln!(
        "seed {seed:#x}: the slowest step took {:?}: {}",
        slowest.0, slowest.1
    );
    let ran = (run.mapped, run.allocated, run.copied);
    assert!(
        ran.0 > 0 && ran.1 > 0 && ran.2 > 0,
        "seed {seed:#x}: stores through a mapping, fallocates, copies run: {ran:?}"
    );
    // Whole, through each mount and on the server's disk.
    for f in 0..FILES {
        run.handles[f].close_all();
        for m in 0..2 {
            run.on[f] = m;
            let file = File::open(run.path(f)).unwrap();
            let len = run.model[f].len() + 4096;
            run.check_read(f, &file, 0, len, &format!("mount {m} at the end"));
        }
    }
    run.check_created();
}

#[test]
fn random_writes_truncates_and_reads_match_a_model_through_two_mounts() {
    require_mount_support();
    let server = Server::start(&[]);
    let a = Mount::new(&server, "data", &[]);
    let b = Mount::new(&server, "data", &[]);
    // DATA_MODEL_SEEDS=FIRST..END (hex or decimal) runs other seeds, for a longer attack.
    let seeds: Vec<u64> = match std::env::var("DATA_MODEL_SEEDS") {
        Ok(range) => {
            let num = |s: &str| match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).expect("DATA_MODEL_SEEDS: hex"),
                None => s.parse().expect("DATA_MODEL_SEEDS: a number"),
            };
            let (a, b) = range.split_once("..").expect("DATA_MODEL_SEEDS=FIRST..END");
            (num(a)..num(b)).collect()
        }
        Err(_) => vec![0x5eed_0001u64, 0x5eed_0002, 0x5eed_0003],
    };
    for seed in seeds {
        let dir = format!("run-{seed:x}");
        std::fs::create_dir(a.path.join(&dir)).unwrap();
        let disk = server.export("data").join(&dir);
        let (in_a, in_b) = (a.path.join(&dir), b.path.join(&dir));
        run(seed, 600, [&in_a, &in_b], &disk, |_, _| {});
        for f in 0..FILES {
            let on_disk = std::fs::metadata(server.export("data").join(&dir).join(format!("f{f}")));
            assert!(
                on_disk.is_ok(),
                "f{f} of seed {seed:#x} is on the server's disk"
            );
        }
    }
}

/// `n` rounds of `round(dir, i)` in a fresh directory of a fresh mount; the rounds that
/// returned an error message, with the first three messages.
fn rounds(n: usize, round: impl Fn(&Path, usize) -> Option<String>) -> (usize, Vec<String>) {
    let server = Server::start(&[]);
    let mount = Mount::new(&server, "data", &[]);
    let dir = mount.path.join("rounds");
    std::fs::create_dir(&dir).unwrap();
    let failed: Vec<String> = (0..n).filter_map(|i| round(&dir, i)).collect();
    (failed.len(), failed.into_iter().take(3).collect())
}

/// One round of the tests below: a new file at `path` gets 300,000 bytes of `a` through a
/// read-write descriptor, an O_APPEND descriptor is opened beside it, `then` uses both, and
/// once both are closed the file is read back whole: a message if it is not `want`.
fn two_descriptors(
    path: &Path,
    then: impl FnOnce(&File, &mut File),
    want: &[u8],
) -> Option<String> {
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap();
    rw.write_all_at(&[b'a'; 300_000], 0).unwrap();
    let mut append = OpenOptions::new().append(true).open(path).unwrap();
    then(&rw, &mut append);
    drop((rw, append));
    let got = std::fs::read(path).unwrap();
    (got != want).then(|| {
        format!(
            "{}: {} bytes, {} wanted",
            path.display(),
            got.len(),
            want.len()
        )
    })
}

/// Queued writes through one descriptor, then a write through an O_APPEND descriptor of the
/// same file: the server appends at its own end of file, which must be the one the kernel
/// saw (the first descriptor's writes are there first), as on a local disk.
#[test]
fn an_append_through_a_second_descriptor_lands_after_the_first_one_s_writes() {
    require_mount_support();
    let want = [vec![b'a'; 300_000], vec![b'c'; 200_000], vec![b'b'; 10_000]].concat();
    let (bad, first) = rounds(60, |dir, i| {
        let write_then_append = |rw: &File, append: &mut File| {
            rw.write_all_at(&[b'c'; 200_000], 300_000).unwrap();
            std::io::Write::write_all(append, &[b'b'; 10_000]).unwrap();
        };
        two_descriptors(&dir.join(format!("d{i}")), write_then_append, &want)
    });
    assert_eq!(bad, 0, "appends misplaced: {first:?}");
}

/// A shrinking ftruncate through one descriptor, then an append through another: the append
/// is not cut off by the truncate the server runs after it.
#[test]
fn a_truncate_then_an_append_through_another_descriptor_keeps_the_append() {
    require_mount_support();
    let want = [vec![b'a'; 1000], vec![b'b'; 10_000]].concat();
    let (bad, first) = rounds(60, |dir, i| {
        let truncate_then_append = |rw: &File, append: &mut File| {
            rw.set_len(1000).unwrap();
            std::io::Write::write_all(append, &[b'b'; 10_000]).unwrap();
        };
        two_descriptors(&dir.join(format!("t{i}")), truncate_then_append, &want)
    });
    assert_eq!(bad, 0, "appends lost: {first:?}");
}

/// A new file written past a hole, then read in the hole through a new descriptor: zeros,
/// not an end of file (an Open's prefetch the server read before the write must not stand
/// for the file's first block).
#[test]
fn a_hole_written_past_reads_as_zeros_through_a_new_descriptor() {
    require_mount_support();
    let (bad, first) = rounds(60, |dir, i| {
        let path = dir.join(format!("h{i}"));
        drop(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .unwrap(),
        );
        let rw = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        rw.write_all_at(&[b'z'; 68_698], 131_073).unwrap();
        let ro = File::open(&path).unwrap();
        let mut got = vec![1u8; 4096];
        let n = ro.read_at(&mut got, 3815).unwrap();
        (n != 4096 || got.iter().any(|b| *b != 0))
            .then(|| format!("round {i}: read {n} bytes in the hole"))
    });
    assert_eq!(bad, 0, "holes misread: {first:?}");
}

/// Close-to-open for a file appended on the server's disk: the mount had its attributes
/// (a `stat` just before); an open and a read afterwards see the new length.
#[test]
fn an_open_after_a_change_on_the_server_s_disk_reads_the_new_length() {
    require_mount_support();
    let server = Server::start(&[]);
    let mount = Mount::new(&server, "data", &[]);
    let on_disk = server.export("data").join("grows");
    let through = mount.path.join("grows");
    std::fs::write(&on_disk, b"").unwrap();
    let mut want = Vec::new();
    let mut stale = Vec::new();
    for i in 0..150usize {
        std::fs::metadata(&through).unwrap();
        let more = vec![b'0' + (i % 10) as u8; 1 + i * 7];
        let mut f = OpenOptions::new().append(true).open(&on_disk).unwrap();
        std::io::Write::write_all(&mut f, &more).unwrap();
        drop(f);
        want.extend_from_slice(&more);
        let got = std::fs::read(&through).unwrap();
        if got != want {
            stale.push((i, got.len(), want.len()));
        }
    }
    assert!(
        stale.is_empty(),
        "reads of an old length (round, got, want): {stale:?}"
    );
}

/// A file replaced by a rename onto its name (on another mount, or on the server's disk) is
/// opened by name right after on this mount: the new file, never ENOENT (the name never
/// stopped existing).
#[test]
fn a_name_renamed_over_elsewhere_opens_the_new_file_at_once() {
    require_mount_support();
    let server = Server::start(&[]);
    let a = Mount::new(&server, "data", &[]);
    let b = Mount::new(&server, "data", &[]);
    let disk = server.export("data");
    let mut failed = Vec::new();
    for (writer, label) in [
        (a.path.clone(), "another mount"),
        (disk.clone(), "the disk"),
    ] {
        std::fs::write(writer.join("name"), b"first").unwrap();
        for i in 0..100usize {
            // B knows the current file by the name.
            let _ = std::fs::read(b.path.join("name"));
            let content = format!("version {i} from {label}");
            std::fs::write(writer.join("name.tmp"), &content).unwrap();
            std::fs::rename(writer.join("name.tmp"), writer.join("name")).unwrap();
            match std::fs::read(b.path.join("name")) {
                Ok(got) if got == content.as_bytes() => {}
                Ok(got) => failed.push(format!(
                    "{label} {i}: read {:?}",
                    String::from_utf8_lossy(&got)
                )),
                Err(e) => failed.push(format!("{label} {i}: {e}")),
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 200 opens failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
}

/// The model run with fsserver killed (SIGKILL) and started again on the same address a few
/// times, at random steps, descriptors open and writes in flight: the mounts resume their
/// sessions and every byte a write was answered for is there, through both mounts and on
/// the server's disk, as if nothing had happened.
#[test]
fn the_model_holds_across_server_restarts() {
    require_mount_support();
    let mut server = Server::start(&[]);
    let a = Mount::new(&server, "data", &[]);
    let b = Mount::new(&server, "data", &[]);
    let seed = 0x5eed_0101u64;
    let dir = "restarts";
    std::fs::create_dir(a.path.join(dir)).unwrap();
    let disk = server.export("data").join(dir);
    let (in_a, in_b) = (a.path.join(dir), b.path.join(dir));
    let mut restarts = 0;
    run(seed, 500, [&in_a, &in_b], &disk, |_, run| {
        if run.rng.below(60) == 0 {
            run.note("the server is killed and started again".to_string());
            server.kill_and_restart_holding_files();
            restarts += 1;
        }
    });
    assert!(restarts >= 3, "the server was restarted {restarts} times");
}

/// The model run while, from another thread, fsserver is stopped (SIGSTOP) at random moments
/// for a random while and then either continued or killed (SIGKILL) and started again on
/// the same address: requests wait on a stopped server mid-call, closes and creates that
/// the mounts answer themselves under their leases race the stop and the reconnect, and
/// writes queued behind them meet a server that has never heard of their handles. Every byte
/// a call was answered for must be there, through both mounts and on the server's disk, and
/// `fsmount sync` must report nothing lost.
#[test]
#[ignore = "still finds faults not fixed (a stale size after restarts, see docs/SEMANTICS.md): \
            run by hand with --ignored, in a loop with DATA_MODEL_STOP_SEED"]
fn the_model_holds_while_the_server_stops_and_restarts_under_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    require_mount_support();
    let mut server = Server::start(&[]);
    let a = Mount::new(&server, "data", &[]);
    let b = Mount::new(&server, "data", &[]);
    // DATA_MODEL_STOP_SEED=N runs another seed (the moments of the stops vary anyway).
    let seed = std::env::var("DATA_MODEL_STOP_SEED").map_or(0x5eed_0201u64, |s| {
        s.parse().expect("DATA_MODEL_STOP_SEED: a number")
    });
    let dir = "stops";
    std::fs::create_dir(a.path.join(dir)).unwrap();
    let disk = server.export("data").join(dir);
    // Through one mount by default (its files handed "between mounts" are closed and
    // opened again on it). DATA_MODEL_STOP_MOUNTS=2 hands them between two: that run still
    // fails now and then at the end, the second mount reading a page past the end of file
    // (its kernel's size and cache from before, after restarts): a known fault, not yet
    // fixed, kept out of the suite until it is.
    let two = std::env::var("DATA_MODEL_STOP_MOUNTS").is_ok_and(|n| n == "2");
    let in_a = a.path.join(dir);
    let in_b = match two {
        true => b.path.join(dir),
        false => in_a.clone(),
    };
    let done = AtomicBool::new(false);
    // Set while the server is stopped (or dead): the steps begun then are counted.
    let stopped = AtomicBool::new(false);
    let mut steps_while_stopped = 0;
    // What the other thread did, noted into the run's log before the next step.
    let events = Mutex::new(Vec::<String>::new());
    let (mut stops, mut restarts) = (0, 0);
    std::thread::scope(|s| {
        let chaos = s.spawn(|| {
            let mut rng = Rng(seed ^ 0xdead_beef);
            let ms =
                |rng: &mut Rng, lo: u64, hi: u64| Duration::from_millis(lo + rng.below(hi - lo));
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(ms(&mut rng, 50, 400));
                if done.load(Ordering::SeqCst) {
                    break;
                }
                // Made while the server runs: see `Server::standby`.
                let standby = server.standby();
                stopped.store(true, Ordering::SeqCst);
                e2e_tests::send_signal(server.pid(), libc::SIGSTOP);
                let pause = ms(&mut rng, 20, 400);
                std::thread::sleep(pause);
                if rng.below(3) == 0 {
                    e2e_tests::send_signal(server.pid(), libc::SIGCONT);
                    events
                        .lock()
                        .unwrap()
                        .push(format!("(server stopped {pause:?}, continued)"));
                    stops += 1;
                } else {
                    server.kill_and_start(standby);
                    events
                        .lock()
                        .unwrap()
                        .push(format!("(server stopped {pause:?}, killed, restarted)"));
                    restarts += 1;
                }
                stopped.store(false, Ordering::SeqCst);
            }
        });
        // Ends the other thread also when the run fails.
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _done = Done(&done);
        run(seed, 1500, [&in_a, &in_b], &disk, |_, run| {
            run.new_files = true;
            run.server_stopped = stopped.load(Ordering::SeqCst);
            if run.server_stopped {
                steps_while_stopped += 1;
            }
            for e in events.lock().unwrap().drain(..) {
                run.note(e);
            }
        });
        drop(_done);
        chaos.join().unwrap();
    });
    eprintln!(
        "{restarts} restarts, {stops} pauses, {steps_while_stopped} steps begun while stopped"
    );
    assert!(
        restarts >= 3 && stops >= 1 && steps_while_stopped >= 5,
        "{restarts} restarts and {stops} pauses of the server, {steps_while_stopped} steps \
         begun while it was stopped"
    );
    for m in [&a, &b] {
        e2e_tests::assert_synced(m);
    }
}
