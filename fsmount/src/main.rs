use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use fsmount::daemon::{self, Notifier};
use fsmount::mount::{self, MountRequest};
use fsmount::options::{parse_options, parse_source};

/// Mount a directory exported by fsserver, like sshfs.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Unmount with `fusermount3 -u MOUNTPOINT` or `umount MOUNTPOINT`.\n`fsmount status MOUNTPOINT` shows connection, writeback and cache state;\n`fsmount sync MOUNTPOINT` waits until every write reached the server."
)]
struct Args {
    /// HOST:PORT:/NAME, e.g. 127.0.0.1:7070:/data (PORT defaults to 7070).
    source: String,
    /// Existing directory to mount on.
    mountpoint: PathBuf,
    /// Mount options, comma-separated: token_file=FILE, ro, allow_other, allow_root,
    /// auto_unmount, default_permissions, attr_timeout=SECS, entry_timeout=SECS, negative_timeout=SECS,
    /// cache_size=SIZE, readahead=SIZE, dirty_limit=SIZE, timeout=SECS, hard, soft,
    /// fsname=NAME, noexec, nosuid, nodev, noatime, ...
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Stay in the foreground (default: return once mounted, keep serving in the background).
    #[arg(short = 'f')]
    foreground: bool,
}

fn prepare(args: &Args) -> Result<MountRequest> {
    let source = parse_source(&args.source).map_err(anyhow::Error::msg)?;
    let options = parse_options(&args.options).map_err(anyhow::Error::msg)?;
    let meta = std::fs::metadata(&args.mountpoint)
        .with_context(|| format!("mount point {} does not exist", args.mountpoint.display()))?;
    if !meta.is_dir() {
        bail!(
            "mount point {} is not a directory",
            args.mountpoint.display()
        );
    }
    let mountpoint = args.mountpoint.canonicalize()?;
    let token_file = options
        .token_file
        .clone()
        .unwrap_or_else(protocol::auth::default_token_file);
    let token = protocol::auth::read_token_file(&token_file).map_err(anyhow::Error::msg)?;
    // Kept for rereading after the background process has moved to "/".
    let token_file = token_file.canonicalize()?;
    Ok(MountRequest {
        source,
        source_text: args.source.clone(),
        mountpoint,
        token,
        token_file,
        options,
    })
}

/// `fsmount status|sync MOUNTPOINT`: ask the running mount (see `fsmount::control`).
fn control_command() -> Option<i32> {
    let argv: Vec<String> = std::env::args().collect();
    let (cmd, mountpoint) = match argv.as_slice() {
        [_, cmd, mp] if (cmd == "status" || cmd == "sync") && !mp.starts_with('-') => (cmd, mp),
        [_, cmd, ..] if cmd == "status" || cmd == "sync" => {
            println!(
                "usage: fsmount {cmd} MOUNTPOINT\n\n{}",
                if cmd == "status" {
                    "Shows the mount's connection, reconnects, writeback, syncs waiting and cache."
                } else {
                    "Returns once every write so far is acknowledged by the server."
                }
            );
            return Some(
                if argv.len() == 3 && (argv[2] == "--help" || argv[2] == "-h") {
                    0
                } else {
                    2
                },
            );
        }
        _ => return None,
    };
    match fsmount::control::query(std::path::Path::new(mountpoint), cmd) {
        Ok(reply) => {
            print!("{reply}");
            Some(0)
        }
        Err(e) => {
            eprintln!("fsmount: {e}");
            Some(1)
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
    if let Some(code) = control_command() {
        std::process::exit(code);
    }
    let args = match as_mount_helper() {
        Some(argv) => Args::parse_from(argv),
        None => Args::parse(),
    };
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
