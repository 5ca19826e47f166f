//! The command line (clap). Kept in the library so that man pages and shell completions
//! are generated from the same definition (`cargo run -p xtask -- dist DIR`).

use std::path::PathBuf;

use clap::Parser;

/// Mount a directory exported by fsserver, like sshfs.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true,
    after_help = "Unmount with `fusermount3 -u MOUNTPOINT` or `umount MOUNTPOINT`. \
                  `-o remount,ro` (or `mount -o remount,ro MOUNTPOINT`, as root) changes \
                  ro/rw and nosuid, nodev, noexec, noatime of a running mount.\n\
                  Exit status: 0 mounted; 32 the mount failed (as mount(8)); 1 for \
                  status and sync when they fail."
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Sub>,
    /// HOST:PORT:/NAME[/SUBDIR], e.g. 127.0.0.1:7070:/data (PORT defaults to 7070).
    #[arg(required = true)]
    pub source: Option<String>,
    /// Existing directory to mount on.
    #[arg(required = true)]
    pub mountpoint: Option<PathBuf>,
    /// Mount options, comma-separated: token_file=FILE, ro, allow_other, allow_root,
    /// auto_unmount, default_permissions, attr_timeout=TIME, entry_timeout=TIME,
    /// negative_timeout=TIME, cache_size=SIZE, readahead=SIZE, dirty_limit=SIZE,
    /// timeout=TIME, hard, soft, intr_grace=TIME, fuse_threads=N, fsname=NAME, log_file=FILE,
    /// metrics=ADDR, plaintext, fingerprint=sha256:HEX, tls_ca=FILE, noexec, nosuid, nodev,
    /// noatime, ...
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Stay in the foreground (default: return once mounted, keep serving in the background).
    #[arg(short = 'f')]
    pub foreground: bool,
    /// Say what is done: the server and export, the options, the mount (also as
    /// `mount -v`).
    #[arg(short = 'v')]
    pub verbose: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// Show a running mount's connection, reconnects, requests, writeback, syncs waiting
    /// and cache.
    Status {
        mountpoint: PathBuf,
        /// Print JSON (for scripts and monitoring).
        #[arg(long)]
        json: bool,
    },
    /// Return once every write made so far through the mount is acknowledged by the server.
    Sync { mountpoint: PathBuf },
    /// List the exports a token may mount from here, as `showmount -e` does for NFS: name,
    /// access (rw or ro, the export's or the token's grant) and squash.
    Exports {
        /// HOST[:PORT] (PORT defaults to 7070; an IPv6 address in brackets).
        server: String,
        /// token_file=FILE, and how to reach the server: fingerprint=, tls_ca=, plaintext.
        #[arg(short = 'o', value_name = "OPTIONS")]
        options: Vec<String>,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
}
