//! The gateway's DTLS identity, against running gateways: every call's SDP answer
//! carries the same `a=fingerprint`, that of the certificate the call manager made at
//! start; two calls complete their DTLS handshakes with it at the same time and their
//! audio echoes back; another gateway has a certificate of its own.
//!
//! The browsers are `webrtc`-crate clients, which check the certificate of the DTLS
//! handshake against the answer's fingerprint; the far end is the built-in echo UAS.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::browser::{Browser, BrowserOptions};
use common::call::TestCall;
use common::gateway::{TestGateway, WsClient, test_config};

async fn gateway() -> TestGateway {
    let mut config = test_config(None);
    config.echo.enabled = true;
    TestGateway::start(config).await
}

/// The value of the one `a=fingerprint:` line of `sdp`.
fn fingerprint(sdp: &str) -> String {
    let found: Vec<&str> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=fingerprint:"))
        .collect();
    assert_eq!(found.len(), 1, "one fingerprint in the answer: {sdp}");
    found[0].trim().to_string()
}

/// A call to the echo from a fresh session of `user`, answered; returns its
/// session, browser and the fingerprint of the gateway's SDP answer.
async fn echo_call(gw: &TestGateway, user: &str) -> (WsClient, TestCall, Arc<Browser>, String) {
    let (mut ws, _) = gw.connect_as(user, "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), user, "echo").await;
    let answer = call.until(&mut ws, &["answer"]).await;
    let fp = fingerprint(answer["sdp"].as_str().expect("answer has sdp"));
    call.until(&mut ws, &["answered"]).await;
    (ws, call, browser, fp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_answered_with_the_gateways_one_certificate() {
    let gw = gateway().await;
    let (mut ws1, call1, first, fp1) = echo_call(&gw, "alice").await;
    let (mut ws2, call2, second, fp2) = echo_call(&gw, "bob").await;
    assert_eq!(fp1, fp2, "both answers carry the same certificate");
    let made_at_start = gw
        .server
        .as_ref()
        .expect("running")
        .gateway
        .calls
        .dtls_identity()
        .fingerprint()
        .expect("the gateway's certificate");
    assert_eq!(fp1, made_at_start, "the one the call manager holds");

    // Both handshakes complete with it, at the same time, and audio flows.
    for browser in [&first, &second] {
        assert!(
            browser.wait_connected(Duration::from_secs(10)).await,
            "ICE and DTLS up"
        );
        let _tone = browser.start_sending_tone(50);
    }
    for browser in [&first, &second] {
        assert!(
            browser.wait_received(30, Duration::from_secs(10)).await,
            "the echo came back"
        );
    }

    // Another gateway process makes its own certificate.
    let other = gateway().await;
    let (mut ws3, call3, third, fp3) = echo_call(&other, "carol").await;
    assert_ne!(fp3, fp1, "each gateway makes its own certificate");

    for (ws, call) in [(&mut ws1, &call1), (&mut ws2, &call2)] {
        call.hangup(ws).await;
    }
    call3.hangup(&mut ws3).await;
    for browser in [first, second, third] {
        browser.close().await;
    }
    other.stop().await;
    gw.stop().await;
}
