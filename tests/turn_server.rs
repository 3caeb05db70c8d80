//! The built-in TURN server against a real TURN client speaking raw STUN over UDP and
//! TCP on loopback: REST API credentials (valid, forged, expired), the peer address
//! policy (403) and a successful allocation and permission. The attacks on the
//! policy (the gateway's own ports through the relay) are in `abuse_turn.rs`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use callbridge::auth::turn_credentials;
use callbridge::config::{DEFAULT_TURN_SOCKET_BUFFER_BYTES, TurnConfig};
use callbridge::turn::TurnServer;
use common::gateway::{TestGateway, test_config};
use common::turn::{Client, code};
use stun::message::CLASS_SUCCESS_RESPONSE;
use tokio::net::TcpStream;

const SECRET: &str = "turn-test-secret-0123456789";

/// Media on 127.0.0.2 so that 127.0.0.1 is an internal address that is *not* the
/// gateway's own.
async fn gateway() -> TestGateway {
    let mut config = test_config(None);
    config.server.media_ip = "127.0.0.2".parse().expect("ip");
    config.turn = Some(TurnConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tls_listen: None,
        secret: SECRET.into(),
        credential_ttl: Duration::from_secs(600),
        realm: "callbridge".into(),
        relay_ports: "50000-50999".into(),
        allow_peers: vec![],
        deny_peers: vec![],
        max_allocations: 100,
        max_allocations_per_user: 5,
        socket_buffer_bytes: DEFAULT_TURN_SOCKET_BUFFER_BYTES,
    });
    TestGateway::start(config).await
}

/// The running gateway's TURN server.
fn turn_server(gw: &TestGateway) -> Arc<TurnServer> {
    gw.server
        .as_ref()
        .expect("running")
        .gateway
        .turn
        .clone()
        .expect("turn on")
}

fn turn_addr(gw: &TestGateway) -> (SocketAddr, SocketAddr) {
    let turn = turn_server(gw);
    (turn.udp_addr, turn.tcp_addr)
}

fn now() -> u64 {
    common::gateway::now()
}

