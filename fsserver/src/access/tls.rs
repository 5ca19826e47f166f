//! The server's TLS identity and configuration. TLS 1.3 only, through rustls with the
//! aws-lc-rs provider. The certificate and key come from `--tls-cert`/`--tls-key`, or else from
//! `tls-cert.pem`/`tls-key.pem` beside the token file, created (self-signed ECDSA P-256,
//! key mode 0600) on first start and kept across restarts, so clients that pinned its
//! fingerprint keep working.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Where the certificate and key are, and whether to create them when missing.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Created on first start (the default paths); given files must exist.
    pub create: bool,
}

impl Identity {
    /// The default pair, beside the token file.
    pub fn beside(token_file: &Path) -> Identity {
        let dir = token_file.parent().unwrap_or(Path::new("."));
        Identity {
            cert: dir.join("tls-cert.pem"),
            key: dir.join("tls-key.pem"),
            create: true,
        }
    }
}

/// `sha256:` and the hex SHA-256 of a certificate (`protocol::stream::fingerprint`).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    protocol::stream::fingerprint(cert.as_ref())
}

/// The certificate chain and key of `id`, created first if allowed and missing. Returns
/// whether they were created.
pub fn load_or_create(
    id: &Identity,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, bool)> {
    let created = if id.create && !id.cert.exists() && !id.key.exists() {
        create(id)?;
        true
    } else {
        false
    };
    let key_meta =
        fs::metadata(&id.key).with_context(|| format!("TLS key {}", id.key.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if std::os::unix::fs::MetadataExt::uid(&key_meta) != me {
        bail!(
            "TLS key {} belongs to uid {}, not to the server's user ({me}): chown it",
            id.key.display(),
            std::os::unix::fs::MetadataExt::uid(&key_meta)
        );
    }
    let key_mode = key_meta.permissions().mode();
    if key_mode & 0o077 != 0 {
        bail!(
            "TLS key {0} is accessible by group or others (mode {1:04o}); run: chmod 600 {0}",
            id.key.display(),
            key_mode & 0o7777
        );
    }
    let chain = CertificateDer::pem_file_iter(&id.cert)
        .with_context(|| format!("TLS certificate {}", id.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("TLS certificate {}", id.cert.display()))?;
    if chain.is_empty() {
        bail!(
            "TLS certificate {}: no certificate in it",
            id.cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&id.key)
        .with_context(|| format!("TLS key {}", id.key.display()))?;
    Ok((chain, key, created))
}

/// Creates the pair, and their directory (mode 0700) when it is missing.
fn create(id: &Identity) -> Result<()> {
    for dir in [id.key.parent(), id.cert.parent()].into_iter().flatten() {
        if !dir.as_os_str().is_empty() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating the directory {}", dir.display()))?;
        }
    }
    let generated = rcgen::generate_simple_self_signed(vec!["fsserver".to_string()])
        .context("generating a TLS key and certificate")?;
    let write = |path: &Path, contents: String, mode: u32| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(contents.as_bytes())?;
        Ok(())
    };
    write(&id.key, generated.key_pair.serialize_pem(), 0o600)?;
    write(&id.cert, generated.cert.pem(), 0o644)?;
    Ok(())
}

/// A TLS 1.3 server configuration presenting `chain` with `key`. Sessions resume (stateful
/// cache and tickets), so a reconnecting fsmount skips the full handshake.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(protocol::stream::tls_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 configuration")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the TLS certificate and key do not go together")?;
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().context("TLS session tickets")?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_identity_is_kept_and_its_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::beside(&dir.path().join("token"));
        let (chain, _, created) = load_or_create(&id).unwrap();
        assert!(created);
        let mode = fs::metadata(&id.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, _, created) = load_or_create(&id).unwrap();
        assert!(!created);
        assert_eq!(fingerprint(&chain[0]), fingerprint(&again[0]));
        assert!(fingerprint(&chain[0]).starts_with("sha256:"));
        fs::set_permissions(&id.key, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(&id).err().unwrap().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
