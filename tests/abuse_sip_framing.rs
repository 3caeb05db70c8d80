//! Attacks with the contents of SIP messages against a running gateway: request
//! smuggling over TCP with a `Content-Length` that overflows the framer, and invented
//! methods that would grow the message counters. A trunk's TCP SIPp call still goes
//! through afterwards.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use callbridge::config::{Config, DidConfig, TrunkConfig};
use callbridge::sip::{Direction, StreamFramer};
use common::gateway::{TestGateway, WAIT, WsClient, test_config};
use common::sipp::{Sipp, SippTransport};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const DID: &str = "+15550001111";

/// A gateway whose DID rings `alice`, with a TCP trunk admitted from 127.0.0.2.
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

/// A request `method` with Call-ID `call_id`, a `Content-Length` of `length` and no
/// body of its own.
fn request(method: &str, call_id: &str, length: &str, transport: &str) -> String {
    format!(
        "{method} sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{transport} 127.0.0.1:9;branch=z9hG4bK{call_id}\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// Every message the gateway sends on `stream` until it closes it (panics after
/// [`WAIT`] if it does not).
async fn read_until_closed(stream: &mut TcpStream) -> Vec<String> {
    let mut framer = StreamFramer::default();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("the gateway kept the connection open");
        match n {
            Ok(0) | Err(_) => return out,
            Ok(n) => framer.push(&buf[..n]),
        }
        while let Ok(Some(m)) = framer.next_message() {
            out.push(String::from_utf8_lossy(&m).into_owned());
        }
    }
}

/// Inbound requests of `method` the gateway's SIP core has processed.
fn processed(gw: &TestGateway, method: &str) -> u64 {
    let gateway = &gw.server.as_ref().expect("running").gateway;
    gateway
        .sip
        .message_counts()
        .iter()
        .filter(|c| c.direction == Direction::Inbound && c.method == method)
        .map(|c| c.count)
        .sum()
}

/// Rings `alice` through the trunk with a TCP SIPp from 127.0.0.2; she accepts,
/// SIPp hangs up. Panics unless the call went through.
async fn trunk_call_goes_through(gw: &TestGateway, ws: &mut WsClient) {
    let sip = gw.server.as_ref().expect("running").sip_addr;
    let mut sipp = Sipp::uac_from(
        IpAddr::from([127, 0, 0, 2]),
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
    ws.recv_type("answered", |_| {}).await;
    let ended = ws.recv_type("ended", |_| {}).await;
    assert_eq!(ended["reason"], "remote_hangup");
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
}

#[tokio::test]
async fn a_content_length_that_overflows_smuggles_no_second_request() {
    let gw = TestGateway::start(config()).await;
    let sip = gw.server.as_ref().expect("running").sip_addr;
    let (mut ws, _) = gw.connect_as("alice", "calls:inbound").await;
    // Before: `head + 4 + Content-Length` overflowed. A debug build panicked in the
    // connection task; a release build wrapped to a length shorter than the header
    // section, cut the first message there and framed the second request (which a
    // front proxy had taken for the first one's body) as a message of its own.
    let cases = [
        ("18446744073709551615", "413"),
        ("18446744073709551612", "413"),
        ("99999999999999999999999", "413"),
        ("70000", "413"),
        ("-1", "400"),
        ("+0", "400"),
        ("0x10", "400"),
    ];
    for (i, (length, status)) in cases.iter().enumerate() {
        let mut stream = TcpStream::connect(sip).await.expect("connect");
        let first = request("OPTIONS", &format!("first-{i}"), length, "TCP");
        let smuggled = request("OPTIONS", &format!("smuggled-{i}"), "0", "TCP");
        stream
            .write_all(format!("{first}{smuggled}").as_bytes())
            .await
            .expect("write");
        let replies = read_until_closed(&mut stream).await;
        assert_eq!(replies.len(), 1, "{length}: {replies:?}");
        assert!(
            replies[0].starts_with(&format!("SIP/2.0 {status} ")),
            "{length}: {}",
            replies[0]
        );
        assert!(replies[0].contains(&format!("Call-ID: first-{i}\r\n")));
        assert!(
            replies[0].contains("Warning: 399 callbridge"),
            "the reply says what was wrong: {}",
            replies[0]
        );
    }
    assert_eq!(
        processed(&gw, "OPTIONS"),
        0,
        "neither the unframable request nor the smuggled one reached the SIP core"
    );
    // A well-framed request on a new connection is served as usual.
    let mut stream = TcpStream::connect(sip).await.expect("connect");
    stream
        .write_all(request("OPTIONS", "legit", "0", "TCP").as_bytes())
        .await
        .expect("write");
    let mut framer = StreamFramer::default();
    let mut buf = [0u8; 4096];
    let reply = loop {
        if let Some(m) = framer.next_message().expect("frames") {
            break String::from_utf8_lossy(&m).into_owned();
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("answer")
            .expect("read");
        assert!(n > 0, "closed");
        framer.push(&buf[..n]);
    };
    assert!(reply.starts_with("SIP/2.0 200 OK\r\n"), "{reply}");
    trunk_call_goes_through(&gw, &mut ws).await;
    gw.stop().await;
}

/// The `method` label values of `callbridge_sip_messages_total` in `text`.
fn method_labels(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("callbridge_sip_messages_total{"))
        .filter_map(|l| {
            let rest = l.split("method=\"").nth(1)?;
            Some(rest.split('"').next()?.to_string())
        })
        .collect()
}

#[tokio::test]
async fn invented_methods_do_not_grow_the_message_counters() {
    let gw = TestGateway::start(config()).await;
    let server = gw.server.as_ref().expect("running");
    let sip: SocketAddr = server.sip_addr;
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let ping = request("OPTIONS", "before", "0", "UDP");
    socket.send_to(ping.as_bytes(), sip).await.expect("send");
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .expect("answer")
        .expect("recv");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200 OK"));
    let series_before = server.gateway.sip.message_counts().len();

    let invented: Vec<String> = (0..50)
        .map(|_| format!("X{:016X}", rand::random::<u64>()))
        .collect();
    for (i, method) in invented.iter().enumerate() {
        let text = request(method, &format!("invented-{i}"), "0", "UDP");
        socket.send_to(text.as_bytes(), sip).await.expect("send");
    }
    // Every one is answered (501): wait for the 50 answers, then read the counters.
    for _ in 0..invented.len() {
        let (n, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
            .await
            .expect("every invented method is answered")
            .expect("recv");
        let reply = String::from_utf8_lossy(&buf[..n]);
        assert!(reply.starts_with("SIP/2.0 501 "), "{reply}");
    }
    let counts = server.gateway.sip.message_counts();
    assert!(
        counts.len() <= series_before + 2,
        "one `other` series each way at most: {counts:?}"
    );
    let other_in: u64 = counts
        .iter()
        .filter(|c| c.direction == Direction::Inbound && c.method == "other")
        .map(|c| c.count)
        .sum();
    assert_eq!(other_in, 50, "all counted, under `other`");
    let text = server.gateway.metrics.render();
    let labels = method_labels(&text);
    for label in &labels {
        assert!(
            label == "other" || callbridge::sip::method_label(label) == label,
            "label {label:?} is outside the fixed set"
        );
    }
    assert!(
        labels.contains("other") && labels.contains("OPTIONS"),
        "{labels:?}"
    );
    for method in &invented {
        assert!(!text.contains(method.as_str()), "{method} became a label");
    }
    gw.stop().await;
}
