//! Attacks on the built-in TURN relay against a running gateway: a user with valid
//! TURN credentials tries to make our relay reach the gateway itself — its SIP port
//! (a real SIP OPTIONS), HTTP, TURN, another call's RTP and ICE ports — directly and
//! through every disguise of loopback (`0.0.0.0`, `::ffff:127.0.0.1`, `::`, NAT64),
//! with CreatePermission, ChannelBind and Send indications (coturn CVE-2020-26262 is
//! the same class). Each is refused: 403 Forbidden on CreatePermission/ChannelBind,
//! silently dropped for Send indications (RFC 8656 §9, §11.2, §12; as coturn does).
//! The same user's relay-only call through the same TURN keeps working.
//!
//! The TURN client is a real one speaking raw STUN (`common::turn`); the browser is
//! the `webrtc`-crate client relaying through the built-in TURN; the far end is the
//! gateway's built-in echo UAS (a real SIP endpoint).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use callbridge::auth::turn_credentials;
use callbridge::config::{DEFAULT_TURN_SOCKET_BUFFER_BYTES, TurnConfig};
use callbridge::sip::Direction;
use common::browser::{Browser, BrowserOptions};
use common::call::TestCall;
use common::gateway::{TestGateway, WsClient, test_config};
use common::turn::{Client, code};
use serde_json::Value;
use stun::message::{CLASS_SUCCESS_RESPONSE, Getter};
use tokio::net::UdpSocket;
use turn::proto::relayaddr::RelayedAddress;
use webrtc::peer_connection::RTCIceServer;

const SECRET: &str = "abuse-turn-secret-0123456789";

/// Media, SIP, HTTP and TURN all on 127.0.0.1 (as on a one-address host); the echo
/// UAS answers `echo`; the SIP-side RTP range is a block of 4 ports.
async fn gateway(rtp_base: u16) -> TestGateway {
    let mut config = test_config(None);
    config.echo.enabled = true;
    config.sip.rtp_ports = format!("{rtp_base}-{}", rtp_base + 3);
    config.turn = Some(TurnConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tls_listen: None,
        secret: SECRET.into(),
        credential_ttl: Duration::from_secs(600),
        realm: "callbridge".into(),
        relay_ports: "53000-53999".into(),
        allow_peers: vec![],
        deny_peers: vec![],
        max_allocations: 100,
        max_allocations_per_user: 5,
        socket_buffer_bytes: DEFAULT_TURN_SOCKET_BUFFER_BYTES,
    });
    TestGateway::start(config).await
}

/// A browser of `user` calling `echo`, relay-only through the built-in TURN when
/// `relay` is set; returns once audio came back through the echo.
async fn echo_call(gw: &TestGateway, user: &str, relay: bool) -> (WsClient, TestCall) {
    let (mut ws, ready) = gw.connect_as(user, "calls:outbound").await;
    let mut options = BrowserOptions::default();
    if relay {
        let server = &ready["ice_servers"][0];
        let urls = server["urls"]
            .as_array()
            .expect("urls")
            .iter()
            .filter_map(Value::as_str)
            .filter(|u| u.starts_with("turn:") && u.ends_with("transport=udp"))
            .map(str::to_owned)
            .collect();
        options.ice_servers = vec![RTCIceServer {
            urls,
            username: server["username"].as_str().expect("username").into(),
            credential: server["credential"].as_str().expect("credential").into(),
        }];
        options.relay_only = true;
    }
    let browser = Browser::new(options).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), &format!("{user}-1"), "echo").await;
    call.until(&mut ws, &["answered"]).await;
    assert!(
        browser.wait_connected(Duration::from_secs(15)).await,
        "{user}: ICE/DTLS up"
    );
    let _tone = browser.start_sending_tone(50);
    assert!(
        browser.wait_received(20, Duration::from_secs(10)).await,
        "{user}: audio back from the echo"
    );
    if relay {
        assert_eq!(
            browser.selected_local_candidate_type().await.as_deref(),
            Some("relay"),
            "{user}: media through our TURN"
        );
    }
    (ws, call)
}

/// SIP requests of `method` the gateway's SIP endpoint has received.
fn received(gw: &TestGateway, method: &str) -> u64 {
    gw.server
        .as_ref()
        .expect("running")
        .gateway
        .sip
        .message_counts()
        .iter()
        .filter(|c| c.direction == Direction::Inbound && c.method == method && c.status == "none")
        .map(|c| c.count)
        .sum()
}

