//! TLS helpers for the SIP tests: a certificate made in the test (rcgen), a rustls
//! terminator in front of a TCP SIPp (Debian's SIPp has no TLS), a TLS client relay
//! in front of a TCP SIPp UAC, a mutual-TLS server configuration, and a raw OPTIONS
//! over TLS.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use callbridge::sip::TlsIdentity;
use tokio::net::{TcpListener, TcpStream};

use super::sipp::EVENT_WAIT;

/// A certificate for `localhost` and 127.0.0.1, written as PEM into a tempdir.
pub struct TestCert {
    _dir: tempfile::TempDir,
    /// The certificate as a PEM file (the CA a client trusts).
    pub ca_path: PathBuf,
    /// A server configuration presenting it.
    pub server_config: Arc<rustls::ServerConfig>,
    /// The certificate and key, to build other server configurations.
    pub der: (
        rustls::pki_types::CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    /// The same as PEM (certificate, key).
    pub pem: (String, String),
}

/// Makes a [`TestCert`].
pub fn test_cert() -> TestCert {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("trunk-ca.pem");
    std::fs::write(&ca_path, cert.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    TestCert {
        _dir: dir,
        ca_path,
        server_config: Arc::new(server_config),
        der: (
            cert.der().clone(),
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        ),
        pem: (cert.pem(), key.serialize_pem()),
    }
}

/// Terminates TLS on an ephemeral port and relays each connection to `backend`
/// over TCP. Returns its address; the task ends with the test's runtime.
pub async fn tls_terminator(config: Arc<rustls::ServerConfig>, backend: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut tcp) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut tcp).await;
            });
        }
    });
    addr
}

/// A trunk requiring mutual TLS: the TLS terminator's configuration accepts only
/// client certificates signed by (here: equal to) `client_root`.
pub fn mutual_tls_server(
    cert: &TestCert,
    client_root: &rcgen::Certificate,
) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_root.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert.der.0.clone()], cert.der.1.clone_key())
        .unwrap();
    Arc::new(config)
}

/// Accepts TCP on an ephemeral port and relays each connection over TLS to `server`
/// (verified as `localhost` against `ca`): SIPp speaks TCP, our listener TLS.
pub async fn tls_originator(ca: &std::path::Path, server: SocketAddr) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let connector = connector.clone();
            tokio::spawn(async move {
                let Ok(stream) = TcpStream::connect(server).await else {
                    return;
                };
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let Ok(mut tls) = connector.connect(name, stream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut tls).await;
            });
        }
    });
    addr
}

/// Sends an OPTIONS over a TLS connection to `addr` (verified as `localhost`
/// against `ca`), presenting `client` if given; the answer's start line, or `None`
/// when the connection fails or closes first.
pub async fn options_over_tls(
    addr: SocketAddr,
    ca: &std::path::Path,
    client: Option<&TlsIdentity>,
) -> Option<String> {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some(id) => builder
            .with_client_auth_cert(id.certs.clone(), id.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .ok()?;
    let options = "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKmtls1\r\nFrom: <sip:probe@127.0.0.1>;tag=m1\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: mtls-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    tls.write_all(options.as_bytes()).await.ok()?;
    tls.flush().await.ok()?;
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(EVENT_WAIT, tls.read(&mut buf))
        .await
        .expect("an answer or a close in time")
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.lines()
        .next()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
}
