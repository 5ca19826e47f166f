//! The command line's source (`HOST[:PORT]:/NAME`) and `-o` options.

use std::path::PathBuf;
use std::time::Duration;

use crate::client::transport::Verify;
use crate::defaults;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// `host:port`, ready for `connect`.
    pub addr: String,
    pub export: String,
}

/// Parses `HOST:PORT:/NAME` or `HOST:/NAME` (IPv6 hosts in brackets).
pub fn parse_source(s: &str) -> Result<Source, String> {
    let bad = || format!("{s:?}: expected HOST:PORT:/NAME[/SUBDIR], e.g. 127.0.0.1:7070:/data");
    let (hostport, export) = s.rsplit_once(":/").ok_or_else(bad)?;
    // NAME or NAME/sub/dir (a subtree of export NAME); no empty, "." or ".." components.
    let bad_part = |c: &str| c.is_empty() || c == "." || c == "..";
    if export.split('/').any(bad_part) || hostport.is_empty() {
        return Err(bad());
    }
    let addr = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        match after.strip_prefix(':') {
            Some(port) => format!("[{host}]:{}", port.parse::<u16>().map_err(|_| bad())?),
            None if after.is_empty() => format!("[{host}]:{}", defaults::PORT),
            None => return Err(bad()),
        }
    } else {
        match hostport.rsplit_once(':') {
            // "::1:7070" or "fe80::1": which colon ends the address is ambiguous.
            Some((host, _)) if host.contains(':') => {
                return Err(format!(
                    "{s:?}: put an IPv6 address in brackets, e.g. [::1]:7070:/{export}"
                ))
            }
            Some((host, port)) if !host.is_empty() => {
                format!("{host}:{}", port.parse::<u16>().map_err(|_| bad())?)
            }
            Some(_) => return Err(bad()),
            None => format!("{hostport}:{}", defaults::PORT),
        }
    };
    Ok(Source {
        addr,
        export: export.to_string(),
    })
}

/// What `-o` options ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct MountOptions {
    pub token_file: Option<PathBuf>,
    pub read_only: bool,
    pub allow_other: bool,
    pub allow_root: bool,
    /// fusermount3 unmounts when fsmount ends, even when killed.
    pub auto_unmount: bool,
    pub default_permissions: bool,
    /// Hold directory leases and answer in leased directories locally (`noleases`: off).
    pub leases: bool,
    /// Open the next files of a directory walked in listing order (`noopen_ahead`: off).
    pub open_ahead: bool,
    pub attr_timeout: Duration,
    pub entry_timeout: Duration,
    /// How long the kernel remembers that a name does not exist (0: not at all).
    pub negative_timeout: Duration,
    pub fsname: Option<String>,
    /// Bytes of file data the block cache may hold (0: no cache and no read-ahead).
    pub cache_size: usize,
    /// Most bytes read ahead of a sequential reader.
    pub readahead: usize,
    /// Most bytes written and not yet acknowledged by the server (0: synchronous writes).
    pub dirty_limit: usize,
    /// How long an operation waits while the server is unreachable before failing with
    /// ETIMEDOUT (None: for ever, `-o hard`). Data already written is kept and sent anyway.
    pub timeout: Option<Duration>,
    /// How long a call interrupted by a handled signal may still wait for the server
    /// before it fails with EINTR (a signal that kills the process ends it at once).
    pub intr_grace: Duration,
    /// Threads reading FUSE requests, each on its own clone of /dev/fuse (FUSE_DEV_IOC_CLONE:
    /// its own queue of requests being answered) when more than one.
    pub fuse_threads: usize,
    /// Plain kernel flags passed through (noexec, nosuid, nodev, noatime, ...).
    pub kernel_flags: Vec<String>,
    /// Change a running mount's kernel flags (`-o remount,...`) instead of mounting.
    pub remount: bool,
    /// Where the background process logs (default: syslog).
    pub log_file: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (`-o metrics=ADDR`).
    pub metrics: Option<String>,
    /// `-o plaintext`: no TLS (the server must run `--plaintext`).
    pub plaintext: bool,
    /// How the server's certificate is checked (`-o fingerprint=`, `-o tls_ca=`).
    pub verify: crate::client::transport::Verify,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            token_file: None,
            read_only: false,
            allow_other: false,
            allow_root: false,
            auto_unmount: false,
            default_permissions: false,
            leases: true,
            open_ahead: true,
            attr_timeout: defaults::ATTR_TIMEOUT,
            entry_timeout: defaults::ENTRY_TIMEOUT,
            negative_timeout: defaults::NEGATIVE_TIMEOUT,
            fsname: None,
            cache_size: defaults::CACHE_SIZE,
            readahead: defaults::READAHEAD,
            dirty_limit: defaults::DIRTY_LIMIT,
            timeout: defaults::TIMEOUT,
            intr_grace: defaults::INTR_GRACE,
            fuse_threads: defaults::FUSE_THREADS,
            kernel_flags: Vec::new(),
            remount: false,
            log_file: None,
            metrics: None,
            plaintext: false,
            verify: crate::client::transport::Verify::ByToken,
        }
    }
}

