//! The exports file (`fsserver --config FILE`, TOML) and what the server serves: exports,
//! named tokens and the grants between them. A configuration is checked whole before it is
//! used (paths, token files, names, networks), at start, by `fsserver check-config` and on
//! SIGHUP, so a broken file never replaces a working one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use serde::Deserialize;

use crate::access::credentials::{Policy, Squash, ANONYMOUS};
use crate::export::Export;

/// The file, as written. Unknown keys are errors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Addresses to listen on (default `["0.0.0.0:7070"]`).
    #[serde(default)]
    pub listen: Vec<String>,
    /// The token of every export when no `[[token]]` is given.
    pub token_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    #[serde(default)]
    pub plaintext: bool,
    /// Defaults for the exports' squashed ids.
    pub anonuid: Option<u32>,
    pub anongid: Option<u32>,
    pub max_connections: Option<usize>,
    pub max_in_flight: Option<u32>,
    pub max_open: Option<usize>,
    pub max_sessions: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    pub session_grace: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub handshake_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub write_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub drain_timeout: Option<Duration>,
    /// `--no-disk-watch` when false.
    pub disk_watch: Option<bool>,
    /// `--lease-time`, `--recall-timeout`.
    #[serde(default, deserialize_with = "duration")]
    pub lease_time: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub recall_timeout: Option<Duration>,
    /// `--max-locks`, `--max-locks-per-token`, `--lock-grace`.
    pub max_locks: Option<usize>,
    pub max_locks_per_token: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    pub lock_grace: Option<Duration>,
    /// Read replies on plaintext connections by sendfile(2) (`--sendfile`).
    #[serde(default)]
    pub sendfile: bool,
    /// The local control socket `fsserver status` asks (default: under /run/fsserver).
    pub control_socket: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (`GET /metrics`); absent: not at all.
    pub metrics: Option<String>,
    #[serde(default)]
    pub export: Vec<ExportEntry>,
    #[serde(default)]
    pub token: Vec<TokenEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportEntry {
    pub name: String,
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
    /// false: trust the client's root (`--no-root-squash`).
    #[serde(default = "yes")]
    pub root_squash: bool,
    #[serde(default)]
    pub all_squash: bool,
    pub anonuid: Option<u32>,
    pub anongid: Option<u32>,
    /// Device nodes may be created (`--dev`).
    #[serde(default)]
    pub dev: bool,
    /// Networks clients may mount it from (CIDR); absent: any.
    pub clients: Option<Vec<String>>,
}

/// A listen address with the default port added when it has none: `0.0.0.0`, `[::]`,
/// `::`, `storage.example` become `...:7070`.
pub fn with_default_port(addr: &str) -> String {
    use std::net::{IpAddr, SocketAddr};
    let port = crate::defaults::PORT;
    if addr.parse::<SocketAddr>().is_ok() {
        return addr.to_string();
    }
    if let Ok(ip) = addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return SocketAddr::new(ip, port).to_string();
    }
    if !addr.contains(':') {
        return format!("{addr}:{port}");
    }
    addr.to_string()
}

/// A duration: whole seconds (`30`) or text with units (`500ms`, `2m`; humantime).
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Seconds(u64),
        Fraction(f64),
        Text(String),
    }
    match Given::deserialize(d)? {
        Given::Seconds(s) => Ok(Some(Duration::from_secs(s))),
        Given::Fraction(f) => parse_duration(&f.to_string())
            .map(Some)
            .map_err(serde::de::Error::custom),
        Given::Text(t) => parse_duration(&t)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// Parses `30` (seconds), `0.5`, `500ms`, `2m`, `1h 30m`.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(s) if (0.0..=1e9).contains(&s) => Ok(Duration::from_secs_f64(s)),
        Ok(_) => Err(format!("{v}: out of range")),
        Err(_) => humantime::parse_duration(v)
            .map_err(|e| format!("{v}: expected seconds or a duration such as 500ms or 2m ({e})")),
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub file: PathBuf,
    /// Export names, each optionally `NAME:ro` for read-only.
    pub exports: Vec<String>,
}

/// A token and what it opens.
#[derive(Debug, Clone)]
pub struct Token {
    pub name: String,
    pub secret: Vec<u8>,
    /// Export name -> read-only grant.
    pub grants: HashMap<String, bool>,
}

/// An export and who may reach it.
#[derive(Debug)]
pub struct Served {
    pub export: Arc<Export>,
    /// Networks allowed to mount it; empty: any.
    pub clients: Vec<IpNet>,
}

impl Served {
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
            v4 => v4,
        };
        self.clients.is_empty() || self.clients.iter().any(|n| n.contains(&peer))
    }
}

/// What the server serves now; replaced whole on reload.
#[derive(Debug, Default)]
pub struct State {
    pub exports: HashMap<String, Served>,
    pub tokens: Vec<Token>,
    /// Token files that do not exist yet (only when read with [`Tokens::OnlyRead`]):
    /// fsserver creates them on its first start.
    pub tokens_to_create: Vec<PathBuf>,
}

