use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use fsserver::access::credentials::{self, Policy, Squash};
use fsserver::access::transport::Transport;
use fsserver::access::{tls, token};
use fsserver::cli::{Args, Sub};
use fsserver::config;
use fsserver::export::Export;
use fsserver::{defaults, server, Config, Shared};
use rustls_pki_types::pem::PemObject;
use tokio::signal::unix::{signal, SignalKind};

/// Where the TLS certificate and key are for these options.
fn tls_identity(
    token_file: &std::path::Path,
    cert: Option<&PathBuf>,
    key: Option<&PathBuf>,
) -> tls::Identity {
    match (cert, key) {
        (Some(cert), Some(key)) => tls::Identity {
            cert: cert.clone(),
            key: key.clone(),
            create: false,
        },
        _ => tls::Identity::beside(token_file),
    }
}

fn print_fingerprint(token_file: Option<PathBuf>, cert: Option<PathBuf>) -> Result<()> {
    let token_file = token_file.unwrap_or_else(protocol::auth::default_token_file);
    let fingerprint = match cert {
        Some(cert) => {
            let chain = rustls_pki_types::CertificateDer::pem_file_iter(&cert)
                .with_context(|| format!("TLS certificate {}", cert.display()))?
                .next()
                .with_context(|| format!("TLS certificate {}: empty", cert.display()))?
                .with_context(|| format!("TLS certificate {}", cert.display()))?;
            tls::fingerprint(&chain)
        }
        None => {
            let (chain, _, _) = tls::load_or_create(&tls::Identity::beside(&token_file))?;
            tls::fingerprint(&chain[0])
        }
    };
    println!("{fingerprint}");
    Ok(())
}

/// What the flags serve: their exports, to anyone holding the one token.
fn flags_state(args: &Args, token_path: &std::path::Path) -> Result<config::State> {
    let exports = parse_exports(args)?;
    let (secret, created) = token::load_or_create(token_path)
        .with_context(|| format!("token file {}", token_path.display()))?;
    if created {
        eprintln!(
            "fsserver: created token file {} (mode 0600); give it to clients",
            token_path.display()
        );
    }
    let grants = exports.keys().map(|n| (n.clone(), false)).collect();
    let exports = exports
        .into_iter()
        .map(|(n, export)| {
            let served = config::Served {
                export,
                clients: Vec::new(),
            };
            (n, served)
        })
        .collect();
    Ok(config::State {
        exports,
        tokens: vec![config::Token {
            name: "default".into(),
            secret,
            grants,
        }],
        tokens_to_create: Vec::new(),
    })
}

/// What to serve now: the exports file if there is one, else the flags.
fn load_state(args: &Args, token_path: &std::path::Path) -> Result<config::State> {
    match &args.config {
        Some(path) => config::state_of(&config::read(path)?, token_path, config::Tokens::Create)
            .with_context(|| format!("{}", path.display())),
        None => flags_state(args, token_path),
    }
}

