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

/// The certificates of the PEM bundle at `path` as trust roots; errors start with
/// the path.
fn load_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The SIP TLS listener's configuration: our `identity`, and when `client_ca` is
/// set, client certificates required and verified against it (mutual TLS).
pub(crate) fn server_config(
    identity: &TlsIdentity,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = load_roots(path).map_err(|e| format!("tls_client_ca {e}"))?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("tls_client_ca {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(identity.certs.clone(), identity.key.clone_key())
        .map_err(|e| format!("TLS certificate: {e}"))?;
    Ok(Arc::new(config))
}

/// A client configuration trusting the PEM bundle `ca`, or the webpki roots, and
/// presenting `identity` when the server asks for a client certificate.
pub(crate) fn client_config(
    ca: Option<&Path>,
    identity: Option<&TlsIdentity>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = match ca {
        Some(path) => load_roots(path).map_err(|e| format!("tls_ca {e}"))?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            roots
        }
    };
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
