//! TURN over TLS (RFC 8656 §3.1) with rustls: TLS 1.2 and 1.3, the certificate chain and
//! key from PEM files, ALPN `stun.turn` and `stun.nat-discovery` (RFC 7443) offered and a
//! client without ALPN (Chromium sends none) served all the same.
//!
//! [`Tls::reload`] reads the files again (SIGHUP): new connections get the new
//! certificate, live ones keep theirs, and a file that does not load leaves the old
//! certificate in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::Context as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::version::{TLS12, TLS13};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// The ALPN protocol names of STUN and TURN (RFC 7443 §6).
pub(super) const ALPN: [&[u8]; 2] = [b"stun.turn", b"stun.nat-discovery"];

/// Where the certificate chain and its key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    /// PEM certificates, the server's own first, then its intermediates.
    pub(crate) cert: PathBuf,
    /// The PEM private key of the first certificate (PKCS#8, PKCS#1 or SEC1).
    pub(crate) key: PathBuf,
}

/// The TLS side of the listeners: the current server configuration, replaced whole on
/// reload.
pub(super) struct Tls {
    files: TlsFiles,
    acceptor: RwLock<TlsAcceptor>,
}

impl Tls {
    /// Loads `files`; the error names the file that failed and why.
    pub(super) fn load(files: TlsFiles) -> anyhow::Result<Tls> {
        let config = server_config(&files)?;
        Ok(Tls {
            files,
            acceptor: RwLock::new(TlsAcceptor::from(Arc::new(config))),
        })
    }

    /// The acceptor for a new connection.
    pub(super) fn acceptor(&self) -> TlsAcceptor {
        self.acceptor
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the certificate and key again; on failure the current ones stay.
    pub(super) fn reload(&self) -> anyhow::Result<()> {
        let config = server_config(&self.files)?;
        *self
            .acceptor
            .write()
            .unwrap_or_else(PoisonError::into_inner) = TlsAcceptor::from(Arc::new(config));
        Ok(())
    }

    pub(super) fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// The rustls server configuration for `files`: ring as the provider, TLS 1.3 and 1.2,
/// no client certificates, the STUN ALPN names.
fn server_config(files: &TlsFiles) -> anyhow::Result<ServerConfig> {
    let chain = certificate_chain(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|error| {
        anyhow::anyhow!(
            "TLS private key {}: {error} (a PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block is needed)",
            files.key.display()
        )
    })?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(&[&TLS13, &TLS12])
        .context("choosing the TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| {
            format!(
                "TLS certificate {} with key {}",
                files.cert.display(),
                files.key.display()
            )
        })?;
    config.alpn_protocols = ALPN.iter().map(|name| name.to_vec()).collect();
    Ok(config)
}

/// Every certificate of the PEM file at `path`; at least one.
fn certificate_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|error| anyhow::anyhow!("TLS certificate chain {}: {error}", path.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "TLS certificate chain {}: no CERTIFICATE block in the file",
        path.display()
    );
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `name` written as PEM files into a fresh directory.
    struct TestCertificate {
        directory: PathBuf,
        files: TlsFiles,
    }

    impl TestCertificate {
        fn new(name: &str) -> TestCertificate {
            let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()])
                .expect("generating a certificate");
            let directory = std::env::temp_dir().join(format!(
                "turn-relay-tls-test-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::create_dir_all(&directory).expect("temporary directory");
            let files = TlsFiles {
                cert: directory.join("cert.pem"),
                key: directory.join("key.pem"),
            };
            std::fs::write(&files.cert, certified.cert.pem()).expect("writing the certificate");
            std::fs::write(&files.key, certified.signing_key.serialize_pem())
                .expect("writing the key");
            TestCertificate { directory, files }
        }
    }

    impl Drop for TestCertificate {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.directory);
        }
    }

    fn error_of(files: &TlsFiles) -> String {
        match Tls::load(files.clone()) {
            Ok(_) => panic!("{files:?} loaded"),
            Err(error) => format!("{error:#}"),
        }
    }

    #[test]
    fn a_certificate_and_its_key_load_and_offer_the_stun_alpn_names() {
        let certificate = TestCertificate::new("turn.example.test");
        let tls = Tls::load(certificate.files.clone()).expect("loads");
        let config = tls.acceptor().config().clone();
        assert_eq!(
            config.alpn_protocols,
            [b"stun.turn".to_vec(), b"stun.nat-discovery".to_vec()]
        );
        tls.reload().expect("reloads");
    }

    #[test]
    fn missing_or_bad_files_are_errors_naming_the_file() {
        let certificate = TestCertificate::new("turn.example.test");
        let missing = TlsFiles {
            cert: certificate.directory.join("nowhere.pem"),
            ..certificate.files.clone()
        };
        assert!(
            error_of(&missing).contains("TLS certificate chain")
                && error_of(&missing).contains("nowhere.pem")
        );
        let garbage = certificate.directory.join("garbage.pem");
        std::fs::write(&garbage, "not PEM at all").expect("write");
        let no_certificate = TlsFiles {
            cert: garbage.clone(),
            ..certificate.files.clone()
        };
        assert!(error_of(&no_certificate).contains("no CERTIFICATE block"));
        let no_key = TlsFiles {
            key: garbage,
            ..certificate.files.clone()
        };
        let message = error_of(&no_key);
        assert!(
            message.contains("TLS private key") && message.contains("garbage.pem"),
            "{message}"
        );
        // A key that is not the certificate's.
        let other = TestCertificate::new("other.example.test");
        let mismatched = TlsFiles {
            key: other.files.key.clone(),
            ..certificate.files.clone()
        };
        let message = error_of(&mismatched);
        assert!(message.contains("cert.pem with key"), "{message}");
    }

    #[test]
    fn a_failed_reload_keeps_the_current_certificate() {
        let certificate = TestCertificate::new("turn.example.test");
        let tls = Tls::load(certificate.files.clone()).expect("loads");
        let before = Arc::as_ptr(tls.acceptor().config());
        std::fs::write(&certificate.files.cert, "broken").expect("write");
        assert!(tls.reload().is_err());
        assert_eq!(Arc::as_ptr(tls.acceptor().config()), before);
        let renewed = TestCertificate::new("turn.example.test");
        std::fs::copy(&renewed.files.cert, &certificate.files.cert).expect("copy");
        std::fs::copy(&renewed.files.key, &certificate.files.key).expect("copy");
        tls.reload().expect("the renewed pair loads");
        assert_ne!(Arc::as_ptr(tls.acceptor().config()), before);
    }
}
