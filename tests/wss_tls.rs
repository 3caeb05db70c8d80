//! The signaling listener over TLS (`[tls]` set): a wss:// client that trusts a
//! certificate made in the test authenticates and gets `ready`; a plain ws:// client
//! is refused. With `sip.tls_listen` the same certificate serves SIP over TLS.

mod common;

use std::sync::Arc;

use callbridge::config::TlsConfig;
use common::gateway::{TestGateway, test_config, token};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn wss_handshake_and_auth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");

    let mut config = test_config(None);
    config.tls = Some(TlsConfig {
        cert: cert_path,
        key: key_path,
    });
    let gw = TestGateway::start(config).await;
    assert!(gw.ws_url().starts_with("wss://"));

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert.cert.der().to_vec()))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(gw.http_addr())
        .await
        .expect("tcp");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake with the gateway");
    let url = format!("wss://localhost:{}/ws", gw.http_addr().port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("wss upgrade");
    let auth = json!({"type": "auth", "token": token("tess", "calls:outbound", 60)});
    ws.send(Message::Text(auth.to_string().into()))
        .await
        .expect("send");
    let ready = tokio::time::timeout(common::gateway::WAIT, ws.next())
        .await
        .expect("timeout")
        .expect("frame")
        .expect("ok");
    let ready: serde_json::Value =
        serde_json::from_str(ready.to_text().expect("text")).expect("json");
    assert_eq!(ready["type"], "ready");
    assert_eq!(ready["user"], "tess");

    // Plain HTTP on the TLS port gets no WebSocket.
    let plain = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.http_addr())).await;
    assert!(plain.is_err(), "plain ws must not work on the TLS listener");
    gw.stop().await;
}

#[tokio::test]
async fn sip_tls_listener_uses_the_tls_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let sip_tls = std::net::SocketAddr::from(([127, 0, 0, 1], port));

    let mut config = test_config(None);
    config.tls = Some(TlsConfig {
        cert: cert_path,
        key: key_path,
    });
    config.sip.tls_listen = Some(sip_tls);
    let gw = TestGateway::start(config).await;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert.cert.der().to_vec()))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(sip_tls).await.expect("tcp");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake with the SIP listener");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let options = "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKtlsopt1\r\n\
        From: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:gw@127.0.0.1>\r\n\
        Call-ID: tls-options-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\
        Content-Length: 0\r\n\r\n";
    tls.write_all(options.as_bytes()).await.expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = tokio::time::timeout(common::gateway::WAIT, tls.read(&mut buf))
            .await
            .expect("an answer over TLS")
            .expect("read");
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&got);
    assert!(answer.starts_with("SIP/2.0 200 "), "{answer}");
    assert!(answer.contains("Call-ID: tls-options-1"), "{answer}");
    gw.stop().await;
}
