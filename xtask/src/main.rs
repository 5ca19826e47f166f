//! `cargo run -p xtask -- dist DIR`: writes the man pages and shell completions of fsserver
//! and fsmount, generated from their clap definitions, under DIR:
//!
//! - `man/man8/fsserver.8`, `man/man8/fsmount.8` (and each subcommand's page, e.g.
//!   `fsserver-status.8`);
//! - `completions/bash/{fsserver,fsmount}`, `completions/zsh/_{fsserver,fsmount}`,
//!   `completions/fish/{fsserver,fsmount}.fish`.
//!
//! `scripts/install.sh` puts them in place.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cmd, dir] = args.as_slice() else {
        eprintln!("usage: cargo run -p xtask -- dist DIR");
        std::process::exit(2);
    };
    if cmd != "dist" {
        eprintln!("unknown task {cmd:?}; usage: cargo run -p xtask -- dist DIR");
        std::process::exit(2);
    }
    if let Err(e) = dist(Path::new(dir)) {
        eprintln!("xtask: {e}");
        std::process::exit(1);
    }
}

fn dist(dir: &Path) -> std::io::Result<()> {
    let commands = [
        fsserver::cli::Args::command().name("fsserver"),
        fsmount::cli::Args::command().name("fsmount"),
    ];
    let man = dir.join("man/man8");
    std::fs::create_dir_all(&man)?;
    for cmd in &commands {
        man_pages(cmd.clone(), &man)?;
    }
    for (shell, sub) in [
        (Shell::Bash, "bash"),
        (Shell::Zsh, "zsh"),
        (Shell::Fish, "fish"),
    ] {
        let out: PathBuf = dir.join("completions").join(sub);
        std::fs::create_dir_all(&out)?;
        for cmd in &commands {
            let mut cmd = cmd.clone();
            let name = cmd.get_name().to_string();
            clap_complete::generate_to(shell, &mut cmd, name, &out)?;
        }
    }
    Ok(())
}

/// Section 8 (system administration): the command's page and one per subcommand.
fn man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    let cmd = cmd.version(env!("CARGO_PKG_VERSION"));
    let name = cmd.get_name().to_string();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section("8")
        .render(&mut buf)?;
    std::fs::write(dir.join(format!("{name}.8")), buf)?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        // A one-shot tool: leaking the name spares clap's "string" feature, which would
        // make every build of fsserver and fsmount compile clap a second time.
        let full: &'static str = format!("{name}-{}", sub.get_name()).leak();
        let sub = sub.clone().name(full).version(env!("CARGO_PKG_VERSION"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(sub).section("8").render(&mut buf)?;
        std::fs::write(dir.join(format!("{full}.8")), buf)?;
    }
    Ok(())
}
