//! Abuse: REFER as a toll-fraud path, against a running gateway (`TestGateway`)
//! with a webrtc-crate browser and real SIPp peers on loopback. "Outside" hosts
//! (a REFER target, a foreign Contact, an attacker) run on 127.0.0.2 and 127.0.0.3
//! so that they are other addresses than the trunks on 127.0.0.1.
//!
//! - a REFER on a default trunk is declined (603) and nobody is called;
//! - with `refer = "dialplan"`, a Refer-To naming a host (no number, or a name the
//!   dial plan refuses) is refused and that host never hears from us;
//! - a number the dial plan routes is transferred through the route's trunk with
//!   that trunk's credentials (the legitimate path), never via the Refer-To host;
//! - a refused number and a user at their concurrent-call limit are refused with
//!   a final NOTIFY, and the call goes on;
//! - a BYE/REFER injected from another address with the dialog's Call-ID and tags
//!   gets 403 and the call goes on;
//! - a far end whose Contact points off the trunk never gets the trunk's digest
//!   credentials (ACK, challenged BYE).
//!
//! Each test also checks the call still works: audio echoes and the hangup ends
//! it with a BYE the trunk answers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use callbridge::config::{Config, RouteConfig, TrunkConfig};
use callbridge::sip::Direction;
use common::browser::{Browser, BrowserOptions};
use common::call::TestCall;
use common::gateway::{TestGateway, WsClient, test_config};
use common::sipp::{Sipp, SippOutcome, eventually};

const WAIT: Duration = Duration::from_secs(20);
/// A number the dial plan routes to trunk "carol".
const CAROL_NUMBER: &str = "+16665550100";
/// Digest credentials of the first trunk: they must never leave it.
const TRUNK_USER: &str = "trunk-acct";

/// A SIPp as an outside host on `ip` that must never be called (`outside_host.xml`).
fn outside_host(ip: &str) -> Sipp {
    Sipp::uas(Some(&Sipp::scenario("outside_host.xml")), &["-i", ip])
}

/// Ends an outside host with an OPTIONS (its only expected request) and returns
/// what it saw.
async fn end_outside(outside: &mut Sipp) -> SippOutcome {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = socket.local_addr().expect("addr").port();
    let addr = outside.addr;
    let options = format!(
        "OPTIONS sip:outside@{addr} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKendmarker\r\nFrom: <sip:test@127.0.0.1>;tag=marker\r\nTo: <sip:outside@{addr}>\r\nCall-ID: end-of-test@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    socket
        .send_to(options.as_bytes(), addr)
        .await
        .expect("send OPTIONS");
    let mut buf = [0u8; 2048];
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf)).await;
    outside.wait(WAIT).await
}

/// Asserts an outside host got no INVITE and no credentials, only the end marker.
fn assert_never_called(outside: &SippOutcome) {
    assert!(
        !outside.messages.contains("INVITE sip:"),
        "the outside host was called:\n{}",
        outside.messages
    );
    assert!(
        !outside.messages.contains("Authorization:"),
        "credentials reached the outside host:\n{}",
        outside.messages
    );
    outside.assert_one_success();
}

/// The first trunk at `trunk` with digest credentials and `refer`.
fn config(trunk: std::net::SocketAddr, refer: &str) -> Config {
    let mut config = test_config(Some(trunk));
    let first = &mut config.sip.trunks[0];
    first.username = Some(TRUNK_USER.into());
    first.password = Some("trunk-secret".into());
    first.refer = refer.into();
    config
}

/// Adds trunk "carol" at `addr` (with `credentials`) and routes CAROL_NUMBER to it.
fn with_carol(config: &mut Config, addr: std::net::SocketAddr, credentials: Option<(&str, &str)>) {
    config.sip.trunks.push(TrunkConfig {
        name: "carol".into(),
        address: addr.to_string(),
        username: credentials.map(|c| c.0.into()),
        password: credentials.map(|c| c.1.into()),
        ..TrunkConfig::default()
    });
    config
        .dialplan
        .routes
        .insert(0, RouteConfig::new(r"^\+1666", vec!["carol".into()]));
}

/// SIP responses the gateway sent for `method` with `status`.
fn responses_sent(gw: &TestGateway, method: &str, status: u16) -> u64 {
    let server = gw.server.as_ref().expect("gateway running");
    server
        .gateway
        .sip
        .message_counts()
        .iter()
        .filter(|c| {
            c.direction == Direction::Outbound
                && c.method == method
                && c.status == callbridge::sip::status_label(Some(status))
        })
        .map(|c| c.count)
        .sum()
}

/// A browser call to a number the first trunk takes, answered with ICE up.
async fn answered_call(gw: &TestGateway, user: &str) -> (WsClient, Arc<Browser>, TestCall) {
    let (mut ws, _) = gw.connect_as(user, "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "r1", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    assert!(
        browser.wait_connected(Duration::from_secs(10)).await,
        "ICE/DTLS up"
    );
    (ws, browser, call)
}