/// Whether reading a configuration may create the token files it names that are missing
/// (a start, a reload), or only reads (`check-config`, which writes nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokens {
    Create,
    OnlyRead,
}

/// The secret in `path`, created there when missing and `tokens` allows it; None when it
/// is missing and may not be created.
fn token_secret(path: &Path, tokens: Tokens) -> Result<Option<Vec<u8>>> {
    if tokens == Tokens::OnlyRead && !path.exists() {
        return Ok(None);
    }
    Ok(Some(crate::access::token::load_or_create(path)?.0))
}

impl State {
    /// The token whose secret `verifies` the proof, trying each in turn.
    pub fn token_for(&self, verifies: impl Fn(&[u8]) -> bool) -> Option<&Token> {
        self.tokens.iter().find(|t| verifies(&t.secret))
    }
}

/// Parses the file at `path`; errors name the line.
pub fn read(path: &Path) -> Result<File> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Builds the state a checked file describes: opens every export directory and reads
/// every token file.
pub fn state_of(file: &File, default_token: &Path, tokens_may: Tokens) -> Result<State> {
    let mut exports = HashMap::new();
    for e in &file.export {
        if e.name.is_empty() || e.name.contains('/') || e.name.contains(':') {
            bail!(
                "export {:?}: a name is non-empty, without '/' or ':'",
                e.name
            );
        }
        if !e.path.is_dir() {
            bail!(
                "export {:?}: {} is not a directory",
                e.name,
                e.path.display()
            );
        }
        if !e.root_squash && e.all_squash {
            bail!(
                "export {:?}: root_squash = false and all_squash = true conflict",
                e.name
            );
        }
        let mut export = Export::open(e.name.clone(), e.path.clone(), e.read_only)
            .with_context(|| format!("export {:?}: cannot open {}", e.name, e.path.display()))?;
        export.devices = e.dev;
        export.identity = Policy {
            squash: match (e.root_squash, e.all_squash) {
                (_, true) => Squash::All,
                (false, _) => Squash::None,
                (true, false) => Squash::Root,
            },
            anon_uid: e.anonuid.or(file.anonuid).unwrap_or(ANONYMOUS),
            anon_gid: e.anongid.or(file.anongid).unwrap_or(ANONYMOUS),
        };
        let clients = e
            .clients
            .iter()
            .flatten()
            .map(|c| {
                c.parse::<IpNet>()
                    .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                    .with_context(|| format!("export {:?}: {c:?} is not a network (CIDR)", e.name))
            })
            .collect::<Result<Vec<_>>>()?;
        let served = Served {
            export: Arc::new(export),
            clients,
        };
        if exports.insert(e.name.clone(), served).is_some() {
            bail!("export {:?} is defined twice", e.name);
        }
    }
    if exports.is_empty() {
        bail!("no [[export]]: nothing to serve");
    }
    let mut unshared: Vec<&mut Export> = exports
        .values_mut()
        .filter_map(|s| Arc::get_mut(&mut s.export))
        .collect();
    Export::share_lease_roots(&mut unshared);
    let mut tokens = Vec::new();
    let mut tokens_to_create = Vec::new();
    // A token file not there yet (check-config) stands for a secret of its own.
    let mut secret_of = |path: &Path| -> Result<Vec<u8>> {
        match token_secret(path, tokens_may)? {
            Some(secret) => Ok(secret),
            None => {
                tokens_to_create.push(path.to_path_buf());
                Ok(format!("not yet created: {}", path.display()).into_bytes())
            }
        }
    };
    if file.token.is_empty() {
        let path = file.token_file.as_deref().unwrap_or(default_token);
        let secret = secret_of(path).with_context(|| format!("token file {}", path.display()))?;
        let grants = exports.keys().map(|n| (n.clone(), false)).collect();
        tokens.push(Token {
            name: "default".into(),
            secret,
            grants,
        });
    }
    for t in &file.token {
        let secret = secret_of(&t.file)
            .with_context(|| format!("token {:?}: {}", t.name, t.file.display()))?;
        let mut grants = HashMap::new();
        for g in &t.exports {
            let (name, read_only) = match g.split_once(':') {
                Some((n, "ro")) => (n, true),
                Some((n, "rw")) => (n, false),
                Some(_) => bail!(
                    "token {:?}: {g:?}: expected NAME, NAME:ro or NAME:rw",
                    t.name
                ),
                None => (g.as_str(), false),
            };
            if !exports.contains_key(name) {
                bail!("token {:?}: no export named {name:?}", t.name);
            }
            grants.insert(name.to_string(), read_only);
        }
        if tokens.iter().any(|o: &Token| o.name == t.name) {
            bail!("token {:?} is defined twice", t.name);
        }
        if tokens.iter().any(|o: &Token| o.secret == secret) {
            bail!("token {:?}: the same secret as another token", t.name);
        }
        tokens.push(Token {
            name: t.name.clone(),
            secret,
            grants,
        });
    }
    Ok(State {
        exports,
        tokens,
        tokens_to_create,
    })
}

