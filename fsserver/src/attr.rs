//! `stat` results as protocol attributes.

use nix::sys::stat::FileStat;

/// Converts a `stat`; `change` mixes ctime (ns) and size so any data or metadata change
/// gives a new token.
pub fn from_stat(st: &FileStat) -> proto::Attr {
    let ts = |sec: i64, nsec: i64| {
        Some(proto::Timespec {
            sec,
            nsec: nsec as u32,
        })
    };
    let ctime_ns = (st.st_ctime as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(st.st_ctime_nsec as u64);
    proto::Attr {
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev,
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        blksize: st.st_blksize as u32,
        atime: ts(st.st_atime, st.st_atime_nsec),
        mtime: ts(st.st_mtime, st.st_mtime_nsec),
        ctime: ts(st.st_ctime, st.st_ctime_nsec),
        change: ctime_ns ^ (st.st_size as u64).rotate_left(40),
    }
}
