use anyhow::{bail, Context, Result};
use clap::Parser;
use fsmount::cli::{Args, Sub};
use fsmount::daemon::{self, Notifier};
use fsmount::mount::{self, MountRequest};
use fsmount::options::{parse_options, parse_source};

fn prepare(args: &Args) -> Result<MountRequest> {
    let (Some(source_text), Some(mountpoint)) = (&args.source, &args.mountpoint) else {
        bail!("a SOURCE and a MOUNTPOINT are needed");
    };
    let source = parse_source(source_text).map_err(anyhow::Error::msg)?;
    let options = parse_options(&args.options).map_err(anyhow::Error::msg)?;
    let meta = std::fs::metadata(mountpoint)
        .with_context(|| format!("mount point {} does not exist", mountpoint.display()))?;
    if !meta.is_dir() {
        bail!("mount point {} is not a directory", mountpoint.display());
    }
    let mountpoint = mountpoint.canonicalize()?;
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
            "-s" | "-n" | "-v" => {}
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
    let request = match prepare(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fsmount: {e:#}");
            std::process::exit(1);
        }
    };
    let notifier = if args.foreground {
        Notifier::foreground()
    } else {
        match daemon::background() {
            Ok(n) => n,
            Err(e) => {
                eprintln!("fsmount: cannot fork: {e}");
                std::process::exit(1);
            }
        }
    };
    if let Err(e) = fsmount::logging::init(args.foreground, request.options.log_file.as_deref()) {
        let msg = format!("cannot open the log file: {e}");
        let mut notifier = notifier;
        notifier.fail(&msg);
        eprintln!("fsmount: {msg}");
        std::process::exit(1);
    }
    if let Err(e) = mount::run(request, notifier) {
        if args.foreground {
            // Already reported through the notifier in background mode.
            eprintln!("fsmount: {e}");
        }
        std::process::exit(1);
    }
}
