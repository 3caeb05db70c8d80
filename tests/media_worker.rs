//! `media.engine = "worker"` against running gateways with `webrtc`-crate browsers:
//! calls share a worker's one UDP port and each still gets its own audio back; the
//! gateway offers to a browser (inbound) through a worker; a worker bound to a
//! wildcard address answers from the address the browser used; datagrams from strangers
//! on the shared port (no STUN, or a STUN check with a ufrag we never issued) are
//! dropped, counted and never answered, while the live calls go on.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use callbridge::config::{Config, DidConfig, MediaEngineKind, TrunkConfig};
use common::browser::{Browser, BrowserOptions, frame_number};
use common::call::{AcceptedCall, TestCall};
use common::gateway::{TestGateway, http_get, test_config};
use common::sipp::Sipp;
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::{BINDING_REQUEST, Message, Setter};
use rtc::stun::textattrs::TextAttribute;

fn worker_config(workers: usize) -> Config {
    let mut config = test_config(None);
    config.echo.enabled = true;
    config.media.engine = MediaEngineKind::Worker;
    config.media.workers = workers;
    config
}

/// The value of the metric line starting with `name` (labels included).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn dropped(gw: &TestGateway, reason: &str) -> u64 {
    let text = http_get(gw.admin_addr(), "/metrics").await;
    metric(
        &text,
        &format!("callbridge_webrtc_dropped_total{{reason=\"{reason}\"}}"),
    )
}

/// A call to the echo that is connected and hears its own numbered frames.
struct EchoCall {
    call: TestCall,
    browser: std::sync::Arc<Browser>,
    ws: common::gateway::WsClient,
}