/// A `net.core.*` sysctl in bytes.
fn sysctl_bytes(name: &str) -> usize {
    let path = format!("/proc/sys/net/core/{name}");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The UDP listener gets `turn.socket_buffer_bytes` as far as the kernel allows. With
/// the kernel's default (~208 KiB) it dropped 680-2,500 datagrams whenever 200+
/// allocations refreshed in the same millisecond (measured with `turnutils_uclient`).
#[tokio::test]
async fn the_udp_listener_gets_the_configured_socket_buffers() {
    let gw = gateway().await;
    let turn = turn_server(&gw);
    let (receive, send) = turn.udp_buffer_sizes();
    // Linux grants min(asked, net.core.*mem_max) and reports twice that.
    let want_receive = DEFAULT_TURN_SOCKET_BUFFER_BYTES.min(sysctl_bytes("rmem_max"));
    let want_send = DEFAULT_TURN_SOCKET_BUFFER_BYTES.min(sysctl_bytes("wmem_max"));
    assert!(
        receive / 2 >= want_receive,
        "receive buffer {receive}, wanted {want_receive} usable"
    );
    assert!(
        send / 2 >= want_send,
        "send buffer {send}, wanted {want_send} usable"
    );
    gw.stop().await;
}

#[tokio::test]
async fn rest_credentials_allocate_and_forged_or_expired_get_401() {
    let gw = gateway().await;
    let (udp, _) = turn_addr(&gw);
    let good = turn_credentials(SECRET, "alice", now(), 600);

    let mut c = Client::udp(udp, &good.username, &good.password).await;
    c.challenge().await;
    assert_eq!(c.realm, "callbridge");
    let ok = c.allocate().await;
    assert_eq!(
        ok.typ.class,
        CLASS_SUCCESS_RESPONSE,
        "valid credentials allocate: {:?}",
        code(&ok)
    );

    let mut forged = Client::udp(udp, &good.username, "bm90LXRoZS1wYXNzd29yZA==").await;
    forged.challenge().await;
    assert_eq!(code(&forged.allocate().await), Some(401), "forged password");

    let other_secret = turn_credentials("some-other-secret-xyz", "alice", now(), 600);
    let mut wrong = Client::udp(udp, &other_secret.username, &other_secret.password).await;
    wrong.challenge().await;
    assert_eq!(
        code(&wrong.allocate().await),
        Some(401),
        "signed with another secret"
    );

    let expired = turn_credentials(SECRET, "alice", now() - 1000, 600);
    let mut old = Client::udp(udp, &expired.username, &expired.password).await;
    old.challenge().await;
    assert_eq!(
        code(&old.allocate().await),
        Some(401),
        "expired credentials"
    );

    let turn = turn_server(&gw);
    assert_eq!(turn.allocations(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn permission_to_loopback_or_private_is_403_but_a_public_peer_is_allowed() {
    let gw = gateway().await;
    let (udp, tcp) = turn_addr(&gw);
    let creds = turn_credentials(SECRET, "bob", now(), 600);
    for transport in ["udp", "tcp"] {
        let mut c = if transport == "udp" {
            Client::udp(udp, &creds.username, &creds.password).await
        } else {
            Client::tcp(tcp, &creds.username, &creds.password).await
        };
        c.challenge().await;
        let ok = c.allocate().await;
        assert_eq!(
            ok.typ.class,
            CLASS_SUCCESS_RESPONSE,
            "{transport}: allocate {:?}",
            code(&ok)
        );
        for peer in [
            "127.0.0.1:9",
            "10.0.0.1:5000",
            "192.168.1.1:5000",
            "169.254.0.1:1",
            "[::1]:9",
        ] {
            let reply = c.permit(peer).await;
            let c = code(&reply);
            assert!(
                c == Some(403) || c == Some(443),
                "{transport}: {peer} must be refused, got {c:?}"
            );
        }
        // The gateway's own media address is open only on a live ICE port of this
        // user's call (see relay_only_client_completes_a_call_through_the_builtin_turn
        // and tests/abuse_turn.rs); with no call, it is the gateway itself.
        let own = c.permit("127.0.0.2:40000").await;
        assert_eq!(
            code(&own),
            Some(403),
            "{transport}: own media address without a call"
        );
        let public = c.permit("8.8.8.8:53").await;
        assert_eq!(
            public.typ.class,
            CLASS_SUCCESS_RESPONSE,
            "{transport}: a public peer: {:?}",
            code(&public)
        );
    }
    let turn = turn_server(&gw);
    assert!(
        turn.refused_peers() >= 12,
        "refusals counted: {}",
        turn.refused_peers()
    );
    gw.stop().await;
}

/// A `webrtc`-crate browser restricted to relay candidates calls through the built-in
/// TURN (credentials from `ready.ice_servers`) to SIPp echo: the call works and the
/// selected pair's local candidate is a relay one.
#[tokio::test]
async fn relay_only_client_completes_a_call_through_the_builtin_turn() {
    use common::browser::{Browser, BrowserOptions};
    use common::call::TestCall;
    use common::sipp::Sipp;
    use webrtc::peer_connection::RTCIceServer;

    let media_port = common::ports::port().to_string();
    let mut sipp = Sipp::uas(None, &["-rtp_echo", "-mp", &media_port]);
    let mut config = common::gateway::test_config(Some(sipp.addr));
    config.server.media_ip = "127.0.0.2".parse().expect("ip");
    config.turn = Some(TurnConfig {
        // TURN on the advertised (media) address, as in production.
        listen: "127.0.0.2:0".parse().expect("addr"),
        tls_listen: None,
        secret: SECRET.into(),
        credential_ttl: Duration::from_secs(600),
        realm: "callbridge".into(),
        relay_ports: "51000-51999".into(),
        allow_peers: vec![],
        deny_peers: vec![],
        max_allocations: 100,
        max_allocations_per_user: 5,
        socket_buffer_bytes: DEFAULT_TURN_SOCKET_BUFFER_BYTES,
    });
    let gw = TestGateway::start(config).await;
    let (mut ws, ready) = gw.connect_as("relay", "calls:outbound").await;
    let servers = ready["ice_servers"]
        .as_array()
        .expect("ice servers")
        .clone();
    assert_eq!(servers.len(), 1, "only the built-in TURN: {servers:?}");
    let server = &servers[0];
    let urls: Vec<String> = server["urls"]
        .as_array()
        .expect("urls")
        .iter()
        .map(|u| u.as_str().expect("url").to_string())
        .filter(|u| u.starts_with("turn:") && u.ends_with("transport=udp"))
        .collect();
    assert!(
        urls.iter().all(|u| u.contains("127.0.0.2")),
        "advertised on media/public ip: {urls:?}"
    );
    let options = BrowserOptions {
        ice_servers: vec![RTCIceServer {
            urls,
            username: server["username"].as_str().expect("username").into(),
            credential: server["credential"].as_str().expect("credential").into(),
        }],
        relay_only: true,
        ..BrowserOptions::default()
    };
    let browser = Browser::new(options).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "relay-1", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    assert!(
        browser.wait_connected(Duration::from_secs(15)).await,
        "ICE over the relay"
    );
    let _ = browser.start_sending_tone(50).await;
    assert!(
        browser.wait_received(40, Duration::from_secs(10)).await,
        "audio through the relay"
    );
    assert_eq!(
        browser.selected_local_candidate_type().await.as_deref(),
        Some("relay")
    );
    let turn = turn_server(&gw);
    assert!(turn.allocations() >= 1, "the browser holds an allocation");
    call.hangup(&mut ws).await;
    call.until(&mut ws, &["ended"]).await;
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn turn_over_tls_allocates_with_the_gateway_certificate() {
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("key");
    let mut config = test_config(None);
    config.tls = Some(callbridge::config::TlsConfig {
        cert: cert_path,
        key: key_path,
    });
    config.turn = Some(TurnConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tls_listen: Some("127.0.0.1:0".parse().expect("addr")),
        secret: SECRET.into(),
        credential_ttl: Duration::from_secs(600),
        realm: "callbridge".into(),
        relay_ports: "52000-52999".into(),
        allow_peers: vec![],
        deny_peers: vec![],
        max_allocations: 100,
        max_allocations_per_user: 5,
        socket_buffer_bytes: DEFAULT_TURN_SOCKET_BUFFER_BYTES,
    });
    let gw = TestGateway::start(config).await;
    let turn = turn_server(&gw);
    let tls_addr = turn.tls_addr.expect("TLS listener");

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            cert.cert.der().to_vec(),
        ))
        .expect("root");
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(tls_addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the TURN listener");
    let creds = turn_credentials(SECRET, "tess", now(), 600);
    let mut c = Client::stream(tls_addr, Box::new(tls), &creds.username, &creds.password);
    c.challenge().await;
    let ok = c.allocate().await;
    assert_eq!(
        ok.typ.class,
        CLASS_SUCCESS_RESPONSE,
        "allocate over TLS: {:?}",
        code(&ok)
    );
    assert_eq!(
        code(&c.permit("10.1.1.1:5000").await),
        Some(403),
        "policy applies over TLS too"
    );
    gw.stop().await;
}

/// RFC 5766 §6.2: a retransmitted Allocate (same transaction id, same 5-tuple) whose
/// success response was lost gets that success response again, not 437; a *new*
/// Allocate on the same 5-tuple still gets 437 Allocation Mismatch. (The `turn` crate
/// answers 437 to both; the guard replays the success it saw go out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retransmitted_allocate_gets_its_success_again_a_new_one_437() {
    let gw = gateway().await;
    let (udp, _) = turn_addr(&gw);
    let creds = turn_credentials(SECRET, "alice", now(), 600);
    let mut c = Client::udp(udp, &creds.username, &creds.password).await;
    c.challenge().await;
    let request = c.build(
        stun::message::METHOD_ALLOCATE,
        vec![Box::new(turn::proto::reqtrans::RequestedTransport {
            protocol: turn::proto::PROTO_UDP,
        })],
        true,
    );
    let first = c.exchange(request.clone()).await;
    assert_eq!(
        first.typ.class,
        CLASS_SUCCESS_RESPONSE,
        "{:?}",
        code(&first)
    );
    // The client never saw `first` (lost on the way): it retransmits the same bytes.
    let again = c.exchange(request).await;
    assert_eq!(
        again.typ.class,
        CLASS_SUCCESS_RESPONSE,
        "the retransmission is answered with success, not {:?}",
        code(&again)
    );
    assert_eq!(again.raw, first.raw, "the very same success response");
    let another = c.allocate().await;
    assert_eq!(
        code(&another),
        Some(437),
        "a new Allocate on a live 5-tuple"
    );
    gw.stop().await;
}
