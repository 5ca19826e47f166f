//! The command line (clap): the server's flags and its subcommands. Kept in the library so
//! that man pages and shell completions are generated from the same definition
//! (`cargo run -p xtask -- dist DIR`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::access::credentials;
use crate::{config, defaults};

/// Export directories over the fsxp protocol, for fsmount clients.
#[derive(Parser, Debug, Clone)]
#[command(version, about, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Sub>,
    /// The exports file (TOML; see the README): exports, tokens, client networks, limits.
    /// SIGHUP reloads it. Replaces the export, token, TLS and limit flags.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["exports", "listen", "token_file"])]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:7070, [::] (port 7070 when none is given) or
    /// 127.0.0.1:0 (any free port); repeatable.
    #[arg(long, value_name = "ADDR", required_unless_present = "config")]
    pub listen: Vec<String>,
    /// Directory to export under NAME (repeatable).
    #[arg(
        long = "export",
        value_name = "NAME=DIR",
        required_unless_present = "config"
    )]
    pub exports: Vec<String>,
    /// Shared secret file; created with a fresh random token (mode 0600) if missing.
    /// Default: $HOME/.config/fsserver/token.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// TLS certificate (PEM, the chain) to present. Default: tls-cert.pem beside the token
    /// file, created self-signed on first start.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM, mode 0600). Default: tls-key.pem beside the token.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve without TLS, for trusted storage networks: file contents, names and session ids
    /// cross the network in clear. Clients must mount with -o plaintext.
    #[arg(long)]
    pub plaintext: bool,
    /// Export NAME read-only: every change fails with EROFS (repeatable).
    #[arg(long = "read-only", value_name = "NAME")]
    pub read_only: Vec<String>,
    /// Let clients create device nodes on export NAME (repeatable; default: EPERM, as
    /// `nodev`). Devices are never opened on the server either way.
    #[arg(long = "dev", value_name = "NAME")]
    pub dev: Vec<String>,
    /// Trust a client's uid 0 on export NAME (repeatable). Default: root squash, as NFS:
    /// requests from uid 0 run as --anonuid/--anongid. Needed to preserve owners (rsync -a,
    /// tar -p as root) or to write into a root-owned export as root.
    #[arg(long = "no-root-squash", value_name = "NAME")]
    pub no_root_squash: Vec<String>,
    /// Run every request on export NAME as --anonuid/--anongid, whoever the caller is
    /// (repeatable; NFS all_squash).
    #[arg(long = "all-squash", value_name = "NAME")]
    pub all_squash: Vec<String>,
    /// The uid squashed callers run as.
    #[arg(long, value_name = "UID", default_value_t = credentials::ANONYMOUS)]
    pub anonuid: u32,
    /// The gid squashed callers run as.
    #[arg(long, value_name = "GID", default_value_t = credentials::ANONYMOUS)]
    pub anongid: u32,
    /// Requests run at once per connection (its share of the 512 workers; at most 128).
    #[arg(long, default_value_t = defaults::MAX_IN_FLIGHT)]
    pub max_in_flight: u32,
    /// Authenticated connections served at once (a slot is taken after the token proof).
    #[arg(long, default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Connections still in their handshake, in total.
    #[arg(long, default_value_t = defaults::MAX_PENDING)]
    pub max_handshakes: usize,
    /// Connections still in their handshake from one source address; more are closed at
    /// once.
    #[arg(long, default_value_t = defaults::MAX_PENDING_PER_SOURCE)]
    pub max_handshakes_per_source: usize,
    /// Files one client session may hold open at once; one more open fails with EMFILE for
    /// that client only.
    #[arg(long, default_value_t = defaults::MAX_OPEN)]
    pub max_open: usize,
    /// Sessions kept at once (each holds a client's open files for --session-grace after
    /// its connection drops); a new one replaces the one idle longest, or is refused.
    #[arg(long, default_value_t = defaults::MAX_SESSIONS)]
    pub max_sessions: usize,
    /// How long a new connection has to finish the handshake (seconds, or 500ms, 2m, ...).
    #[arg(long, value_name = "TIME", default_value = "5", value_parser = config::parse_duration)]
    pub handshake_timeout: Duration,
    /// How long a client's session (open handles, cached replies) is kept after its
    /// connection drops, so it can reconnect and resume (0: not kept).
    #[arg(long, value_name = "TIME", default_value = "60", value_parser = config::parse_duration)]
    pub session_grace: Duration,
    /// How long a client may leave its replies unread before it is disconnected.
    #[arg(long, value_name = "TIME", default_value = "30", value_parser = config::parse_duration)]
    pub write_timeout: Duration,
    /// How long SIGTERM/SIGINT waits for connections to finish their requests; fsserver
    /// exits by then whatever is still running.
    #[arg(long, value_name = "TIME", default_value = "30", value_parser = config::parse_duration)]
    pub drain_timeout: Duration,
    /// On --plaintext connections, send Read replies of 64 KiB or more straight from the
    /// page cache with sendfile(2), their CRC32 summed through a mapping (the client reads
    /// again if the file changes meanwhile). Off by default: on loopback it costs more CPU
    /// per GiB than the copy path (see docs/BENCHMARKS.md); measure it on your network.
    #[arg(long)]
    pub sendfile: bool,
    /// How long a directory lease lasts unless its client renews it (clients renew every
    /// third of it). While a client holds a directory's lease it answers lookups, creates
    /// and attribute changes there itself; 0 grants none (every mount asks the server).
    #[arg(long, value_name = "TIME", default_value = "30", value_parser = config::parse_duration)]
    pub lease_time: Duration,
    /// Do not watch the exports' filesystems (fanotify) for changes made there directly,
    /// other than through fsserver; clients then see such changes after their timeouts.
    /// Watching needs root (CAP_SYS_ADMIN); without it fsserver says so and goes on.
    #[arg(long)]
    pub no_disk_watch: bool,
    /// How long a recalled lease may take to come back. A recalled lease is renewed no
    /// more; one not given back within this time is revoked when it expires (at most
    /// --lease-time after the holder's last renewal before the recall: until then the
    /// holder, perhaps cut away, may still answer from it), and the request that recalled
    /// it waits until then.
    #[arg(long, value_name = "TIME", default_value = "5", value_parser = config::parse_duration)]
    pub recall_timeout: Duration,
    /// Lock ranges and waits one client session may hold at once (fcntl, OFD and flock
    /// locks together); one more fails with ENOLCK.
    #[arg(long, value_name = "N", default_value_t = crate::defaults::MAX_LOCKS)]
    pub max_locks: usize,
    /// Lock ranges and waits all sessions of one token may hold together.
    #[arg(long, value_name = "N", default_value_t = crate::defaults::MAX_LOCKS_PER_TOKEN)]
    pub max_locks_per_token: usize,
    /// After a restart of a server that held locks, how long clients have to reclaim them;
    /// new locks wait until it ends (sooner once every client that held locks reclaimed).
    /// 0: no grace period (locks held before a restart may be taken by others at once).
    #[arg(long, value_name = "TIME", default_value = "15", value_parser = config::parse_duration)]
    pub lock_grace: Duration,
    /// The local control socket `fsserver status` asks. Default: /run/fsserver/ and a name
    /// derived from the token file.
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Serve Prometheus metrics on ADDR (`GET /metrics`), e.g. 127.0.0.1:9707. Off by
    /// default; the figures name exports and commands, so keep it off public networks.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Sub {
    /// Check an exports file and say what it serves; unknown keys are errors, with the line.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// List the running server's connections (peer, export, token, since, requests, bytes,
    /// open files), asking it on its control socket. Give the options the server was
    /// started with (--config, or --token-file) so the same socket is found.
    Status {
        /// The server's exports file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The server's token file (without --config).
        #[arg(long, value_name = "FILE", conflicts_with = "config")]
        token_file: Option<PathBuf>,
        /// The server's control socket, when it was given one.
        #[arg(long, value_name = "PATH")]
        control_socket: Option<PathBuf>,
        /// Print the Prometheus metrics instead.
        #[arg(long, conflicts_with = "json")]
        metrics: bool,
        /// Print JSON (for scripts and monitoring), as `fsmount status --json`.
        #[arg(long)]
        json: bool,
    },
    /// Print the SHA-256 fingerprint of the server's TLS certificate (creating the default
    /// certificate if there is none yet), for fsmount -o fingerprint=...
    Fingerprint {
        /// The exports file the server runs with: its `tls_cert`, or else the pair beside
        /// its `token_file`.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["token_file", "tls_cert"])]
        config: Option<PathBuf>,
        /// As for the server.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// As for the server.
        #[arg(long, value_name = "FILE")]
        tls_cert: Option<PathBuf>,
    },
}
