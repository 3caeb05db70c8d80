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
    /// Its private key as a PEM file.
    pub key_path: PathBuf,
    /// A server configuration presenting it (no client certificates).
    pub server_config: Arc<rustls::ServerConfig>,
    /// The certificate and key as our endpoint loads them (e.g. for a listener).
    pub identity: TlsIdentity,
}

/// Makes a [`TestCert`].
pub fn test_cert() -> TestCert {
    let dir = tempfile::tempdir().unwrap();
    let (ca_path, identity) = identity_in(dir.path(), &["localhost", "127.0.0.1"]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(identity.certs.clone(), identity.key.clone_key())
        .unwrap();
    let key_path = ca_path.with_extension("key");
    TestCert {
        _dir: dir,
        ca_path,
        key_path,
        server_config: Arc::new(server_config),
        identity,
    }
}

/// A self-signed certificate for `names` written as PEM files into `dir` (named
/// after the first name); returns the certificate file, which also serves as its
/// CA bundle, and the identity loaded from the files.
pub fn identity_in(dir: &std::path::Path, names: &[&str]) -> (PathBuf, TlsIdentity) {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::CertificateParams::new(names.clone())
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_path = dir.join(format!("{}.pem", names[0]));
    let key_path = dir.join(format!("{}.key", names[0]));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let identity = TlsIdentity::from_pem_files(&cert_path, &key_path).unwrap();
    (cert_path, identity)
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

/// Accepts TCP on an ephemeral port and relays each connection over TLS to `server`
/// (verified as `localhost` against `ca`): SIPp speaks TCP, our listener TLS.
pub async fn tls_originator(ca: &std::path::Path, server: SocketAddr) -> SocketAddr {
    let connector = tokio_rustls::TlsConnector::from(client_config(ca, None));
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

/// A client configuration trusting the PEM bundle `ca`, presenting `client` when
/// the server asks for a certificate.
pub fn client_config(
    ca: &std::path::Path,
    client: Option<&TlsIdentity>,
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
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
    Arc::new(config)
}

/// Call-ID of the OPTIONS [`options_over_tls`] sends.
pub const OPTIONS_CALL_ID: &str = "tls-options-1";

/// Sends an OPTIONS over a TLS connection to `addr` (verified as `localhost`
/// against `ca`), presenting `client` if given; the answer's head, or `None` when
/// the connection fails or closes first.
pub async fn options_over_tls(
    addr: SocketAddr,
    ca: &std::path::Path,
    client: Option<&TlsIdentity>,
) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client_config(ca, client))
        .connect(name, tcp)
        .await
        .ok()?;
    let options = format!(
        "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKtlsopt1\r\nFrom: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: {OPTIONS_CALL_ID}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    tls.write_all(options.as_bytes()).await.ok()?;
    tls.flush().await.ok()?;
    let mut head = Vec::new();
    let mut buf = vec![0u8; 2048];
    while !String::from_utf8_lossy(&head).contains("\r\n\r\n") {
        let n = tokio::time::timeout(EVENT_WAIT, tls.read(&mut buf))
            .await
            .expect("an answer or a close in time")
            .ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&head).to_string())
}
