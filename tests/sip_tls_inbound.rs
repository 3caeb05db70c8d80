//! Inbound SIP over TLS (`sip.tls_listen`): a TCP SIPp UAC → an in-test TLS client
//! relay (`common/tls.rs`; Debian's SIPp has no TLS) → our listener presenting a
//! certificate made in the test. Answered calls, sips: Request-URIs (sips:
//! Contacts), a failed handshake that costs nothing, and client certificates
//! required by `sip.tls_client_ca`.

mod common;
use common::sipp;
use common::tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use callbridge::sip::{
    InboundSipEvent, SdpAnswerer, SipEndpoint, SipEndpointConfig, SipTlsListener, Transport,
    TrunkSettings,
};
use sipp::{EVENT_WAIT, Sipp, SippTransport};
use tls::{TestCert, identity_in, options_over_tls, test_cert, tls_originator};
use tokio::net::TcpStream;

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

/// A TCP SIPp runs `scenario` (a call to +15550001111 that the caller hangs up)
/// through the TLS relay to `ep`'s listener; the call arrives from the `tls-in`
/// trunk and is answered. Returns SIPp's message log.
async fn answered_call_over_tls(ep: &SipEndpoint, cert: &TestCert, scenario: &str) -> String {
    let tls_addr = ep.tls_local_addr().expect("TLS listener bound");
    let mut calls = ep.take_incoming().expect("incoming calls");
    let relay = tls_originator(&cert.ca_path, tls_addr).await;
    let mut sipp = Sipp::uac_on(
        SippTransport::Tcp,
        &Sipp::scenario(scenario),
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
    outcome.messages
}

#[tokio::test]
async fn inbound_tls_call_answered_and_hung_up_by_the_caller() {
    let cert = test_cert();
    let ep = tls_listening_endpoint(&cert).await;
    let tls_addr = ep.tls_local_addr().expect("TLS listener bound");
    assert_ne!(tls_addr.port(), ep.local_addr().port());
    let messages = answered_call_over_tls(&ep, &cert, "uac_answer_bye.xml").await;
    // Our Contact sends the trunk's in-dialog requests to the TLS listener.
    let contact = format!(
        "Contact: <sip:+15550001111@127.0.0.1:{};transport=tls>",
        tls_addr.port()
    );
    assert!(messages.contains(&contact), "{messages}");
    ep.shutdown().await;
}

#[tokio::test]
async fn inbound_sips_request_uri_gets_a_sips_contact() {
    let cert = test_cert();
    let ep = tls_listening_endpoint(&cert).await;
    let tls_addr = ep.tls_local_addr().expect("TLS listener bound");
    let messages = answered_call_over_tls(&ep, &cert, "uac_sips_answer_bye.xml").await;
    let contact = format!("Contact: <sips:+15550001111@127.0.0.1:{}>", tls_addr.port());
    assert!(messages.contains(&contact), "{messages}");
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

#[tokio::test]
async fn a_tls_listener_with_a_client_ca_admits_only_certified_trunks() {
    let cert = test_cert();
    let dir = tempfile::tempdir().unwrap();
    // The CA that signs trunks' client certificates (here: the trunk's own
    // self-signed certificate is the CA file).
    let (trunk_ca, trunk_identity) = identity_in(dir.path(), &["trunk.test"]);
    let listener = SipTlsListener::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &cert.identity,
        Some(&trunk_ca),
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
    let answer = options_over_tls(addr, &cert.ca_path, Some(&trunk_identity))
        .await
        .expect("an answer with a client certificate");
    assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
    ep.shutdown().await;
}
