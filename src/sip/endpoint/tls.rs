//! TLS client settings for trunks (rustls with the ring provider): the trunk's CA
//! bundle when configured, else the webpki root certificates.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// What a TLS connection to one trunk address needs.
#[derive(Clone)]
pub(crate) struct TlsTarget {
    /// Name verified against the certificate.
    pub server_name: ServerName<'static>,
    /// Client configuration (roots).
    pub config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTarget")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// A client configuration trusting the PEM bundle `ca`, or the webpki roots.
pub(crate) fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("tls_ca {}: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("tls_ca {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("tls_ca {}: no certificate", path.display()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("tls_ca {}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The target for a trunk: its server name (host or `tls_server_name`) and roots.
pub(crate) fn target(server_name: &str, ca: Option<&Path>) -> Result<TlsTarget, String> {
    let server_name = ServerName::try_from(server_name.to_string())
        .map_err(|e| format!("TLS server name {server_name:?}: {e}"))?;
    Ok(TlsTarget {
        server_name,
        config: client_config(ca)?,
    })
}
