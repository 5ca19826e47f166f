//! What installing needs besides the binaries, generated from the clap definitions of
//! fsserver and fsmount, under a directory:
//!
//! - `man/man8/fsserver.8`, `man/man8/fsmount.8` (and each subcommand's page, e.g.
//!   `fsserver-status.8`), each command's page ending with the hand-written sections in
//!   `dist/man/NAME.8.extra` (service, files, mount helper, fstab);
//! - `man/man5/fsserver.toml.5`, the exports file, hand-written (`dist/man/`);
//! - `completions/bash/{fsserver,fsmount}`, `completions/zsh/_{fsserver,fsmount}`,
//!   `completions/fish/{fsserver,fsmount}.fish`.
//!
//! `cargo run -p xtask -- dist DIR` writes them for `scripts/package.sh`; the package test
//! calls [`dist`] itself, so that it needs no build of xtask beyond the suite's own.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

/// Writes the man pages and completions under `dir`.
pub fn dist(dir: &Path) -> std::io::Result<()> {
    let commands = [
        fsserver::cli::Args::command().name("fsserver"),
        fsmount::cli::Args::command().name("fsmount"),
    ];
    let man = dir.join("man/man8");
    std::fs::create_dir_all(&man)?;
    for (cmd, extra) in commands.iter().zip([FSSERVER_EXTRA, FSMOUNT_EXTRA]) {
        man_pages(cmd.clone(), extra, &man)?;
    }
    let man5 = dir.join("man/man5");
    std::fs::create_dir_all(&man5)?;
    std::fs::write(man5.join("fsserver.toml.5"), FSSERVER_TOML_5)?;
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

/// Sections of the commands' pages that no `--help` has room for (roff).
const FSSERVER_EXTRA: &str = include_str!("../../dist/man/fsserver.8.extra");
const FSMOUNT_EXTRA: &str = include_str!("../../dist/man/fsmount.8.extra");
/// The exports file's page.
const FSSERVER_TOML_5: &str = include_str!("../../dist/man/fsserver.toml.5");

/// Section 8 (system administration): the command's page, with `extra` before its VERSION
/// section, and one page per subcommand.
fn man_pages(cmd: clap::Command, extra: &str, dir: &Path) -> std::io::Result<()> {
    let cmd = cmd.version(env!("CARGO_PKG_VERSION"));
    let name = cmd.get_name().to_string();
    std::fs::write(
        dir.join(format!("{name}.8")),
        page_with(cmd.clone(), extra)?,
    )?;
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

/// The page clap_mangen renders, with `extra` inserted before its VERSION section.
fn page_with(cmd: clap::Command, extra: &str) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).section("8").render(&mut buf)?;
    let page = String::from_utf8(buf).map_err(std::io::Error::other)?;
    let at = page.find("\n.SH VERSION").map_or(page.len(), |i| i + 1);
    Ok([&page[..at], extra, &page[at..]].concat().into_bytes())
}
