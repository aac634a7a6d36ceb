//! TURN over TLS in tests: a self-signed certificate made for the run (rcgen), written as
//! the PEM files the daemon loads, and the rustls client configuration that trusts it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use base64::Engine as _;
use rcgen::PublicKeyData as _;
use rustls::crypto::ring::default_provider;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest, Sha256};

use crate::privilege::unique_name;

/// The ALPN names of STUN and TURN (RFC 7443).
pub const ALPN_TURN: &[u8] = b"stun.turn";

/// A self-signed certificate and its key as PEM files in a directory of their own,
/// removed on drop.
pub struct TestCertificate {
    directory: PathBuf,
    /// The certificate (chain) file: `tls.cert`.
    pub cert: PathBuf,
    /// The private key file: `tls.key`.
    pub key: PathBuf,
    der: CertificateDer<'static>,
    spki_sha256: String,
}

impl TestCertificate {
    /// A certificate for `names` (host names, or IP addresses, which become IP SANs).
    pub fn generate(names: &[&str]) -> Result<TestCertificate> {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let certified =
            rcgen::generate_simple_self_signed(names).context("generating a certificate")?;
        let directory = std::env::temp_dir().join(unique_name("tls"));
        std::fs::create_dir_all(&directory)
            .with_context(|| format!("creating {}", directory.display()))?;
        let certificate = TestCertificate {
            cert: directory.join("cert.pem"),
            key: directory.join("key.pem"),
            der: certified.cert.der().clone(),
            spki_sha256: base64::engine::general_purpose::STANDARD.encode(Sha256::digest(
                certified.signing_key.subject_public_key_info(),
            )),
            directory,
        };
        std::fs::write(&certificate.cert, certified.cert.pem())
            .with_context(|| format!("writing {}", certificate.cert.display()))?;
        std::fs::write(&certificate.key, certified.signing_key.serialize_pem())
            .with_context(|| format!("writing {}", certificate.key.display()))?;
        Ok(certificate)
    }

    /// Base64 of SHA-256 over the DER SubjectPublicKeyInfo: what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes.
    pub fn spki_sha256_base64(&self) -> &str {
        &self.spki_sha256
    }

    /// A client configuration trusting only this certificate, offering `alpn` (none when
    /// empty, as Chromium does).
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.der.clone())
            .context("trusting the test certificate")?;
        let mut config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .context("choosing the TLS versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|name| name.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

impl Drop for TestCertificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}
