//! TLS to Redis (`rediss://`): the rustls client config every link and
//! blocking exchange of a node shares.
//!
//! The server's certificate is verified by default, against the system's
//! roots or against `--redis-ca FILE` (a PEM file of one or more CA
//! certificates, for a private CA). `--redis-insecure` turns verification
//! off for self-signed test setups: the connection is then encrypted but
//! anyone on the path can impersonate Redis.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{self, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use thiserror::Error;

/// Whom a node trusts to be its Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// The system's root certificates (Debian: /etc/ssl/certs).
    System,
    /// The CA certificates in a PEM file (`--redis-ca`).
    CaFile(PathBuf),
    /// Any certificate (`--redis-insecure`).
    Anyone,
}

/// A TLS setting the node cannot use.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("--redis-ca {path:?}: cannot read it as PEM certificates: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("--redis-ca {path:?}: no usable CA certificate in it")]
    NoCaInFile { path: PathBuf },
    #[error("rediss://: no system root certificates could be loaded ({reason}); name your CA with --redis-ca FILE")]
    NoSystemRoots { reason: String },
    #[error("rediss://: cannot set up TLS: {0}")]
    Config(#[from] rustls::Error),
    #[error("rediss://{host}: {host:?} is not a name a certificate can be checked against")]
    ServerName { host: String },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

/// The client config for `trust`.
///
/// # Errors
/// The CA file cannot be read or holds no certificate; no system roots.
pub fn client_config(trust: &Trust) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let config = match trust {
        Trust::Anyone => builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider()))),
        Trust::System => builder.with_root_certificates(system_roots()?),
        Trust::CaFile(path) => builder.with_root_certificates(roots_from(path)?),
    };
    Ok(Arc::new(config.with_no_client_auth()))
}

/// The name a server's certificate must carry: the host of its URL.
///
/// # Errors
/// The host is neither a DNS name nor an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName { host: host.into() })
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let reason = found.errors.first().map_or_else(|| "none found".to_string(), ToString::to_string);
        return Err(TlsError::NoSystemRoots { reason });
    }
    Ok(roots)
}

fn roots_from(path: &Path) -> Result<RootCertStore, TlsError> {
    let error = |reason: String| TlsError::CaFile { path: path.into(), reason };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| error(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::NoCaInFile { path: path.into() });
    }
    Ok(roots)
}

/// `--redis-insecure`: accepts any certificate, still checking that the
/// server holds its key (the handshake's signatures), so the session is
/// encrypted, though not authenticated.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = std::env::temp_dir().join(format!("sb-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(matches!(client_config(&Trust::CaFile(empty)), Err(TlsError::NoCaInFile { .. })));
        let missing = dir.join("missing.pem");
        let message = client_config(&Trust::CaFile(missing)).unwrap_err().to_string();
        assert!(message.starts_with("--redis-ca "), "{message}");
        assert!(client_config(&Trust::Anyone).is_ok());
        assert!(server_name("127.0.0.1").is_ok() && server_name("redis.example").is_ok());
        assert!(server_name("not a host!").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
