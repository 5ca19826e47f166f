//! The shared secret clients prove they hold. Kept in a file of its own (mode 0600).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Reads the token in `path`; if the file does not exist, creates it (mode 0600) with 32
/// fresh random bytes as hex. Returns the token and whether it was created.
pub fn load_or_create(path: &Path) -> std::io::Result<(Vec<u8>, bool)> {
    match fs::read(path) {
        Ok(contents) => {
            let token = protocol::auth::token_from_file_contents(&contents).ok_or_else(|| {
                std::io::Error::other(format!("token file {} is empty", path.display()))
            })?;
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
