use anyhow::{bail, Result};
use clap::Parser;
use fsmount::cli::{Args, Sub};
use fsmount::daemon::{self, Notifier};
use fsmount::kernel_mount;
use fsmount::mount::{self, MountRequest};
use fsmount::options::{parse_options, parse_source};

use fsmount::daemon::MOUNT_FAILED;

/// The mount point, checked: an existing directory that no fsmount serves yet.
fn mount_point(given: &std::path::Path) -> Result<std::path::PathBuf> {
    let shown = given.display();
    let mountpoint = match given.canonicalize() {
        Ok(p) => p,
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => bail!(
            "mount point {shown}: {e}: a mount whose fsmount has ended is still there; \
             unmount it first (umount -l {shown})"
        ),
        Err(e) => bail!("mount point {shown} does not exist ({e})"),
    };
    if let Some(on) = kernel_mount::mounts_on(&mountpoint).pop() {
        if on.fstype == format!("fuse.{}", kernel_mount::SUBTYPE) {
            bail!(
                "{shown} is already mounted ({}); unmount it first (umount {shown})",
                on.source
            );
        }
    }
    if !std::fs::metadata(&mountpoint)?.is_dir() {
        bail!("mount point {shown} is not a directory");
    }
    Ok(mountpoint)
}

fn prepare(args: &Args) -> Result<MountRequest> {
    let (Some(source_text), Some(mountpoint)) = (&args.source, &args.mountpoint) else {
        bail!("a SOURCE and a MOUNTPOINT are needed");
    };
    let source = parse_source(source_text).map_err(anyhow::Error::msg)?;
    let options = parse_options(&args.options).map_err(anyhow::Error::msg)?;
    let mountpoint = mount_point(mountpoint)?;
    let token_file = options
        .token_file
        .clone()
        .unwrap_or_else(protocol::auth::default_token_file);
    let token = protocol::auth::read_token_file(&token_file).map_err(anyhow::Error::msg)?;
    // Kept for rereading after the background process has moved to "/".
    let token_file = token_file.canonicalize()?;
    Ok(MountRequest {
        source,
        source_text: source_text.clone(),
        mountpoint,
        token,
        token_file,
        options,
    })
}

/// `fsmount status|sync MOUNTPOINT`: ask the running mount (see `fsmount::control`).
fn control_command(sub: Sub) -> i32 {
    let (mountpoint, request) = match sub {
        Sub::Status { mountpoint, json } => {
            (mountpoint, if json { "status --json" } else { "status" })
        }
        Sub::Sync { mountpoint } => (mountpoint, "sync"),
        Sub::Exports {
            server,
            options,
            json,
        } => return list_exports(&server, &options, json),
    };
    match fsmount::control::query(&mountpoint, request) {
        Ok(reply) => {
            print!("{reply}");
            // `sync` answers "synced", or says what failed.
            i32::from(request == "sync" && reply.trim() != "synced")
        }
        Err(e) => {
            eprintln!("fsmount: {e}");
            1
        }
    }
}

