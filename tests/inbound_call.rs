//! Inbound calls end to end: SIPp as the carrier's UAC calls a DID; test browsers
//! (webrtc-crate peers) connected with `calls:inbound` get `incoming`, accept or
//! reject, and the media flows both ways.

mod common;

use std::sync::Arc;
use std::time::Duration;

use callbridge::config::{Config, DidConfig, TrunkConfig};
use callbridge::media::webrtc_leg::IceCandidate;
use common::browser::{Browser, frame_number};
use common::gateway::{TestGateway, WsClient, test_config};
use common::sipp::Sipp;
use serde_json::{Value, json};

const DID: &str = "+15550001111";

/// A gateway whose DID rings `alice`, admitting inbound INVITEs from 127.0.0.1.
fn config() -> Config {
    let mut config = test_config(None);
    config.sip.trunks.push(TrunkConfig {
        name: "carrier".into(),
        address: "127.0.0.1:9".into(),
        ..TrunkConfig::default()
    });
    config.dids.push(DidConfig {
        number: DID.into(),
        user: "alice".into(),
    });
    config.inbound.ring_timeout = Duration::from_secs(20);
    config
}

/// A browser-side handler of one incoming call: applies the gateway's offer, sends
/// the answer and trickles ICE.
struct Incoming {
    call_id: String,
    browser: Arc<Browser>,
}

impl Incoming {
    /// Waits for `incoming`, answers it with a fresh browser.
    async fn accept(ws: &mut WsClient) -> Incoming {
        let incoming = ws.recv_type("incoming", |_| {}).await;
        assert_eq!(incoming["to"], DID);
        assert_eq!(incoming["from"], "+15552223333");
        let call_id = incoming["call_id"].as_str().expect("call id").to_string();
        let browser = Browser::answering(incoming["sdp"].as_str().expect("offer")).await;
        ws.send(json!({"type": "accept", "call_id": call_id, "sdp": browser.offer_sdp()}))
            .await;
        let mut candidates = browser.take_candidates();
        while let Ok(Some(Some(c))) =
            tokio::time::timeout(Duration::from_millis(500), candidates.recv()).await
        {
            ws.send(json!({"type": "ice", "call_id": call_id, "candidate": c}))
                .await;
        }
        Incoming { call_id, browser }
    }

    /// Processes `ice` from the gateway until `kind` arrives for this call.
    async fn until(&self, ws: &mut WsClient, kind: &str) -> Value {
        loop {
            let m = ws.recv().await;
            if m["call_id"] != self.call_id.as_str() {
                continue;
            }
            if m["type"] == "ice" {
                if let Ok(c) = serde_json::from_value::<IceCandidate>(m["candidate"].clone()) {
                    self.browser.add_remote_candidate(c).await;
                }
                continue;
            }
            if m["type"] == kind {
                return m;
            }
        }
    }
}

