//! TLS client settings for trunks (rustls with the ring provider): the trunk's CA
//! bundle when configured, else the webpki root certificates; our certificate as a
//! client certificate for trunks that require mutual TLS.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::sip::TlsIdentity;

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

/// A client configuration trusting the PEM bundle `ca`, or the webpki roots, and
/// presenting `identity` when the server asks for a client certificate.
pub(crate) fn client_config(
    ca: Option<&Path>,
    identity: Option<&TlsIdentity>,
) -> Result<Arc<rustls::ClientConfig>, String> {
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
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(id.certs.clone(), id.key.clone_key())
            .map_err(|e| format!("TLS client certificate: {e}"))?,
    };
    Ok(Arc::new(config))
}

/// The target for a trunk: its server name (host or `tls_server_name`), roots and
/// client certificate, if any.
pub(crate) fn target(
    server_name: &str,
    ca: Option<&Path>,
    identity: Option<&TlsIdentity>,
) -> Result<TlsTarget, String> {
    let server_name = ServerName::try_from(server_name.to_string())
        .map_err(|e| format!("TLS server name {server_name:?}: {e}"))?;
    Ok(TlsTarget {
        server_name,
        config: client_config(ca, identity)?,
    })
}

/// Loads a PEM certificate chain and private key as a TLS identity.
pub(crate) fn load_identity(cert: &Path, key: &Path) -> Result<TlsIdentity, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE block", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    Ok(TlsIdentity {
        certs,
        key: Arc::new(key),
    })
}
