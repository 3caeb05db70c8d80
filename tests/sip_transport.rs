//! SIP over TCP and TLS against SIPp (`-t t1`). The Debian SIPp is built without
//! OpenSSL (`-t l1` is refused), so for TLS the test puts a rustls terminator in
//! front of a TCP SIPp, with a certificate made in the test (rcgen) into a tempdir:
//! the endpoint verifies it through the trunk's `tls_ca` and server name.

#[path = "common/sipp.rs"]
mod sipp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callbridge::sip::{InviteRequest, SipCallEvent, Transport, TrunkSettings};
use sipp::{Sipp, SippTransport, endpoint, invite_request, next_event, next_final_or_answer};
use tokio::net::{TcpListener, TcpStream};

fn request(target: SocketAddr, trunk: TrunkSettings) -> InviteRequest {
    InviteRequest {
        trunk,
        ..invite_request(target)
    }
}

fn tcp_trunk() -> TrunkSettings {
    TrunkSettings {
        name: "tcp".into(),
        transport: Transport::Tcp,
        ..TrunkSettings::default()
    }
}

#[tokio::test]
async fn tcp_call_answer_and_local_bye() {
    let mut sipp = Sipp::uas_on(SippTransport::Tcp, None, &[]);
    let ep = endpoint().await;
    let (call, mut events) = ep.invite(request(sipp.addr, tcp_trunk())).await.unwrap();
    assert!(matches!(
        next_final_or_answer(&mut events).await,
        SipCallEvent::Answered { .. }
    ));
    call.hangup();
    assert_eq!(next_event(&mut events).await, SipCallEvent::Terminated);
    let outcome = sipp.wait(Duration::from_secs(20)).await;
    outcome.assert_one_success();
    let m = &outcome.messages;
    assert!(m.contains("Via: SIP/2.0/TCP 127.0.0.1:"), "{m}");
    assert!(
        m.contains(";transport=tcp>"),
        "Contact names the transport: {m}"
    );
    assert!(m.contains("BYE sip:"), "{m}");
    ep.shutdown().await;
}

#[tokio::test]
async fn tcp_remote_bye_comes_back_on_our_connection() {
    let mut sipp = Sipp::uas_on(
        SippTransport::Tcp,
        Some(&Sipp::scenario("uas_remote_bye.xml")),
        &[],
    );
    let ep = endpoint().await;
    let (_call, mut events) = ep.invite(request(sipp.addr, tcp_trunk())).await.unwrap();
    assert!(matches!(
        next_final_or_answer(&mut events).await,
        SipCallEvent::Answered { .. }
    ));
    assert_eq!(next_event(&mut events).await, SipCallEvent::RemoteHangup);
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    ep.shutdown().await;
}

#[tokio::test]
async fn tcp_connection_refused_fails_promptly_with_503() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ep = endpoint().await;
    let started = Instant::now();
    let (_call, mut events) = ep
        .invite(request(
            SocketAddr::from(([127, 0, 0, 1], port)),
            tcp_trunk(),
        ))
        .await
        .unwrap();
    match next_event(&mut events).await {
        SipCallEvent::Failed {
            status: 503,
            reason,
        } => {
            assert!(reason.starts_with("transport error: "), "{reason}")
        }
        other => panic!("expected Failed 503, got {other:?}"),
    }
    // Generous bound on a shared machine: far below Timer B (32 s).
    assert!(started.elapsed() < Duration::from_secs(10));
    ep.shutdown().await;
}

/// A certificate for `localhost` and 127.0.0.1, written as PEM into a tempdir.
struct TestCert {
    _dir: tempfile::TempDir,
    ca_path: PathBuf,
    server_config: Arc<rustls::ServerConfig>,
}

fn test_cert() -> TestCert {
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
    }
}

/// Terminates TLS on an ephemeral port and relays each connection to `backend`
/// over TCP. Returns its address; the task ends with the test's runtime.
async fn tls_terminator(config: Arc<rustls::ServerConfig>, backend: SocketAddr) -> SocketAddr {
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

fn tls_trunk(ca: &std::path::Path, server_name: &str) -> TrunkSettings {
    TrunkSettings {
        name: "tls".into(),
        host: "127.0.0.1".into(),
        transport: Transport::Tls,
        tls_ca: Some(ca.to_path_buf()),
        tls_server_name: Some(server_name.into()),
        ..TrunkSettings::default()
    }
}

#[tokio::test]
async fn tls_call_through_a_verified_connection() {
    let cert = test_cert();
    let mut sipp = Sipp::uas_on(
        SippTransport::Tcp,
        Some(&Sipp::scenario("uas_remote_bye.xml")),
        &[],
    );
    let tls_addr = tls_terminator(cert.server_config.clone(), sipp.addr).await;
    let ep = endpoint().await;
    let trunk = tls_trunk(&cert.ca_path, "localhost");
    let (_call, mut events) = ep.invite(request(tls_addr, trunk)).await.unwrap();
    assert!(matches!(
        next_final_or_answer(&mut events).await,
        SipCallEvent::Answered { .. }
    ));
    // SIPp's BYE comes back through the terminator on our TLS connection.
    assert_eq!(next_event(&mut events).await, SipCallEvent::RemoteHangup);
    let outcome = sipp.wait(Duration::from_secs(20)).await;
    outcome.assert_one_success();
    assert!(outcome.messages.contains("Via: SIP/2.0/TLS 127.0.0.1:"));
    assert!(outcome.messages.contains(";transport=tls>"));
    ep.shutdown().await;
}

#[tokio::test]
async fn tls_with_the_wrong_server_name_fails_with_503() {
    let cert = test_cert();
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = tls_terminator(cert.server_config.clone(), backend.local_addr().unwrap()).await;
    let ep = endpoint().await;
    let trunk = tls_trunk(&cert.ca_path, "carrier.example");
    let (_call, mut events) = ep.invite(request(tls_addr, trunk)).await.unwrap();
    match next_event(&mut events).await {
        SipCallEvent::Failed {
            status: 503,
            reason,
        } => {
            assert!(reason.contains("TLS handshake"), "{reason}")
        }
        other => panic!("expected Failed 503, got {other:?}"),
    }
    ep.shutdown().await;
}
