//! The shared secret clients prove they hold. Kept in a file of its own (mode 0600).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Reads the token in `path` (refused if the file is open to group or others, or the
/// token is short: see `protocol::auth::check_token_file`); if the file does not exist,
/// creates it (mode 0600) with 32 fresh random bytes as hex. Returns the token and whether
/// it was created.
pub fn load_or_create(path: &Path) -> std::io::Result<(Vec<u8>, bool)> {
    match fs::read(path) {
        Ok(contents) => {
            let meta = fs::metadata(path)?;
            let me = nix::unistd::geteuid().as_raw();
            if std::os::unix::fs::MetadataExt::uid(&meta) != me {
                return Err(std::io::Error::other(format!(
                    "{} belongs to uid {}, not to the server's user ({me}): whoever owns it \
                     can change the token; chown it",
                    path.display(),
                    std::os::unix::fs::MetadataExt::uid(&meta)
                )));
            }
            let mode = meta.permissions().mode();
            let token =
                protocol::auth::check_token_file(&path.display().to_string(), mode, &contents)
                    .map_err(std::io::Error::other)?;
            Ok((token, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)?;
            }
            let mut raw = [0u8; 32];
            getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
            let token = hex::encode(raw);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            f.write_all(format!("{token}\n").as_bytes())?;
            Ok((token.into_bytes(), true))
        }
        Err(e) => Err(e),
    }
}
