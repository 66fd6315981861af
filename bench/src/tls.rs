//! TLS for `wss://` targets (rustls, ring as the crypto provider): the client
//! configuration every driver thread shares, certificate verification on by default
//! against the system's roots, `--ca FILE` to trust given certificates instead, and
//! `--insecure` to accept any certificate (a self-signed test one) while still checking
//! the handshake's signatures.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Bytes one connection's TLS session may hold waiting for the socket: application data
/// not yet encrypted plus records not yet written (rustls's default is 64 KiB each). What
/// does not fit waits in the connection's own output queue, which the chat phase already
/// bounds, and is freed once written; a session holds nothing while the socket keeps up.
pub const SESSION_BUFFER_LIMIT: usize = 16 * 1024;

/// How `wss://` targets are verified.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct TlsSettings {
    /// Accept any certificate (`--insecure`).
    pub insecure: bool,
    /// Trust the certificates in this PEM file instead of the system's (`--ca`).
    pub ca: Option<PathBuf>,
}

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--ca {path}: {why}")]
    Ca { path: String, why: String },
    #[error(
        "no trusted root certificate in the system's store{detail}: give --ca FILE, or --insecure \
         for a self-signed test certificate"
    )]
    NoRoots { detail: String },
    #[error("TLS with ring: {0}")]
    Provider(rustls::Error),
    #[error("bad --url {url:?}: {name:?} cannot be a TLS server name")]
    ServerName { url: String, name: String },
}

/// The client configuration for `settings`.
///
/// # Errors
/// A `--ca` file that cannot be read or holds no certificate, no system roots at all.
pub fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Provider)?;
    let config = if settings.insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))).with_no_client_auth()
    } else {
        builder.with_root_certificates(roots(settings)?).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The name a target's certificate must carry (also sent as SNI).
///
/// # Errors
/// A host that is neither a DNS name nor an IP address.
pub fn server_name(url: &str, host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string())
        .map_err(|_| TlsError::ServerName { url: url.to_string(), name: host.to_string() })
}

fn roots(settings: &TlsSettings) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    if let Some(path) = &settings.ca {
        let ca_error = |why: String| TlsError::Ca { path: path.display().to_string(), why };
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| ca_error(e.to_string()))?;
        for cert in certs {
            let cert = cert.map_err(|e| ca_error(e.to_string()))?;
            store.add(cert).map_err(|e| ca_error(format!("not a usable CA certificate: {e}")))?;
        }
        if store.is_empty() {
            return Err(ca_error("no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".into()));
        }
        return Ok(store);
    }
    let found = rustls_native_certs::load_native_certs();
    store.add_parsable_certificates(found.certs);
    if store.is_empty() {
        let detail = found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default();
        return Err(TlsError::NoRoots { detail });
    }
    Ok(store)
}

/// `--insecure`: any certificate passes; the handshake's signatures are still verified,
/// so the session is at least with the holder of the certificate's key.
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
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused_with_its_name() {
        let path = std::env::temp_dir().join(format!("loadgen-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let settings = TlsSettings { insecure: false, ca: Some(path.clone()) };
        let e = client_config(&settings).unwrap_err().to_string();
        assert!(e.starts_with(&format!("--ca {}", path.display())) && e.contains("no certificate"), "{e}");
        std::fs::remove_file(&path).unwrap();
        let missing = TlsSettings { insecure: false, ca: Some("/nonexistent/ca.pem".into()) };
        assert!(client_config(&missing).unwrap_err().to_string().starts_with("--ca /nonexistent/ca.pem"));
    }

    #[test]
    fn server_names_are_dns_names_or_addresses() {
        assert!(server_name("wss://localhost/", "localhost").is_ok());
        assert!(server_name("wss://127.0.0.1/", "127.0.0.1").is_ok());
        assert!(server_name("wss://a b/", "a b").is_err());
    }
}