#[tokio::test]
async fn sipp_calls_a_did_browser_accepts_media_both_ways_caller_hangs_up() {
    let gw = TestGateway::start(config()).await;
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
    let call = Incoming::accept(&mut ws).await;
    call.until(&mut ws, "answered").await;
    assert!(
        call.browser.wait_connected(Duration::from_secs(10)).await,
        "ICE/DTLS up"
    );
    let sent = call.browser.start_sending_tone(60).await.expect("tone");
    assert!(
        call.browser
            .wait_received(45, Duration::from_secs(10))
            .await,
        "SIPp echoed our audio"
    );
    let back: std::collections::HashSet<u32> = call
        .browser
        .received()
        .iter()
        .filter_map(|p| frame_number(&p.payload))
        .collect();
    let echoed = sent
        .iter()
        .filter_map(|p| frame_number(p))
        .filter(|n| back.contains(n))
        .count();
    assert!(
        echoed >= 45,
        "{echoed}/60 tone frames came back through the trunk"
    );
    let ended = call.until(&mut ws, "ended").await;
    assert_eq!(ended["reason"], "remote_hangup");
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    call.browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn browser_hangs_up_an_inbound_call_and_the_caller_gets_bye() {
    let gw = TestGateway::start(config()).await;
    let sip = gw.server.as_ref().expect("running").sip_addr;
    let (mut ws, _) = gw.connect_as("alice", "calls:inbound").await;
    let mut sipp = Sipp::uac(&Sipp::scenario("uac_answer_wait_bye.xml"), sip, DID, &[]);
    let call = Incoming::accept(&mut ws).await;
    call.until(&mut ws, "answered").await;
    ws.send(json!({"type": "hangup", "call_id": call.call_id}))
        .await;
    assert_eq!(call.until(&mut ws, "ended").await["reason"], "hangup");
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    call.browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn two_sessions_ring_the_first_accept_wins() {
    let gw = TestGateway::start(config()).await;
    let sip = gw.server.as_ref().expect("running").sip_addr;
    let (mut first, _) = gw.connect_as("alice", "calls:inbound calls:outbound").await;
    let (mut second, _) = gw.connect_as("alice", "calls:inbound").await;
    let mut sipp = Sipp::uac(&Sipp::scenario("uac_answer_bye.xml"), sip, DID, &[]);
    let offered = second.recv_type("incoming", |_| {}).await;
    let call = Incoming::accept(&mut first).await;
    assert_eq!(
        offered["call_id"],
        call.call_id.as_str(),
        "both sessions got the same call"
    );
    let elsewhere = second.recv_type("ended", |_| {}).await;
    assert_eq!(elsewhere["reason"], "answered_elsewhere");
    call.until(&mut first, "answered").await;
    assert_eq!(
        call.until(&mut first, "ended").await["reason"],
        "remote_hangup"
    );
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    call.browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn reject_is_603_nobody_online_is_480_unknown_did_is_404() {
    let gw = TestGateway::start(config()).await;
    let sip = gw.server.as_ref().expect("running").sip_addr;

    let mut sipp = Sipp::uac(&Sipp::scenario("uac_refused.xml"), sip, DID, &[]);
    let outcome = sipp.wait(Duration::from_secs(20)).await;
    assert!(
        outcome.messages.contains("SIP/2.0 480"),
        "nobody online: {}",
        outcome.messages
    );

    let mut sipp = Sipp::uac(&Sipp::scenario("uac_refused.xml"), sip, "+15559999999", &[]);
    let outcome = sipp.wait(Duration::from_secs(20)).await;
    assert!(
        outcome.messages.contains("SIP/2.0 404"),
        "unknown DID: {}",
        outcome.messages
    );

    let (mut ws, _) = gw.connect_as("alice", "calls:inbound").await;
    let mut sipp = Sipp::uac(&Sipp::scenario("uac_refused.xml"), sip, DID, &[]);
    let incoming = ws.recv_type("incoming", |_| {}).await;
    ws.send(json!({"type": "reject", "call_id": incoming["call_id"]}))
        .await;
    assert_eq!(ws.recv_type("ended", |_| {}).await["reason"], "rejected");
    let outcome = sipp.wait(Duration::from_secs(20)).await;
    assert!(
        outcome.messages.contains("SIP/2.0 603"),
        "reject: {}",
        outcome.messages
    );
    gw.stop().await;
}

#[tokio::test]
async fn caller_cancel_ends_the_ringing_sessions_with_remote_hangup() {
    let gw = TestGateway::start(config()).await;
    let sip = gw.server.as_ref().expect("running").sip_addr;
    let (mut ws, _) = gw.connect_as("alice", "calls:inbound").await;
    let mut sipp = Sipp::uac(&Sipp::scenario("uac_cancel.xml"), sip, DID, &[]);
    ws.recv_type("incoming", |_| {}).await;
    assert_eq!(
        ws.recv_type("ended", |_| {}).await["reason"],
        "remote_hangup"
    );
    // The scenario needs the 200 to CANCEL and the 487 to the INVITE.
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    gw.stop().await;
}

#[tokio::test]
async fn unanswered_call_times_out_with_480() {
    let mut config = config();
    config.inbound.ring_timeout = Duration::from_secs(1);
    let gw = TestGateway::start(config).await;
    let sip = gw.server.as_ref().expect("running").sip_addr;
    let (mut ws, _) = gw.connect_as("alice", "calls:inbound").await;
    let mut sipp = Sipp::uac(&Sipp::scenario("uac_refused.xml"), sip, DID, &[]);
    ws.recv_type("incoming", |_| {}).await;
    assert_eq!(ws.recv_type("ended", |_| {}).await["reason"], "no_answer");
    let outcome = sipp.wait(Duration::from_secs(20)).await;
    assert!(
        outcome.messages.contains("SIP/2.0 480"),
        "{}",
        outcome.messages
    );
    gw.stop().await;
}

#[tokio::test]
async fn sessions_without_calls_inbound_are_not_rung() {
    let gw = TestGateway::start(config()).await;
    let sip = gw.server.as_ref().expect("running").sip_addr;
    let (mut ws, _) = gw.connect_as("alice", "calls:outbound").await;
    let mut sipp = Sipp::uac(&Sipp::scenario("uac_refused.xml"), sip, DID, &[]);
    let outcome = sipp.wait(Duration::from_secs(20)).await;
    assert!(
        outcome.messages.contains("SIP/2.0 480"),
        "{}",
        outcome.messages
    );
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.recv().await["type"], "pong", "no incoming was offered");
    gw.stop().await;
}
