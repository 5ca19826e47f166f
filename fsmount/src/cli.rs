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
    after_help = "Unmount with `fusermount3 -u MOUNTPOINT` or `umount MOUNTPOINT`."
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
    /// timeout=TIME, hard, soft, intr_grace=TIME, fsname=NAME, log_file=FILE, metrics=ADDR,
    /// plaintext, fingerprint=sha256:HEX, tls_ca=FILE, noexec, nosuid, nodev, noatime, ...
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Stay in the foreground (default: return once mounted, keep serving in the background).
    #[arg(short = 'f')]
    pub foreground: bool,
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
}
