//! Attacks on the SIP TCP listener of a running gateway, from raw sockets on
//! loopback addresses (127.0.0.0/8 is all loopback on Linux): a connection flood
//! from one address and from several, a peer that only sends CRLF keepalives, and a
//! peer that never reads what we write. Each must be cut off by its limit while a
//! configured trunk (at 127.0.0.2) still places a call with SIPp over TCP.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use callbridge::config::{Config, DidConfig, TrunkConfig};
use callbridge::sip::StreamFramer;
use common::gateway::{TestGateway, WAIT, WsClient, test_config};
use common::sipp::{Sipp, SippTransport};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const DID: &str = "+15550001111";
/// The trunk's address: the flood comes from elsewhere.
const TRUNK_IP: [u8; 4] = [127, 0, 0, 2];

/// A gateway whose DID rings `alice`, with a trunk admitted from 127.0.0.2 only.
fn config() -> Config {
    let mut config = test_config(None);
    config.sip.trunks.push(TrunkConfig {
        name: "carrier".into(),
        address: "127.0.0.2:9".into(),
        transport: "tcp".into(),
        inbound_from: vec!["127.0.0.2".into()],
        ..TrunkConfig::default()
    });
    config.dids.push(DidConfig {
        number: DID.into(),
        user: "alice".into(),
    });
    config
}

/// A TCP connection to `target` from `local` (any port).
async fn connect_from(local: [u8; 4], target: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((local, 0)))
        .expect("bind a loopback address");
    tokio::time::timeout(WAIT, socket.connect(target))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// An OPTIONS request over TCP with Call-ID `call_id` and `extra` header lines.
