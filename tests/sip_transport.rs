//! SIP over TCP and TLS against SIPp (`-t t1`). The Debian SIPp is built without
//! OpenSSL (`-t l1` is refused), so for TLS the test puts a rustls terminator in
//! front of a TCP SIPp, with a certificate made in the test (rcgen) into a tempdir:
//! the endpoint verifies it through the trunk's `tls_ca` and server name. Inbound
//! TLS runs the other way: a TCP SIPp UAC → an in-test TLS client relay → our TLS
//! listener (`sip.tls_listen`) presenting that certificate. Also: sips: both ways,
//! mutual TLS (our client certificate for a trunk that asks), and a connection
//! lost under a pending INVITE failing it at once.

#[path = "common/sipp.rs"]
mod sipp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callbridge::sip::{
    InboundSipEvent, InviteRequest, SdpAnswerer, SipCallEvent, SipEndpoint, SipEndpointConfig,
    SipTlsListener, TlsIdentity, Transport, TrunkSettings,
};
use sipp::{
    EVENT_WAIT, Sipp, SippTransport, endpoint, invite_request, next_event, next_final_or_answer,
};
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

#[tokio::test]
async fn a_tcp_trunk_dropping_the_connection_fails_the_invite_promptly() {
    // In-test peer: reads the INVITE and closes without answering (a trunk
    // restarting), which SIPp cannot be made to do.
    let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = peer.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        if let Ok((mut conn, _)) = peer.accept().await {
            let mut buf = vec![0u8; 4096];
            let _ = conn.read(&mut buf).await;
        }
    });
    let ep = endpoint().await;
    let started = Instant::now();
    let (_call, mut events) = ep.invite(request(addr, tcp_trunk())).await.unwrap();
    match next_event(&mut events).await {
        SipCallEvent::Failed {
            status: 503,
            reason,
        } => {
            assert!(reason.contains("connection lost"), "{reason}")
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
    /// The certificate and key, to build other server configurations.
    der: (
        rustls::pki_types::CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    /// The same as PEM (certificate, key).
    pem: (String, String),
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
        der: (
            cert.der().clone(),
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        ),
        pem: (cert.pem(), key.serialize_pem()),
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
async fn a_sips_trunk_gets_sips_request_uri_and_contact() {
    let cert = test_cert();
    let mut sipp = Sipp::uas_on(
        SippTransport::Tcp,
        Some(&Sipp::scenario("uas_remote_bye.xml")),
        &[],
    );
    let tls_addr = tls_terminator(cert.server_config.clone(), sipp.addr).await;
    let ep = endpoint().await;
    let trunk = TrunkSettings {
        sips: true,
        ..tls_trunk(&cert.ca_path, "localhost")
    };
    let (_call, mut events) = ep.invite(request(tls_addr, trunk)).await.unwrap();
    assert!(matches!(
        next_final_or_answer(&mut events).await,
        SipCallEvent::Answered { .. }
    ));
    assert_eq!(next_event(&mut events).await, SipCallEvent::RemoteHangup);
    let outcome = sipp.wait(Duration::from_secs(20)).await;
    outcome.assert_one_success();
    let m = &outcome.messages;
    assert!(m.contains("INVITE sips:"), "{m}");
    assert!(m.contains("Contact: <sips:"), "{m}");
    ep.shutdown().await;
}

/// A trunk requiring mutual TLS: the TLS terminator's configuration accepts only
/// client certificates signed by (here: equal to) `client_root`.
fn mutual_tls_server(
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

#[tokio::test]
async fn mutual_tls_presents_our_certificate_to_a_trunk_that_asks() {
    let cert = test_cert();
    // Our client certificate, in PEM files as [tls] holds them.
    let key = rcgen::KeyPair::generate().unwrap();
    let ours = rcgen::CertificateParams::new(vec!["gateway.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, ours.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let identity = TlsIdentity::from_pem_files(&cert_path, &key_path).expect("identity");

    let mut sipp = Sipp::uas_on(
        SippTransport::Tcp,
        Some(&Sipp::scenario("uas_remote_bye.xml")),
        &[],
    );
    let tls_addr = tls_terminator(mutual_tls_server(&cert, &ours), sipp.addr).await;
    let ep = SipEndpoint::bind(SipEndpointConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls_identity: Some(identity),
        ..SipEndpointConfig::default()
    })
    .await
    .expect("bind");
    // Without tls_client_auth the trunk refuses the handshake: 503.
    let plain = tls_trunk(&cert.ca_path, "localhost");
    let (_call, mut events) = ep.invite(request(tls_addr, plain.clone())).await.unwrap();
    match next_event(&mut events).await {
        SipCallEvent::Failed { status: 503, .. } => {}
        other => panic!("expected Failed 503, got {other:?}"),
    }
    // With it, our certificate is accepted and the call goes through.
    let mutual = TrunkSettings {
        tls_client_auth: true,
        ..plain
    };
    let (_call, mut events) = ep.invite(request(tls_addr, mutual)).await.unwrap();
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

/// Accepts TCP on an ephemeral port and relays each connection over TLS to `server`
/// (verified as `localhost` against `ca`): SIPp speaks TCP, our listener TLS.
async fn tls_originator(ca: &std::path::Path, server: SocketAddr) -> SocketAddr {
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

/// An endpoint with a TLS listener on an ephemeral port, taking inbound calls from
/// 127.0.0.1.
async fn tls_listening_endpoint(cert: &TestCert) -> Arc<SipEndpoint> {
    let ep = SipEndpoint::bind(SipEndpointConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: Some(SipTlsListener {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            config: cert.server_config.clone(),
        }),
        ..SipEndpointConfig::default()
    })
    .await
    .expect("bind with TLS");
    let trunk = TrunkSettings {
        name: "tls-in".into(),
        host: "127.0.0.1".into(),
        transport: Transport::Tls,
        ..TrunkSettings::default()
    };
    ep.start_trunks(vec![trunk]).await.expect("trunks");
    ep
}

#[tokio::test]
async fn inbound_tls_call_answered_and_hung_up_by_the_caller() {
    let cert = test_cert();
    let ep = tls_listening_endpoint(&cert).await;
    let tls_addr = ep.tls_local_addr().expect("TLS listener bound");
    assert_ne!(tls_addr.port(), ep.local_addr().port());
    let mut calls = ep.take_incoming().expect("incoming calls");
    let relay = tls_originator(&cert.ca_path, tls_addr).await;
    let mut sipp = Sipp::uac_on(
        SippTransport::Tcp,
        &Sipp::scenario("uac_answer_bye.xml"),
        relay,
        "+15550001111",
        &[],
    );
    let mut call = tokio::time::timeout(EVENT_WAIT, calls.recv())
        .await
        .expect("an inbound call over TLS")
        .expect("incoming stream");
    assert_eq!(call.to_user, "+15550001111");
    assert_eq!(call.trunk.as_deref(), Some("tls-in"));
    let answer = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 41000 RTP/AVP 0\r\na=sendrecv\r\n";
    let answerer: SdpAnswerer = Arc::new(|_offer: &str| Ok(String::new()));
    call.handle.answer(answer.into(), answerer);
    for expected in [InboundSipEvent::Acked, InboundSipEvent::RemoteHangup] {
        let event = tokio::time::timeout(EVENT_WAIT, call.events.recv()).await;
        assert_eq!(event.expect("an inbound event in time"), Some(expected));
    }
    let outcome = sipp.wait(Duration::from_secs(30)).await;
    outcome.assert_one_success();
    // Our Contact sends the trunk's in-dialog requests to the TLS listener.
    let contact = format!(
        "Contact: <sip:+15550001111@127.0.0.1:{};transport=tls>",
        tls_addr.port()
    );
    assert!(outcome.messages.contains(&contact), "{}", outcome.messages);
    ep.shutdown().await;
}

#[tokio::test]
async fn inbound_sips_request_uri_gets_a_sips_contact() {
    let cert = test_cert();
    let ep = tls_listening_endpoint(&cert).await;
    let tls_addr = ep.tls_local_addr().expect("TLS listener bound");
    let mut calls = ep.take_incoming().expect("incoming calls");
    let relay = tls_originator(&cert.ca_path, tls_addr).await;
    let mut sipp = Sipp::uac_on(
        SippTransport::Tcp,
        &Sipp::scenario("uac_sips_answer_bye.xml"),
        relay,
        "+15550001111",
        &[],
    );
    let mut call = tokio::time::timeout(EVENT_WAIT, calls.recv())
        .await
        .expect("an inbound call over TLS")
        .expect("incoming stream");
    assert_eq!(call.to_user, "+15550001111");
    let answer = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 41000 RTP/AVP 0\r\na=sendrecv\r\n";
    call.handle
        .answer(answer.into(), Arc::new(|_offer: &str| Ok(String::new())));
    for expected in [InboundSipEvent::Acked, InboundSipEvent::RemoteHangup] {
        let event = tokio::time::timeout(EVENT_WAIT, call.events.recv()).await;
        assert_eq!(event.expect("an inbound event in time"), Some(expected));
    }
    let outcome = sipp.wait(Duration::from_secs(30)).await;
    outcome.assert_one_success();
    let contact = format!("Contact: <sips:+15550001111@127.0.0.1:{}>", tls_addr.port());
    assert!(outcome.messages.contains(&contact), "{}", outcome.messages);
    ep.shutdown().await;
}

#[tokio::test]
async fn inbound_tls_handshake_failure_costs_nothing_and_the_listener_keeps_working() {
    let cert = test_cert();
    let ep = tls_listening_endpoint(&cert).await;
    let tls_addr = ep.tls_local_addr().expect("TLS listener bound");
    let mut calls = ep.take_incoming().expect("incoming calls");
    // Plain SIP on the TLS port: the handshake fails, the connection is closed and
    // no call appears.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut plain = TcpStream::connect(tls_addr).await.unwrap();
    plain
        .write_all(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(EVENT_WAIT, plain.read(&mut buf))
        .await
        .expect("the server answers or closes");
    assert!(
        !String::from_utf8_lossy(&buf[..read.unwrap_or(0)]).contains("SIP/2.0"),
        "no SIP over a failed handshake"
    );
    assert!(calls.try_recv().is_err());
    // A proper TLS caller is still served.
    let relay = tls_originator(&cert.ca_path, tls_addr).await;
    let mut sipp = Sipp::uac_on(
        SippTransport::Tcp,
        &Sipp::scenario("uac_refused.xml"),
        relay,
        "+15550001111",
        &[],
    );
    let call = tokio::time::timeout(EVENT_WAIT, calls.recv())
        .await
        .expect("an inbound call over TLS")
        .expect("incoming stream");
    call.handle.reject(603, "Decline").expect("reject");
    let outcome = sipp.wait(Duration::from_secs(30)).await;
    assert!(
        outcome.messages.contains("SIP/2.0 603"),
        "{}",
        outcome.messages
    );
    ep.shutdown().await;
}

/// Sends an OPTIONS over a TLS connection to `addr` (verified as `localhost`
/// against `ca`), presenting `client` if given; the answer's start line, or `None`
/// when the connection fails or closes first.
async fn options_over_tls(
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

#[tokio::test]
async fn a_tls_listener_with_a_client_ca_admits_only_certified_trunks() {
    let cert = test_cert();
    let dir = tempfile::tempdir().unwrap();
    // The CA that signs trunks' client certificates (here: the trunk's own
    // self-signed certificate is the CA file).
    let key = rcgen::KeyPair::generate().unwrap();
    let trunk_cert = rcgen::CertificateParams::new(vec!["trunk.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.path().join("trunk.pem"), dir.path().join("trunk.key"));
    std::fs::write(&cert_path, trunk_cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let trunk_identity = TlsIdentity::from_pem_files(&cert_path, &key_path).unwrap();
    // Our server identity: the test certificate for localhost.
    let (ours_cert, ours_key) = (dir.path().join("gw.pem"), dir.path().join("gw.key"));
    std::fs::write(&ours_cert, &cert.pem.0).unwrap();
    std::fs::write(&ours_key, &cert.pem.1).unwrap();
    let ours = TlsIdentity::from_pem_files(&ours_cert, &ours_key).unwrap();
    let listener = SipTlsListener::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &ours,
        Some(&cert_path),
    )
    .expect("listener config");
    let ep = SipEndpoint::bind(SipEndpointConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: Some(listener),
        ..SipEndpointConfig::default()
    })
    .await
    .expect("bind");
    let addr = ep.tls_local_addr().unwrap();
    assert_eq!(
        options_over_tls(addr, &cert.ca_path, None).await,
        None,
        "no client certificate: refused"
    );
    let answer = options_over_tls(addr, &cert.ca_path, Some(&trunk_identity)).await;
    assert_eq!(answer.as_deref(), Some("SIP/2.0 200 OK"));
    ep.shutdown().await;
}