async fn echo_call(gw: &TestGateway, user: &str) -> EchoCall {
    let (mut ws, _) = gw.connect_as(user, "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), user, "echo").await;
    call.until(&mut ws, &["answered"]).await;
    call.wait_gateway_candidate(&mut ws).await;
    assert!(
        browser.wait_connected(Duration::from_secs(10)).await,
        "{user}: ICE and DTLS up through the worker"
    );
    EchoCall { call, browser, ws }
}

/// Sends `frames` numbered frames; checks that most come back, all on one stream.
async fn hears_its_own_echo(c: &EchoCall, frames: u32) {
    let already = c.browser.received().len();
    let sent = c.browser.start_sending_tone(frames).await.expect("tone");
    assert!(
        c.browser
            .wait_received(already + frames as usize * 3 / 4, Duration::from_secs(10))
            .await,
        "the echo came back"
    );
    let received = c.browser.received();
    let back: std::collections::HashSet<u32> = received[already..]
        .iter()
        .filter_map(|p| frame_number(&p.payload))
        .collect();
    let echoed = sent
        .iter()
        .filter_map(|p| frame_number(p))
        .filter(|n| back.contains(n))
        .count();
    assert!(
        echoed >= frames as usize * 3 / 4,
        "{echoed}/{frames} frames echoed"
    );
    let ssrcs: std::collections::HashSet<u32> = received.iter().map(|p| p.ssrc).collect();
    assert_eq!(ssrcs.len(), 1, "one stream toward this browser: {ssrcs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_share_one_worker_port_and_each_hears_its_own_echo() {
    let gw = TestGateway::start(worker_config(1)).await;
    let mut a = echo_call(&gw, "ada").await;
    let mut b = echo_call(&gw, "bob").await;
    let unique = |c: &TestCall| -> std::collections::BTreeSet<SocketAddr> {
        c.gateway_candidates.iter().copied().collect()
    };
    assert_eq!(
        unique(&a.call).len(),
        1,
        "one host candidate: the worker's port"
    );
    assert_eq!(
        unique(&a.call),
        unique(&b.call),
        "one worker: both calls get the same host candidate"
    );
    // Both at once: a datagram of one call handed to the other's leg fails SRTP
    // authentication there, so crossed wires show up as missing echo.
    tokio::join!(hears_its_own_echo(&a, 60), hears_its_own_echo(&b, 60));
    let ssrc_a = a.browser.received().first().map(|p| p.ssrc);
    let ssrc_b = b.browser.received().first().map(|p| p.ssrc);
    assert_ne!(
        ssrc_a, ssrc_b,
        "each call has its own stream toward the browser"
    );
    a.call.hangup(&mut a.ws).await;
    b.call.hangup(&mut b.ws).await;
    a.browser.close().await;
    b.browser.close().await;
    gw.stop().await;
}

fn binding_request(username: &str) -> Vec<u8> {
    let mut m = Message::new();
    m.set_type(BINDING_REQUEST);
    m.new_transaction_id().expect("transaction id");
    TextAttribute::new(ATTR_USERNAME, username.to_string())
        .add_to(&mut m)
        .expect("username");
    m.encode();
    m.raw.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_on_the_shared_port_are_dropped_counted_and_never_answered() {
    let gw = TestGateway::start(worker_config(1)).await;
    let mut live = echo_call(&gw, "ada").await;
    let port: SocketAddr = live.call.gateway_candidates[0];
    let before = (
        dropped(&gw, "unknown_source").await,
        dropped(&gw, "unknown_ufrag").await,
    );

    // The attacker: a fresh socket the gateway never heard of.
    let attacker = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("attacker socket");
    const JUNK: u64 = 20;
    const FOREIGN_CHECKS: u64 = 10;
    for i in 0..JUNK {
        // RTP- and DTLS-looking junk.
        let first = if i % 2 == 0 { 0x80 } else { 0x16 };
        attacker
            .send_to(&[first, 0, 0, 1, 2, 3, 4, 5], port)
            .await
            .expect("send");
    }
    for i in 0..FOREIGN_CHECKS {
        attacker
            .send_to(&binding_request(&format!("notours{i}:x")), port)
            .await
            .expect("send");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let after = loop {
        let now = (
            dropped(&gw, "unknown_source").await,
            dropped(&gw, "unknown_ufrag").await,
        );
        if (now.0 - before.0, now.1 - before.1) == (JUNK, FOREIGN_CHECKS)
            || tokio::time::Instant::now() > deadline
        {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (JUNK, FOREIGN_CHECKS),
        "every stranger datagram dropped and counted by reason"
    );
    // Dropped means unanswered: the worker sends nothing back (it was counted above,
    // so anything it would have answered is already on the wire).
    let mut buf = [0u8; 1500];
    let reply =
        tokio::time::timeout(Duration::from_millis(300), attacker.recv_from(&mut buf)).await;
    assert!(reply.is_err(), "no answer to a stranger: {reply:?}");
    // The live call is untouched.
    hears_its_own_echo(&live, 40).await;
    live.call.hangup(&mut live.ws).await;
    live.browser.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_call_reaches_a_browser_through_a_worker() {
    const DID: &str = "+15550001111";
    let mut config = worker_config(2);
    config.sip.trunks.push(TrunkConfig {
        name: "carrier".into(),
        address: "127.0.0.1:9".into(),
        ..TrunkConfig::default()
    });
    config.dids.push(DidConfig {
        number: DID.into(),
        user: "alice".into(),
    });
    let gw = TestGateway::start(config).await;
    let sip = gw.server.as_ref().expect("running").sip_addr;
    let (mut ws, _) = gw.connect_as("alice", "calls:inbound").await;
    let mut sipp = Sipp::uac(
        &Sipp::scenario("uac_talk.xml"),
        sip,
        DID,
        &[
            "-d",
            "4000",
            "-rtp_echo",
            "-mp",
            &common::ports::port().to_string(),
        ],
    );
    let call = AcceptedCall::accept(&mut ws).await;
    let offer = call.incoming["sdp"].as_str().expect("offer");
    assert!(
        offer.contains("a=candidate:"),
        "the worker's host candidate is in our offer"
    );
    call.until(&mut ws, "answered").await;
    assert!(
        call.browser.wait_connected(Duration::from_secs(10)).await,
        "the answering browser connects to the worker"
    );
    call.browser.start_sending_tone(60).await.expect("tone");
    assert!(
        call.browser
            .wait_received(45, Duration::from_secs(10))
            .await,
        "SIPp echoed our audio through the worker"
    );
    let ended = call.until(&mut ws, "ended").await;
    assert_eq!(ended["reason"], "remote_hangup");
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    call.browser.close().await;
    gw.stop().await;
}

/// With one DTLS handshake datagram per worker turn, calls started together all still
/// connect and echo: the flights that wait are taken in the next turns, none is lost.
/// (Whether two flights meet in one turn depends on timing; the budget's own unit tests
/// check the deferral itself.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_started_together_all_connect_under_a_one_handshake_budget() {
    let mut config = worker_config(1);
    config.media.worker_handshakes_per_turn = 1;
    let gw = TestGateway::start(config).await;
    let users = ["u1", "u2", "u3", "u4", "u5"];
    let calls = futures_util::future::join_all(users.iter().map(|u| echo_call(&gw, u))).await;
    for c in &calls {
        hears_its_own_echo(c, 30).await;
    }
    assert_eq!(
        dropped(&gw, "handshake_backlog").await,
        0,
        "nothing dropped"
    );
    for mut c in calls {
        c.call.hangup(&mut c.ws).await;
        c.browser.close().await;
    }
    gw.stop().await;
}

/// On a wildcard `media_ip` the worker offers the listed host address (127.0.0.2: the
/// kernel would pick 127.0.0.1 as the source toward a browser on 127.0.0.1) and answers
/// each datagram from the address it was sent to. The browser's ICE agent takes a
/// check's response only from where the request went (RFC 8445 §7.2.5.2.1), so
/// without per-datagram source addresses this call never connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_media_ip_answers_from_the_address_the_browser_used() {
    let mut config = worker_config(1);
    config.server.media_ip = IpAddr::from([0, 0, 0, 0]);
    config.sip.external_address = Some(IpAddr::from([127, 0, 0, 1]));
    config.media.host_candidate_ips = vec![IpAddr::from([127, 0, 0, 2])];
    let gw = TestGateway::start(config).await;
    let mut c = echo_call(&gw, "ada").await;
    let hosts: BTreeSet<IpAddr> = c.call.gateway_candidates.iter().map(|a| a.ip()).collect();
    assert_eq!(
        hosts,
        BTreeSet::from([IpAddr::from([127, 0, 0, 2])]),
        "the listed address is the only host candidate"
    );
    hears_its_own_echo(&c, 40).await;
    c.call.hangup(&mut c.ws).await;
    c.browser.close().await;
    gw.stop().await;
}