/// `fsmount exports HOST[:PORT] -o token_file=FILE`: what the token may mount from here.
fn list_exports(server: &str, options: &[String], json: bool) -> i32 {
    let listed = (|| -> Result<Vec<proto::ExportInfo>> {
        let source = parse_source(&format!("{server}:/-")).map_err(|_| {
            anyhow::anyhow!("{server:?}: expected HOST[:PORT], e.g. 127.0.0.1:7070 or [::1]")
        })?;
        let options = parse_options(options).map_err(anyhow::Error::msg)?;
        let token_file = options
            .token_file
            .clone()
            .unwrap_or_else(protocol::auth::default_token_file);
        let token = protocol::auth::read_token_file(&token_file).map_err(anyhow::Error::msg)?;
        let transport = if options.plaintext {
            fsmount::client::transport::Transport::Plaintext
        } else {
            let host = source
                .addr
                .rsplit_once(':')
                .map_or(source.addr.as_str(), |(h, _)| h);
            fsmount::client::transport::Transport::tls(host, &options.verify)
                .map_err(anyhow::Error::msg)?
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(fsmount::client::list_exports(
            &source.addr,
            &token,
            transport,
        ))
        .map_err(|e| match e {
            fsmount::remote::ClientError::Refused(m) if m.contains("no export named \"\"") => {
                anyhow::anyhow!(
                    "{}: this server does not list exports (an older fsserver)",
                    source.addr
                )
            }
            e => anyhow::anyhow!("{}: {e}", source.addr),
        })
    })();
    let exports = match listed {
        Ok(e) => e,
        Err(e) => {
            eprintln!("fsmount: {e:#}");
            return 1;
        }
    };
    let access = |e: &proto::ExportInfo| if e.read_only { "ro" } else { "rw" };
    if json {
        let list: Vec<serde_json::Value> = exports
            .iter()
            .map(|e| serde_json::json!({"name": e.name, "access": access(e), "squash": e.squash}))
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        println!("Export list for {server}:");
        for e in &exports {
            println!("/{:<24} {:<3} {}", e.name, access(e), e.squash);
        }
    }
    0
}

/// Arguments as mount(8) passes them to `/sbin/mount.fsxp` (a link to fsmount):
/// `SOURCE MOUNTPOINT [-s] [-f] [-n] [-v] [-o OPTIONS] [-t TYPE]`, turned into fsmount's.
/// Returns None when called under another name. `-f` (fake) means: do nothing.
fn as_mount_helper() -> Option<Vec<String>> {
    let mut argv = std::env::args();
    let name = argv.next()?;
    let base = std::path::Path::new(&name)
        .file_name()?
        .to_str()?
        .to_string();
    if !base.starts_with("mount.") {
        return None;
    }
    let mut out = vec![name];
    let mut rest = argv.peekable();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "-v" => out.push(a),
            "-s" | "-n" => {}
            "-f" => std::process::exit(0),
            "-t" => {
                rest.next();
            }
            "-o" => {
                out.push("-o".into());
                out.push(rest.next().unwrap_or_default());
            }
            _ => out.push(a),
        }
    }
    Some(out)
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(fsmount::auto_unmount::WATCHDOG_ARG) {
        std::process::exit(fsmount::auto_unmount::run_watchdog(&argv[2..]));
    }
    let mut args = match as_mount_helper() {
        Some(argv) => Args::parse_from(argv),
        None => Args::parse(),
    };
    if let Some(sub) = args.command.take() {
        std::process::exit(control_command(sub));
    }
    if args
        .options
        .iter()
        .flat_map(|o| o.split(','))
        .any(|o| o == "remount")
    {
        std::process::exit(remount(&args));
    }
    let request = match prepare(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fsmount: {e:#}");
            std::process::exit(MOUNT_FAILED);
        }
    };
    if args.verbose {
        let o = &request.options;
        eprintln!(
            "fsmount: mounting export {} of {} on {} (type fuse.{}, {}, {}{})",
            request.source.export,
            request.source.addr,
            request.mountpoint.display(),
            kernel_mount::SUBTYPE,
            if o.plaintext { "plaintext" } else { "TLS" },
            if o.read_only { "ro" } else { "rw" },
            match o.timeout {
                None => ", hard".to_string(),
                Some(t) => format!(", timeout {t:?}"),
            },
        );
    }
    let notifier = if args.foreground {
        Notifier::foreground()
    } else {
        match daemon::background(args.verbose) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("fsmount: cannot fork: {e}");
                std::process::exit(MOUNT_FAILED);
            }
        }
    };
    if let Err(e) = fsmount::logging::init(args.foreground, request.options.log_file.as_deref()) {
        let msg = format!("cannot open the log file: {e}");
        let mut notifier = notifier;
        notifier.fail(&msg);
        eprintln!("fsmount: {msg}");
        std::process::exit(MOUNT_FAILED);
    }
    if let Err(e) = mount::run(request, notifier) {
        if args.foreground {
            // Already reported through the notifier in background mode.
            eprintln!("fsmount: {e}");
        }
        std::process::exit(MOUNT_FAILED);
    }
}

/// `-o remount,...`: changes a running mount's kernel flags (see `kernel_mount::remount`).
/// Other options are those of the running session and cannot change without a new mount;
/// they are accepted (mount(8) passes fstab's along) and left as they are.
fn remount(args: &Args) -> i32 {
    let Some(mountpoint) = args.mountpoint.as_ref() else {
        eprintln!("fsmount: remount needs the MOUNTPOINT");
        return MOUNT_FAILED;
    };
    let options = match parse_options(&args.options) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("fsmount: {e}");
            return MOUNT_FAILED;
        }
    };
    let mountpoint = match std::path::absolute(mountpoint) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fsmount: {}: {e}", mountpoint.display());
            return MOUNT_FAILED;
        }
    };
    // ro or rw only when named (the last one said wins); else the mount keeps its own.
    let read_only = args
        .options
        .iter()
        .flat_map(|o| o.split(','))
        .rev()
        .find_map(|o| match o {
            "ro" => Some(true),
            "rw" => Some(false),
            _ => None,
        });
    match kernel_mount::remount(&mountpoint, read_only, &options.kernel_flags) {
        Ok(()) => {
            if args.verbose {
                eprintln!("fsmount: remounted {}", mountpoint.display());
            }
            0
        }
        Err(e) => {
            eprintln!("fsmount: {e}");
            MOUNT_FAILED
        }
    }
}