/// Parses a duration: bare seconds (`30`, `0.5`, as NFS-style options take them) or with
/// units (`500ms`, `2m`, `1h 30m`; humantime).
fn seconds(key: &str, v: &str) -> Result<Duration, String> {
    let d = match v.parse::<f64>() {
        Ok(secs) if (0.0..=86400.0).contains(&secs) => Duration::from_secs_f64(secs),
        Ok(_) => return Err(format!("-o {key}={v}: out of range")),
        Err(_) => humantime::parse_duration(v).map_err(|e| {
            format!("-o {key}={v}: expected seconds or a duration such as 500ms or 2m ({e})")
        })?,
    };
    if d > Duration::from_secs(86400) {
        return Err(format!("-o {key}={v}: out of range (at most a day)"));
    }
    Ok(d)
}

/// Parses a byte count: `65536`, `512K`, `64M`, `64MiB`, `1G`, `1.5GiB` (K, M, G as
/// powers of 1024; parse-size).
fn bytes(key: &str, v: &str) -> Result<usize, String> {
    let bad = || format!("-o {key}={v}: expected a size such as 65536, 512K, 64MiB or 1G");
    let n = parse_size::Config::new()
        .with_binary()
        .parse_size(v)
        .map_err(|_| bad())?;
    usize::try_from(n)
        .ok()
        .filter(|n| *n <= 1 << 40)
        .ok_or_else(bad)
}