/// A SIP OPTIONS to `target` as sent from `from`.
fn options(target: SocketAddr, from: SocketAddr, tag: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:{target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bK{tag};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{from}>;tag={tag}\r\n\
         To: <sip:{target}>\r\n\
         Call-ID: {tag}@abuse-turn\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Waits (bounded) until `f` holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_relay_never_reaches_the_gateways_own_ports() {
    let rtp_base = common::ports::block(4);
    let gw = gateway(rtp_base).await;
    let running = gw.server.as_ref().expect("running");
    let turn = running.gateway.turn.clone().expect("turn on");
    let sip = running.sip_addr;
    let http = gw.http_addr();
    let ice_ports = running.gateway.calls.ice_ports().clone();

    // Legitimate: mallory's relay-only call and alice's ordinary call are up.
    let (mut mallory_ws, mut mallory_call) = echo_call(&gw, "mallory", true).await;
    let (mut alice_ws, mut alice_call) = echo_call(&gw, "alice", false).await;
    let mallory_ice = ice_ports.ports_of("mallory");
    let alice_ice = ice_ports.ports_of("alice");
    assert!(
        !mallory_ice.is_empty() && !alice_ice.is_empty(),
        "ICE ports registered"
    );
    assert_eq!(
        turn.refused_peers(),
        0,
        "the legitimate relay-only call was never refused"
    );
    assert_eq!(turn.dropped_data(), 0);

    // The SIP port answers OPTIONS with 200: what a relayed probe would get.
    let direct = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let before = received(&gw, "OPTIONS");
    direct
        .send_to(
            &options(sip, direct.local_addr().expect("addr"), "direct"),
            sip,
        )
        .await
        .expect("send");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), direct.recv(&mut buf))
        .await
        .expect("OPTIONS answered")
        .expect("recv");
    assert!(
        buf[..n].starts_with(b"SIP/2.0 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!(received(&gw, "OPTIONS"), before + 1);

    // The attacker: mallory's own valid TURN credentials, a raw client.
    let creds = turn_credentials(SECRET, "mallory", common::gateway::now(), 600);
    let mut c = Client::udp(turn.udp_addr, &creds.username, &creds.password).await;
    c.challenge().await;
    let allocated = c.allocate().await;
    assert_eq!(
        allocated.typ.class,
        CLASS_SUCCESS_RESPONSE,
        "{:?}",
        code(&allocated)
    );
    let mut relayed = RelayedAddress::default();
    relayed.get_from(&allocated).expect("relayed address");
    let relay = SocketAddr::new(relayed.ip, relayed.port);

    let port = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let mut targets: Vec<(String, SocketAddr)> = vec![
        ("SIP".into(), sip),
        (
            "SIP via 0.0.0.0".into(),
            SocketAddr::from(([0, 0, 0, 0], sip.port())),
        ),
        (
            "SIP via ::ffff:127.0.0.1".into(),
            format!("[::ffff:127.0.0.1]:{}", sip.port())
                .parse()
                .expect("a"),
        ),
        (
            "SIP via ::ffff:0.0.0.0".into(),
            format!("[::ffff:0.0.0.0]:{}", sip.port())
                .parse()
                .expect("a"),
        ),
        (
            "SIP via ::".into(),
            format!("[::]:{}", sip.port()).parse().expect("a"),
        ),
        (
            "SIP via NAT64".into(),
            format!("[64:ff9b::7f00:1]:{}", sip.port())
                .parse()
                .expect("a"),
        ),
        ("HTTP".into(), port(http.port())),
        ("TURN".into(), port(turn.udp_addr.port())),
        ("alice's ICE port".into(), port(alice_ice[0])),
    ];
    for p in rtp_base..rtp_base + 4 {
        targets.push((format!("RTP range {p}"), port(p)));
    }
    for (what, peer) in &targets {
        let reply = c.permit(&peer.to_string()).await;
        assert_eq!(
            code(&reply),
            Some(403),
            "CreatePermission to {what} ({peer})"
        );
    }
    for (i, (what, peer)) in targets.iter().take(3).enumerate() {
        let reply = c.channel_bind(*peer, 0x4001 + i as u16).await;
        assert_eq!(code(&reply), Some(403), "ChannelBind to {what} ({peer})");
    }
    let refused = turn.refused_peers();
    assert_eq!(refused, targets.len() as u64 + 3);

    // A permission to mallory's own call's ICE port succeeds — and a TURN permission
    // covers the whole address, 127.0.0.1. Send indications must still not reach
    // any other port there.
    let own = c.permit(&port(mallory_ice[0]).to_string()).await;
    assert_eq!(
        own.typ.class,
        CLASS_SUCCESS_RESPONSE,
        "own call's ICE port: {:?}",
        code(&own)
    );
    let sip_before = received(&gw, "OPTIONS");
    let sends = [
        sip,
        SocketAddr::from(([0, 0, 0, 0], sip.port())),
        format!("[::ffff:127.0.0.1]:{}", sip.port())
            .parse()
            .expect("a"),
        port(alice_ice[0]),
    ];
    for (i, peer) in sends.iter().enumerate() {
        c.send_indication(*peer, &options(sip, relay, &format!("relayed{i}")))
            .await;
    }
    // The guard judges each datagram before the server sees it: once all are
    // counted as dropped, none can reach the SIP endpoint any more.
    until("Send indications judged", || {
        turn.dropped_data() == sends.len() as u64
    })
    .await;
    if let Some(d) = c.next_datagram(Duration::from_secs(1)).await {
        panic!(
            "nothing may come back through the relay: {}",
            String::from_utf8_lossy(&d)
        );
    }
    assert_eq!(
        received(&gw, "OPTIONS"),
        sip_before,
        "the SIP endpoint never saw a relayed OPTIONS"
    );

    // ChannelBind to the own ICE port works; that channel cannot be re-aimed.
    let bound = c.channel_bind(port(mallory_ice[0]), 0x4000).await;
    assert_eq!(
        bound.typ.class,
        CLASS_SUCCESS_RESPONSE,
        "{:?}",
        code(&bound)
    );

    // The legitimate calls were not disturbed: they hang up cleanly.
    mallory_call.hangup(&mut mallory_ws).await;
    alice_call.hangup(&mut alice_ws).await;
    mallory_call.until(&mut mallory_ws, &["ended"]).await;
    alice_call.until(&mut alice_ws, &["ended"]).await;
    // The calls are over: their ICE ports are closed to the relay too.
    until("ICE ports released", || {
        ice_ports.ports_of("mallory").is_empty()
    })
    .await;
    let after = c.permit(&port(mallory_ice[0]).to_string()).await;
    assert_eq!(code(&after), Some(403), "a finished call's ICE port");
    gw.stop().await;
}
