//! SIP over TCP and TLS to trunks, against SIPp (`-t t1`). The Debian SIPp is built
//! without OpenSSL (`-t l1` is refused), so for TLS the test puts a rustls terminator
//! (`common/tls.rs`) in front of a TCP SIPp, with a certificate made in the test: the
//! endpoint verifies it through the trunk's `tls_ca` and server name. Also: a sips:
//! trunk, mutual TLS (our client certificate for a trunk that asks), and a
//! connection lost under a pending INVITE failing it at once. Inbound TLS is in
//! `sip_tls_inbound.rs`.

mod common;
use common::sipp;
use common::tls;

use std::net::SocketAddr;
use std::time::Duration;

use callbridge::sip::{
    InviteRequest, SipCallEvent, SipEndpoint, SipEndpointConfig, SipTlsListener, Transport,
    TrunkSettings,
};
use sipp::{Sipp, SippTransport, endpoint, invite_request, next_event, next_final_or_answer};
use tls::{identity_in, test_cert, tls_terminator};
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;

fn request(target: SocketAddr, trunk: TrunkSettings) -> InviteRequest {
    InviteRequest {
        trunk,
        ..invite_request(target)
    }
}

/// The next event, which must be a 503 failure (the trunk could not be reached);
/// returns its reason.
async fn next_503(events: &mut UnboundedReceiver<SipCallEvent>) -> String {
    match next_event(events).await {
        SipCallEvent::Failed {
            status: 503,
            reason,
        } => reason,
        other => panic!("expected Failed 503, got {other:?}"),
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
    let port = common::ports::port();
    let ep = endpoint().await;
    let (_call, mut events) = ep
        .invite(request(
            SocketAddr::from(([127, 0, 0, 1], port)),
            tcp_trunk(),
        ))
        .await
        .unwrap();
    let reason = next_503(&mut events).await;
    assert!(reason.starts_with("transport error: "), "{reason}");
    // The reason says it: the transport failed, not Timer B (a 408 after 32 s).
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
    let (_call, mut events) = ep.invite(request(addr, tcp_trunk())).await.unwrap();
    let reason = next_503(&mut events).await;
    assert!(reason.contains("connection lost"), "{reason}");
    // The reason says it: the transport failed, not Timer B (a 408 after 32 s).
    ep.shutdown().await;
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

#[tokio::test]
async fn mutual_tls_presents_our_certificate_to_a_trunk_that_asks() {
    let cert = test_cert();
    // Our client certificate, in PEM files as [tls] holds them.
    let dir = tempfile::tempdir().unwrap();
    let (ours, identity) = identity_in(dir.path(), &["gateway.test"]);
    // The trunk accepts only client certificates signed by (here: equal to) ours.
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let trunk = SipTlsListener::new(any, &cert.identity, Some(&ours)).expect("trunk TLS");

    let mut sipp = Sipp::uas_on(
        SippTransport::Tcp,
        Some(&Sipp::scenario("uas_remote_bye.xml")),
        &[],
    );
    let tls_addr = tls_terminator(trunk.config, sipp.addr).await;
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
    next_503(&mut events).await;
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
    let reason = next_503(&mut events).await;
    assert!(reason.contains("TLS handshake"), "{reason}");
    ep.shutdown().await;
}