/// Parses every `-o` argument (each a comma-separated list).
pub fn parse_options(args: &[String]) -> Result<MountOptions, String> {
    let mut o = MountOptions::default();
    for opt in args
        .iter()
        .flat_map(|a| a.split(','))
        .filter(|s| !s.is_empty())
    {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        match (key, value) {
            ("token_file", Some(v)) => o.token_file = Some(PathBuf::from(v)),
            ("ro", None) => o.read_only = true,
            ("remount", None) => o.remount = true,
            ("rw", None) => o.read_only = false,
            ("allow_other", None) => o.allow_other = true,
            ("allow_root", None) => o.allow_root = true,
            ("auto_unmount", None) => o.auto_unmount = true,
            ("default_permissions", None) => o.default_permissions = true,
            ("leases", None) => o.leases = true,
            ("noleases", None) => o.leases = false,
            ("open_ahead", None) => o.open_ahead = true,
            ("noopen_ahead", None) => o.open_ahead = false,
            ("attr_timeout", Some(v)) => o.attr_timeout = seconds(key, v)?,
            ("entry_timeout", Some(v)) => o.entry_timeout = seconds(key, v)?,
            ("negative_timeout", Some(v)) => o.negative_timeout = seconds(key, v)?,
            ("cache_size", Some(v)) => o.cache_size = bytes(key, v)?,
            ("readahead", Some(v)) => o.readahead = bytes(key, v)?,
            ("dirty_limit", Some(v)) => o.dirty_limit = bytes(key, v)?,
            ("timeout", Some(v)) => o.timeout = Some(seconds(key, v)?),
            ("hard", None) => o.timeout = None,
            ("intr_grace", Some(v)) => o.intr_grace = seconds(key, v)?,
            ("fuse_threads", Some(v)) => {
                o.fuse_threads = match v.parse::<usize>() {
                    Ok(n @ 1..=64) => n,
                    _ => return Err(format!("-o fuse_threads={v}: a number from 1 to 64")),
                }
            }
            ("soft", None) => {
                if o.timeout.is_none() {
                    o.timeout = defaults::TIMEOUT;
                }
            }
            ("fsname", Some(v)) => o.fsname = Some(v.to_string()),
            ("plaintext", None) => o.plaintext = true,
            ("metrics", Some(v)) => o.metrics = Some(v.to_string()),
            // Absolute: the background process works from "/".
            ("log_file", Some(v)) => {
                o.log_file =
                    Some(std::path::absolute(v).map_err(|e| format!("-o log_file={v}: {e}"))?)
            }
            ("fingerprint", Some(v)) => {
                let hex = v.strip_prefix("sha256:").unwrap_or_default();
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!(
                        "-o fingerprint={v}: expected sha256: and 64 hex digits \
                         (as fsserver fingerprint prints)"
                    ));
                }
                o.verify = Verify::Fingerprint(v.to_ascii_lowercase());
            }
            ("tls_ca", Some(v)) => o.verify = Verify::Ca(PathBuf::from(v)),
            (
                "noexec" | "exec" | "nosuid" | "suid" | "nodev" | "dev" | "noatime" | "atime"
                | "sync" | "async" | "dirsync",
                None,
            ) => o.kernel_flags.push(key.to_string()),
            // Accepted from fstab, mount(8) and systemd and meaningless here (as mount.nfs).
            (
                "defaults" | "auto" | "noauto" | "user" | "nouser" | "users" | "owner" | "group"
                | "_netdev" | "nofail",
                None,
            ) => {}
            // As /proc/mounts shows a mount (what mount(8) passes back on a remount): the
            // kernel's defaults and what FUSE sets itself.
            (
                "relatime" | "norelatime" | "strictatime" | "nostrictatime" | "lazytime"
                | "nolazytime" | "silent" | "loud",
                None,
            ) => {}
            ("user_id" | "group_id" | "rootmode" | "max_read" | "blksize", Some(_)) => {}
            (k, _) if k.starts_with("x-") || k == "comment" => {}
            _ => return Err(format!("unknown mount option {opt:?}")),
        }
    }
    if o.plaintext && o.verify != Verify::ByToken {
        return Err("-o plaintext has no certificate to check: drop fingerprint/tls_ca".into());
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_fstab_and_systemd_are_accepted() {
        let o = parse_options(&[
            "_netdev,x-systemd.automount,x-systemd.idle-timeout=60,users,nofail,noauto,defaults,rw,comment=x".into(),
        ]);
        assert!(o.is_ok(), "{o:?}");
    }

    #[test]
    fn sizes_and_durations_take_units() {
        assert_eq!(bytes("k", "64MiB"), Ok(64 << 20));
        assert_eq!(bytes("k", "64M"), Ok(64 << 20));
        assert_eq!(bytes("k", "1G"), Ok(1 << 30));
        assert_eq!(bytes("k", "512k"), Ok(512 << 10));
        assert_eq!(bytes("k", "65536"), Ok(65536));
        assert!(bytes("k", "lots").is_err());
        assert_eq!(seconds("t", "30"), Ok(Duration::from_secs(30)));
        assert_eq!(seconds("t", "0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(seconds("t", "500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(seconds("t", "2m"), Ok(Duration::from_secs(120)));
        assert!(seconds("t", "2 days").is_err());
    }

    #[test]
    fn source_forms() {
        let s = parse_source("127.0.0.1:7000:/data").unwrap();
        assert_eq!(
            (s.addr.as_str(), s.export.as_str()),
            ("127.0.0.1:7000", "data")
        );
        assert_eq!(parse_source("host:/x").unwrap().addr, "host:7070");
        assert_eq!(parse_source("[::1]:9:/x").unwrap().addr, "[::1]:9");
        assert!(parse_source("127.0.0.1:7000").is_err());
        let sub = parse_source("h:1:/data/sub/dir").unwrap();
        assert_eq!(sub.export, "data/sub/dir");
        assert!(parse_source("h:1:/data/../x").is_err());
        assert!(parse_source("h:1:/data//x").is_err());
        let e = parse_source("::1:7070:/data").unwrap_err();
        assert!(e.contains("[::1]:7070:/data"), "{e}");
        assert!(parse_source("h:port:/x").is_err());
        assert!(parse_source("h:1:/").is_err());
    }

    #[test]
    fn options_parse_and_unknown_ones_are_refused() {
        let o =
            parse_options(&["token_file=/t,ro".into(), "attr_timeout=0.5,noatime".into()]).unwrap();
        assert_eq!(o.token_file, Some(PathBuf::from("/t")));
        assert!(o.read_only);
        assert_eq!(o.attr_timeout, Duration::from_millis(500));
        assert_eq!(o.kernel_flags, vec!["noatime".to_string()]);
        let o = parse_options(&["cache_size=1G,readahead=512k".into()]).unwrap();
        assert_eq!((o.cache_size, o.readahead), (1 << 30, 512 << 10));
        assert!(parse_options(&["cache_size=lots".into()]).is_err());
        assert!(parse_options(&[]).unwrap().open_ahead);
        assert!(!parse_options(&["noopen_ahead".into()]).unwrap().open_ahead);
        assert_eq!(parse_options(&["hard".into()]).unwrap().timeout, None);
        let o = parse_options(&["timeout=2.5".into()]).unwrap();
        assert_eq!(o.timeout, Some(Duration::from_millis(2500)));
        assert!(parse_options(&["bogus".into()]).is_err());
        assert_eq!(parse_options(&[]).unwrap().fuse_threads, 1);
        let o = parse_options(&["fuse_threads=4".into()]).unwrap();
        assert_eq!(o.fuse_threads, 4);
        for bad in ["fuse_threads=0", "fuse_threads=65", "fuse_threads=two"] {
            assert!(parse_options(&[bad.into()]).is_err(), "{bad}");
        }
        assert_eq!(o.intr_grace, Duration::from_millis(200));
        let o = parse_options(&["intr_grace=1s".into()]).unwrap();
        assert_eq!(o.intr_grace, Duration::from_secs(1));
    }
}
