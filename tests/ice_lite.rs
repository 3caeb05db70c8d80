//! `media.ice_lite`, against running gateways: with it on, the SDP answer says
//! `a=ice-lite` and a full-ICE `webrtc`-crate browser (the controlling agent, doing all
//! the checks) connects, completes DTLS and hears the built-in echo; with it off (the
//! default) the answer is full ICE.

mod common;

use std::time::Duration;

use common::browser::{Browser, BrowserOptions};
use common::call::TestCall;
use common::gateway::{TestGateway, test_config};

async fn gateway(ice_lite: bool) -> TestGateway {
    let mut config = test_config(None);
    config.echo.enabled = true;
    config.media.ice_lite = ice_lite;
    TestGateway::start(config).await
}

/// Places a call to the echo; returns whether the answer is ICE-lite, after checking
/// that the call connects and echoes audio.
async fn echo_call_is_lite(gw: &TestGateway) -> bool {
    let (mut ws, _) = gw.connect_as("lena", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "lena", "echo").await;
    let answer = call.until(&mut ws, &["answer"]).await;
    let sdp = answer["sdp"].as_str().expect("answer has sdp").to_string();
    call.until(&mut ws, &["answered"]).await;
    assert!(
        browser.wait_connected(Duration::from_secs(10)).await,
        "ICE and DTLS up"
    );
    let _tone = browser.start_sending_tone(50);
    assert!(
        browser.wait_received(30, Duration::from_secs(10)).await,
        "the echo came back"
    );
    call.hangup(&mut ws).await;
    browser.close().await;
    sdp.lines().any(|l| l.trim() == "a=ice-lite")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ice_lite_gateway_says_so_and_a_full_agent_connects_to_it() {
    let gw = gateway(true).await;
    assert!(echo_call_is_lite(&gw).await, "a=ice-lite in the answer");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_ice_is_the_default() {
    let gw = gateway(false).await;
    assert!(!echo_call_is_lite(&gw).await, "no a=ice-lite by default");
    gw.stop().await;
}
