//! End to end through the whole gateway: the test browser calls over protocol v1, the
//! gateway's SIP UA calls a real SIPp whose media is `-rtp_echo`.
//!

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use common::browser::{Browser, BrowserOptions, PT_OPUS, tone_to_noise};
use common::call::TestCall;
use common::gateway::{TestGateway, test_config};
use common::sipp::Sipp;
use serde_json::json;

/// A UAS scenario answering PCMU plus `telephone-event/8000` (101), then waiting for
/// the BYE. SIPp's built-in UAS answers PCMU only, so RFC 4733 would not be negotiated.
const UAS_WITH_TELEPHONE_EVENT: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="UAS answering PCMU and telephone-event">
  <recv request="INVITE" />
  <send>
    <![CDATA[

      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16

    ]]>
  </send>
  <recv request="ACK" timeout="10000" />
  <recv request="BYE" timeout="60000" />
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#;

/// Writes the telephone-event scenario into `dir`.
fn te_scenario(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("uas_echo_te.xml");
    std::fs::write(&path, UAS_WITH_TELEPHONE_EVENT).expect("write scenario");
    path
}

/// RFC 4733 event codes the browser received on its telephone-event payload type.
fn events_back(browser: &Browser) -> HashSet<u8> {
    let pt = browser.options().dtmf_payload_type;
    browser
        .received()
        .iter()
        .filter(|p| p.payload_type == pt)
        .filter_map(|p| p.payload.first().copied())
        .collect()
}

/// Waits until the browser got telephone-events `want` back (SIPp echoes what it got).
async fn wait_events_back(browser: &Browser, want: &[u8]) -> HashSet<u8> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = events_back(browser);
        if want.iter().all(|e| got.contains(e)) || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn client_dtmf_reaches_sipp_as_telephone_event() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sipp = Sipp::uas(
        Some(&te_scenario(&dir)),
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let gw = TestGateway::start(test_config(Some(sipp.addr))).await;
    let (mut ws, _) = gw.connect_as("dora", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "d1", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    assert!(browser.wait_connected(Duration::from_secs(10)).await);
    let talk = browser.start_sending_pcmu_sine(25, 440.0);
    assert_eq!(talk.await.expect("talk"), 25);
    // In-band RFC 4733 from the client, as RTCDTMFSender sends it.
    browser.send_dtmf_event(5).await;
    browser.send_dtmf_event(11).await;
    // SIPp echoes every RTP packet it gets; the events only come back to the browser on
    // its telephone-event type if they reached SIPp as payload type 101, the
    // telephone-event SIPp's SDP announced.
    let got = wait_events_back(&browser, &[5, 11]).await;
    assert!(
        got.contains(&5) && got.contains(&11),
        "events back: {got:?}"
    );
    call.hangup(&mut ws).await;
    call.until(&mut ws, &["ended"]).await;
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn protocol_dtmf_reaches_sipp_as_telephone_event() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sipp = Sipp::uas(
        Some(&te_scenario(&dir)),
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let gw = TestGateway::start(test_config(Some(sipp.addr))).await;
    let (mut ws, _) = gw.connect_as("dora", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "d2", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    assert!(browser.wait_connected(Duration::from_secs(10)).await);
    let talk = browser.start_sending_pcmu_sine(10, 440.0);
    assert_eq!(talk.await.expect("talk"), 10);
    ws.send(json!({"type": "dtmf", "call_id": "d2", "digits": "3#"}))
        .await;
    let got = wait_events_back(&browser, &[3, 11]).await;
    assert!(
        got.contains(&3) && got.contains(&11),
        "events back: {got:?}"
    );
    call.hangup(&mut ws).await;
    call.until(&mut ws, &["ended"]).await;
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn opus_only_client_is_transcoded_for_a_pcmu_echo() {
    let mut sipp = Sipp::uas(
        None,
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let gw = TestGateway::start(test_config(Some(sipp.addr))).await;
    let (mut ws, _) = gw.connect_as("opal", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::opus_only()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "o1", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    assert!(browser.wait_connected(Duration::from_secs(10)).await);
    let talk = browser.start_sending_opus_tone(150, 1000.0);
    assert_eq!(talk.await.expect("talk"), 150);
    assert!(browser.wait_received(120, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rate, pcm) = browser.received_pcm();
    assert_eq!(rate, 48_000);
    assert!(browser.received().iter().all(|p| p.payload_type != 0));
    assert!(browser.received().iter().any(|p| p.payload_type == PT_OPUS));
    let ratio = tone_to_noise(&pcm[9600..], 48_000.0, 1000.0);
    assert!(
        ratio > 100.0,
        "1 kHz tone/noise back at the browser: {ratio}"
    );
    call.hangup(&mut ws).await;
    call.until(&mut ws, &["ended"]).await;
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn stats_reach_the_client_every_five_seconds() {
    let mut sipp = Sipp::uas(
        None,
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let gw = TestGateway::start(test_config(Some(sipp.addr))).await;
    let (mut ws, _) = gw.connect_as("stan", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "s1", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    let talk = browser.start_sending_pcmu_sine(400, 440.0);
    let stats = call.until(&mut ws, &["stats"]).await;
    for key in ["mos", "jitter_ms", "loss_pct", "rtt_ms"] {
        assert!(stats[key].is_number(), "{key} in {stats}");
    }
    assert!(stats["mos"].as_f64().unwrap_or(0.0) > 4.0, "{stats}");
    talk.abort();
    call.hangup(&mut ws).await;
    call.until(&mut ws, &["ended"]).await;
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
    gw.stop().await;
}