/// A human summary of a checked state, for `fsserver check-config`.
pub fn explain(file: &File, state: &State) -> String {
    let mut out = String::new();
    let listen = if file.listen.is_empty() {
        vec!["0.0.0.0:7070".to_string()]
    } else {
        file.listen.clone()
    };
    out.push_str(&format!("listens on {}\n", listen.join(", ")));
    out.push_str(if file.plaintext {
        "without TLS (plaintext)\n"
    } else {
        "with TLS 1.3\n"
    });
    if let Some(m) = &file.metrics {
        out.push_str(&format!(
            "serves Prometheus metrics on http://{m}/metrics\n"
        ));
    }
    if let Some(c) = &file.control_socket {
        out.push_str(&format!("answers fsserver status on {}\n", c.display()));
    }
    let mut names: Vec<&String> = state.exports.keys().collect();
    names.sort();
    for name in names {
        let s = &state.exports[name];
        let e = &s.export;
        let clients = if s.clients.is_empty() {
            "any address".to_string()
        } else {
            s.clients
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        // In the file's own words.
        let squash = match e.identity.squash {
            Squash::Root => "root_squash",
            Squash::None => "root_squash = false",
            Squash::All => "all_squash",
        };
        out.push_str(&format!(
            "export {name}: {} {}, {squash} (anonuid {}, anongid {}){}, to {clients}\n",
            e.dir.display(),
            if e.read_only {
                "read_only"
            } else {
                "read-write"
            },
            e.identity.anon_uid,
            e.identity.anon_gid,
            if e.devices { ", dev" } else { "" },
        ));
    }
    for t in &state.tokens {
        let mut grants: Vec<String> = t
            .grants
            .iter()
            .map(|(n, ro)| format!("{n}{}", if *ro { ":ro" } else { "" }))
            .collect();
        grants.sort();
        out.push_str(&format!("token {}: {}\n", t.name, grants.join(", ")));
    }
    for path in &state.tokens_to_create {
        out.push_str(&format!(
            "token file {} does not exist yet: fsserver creates it (mode 0600) on its first start\n",
            path.display()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn listen_addresses_get_the_default_port() {
        use super::with_default_port as p;
        assert_eq!(p("0.0.0.0"), "0.0.0.0:7070");
        assert_eq!(p("[::]"), "[::]:7070");
        assert_eq!(p("::1"), "[::1]:7070");
        assert_eq!(p("127.0.0.1:0"), "127.0.0.1:0");
        assert_eq!(p("[::1]:9"), "[::1]:9");
        assert_eq!(p("localhost"), "localhost:7070");
        assert_eq!(p("localhost:80"), "localhost:80");
        assert_eq!(
            p("1.2.3.4").parse::<std::net::SocketAddr>().unwrap().port(),
            7070
        );
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(deserialize_with = "super::duration")]
            t: Option<std::time::Duration>,
        }
        let t: T = toml::from_str("t = 0.5").unwrap();
        assert_eq!(t.t, Some(std::time::Duration::from_millis(500)));
        let d = super::parse_duration;
        assert_eq!(d("2m"), Ok(std::time::Duration::from_secs(120)));
        assert_eq!(d("0.5"), Ok(std::time::Duration::from_millis(500)));
        assert!(d("soon").is_err());
    }

    use super::*;

    #[test]
    fn unknown_keys_are_errors_with_their_line() {
        let e = toml::from_str::<File>("listen = [\"127.0.0.1:0\"]\n\n[[export]]\nname = \"d\"\npath = \"/tmp\"\nreadonly = true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 6") && e.contains("readonly"), "{e}");
    }

    #[test]
    fn the_contract_example_parses() {
        let text = r#"
listen = ["0.0.0.0:7070", "[::]:7070"]
[[export]]
name = "data"
path = "/srv/data"
read_only = false
root_squash = true                 # false: like --no-root-squash
clients = ["10.0.0.0/8", "127.0.0.1/32"]
[[token]]
name = "backup"
file = "/etc/fsserver/backup.token"
exports = ["data"]                 # "data:ro" grants read-only
"#;
        let f: File = toml::from_str(text).unwrap();
        assert_eq!(f.listen.len(), 2);
        assert_eq!(f.export[0].clients.as_ref().unwrap().len(), 2);
        assert!(f.export[0].root_squash);
        assert_eq!(f.token[0].exports, ["data"]);
    }

    #[test]
    fn client_networks_match_v4_and_mapped_v6() {
        let s = Served {
            export: Arc::new(Export::open("d".into(), "/tmp".into(), false).unwrap()),
            clients: vec!["10.0.0.0/8".parse().unwrap()],
        };
        assert!(s.allows("10.1.2.3".parse().unwrap()));
        assert!(s.allows("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!s.allows("192.168.1.1".parse().unwrap()));
    }
}
