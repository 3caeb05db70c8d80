//! The rustls server configuration of the public listener (HTTP/1.1 over TLS). The
//! handshakes themselves run in [`super::serve`], each on its connection's task,
//! bounded by `http.max_tls_handshakes` and `http.tls_handshake_timeout`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Errors setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be used.
    #[error("tls.cert {path}: {message}")]
    Cert {
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// The key file could not be used.
    #[error("tls.key {path}: {message}")]
    Key {
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// rustls refused the pair.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Loads a PEM certificate chain and key into a rustls server config (HTTP/1.1).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.display().to_string(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert.display().to_string(),
            message: "no CERTIFICATE block found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