/// The call still carries audio: our tone comes back from the far end's echo.
async fn audio_echoes(browser: &Arc<Browser>) {
    let before = browser.received().len();
    let _ = browser.start_sending_tone(50).await;
    assert!(
        browser
            .wait_received(before + 35, Duration::from_secs(10))
            .await,
        "audio echoed by the far end"
    );
}

/// Hangs up from the browser and checks the call ends as a hangup.
async fn hang_up(ws: &mut WsClient, call: &mut TestCall) {
    call.hangup(ws).await;
    assert_eq!(call.until(ws, &["ended"]).await["reason"], "hangup");
}

#[tokio::test]
async fn refer_on_a_default_trunk_is_declined_and_nobody_is_called() {
    let mut outside = outside_host("127.0.0.2");
    let refer_to = format!("sip:+15557654321@{}", outside.addr);
    let mut trunk = Sipp::uas(
        Some(&Sipp::scenario("uas_refer_declined.xml")),
        &[
            "-key",
            "refer_to",
            &refer_to,
            "-rtp_echo",
            "-mp",
            &common::ports::port().to_string(),
        ],
    );
    // Default trunk settings: refer = "reject".
    let mut config = test_config(Some(trunk.addr));
    config.sip.trunks[0].username = Some(TRUNK_USER.into());
    config.sip.trunks[0].password = Some("trunk-secret".into());
    let gw = TestGateway::start(config).await;
    let (mut ws, browser, mut call) = answered_call(&gw, "dora").await;
    assert!(
        eventually(WAIT, || responses_sent(&gw, "REFER", 603) == 1).await,
        "the REFER was declined with 603"
    );
    assert_eq!(responses_sent(&gw, "REFER", 202), 0, "never accepted");
    audio_echoes(&browser).await;
    hang_up(&mut ws, &mut call).await;
    // The scenario checked 603 (not 202, no NOTIFY) and got our BYE.
    trunk.wait(WAIT).await.assert_one_success();
    assert_never_called(&end_outside(&mut outside).await);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn dialplan_refer_to_a_host_is_refused_and_the_host_never_called() {
    let mut outside = outside_host("127.0.0.2");
    // A bare host (no number), then a name the dial plan has no route for.
    let bare = format!("sip:{}", outside.addr);
    let named = format!("sip:outside@{}", outside.addr);
    let mut trunk = Sipp::uas(
        Some(&Sipp::scenario("uas_refer_refused.xml")),
        &[
            "-key",
            "refer_to",
            &bare,
            "-key",
            "refer_to2",
            &named,
            "-rtp_echo",
            "-mp",
            &common::ports::port().to_string(),
        ],
    );
    let gw = TestGateway::start(config(trunk.addr, "dialplan")).await;
    let (mut ws, browser, mut call) = answered_call(&gw, "erin").await;
    assert!(
        eventually(WAIT, || responses_sent(&gw, "REFER", 202) == 2).await,
        "both REFERs accepted for the dial plan to judge"
    );
    // Both refused (final NOTIFYs checked by the scenario); the call goes on.
    let refused = eventually(WAIT, || {
        let log = trunk.read("messages.log");
        log.contains("SIP/2.0 404 Not Found") && log.contains("SIP/2.0 403 Forbidden")
    })
    .await;
    assert!(refused, "{}", trunk.read("messages.log"));
    audio_echoes(&browser).await;
    hang_up(&mut ws, &mut call).await;
    trunk.wait(WAIT).await.assert_one_success();
    assert_never_called(&end_outside(&mut outside).await);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn dialplan_transfer_goes_through_the_route_trunk_with_its_own_credentials() {
    let mut outside = outside_host("127.0.0.2");
    // The Refer-To names the outside host; only its number counts.
    let refer_to = format!("sip:{CAROL_NUMBER}@{}", outside.addr);
    // carol's trunk challenges (alice / s3cret), then answers and echoes audio.
    let mut carol = Sipp::uas(
        Some(&Sipp::scenario("uas_auth_401.xml")),
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let mut transferor = Sipp::uas(
        Some(&Sipp::scenario("uas_refer.xml")),
        &[
            "-key",
            "refer_to",
            &refer_to,
            "-mp",
            &common::ports::port().to_string(),
        ],
    );
    let mut config = config(transferor.addr, "dialplan");
    with_carol(&mut config, carol.addr, Some(("alice", "s3cret")));
    let gw = TestGateway::start(config).await;
    let (mut ws, browser, mut call) = answered_call(&gw, "fred").await;
    // The transferor saw NOTIFY 200 (transfer done) and hung up its own dialog.
    let transferor_out = transferor.wait(WAIT).await;
    transferor_out.assert_one_success();
    audio_echoes(&browser).await;
    hang_up(&mut ws, &mut call).await;
    let carol_out = carol.wait(WAIT).await;
    // verifyauth passed: carol got carol's credentials, and the BYE at the end.
    carol_out.assert_one_success();
    assert!(
        carol_out
            .messages
            .contains(&format!("INVITE sip:{CAROL_NUMBER}@127.0.0.1 SIP/2.0")),
        "{}",
        carol_out.messages
    );
    assert!(carol_out.messages.contains("username=\"alice\""));
    // The first trunk's account is its own From user (carriers check it), but its
    // credentials answer no one else's challenge.
    let first_trunk_auth = format!("username=\"{TRUNK_USER}\"");
    assert!(
        !carol_out.messages.contains(&first_trunk_auth)
            && !transferor_out.messages.contains(&first_trunk_auth),
        "the first trunk's credentials went nowhere"
    );
    assert_never_called(&end_outside(&mut outside).await);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn refused_number_and_user_at_their_limit_are_refused_and_the_call_goes_on() {
    // carol's trunk must not be called either: the second transfer is over limit.
    let mut carol = outside_host("127.0.0.2");
    let mut trunk = Sipp::uas(
        Some(&Sipp::scenario("uas_refer_refused.xml")),
        &[
            "-key",
            "refer_to",
            "sip:+99912345@127.0.0.1",
            "-key",
            "refer_to2",
            &format!("sip:{CAROL_NUMBER}@127.0.0.1"),
            "-rtp_echo",
            "-mp",
            &common::ports::port().to_string(),
        ],
    );
    let mut config = config(trunk.addr, "dialplan");
    with_carol(&mut config, carol.addr, None);
    // The call itself is the user's one allowed call.
    config.limits.max_calls_per_user = 1;
    let gw = TestGateway::start(config).await;
    let (mut ws, browser, mut call) = answered_call(&gw, "gina").await;
    let refused = eventually(WAIT, || {
        let log = trunk.read("messages.log");
        log.contains("SIP/2.0 403 Forbidden") && log.contains("SIP/2.0 486 Busy Here")
    })
    .await;
    assert!(refused, "{}", trunk.read("messages.log"));
    audio_echoes(&browser).await;
    hang_up(&mut ws, &mut call).await;
    trunk.wait(WAIT).await.assert_one_success();
    assert_never_called(&end_outside(&mut carol).await);
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn bye_and_refer_injected_from_another_address_are_refused() {
    let mut trunk = Sipp::uas(
        Some(&Sipp::scenario("uas_answer_export_dialog.xml")),
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let gw = TestGateway::start(config(trunk.addr, "dialplan")).await;
    let sip_addr = gw.server.as_ref().expect("running").sip_addr;
    let (mut ws, browser, mut call) = answered_call(&gw, "hugo").await;
    // What an on-path attacker learns: the Call-ID and our From tag (the trunk's
    // To tag is "trunk1").
    let dialog = trunk.dir.join("dialog.txt");
    let read = || std::fs::read_to_string(&dialog).unwrap_or_default();
    assert!(
        eventually(WAIT, || read().split_whitespace().count() == 3).await,
        "the trunk exported its dialog"
    );
    let fields: Vec<String> = read().split_whitespace().map(str::to_string).collect();
    let (call_id, our_tag) = (&fields[0], &fields[1]);
    let mut attacker = Sipp::uac(
        &Sipp::scenario("attacker_inject.xml"),
        sip_addr,
        "callbridge",
        &[
            "-i",
            "127.0.0.2",
            "-cid_str",
            call_id,
            "-key",
            "our_tag",
            our_tag,
            "-key",
            "gw_port",
            &sip_addr.port().to_string(),
        ],
    );
    // Both injected requests got 403 (the scenario fails on anything else).
    attacker.wait(WAIT).await.assert_one_success();
    assert_eq!(responses_sent(&gw, "BYE", 403), 1);
    assert_eq!(responses_sent(&gw, "REFER", 403), 1);
    assert_eq!(responses_sent(&gw, "REFER", 202), 0);
    audio_echoes(&browser).await;
    hang_up(&mut ws, &mut call).await;
    trunk.wait(WAIT).await.assert_one_success();
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn credentials_never_follow_a_contact_off_the_trunk() {
    // The far end's Contact (and so the ACK and the BYE) is another host, which
    // challenges the BYE to draw the trunk's digest response out.
    let mut outside = Sipp::uas(
        Some(&Sipp::scenario("outside_challenges_bye.xml")),
        &["-i", "127.0.0.3"],
    );
    let outside_port = outside.addr.port().to_string();
    let mut trunk = Sipp::uas(
        Some(&Sipp::scenario("uas_401_then_foreign_contact.xml")),
        &["-key", "outside_port", &outside_port],
    );
    let gw = TestGateway::start(config(trunk.addr, "reject")).await;
    let (mut ws, _) = gw.connect_as("ivan", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "c1", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    // The legitimate path: the trunk challenged and got the credentials.
    let trunk_out = trunk.wait(WAIT).await;
    trunk_out.assert_one_success();
    assert!(trunk_out.messages.contains("username=\"trunk-acct\""));
    hang_up(&mut ws, &mut call).await;
    // The outside host got the ACK and the BYE, challenged it, and nothing came
    // again (a retried BYE would fail its scenario).
    let outside_out = outside.wait(WAIT).await;
    outside_out.assert_one_success();
    assert!(
        outside_out.messages.contains("BYE sip:far@127.0.0.3"),
        "{}",
        outside_out.messages
    );
    assert!(
        !outside_out.messages.contains("Authorization:"),
        "credentials reached the foreign Contact:\n{}",
        outside_out.messages
    );
    browser.close().await;
    gw.stop().await;
}