fn parse_exports(args: &Args) -> Result<HashMap<String, Arc<Export>>> {
    let mut exports = HashMap::new();
    for spec in &args.exports {
        let (name, dir) = spec
            .split_once('=')
            .with_context(|| format!("--export {spec:?}: expected NAME=DIR"))?;
        if name.is_empty() || name.contains('/') {
            bail!("--export {spec:?}: the name must be non-empty and without '/'");
        }
        let dir = PathBuf::from(dir);
        if !dir.is_dir() {
            bail!("--export {spec:?}: {} is not a directory", dir.display());
        }
        let read_only = args.read_only.iter().any(|r| r == name);
        let mut export = Export::open(name.to_string(), dir.clone(), read_only)
            .with_context(|| format!("cannot open {}", dir.display()))?;
        export.devices = args.dev.iter().any(|d| d == name);
        let squash = match (
            args.no_root_squash.iter().any(|n| n == name),
            args.all_squash.iter().any(|n| n == name),
        ) {
            (false, false) => Squash::Root,
            (true, false) => Squash::None,
            (false, true) => Squash::All,
            (true, true) => bail!("export {name:?}: --no-root-squash and --all-squash conflict"),
        };
        export.identity = Policy {
            squash,
            anon_uid: args.anonuid,
            anon_gid: args.anongid,
        };
        if exports.insert(name.to_string(), Arc::new(export)).is_some() {
            bail!("--export {name:?} given twice");
        }
    }
    let named = [
        ("--read-only", &args.read_only),
        ("--dev", &args.dev),
        ("--no-root-squash", &args.no_root_squash),
        ("--all-squash", &args.all_squash),
    ];
    for (flag, names) in named {
        if let Some(n) = names.iter().find(|n| !exports.contains_key(*n)) {
            bail!("{flag} {n:?}: no such export");
        }
    }
    let mut unshared: Vec<&mut Export> = exports.values_mut().filter_map(Arc::get_mut).collect();
    Export::share_lease_roots(&mut unshared);
    Ok(exports)
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if let Some(sub) = args.command.take() {
        return subcommand(sub);
    }
    if let Some(path) = &args.config {
        let file = config::read(path)?;
        apply_file(&mut args, &file);
    }
    init_logging();
    raise_fd_limit();
    // Modes arrive from clients already masked; apply them as given.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());

    let token_path = args
        .token_file
        .clone()
        .unwrap_or_else(protocol::auth::default_token_file);
    let state = load_state(&args, &token_path)?;
    let mut config = server_config(&args);
    // Beside the control socket: that a run held locks, for the next start's grace period.
    let control_path = fsserver::control::socket_path(args.control_socket.as_deref(), &token_path);
    config.lock_state = Some(control_path.with_extension("locks"));
    config.lease_state = Some(control_path.with_extension("leases"));
    config.create_state = Some(control_path.with_extension("creates"));
    // Before the notes are opened (the socket is bound later): a first run after a reboot
    // has no /run/fsserver yet. A refusal here is reported when the socket is bound.
    let _ = fsserver::control::prepare_dir(&control_path);
    let shared = Arc::new(Shared::new(state, config, transport(&args, &token_path)?));
    if !args.no_disk_watch {
        shared.watch_disks();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(defaults::WORKERS)
        .build()?;
    let result = rt.block_on(serve(args, token_path, shared));
    // A request still running on a worker (a hung file system below the export) must not
    // keep the process: the drain deadline has passed.
    rt.shutdown_timeout(Duration::from_millis(100));
    result
}

/// `fingerprint`, `status` and `check-config`: answer and exit.
fn subcommand(sub: Sub) -> Result<()> {
    match sub {
        Sub::Fingerprint {
            config: Some(path), ..
        } => {
            let f = config::read(&path)?;
            print_fingerprint(f.token_file, f.tls_cert)
        }
        Sub::Fingerprint {
            config: None,
            token_file,
            tls_cert,
        } => print_fingerprint(token_file, tls_cert),
        Sub::Status {
            config: config_file,
            token_file,
            control_socket,
            metrics,
            json,
        } => {
            let (explicit, token) = match config_file {
                Some(path) => {
                    let f = config::read(&path)?;
                    (f.control_socket.clone(), f.token_file.clone())
                }
                None => (None, token_file),
            };
            let token = token.unwrap_or_else(protocol::auth::default_token_file);
            let path = fsserver::control::socket_path(
                control_socket.as_deref().or(explicit.as_deref()),
                &token,
            );
            let request = match (metrics, json) {
                (true, _) => "metrics",
                (false, true) => "status --json",
                (false, false) => "status",
            };
            let reply = fsserver::control::query(&path, request).map_err(anyhow::Error::msg)?;
            print!("{reply}");
            Ok(())
        }
        Sub::CheckConfig { file } => {
            let parsed = config::read(&file)?;
            if parsed.tls_cert.is_some() != parsed.tls_key.is_some() {
                bail!(
                    "{}: tls_cert and tls_key go together: give both, or neither",
                    file.display()
                );
            }
            let default_token = parsed
                .token_file
                .clone()
                .unwrap_or_else(protocol::auth::default_token_file);
            let state = config::state_of(&parsed, &default_token, config::Tokens::OnlyRead)
                .with_context(|| format!("{}", file.display()))?;
            print!("{}", config::explain(&parsed, &state));
            println!("{}: OK", file.display());
            Ok(())
        }
    }
}

/// An exports file's settings stand for the flags.
fn apply_file(args: &mut Args, f: &config::File) {
    args.listen = if f.listen.is_empty() {
        vec![format!("0.0.0.0:{}", defaults::PORT)]
    } else {
        f.listen.clone()
    };
    args.token_file = f.token_file.clone();
    args.tls_cert = f.tls_cert.clone().or(args.tls_cert.take());
    args.tls_key = f.tls_key.clone().or(args.tls_key.take());
    args.plaintext |= f.plaintext;
    let set = |v: &mut Duration, x: Option<Duration>| *v = x.unwrap_or(*v);
    set(&mut args.session_grace, f.session_grace);
    set(&mut args.handshake_timeout, f.handshake_timeout);
    set(&mut args.write_timeout, f.write_timeout);
    set(&mut args.drain_timeout, f.drain_timeout);
    set(&mut args.lease_time, f.lease_time);
    args.no_disk_watch |= f.disk_watch == Some(false);
    set(&mut args.recall_timeout, f.recall_timeout);
    set(&mut args.lock_grace, f.lock_grace);
    args.max_locks = f.max_locks.unwrap_or(args.max_locks);
    args.max_locks_per_token = f.max_locks_per_token.unwrap_or(args.max_locks_per_token);
    args.max_connections = f.max_connections.unwrap_or(args.max_connections);
    args.max_in_flight = f.max_in_flight.unwrap_or(args.max_in_flight);
    args.max_open = f.max_open.unwrap_or(args.max_open);
    args.max_sessions = f.max_sessions.unwrap_or(args.max_sessions);
    args.control_socket = f.control_socket.clone().or(args.control_socket.take());
    args.sendfile |= f.sendfile;
    args.metrics = f.metrics.clone().or(args.metrics.take());
}

/// Logs to stderr (`RUST_LOG`, default info); under journald without our own timestamps.
fn init_logging() {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    if protocol::stderr_is_journal() {
        logs.with_ansi(false).without_time().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

/// The server's limits from the flags (or the file's settings applied to them).
fn server_config(args: &Args) -> Config {
    Config {
        max_connections: args.max_connections,
        max_open: args.max_open.max(1),
        max_sessions: args.max_sessions.max(1),
        max_pending: args.max_handshakes.max(1),
        max_pending_per_source: args.max_handshakes_per_source.max(1),
        max_in_flight: args.max_in_flight.clamp(1, (defaults::WORKERS / 4) as u32),
        handshake_timeout: args.handshake_timeout,
        session_grace: args.session_grace,
        write_timeout: args.write_timeout.max(Duration::from_millis(100)),
        drain_timeout: args.drain_timeout,
        sendfile: args.sendfile,
        lease_time: args.lease_time,
        recall_timeout: args.recall_timeout,
        max_locks: args.max_locks,
        max_locks_per_token: args.max_locks_per_token,
        lock_grace: args.lock_grace,
        ..Config::default()
    }
}

/// TLS with the given or the self-made certificate (made on first start), or plaintext.
fn transport(args: &Args, token_path: &std::path::Path) -> Result<Transport> {
    if args.plaintext {
        tracing::warn!("--plaintext: connections are not encrypted");
        return Ok(Transport::Plaintext);
    }
    if args.tls_cert.is_some() != args.tls_key.is_some() {
        bail!(
            "a TLS certificate and its key go together: give both tls_cert and tls_key, or neither"
        );
    }
    let id = tls_identity(token_path, args.tls_cert.as_ref(), args.tls_key.as_ref());
    let (chain, key, created) = tls::load_or_create(&id)?;
    if created {
        eprintln!(
            "fsserver: created TLS key {} and certificate {}",
            id.key.display(),
            id.cert.display()
        );
    }
    tracing::info!(fingerprint = %tls::fingerprint(&chain[0]), cert = %id.cert.display(), "TLS 1.3");
    Ok(Transport::tls(tls::server_config(chain, key)?))
}

/// Listens, says so (stdout, systemd), serves until SIGTERM/SIGINT, reloading on SIGHUP.
async fn serve(args: Args, token_path: PathBuf, shared: Arc<Shared>) -> Result<()> {
    // Handlers first: a signal sent as soon as we say we are ready (a script, or systemd
    // reloading at once) must find them, not the default action (which kills).
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let hup = signal(SignalKind::hangup())?;
    let mut listeners = Vec::new();
    for listen in &args.listen {
        let listen = config::with_default_port(listen);
        let listener = listen_on(&listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        listeners.push(listener);
    }
    for served in shared.state().exports.values() {
        let e = &served.export;
        tracing::info!(name = %e.name, dir = %e.dir.display(), read_only = e.read_only,
            squash = %e.identity.squash.word(), "exporting");
    }
    if !credentials::switching() {
        tracing::warn!(
            uid = %nix::unistd::geteuid(),
            "not running as root: every request acts as this user, whoever the caller"
        );
    }
    let control_path = fsserver::control::socket_path(args.control_socket.as_deref(), &token_path);
    // Without it the server still serves; only `fsserver status` cannot reach it.
    let (control, _control_file) = match fsserver::control::bind(&control_path) {
        Ok((listener, file)) => (
            Some(tokio::spawn(fsserver::control::serve(
                listener,
                shared.clone(),
            ))),
            Some(file),
        ),
        Err(e) => {
            tracing::warn!("no control socket at {}: {e}", control_path.display());
            (None, None)
        }
    };
    let metrics = match &args.metrics {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            let shown = listener.local_addr()?;
            let shared = shared.clone();
            let task = tokio::spawn(protocol::metrics::serve(listener, move || {
                fsserver::stats::metrics_text(&shared)
            }));
            Some((task, shown))
        }
        None => None,
    };
    // Whoever started us may have stopped reading stdout: never fail (or die) on it.
    let mut out = std::io::stdout().lock();
    for l in &listeners {
        let _ = writeln!(out, "fsserver: listening on {}", l.local_addr()?);
    }
    if let Some((_, addr)) = &metrics {
        let _ = writeln!(out, "fsserver: metrics on http://{addr}/metrics");
    }
    let _ = out.flush();
    drop(out);
    fsserver::sd_notify::notify("READY=1");
    let reloading = tokio::spawn(reload_on_hangup(hup, args, token_path, shared.clone()));
    let shutdown = async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        fsserver::sd_notify::notify("STOPPING=1");
    };
    server::run(listeners, shared.clone(), shutdown).await;
    shared.locks.note_at_stop();
    shared.leases.note_at_stop();
    shared.create_verifiers.note_at_stop();
    reloading.abort();
    if let Some(c) = control {
        c.abort();
    }
    if let Some((task, _)) = metrics {
        task.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// A listener on `addr`. An IPv6 address is bound IPv6-only, as sshd and nfsd do, so
/// `[::]:7070` and `0.0.0.0:7070` can both be listened on (Linux would otherwise let the
/// IPv6 wildcard take IPv4 too, and the second bind fail).
async fn listen_on(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let bound = (|| {
            let socket = Socket::new(Domain::for_address(a), Type::STREAM, None)?;
            if a.is_ipv6() {
                socket.set_only_v6(true)?;
            }
            socket.set_reuse_address(true)?;
            socket.bind(&a.into())?;
            socket.listen(1024)?;
            socket.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(socket.into())
        })();
        match bound {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{addr}: no address"))))
}

/// SIGHUP: read the exports (and token files) again; a broken file changes nothing, is
/// logged at error and counted.
async fn reload_on_hangup(
    mut hup: tokio::signal::unix::Signal,
    args: Args,
    token_path: PathBuf,
    shared: Arc<Shared>,
) {
    while hup.recv().await.is_some() {
        fsserver::sd_notify::reloading();
        let (args, token_path) = (args.clone(), token_path.clone());
        // On a thread of its own, never one that ran a request: read as the server itself
        // (a 0600 token file, a 0700 config directory).
        let (done, loaded) = tokio::sync::oneshot::channel();
        let reader = std::thread::Builder::new()
            .name("fsserver-reload".into())
            .spawn(move || {
                let _ = done.send(load_state(&args, &token_path));
            });
        let loaded = match reader {
            Ok(_) => loaded
                .await
                .map_err(|_| anyhow::anyhow!("the reload thread died")),
            Err(e) => Err(anyhow::anyhow!("no thread to reload on: {e}")),
        };
        match loaded {
            Ok(Ok(state)) => {
                let ended = shared.reload(state);
                tracing::info!(ended, "reloaded the exports and tokens");
            }
            Ok(Err(e)) | Err(e) => {
                shared
                    .stats
                    .reload_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!("reload failed, still serving the previous configuration: {e:#}")
            }
        }
        fsserver::sd_notify::notify("READY=1");
    }
}

/// Raises the soft limit on open files to the hard limit: every client's open files and
/// connections are descriptors of this one process.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the open-file limit: {e}"),
    }
}