fn options(call_id: &str, extra: &str) -> String {
    format!(
        "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK{call_id}\r\n{extra}From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The next SIP message on `stream` (keepalive pongs skipped), `None` once the
/// gateway closed the connection. Panics after [`WAIT`].
async fn next_message(stream: &mut TcpStream, framer: &mut StreamFramer) -> Option<String> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(m) = framer.next_message().expect("the gateway frames") {
            return Some(String::from_utf8_lossy(&m).into_owned());
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("timed out waiting for the gateway");
        match n {
            Ok(0) | Err(_) => return None,
            Ok(n) => framer.push(&buf[..n]),
        }
    }
}

/// Sends an OPTIONS and returns the status line of the answer (`None`: closed).
async fn probe(stream: &mut TcpStream, call_id: &str) -> Option<String> {
    stream
        .write_all(options(call_id, "").as_bytes())
        .await
        .ok()?;
    let mut framer = StreamFramer::default();
    let reply = next_message(stream, &mut framer).await?;
    assert!(reply.contains(call_id), "{reply}");
    reply.lines().next().map(str::to_string)
}

/// The value of a sample line `name{labels} value` in the gateway's metrics.
fn metric(gw: &TestGateway, sample: &str) -> u64 {
    let text = gw
        .server
        .as_ref()
        .expect("running")
        .gateway
        .metrics
        .render();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (at most [`WAIT`]) until the metric `sample` reaches `at_least`.
async fn metric_reaches(gw: &TestGateway, sample: &str, at_least: u64) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if metric(gw, sample) >= at_least {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Rings `alice` through the trunk with a TCP SIPp from 127.0.0.2; she accepts,
/// SIPp hangs up. Panics unless the call went through.
async fn trunk_call_goes_through(gw: &TestGateway, ws: &mut WsClient) {
    let sip = gw.server.as_ref().expect("running").sip_addr;
    let mut sipp = Sipp::uac_from(
        IpAddr::from(TRUNK_IP),
        SippTransport::Tcp,
        &Sipp::scenario("uac_answer_bye.xml"),
        sip,
        DID,
        &[],
    );
    let incoming = ws.recv_type("incoming", |_| {}).await;
    let call_id = incoming["call_id"].as_str().expect("call id").to_string();
    let browser = common::browser::Browser::answering(incoming["sdp"].as_str().expect("sdp")).await;
    ws.send(json!({"type": "accept", "call_id": call_id, "sdp": browser.offer_sdp()}))
        .await;
    let answered = ws.recv_type("answered", |_| {}).await;
    assert_eq!(answered["call_id"], call_id.as_str());
    let ended = ws.recv_type("ended", |_| {}).await;
    assert_eq!(ended["reason"], "remote_hangup");
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
}

#[tokio::test]
async fn a_connection_flood_is_capped_and_the_trunk_still_gets_through() {
    let mut config = config();
    config.sip.max_connections_per_ip = 4;
    config.sip.max_connections = 8;
    config.sip.tcp_idle_timeout = Duration::from_secs(120);
    let gw = TestGateway::start(config).await;
    let sip = gw.server.as_ref().expect("running").sip_addr;
    let (mut ws, _) = gw.connect_as("alice", "calls:inbound").await;

    // One address: four connections are served, the fifth and later are closed.
    let mut held = Vec::new();
    for i in 0..4 {
        let mut c = connect_from([127, 0, 0, 1], sip).await;
        let status = probe(&mut c, &format!("held-{i}")).await;
        assert_eq!(status.as_deref(), Some("SIP/2.0 200 OK"));
        held.push(c);
    }
    for i in 0..3 {
        let mut c = connect_from([127, 0, 0, 1], sip).await;
        assert_eq!(
            probe(&mut c, &format!("over-{i}")).await,
            None,
            "a connection over the per-address cap is closed unanswered"
        );
    }
    assert!(
        metric_reaches(
            &gw,
            r#"callbridge_sip_connections_refused_total{reason="per_ip"}"#,
            3
        )
        .await
    );

    // Another address fills the total; a third is refused although it holds none.
    for i in 0..4 {
        let mut c = connect_from([127, 0, 0, 3], sip).await;
        assert!(probe(&mut c, &format!("fill-{i}")).await.is_some());
        held.push(c);
    }
    let mut c = connect_from([127, 0, 0, 4], sip).await;
    assert_eq!(probe(&mut c, "over-total").await, None);
    assert!(
        metric_reaches(
            &gw,
            r#"callbridge_sip_connections_refused_total{reason="total"}"#,
            1
        )
        .await
    );

    // The trunk's address has its own room: its call goes through over TCP.
    trunk_call_goes_through(&gw, &mut ws).await;

    // The flood's connections are still the ones served (nothing was evicted).
    assert!(probe(&mut held[0], "still-held").await.is_some());
    drop(held);
    gw.stop().await;
}

#[tokio::test]
async fn a_peer_sending_only_keepalives_is_closed_at_the_idle_limit() {
    let mut config = config();
    // Ten times the talker's interval below, so a loaded machine cannot close it.
    config.sip.tcp_idle_timeout = Duration::from_secs(2);
    let gw = TestGateway::start(config).await;
    let sip = gw.server.as_ref().expect("running").sip_addr;
    let (mut ws, _) = gw.connect_as("alice", "calls:inbound").await;

    // The attacker pings every 200 ms (RFC 5626 keepalives), far more often than the
    // limit: before, each ping reset the idle timer and the connection lived forever.
    let mut idler = connect_from([127, 0, 0, 1], sip).await;
    let mut talker = connect_from([127, 0, 0, 3], sip).await;
    let (mut reader, mut writer) = idler.split();
    let pinging = async {
        loop {
            if writer.write_all(b"\r\n\r\n").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let closed = async {
        let mut buf = [0u8; 256];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue, // pongs
            }
        }
    };
    // Meanwhile a peer sending real requests as often is kept.
    let talking = async {
        let mut n = 0;
        loop {
            n += 1;
            let status = probe(&mut talker, &format!("talk-{n}")).await;
            assert_eq!(status.as_deref(), Some("SIP/2.0 200 OK"), "request {n}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(WAIT, async {
        tokio::select! {
            () = closed => {}
            () = pinging => panic!("the ping writer failed before the close was seen"),
            () = talking => unreachable!(),
        }
    })
    .await
    .expect("the keepalive-only connection was not closed");
    assert_eq!(
        probe(&mut talker, "after").await.as_deref(),
        Some("SIP/2.0 200 OK"),
        "a connection carrying requests stays open"
    );
    assert!(
        metric(
            &gw,
            r#"callbridge_sip_connections_closed_total{reason="idle"}"#
        ) >= 1
    );
    drop(talker);
    trunk_call_goes_through(&gw, &mut ws).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_peer_that_never_reads_is_cut_by_the_write_timeout() {
    let mut config = config();
    config.sip.tcp_write_timeout = Duration::from_secs(1);
    let gw = TestGateway::start(config).await;
    let sip = gw.server.as_ref().expect("running").sip_addr;
    let (mut ws, _) = gw.connect_as("alice", "calls:inbound").await;

    // A small receive window and large answers (every Via is echoed) fill the
    // socket buffers after a few requests; the peer never reads.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let stream = socket.connect(sip).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let vias: String = (0..150)
        .map(|i| {
            format!(
                "Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKpad{i:04}xxxxxxxxxxxxxxxxxxxxxxxx\r\n"
            )
        })
        .collect();
    let flooding = tokio::spawn(async move {
        for n in 0.. {
            let request = options(&format!("noread-{n}"), &vias);
            if writer.write_all(request.as_bytes()).await.is_err() {
                return n;
            }
        }
        unreachable!()
    });
    assert!(
        metric_reaches(
            &gw,
            r#"callbridge_sip_connections_closed_total{reason="write_timeout"}"#,
            1
        )
        .await,
        "the blocked write was not cut"
    );
    // The connection is gone: draining what was delivered ends in EOF or a reset.
    let mut buf = vec![0u8; 64 * 1024];
    let gone = tokio::time::timeout(WAIT, async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(gone.is_ok(), "the gateway still holds the connection");
    let sent = tokio::time::timeout(WAIT, flooding)
        .await
        .expect("the flood's writes end once the gateway closed")
        .expect("flood task");
    assert!(
        sent > 1,
        "several requests went out before the cut ({sent})"
    );
    trunk_call_goes_through(&gw, &mut ws).await;
    gw.stop().await;
}

#[tokio::test]
async fn stalled_tls_handshakes_are_capped_and_timed_out() {
    let cert = common::tls::test_cert();
    let mut config = config();
    config.tls = Some(callbridge::config::TlsConfig {
        cert: cert.ca_path.clone(),
        key: cert.key_path.clone(),
    });
    config.sip.tls_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.sip.max_tls_handshakes = 2;
    config.sip.tls_handshake_timeout = Duration::from_secs(1);
    let gw = TestGateway::start(config).await;
    let tls = gw
        .server
        .as_ref()
        .expect("running")
        .gateway
        .sip
        .tls_local_addr()
        .expect("TLS listener");

    // Two connections that never start their handshake hold both slots (the
    // listener takes connections in order); a third is closed at once.
    let mut stalled = Vec::new();
    for ip in [[127, 0, 0, 1], [127, 0, 0, 3]] {
        stalled.push(connect_from(ip, tls).await);
    }
    let mut third = connect_from([127, 0, 0, 4], tls).await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, third.read(&mut buf))
        .await
        .expect("the third connection is closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(
        metric_reaches(
            &gw,
            r#"callbridge_sip_connections_refused_total{reason="tls_handshakes"}"#,
            1
        )
        .await
    );
    // Before, a stalled handshake held a connection for 5 s whatever the config,
    // and nothing capped how many ran at once.
    for c in &mut stalled {
        let n = tokio::time::timeout(WAIT, c.read(&mut buf))
            .await
            .expect("a stalled handshake is cut at its timeout");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
    assert!(
        metric_reaches(
            &gw,
            r#"callbridge_sip_connections_closed_total{reason="tls_handshake"}"#,
            2
        )
        .await
    );
    // The slots are free again: a real TLS client is answered.
    let answer = common::tls::options_over_tls(tls, &cert.ca_path, None).await;
    assert!(
        answer
            .as_deref()
            .is_some_and(|a| a.starts_with("SIP/2.0 200 OK")),
        "{answer:?}"
    );
    gw.stop().await;
}
