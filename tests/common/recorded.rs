//! Helpers of the recorded-call tests: an answered outbound call with audio through
//! a SIPp echo trunk, an accepted inbound call from a SIPp caller, WAV checks, file
//! modes. Included with `#[path]` by the tests that record.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use callbridge::media::webrtc_leg::IceCandidate;
use serde_json::{Value, json};

use super::common::browser::{Browser, BrowserOptions};
use super::common::call::TestCall;
use super::common::gateway::WsClient;
use super::common::receiver::{Received, Receiver};

/// Places a call to `to`, waits for the answer and the media, sends `frames` tone
/// frames, waits for `echoed` of them to come back (0: don't wait), hangs up and
/// waits for `ended`. Returns the `ended` message.
pub async fn talk_and_hang_up(
    ws: &mut WsClient,
    call_id: &str,
    to: &str,
    frames: u32,
    echoed: usize,
) -> Value {
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(ws, browser.clone(), call_id, to).await;
    call.until(ws, &["answered"]).await;
    assert!(
        browser.wait_connected(Duration::from_secs(10)).await,
        "ICE/DTLS up"
    );
    let sent = browser.start_sending_tone(frames).await.expect("tone task");
    assert_eq!(sent.len(), frames as usize);
    if echoed > 0 {
        assert!(
            browser.wait_received(echoed, Duration::from_secs(10)).await,
            "the echo trunk sent our audio back"
        );
    }
    call.hangup(ws).await;
    let ended = call.until(ws, &["ended"]).await;
    browser.close().await;
    ended
}

/// The browser side of an inbound call: answers `incoming`, trickles ICE.
pub struct Incoming {
    /// The gateway's call id (`i-…`).
    pub call_id: String,
    /// The answering browser.
    pub browser: Arc<Browser>,
}

impl Incoming {
    /// Waits for `incoming` and accepts it with a fresh browser.
    pub async fn accept(ws: &mut WsClient) -> Incoming {
        let incoming = ws.recv_type("incoming", |_| {}).await;
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
    pub async fn until(&self, ws: &mut WsClient, kind: &str) -> Value {
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

/// Checks a 16-bit stereo 8 kHz WAV whose header matches its length; returns the
/// audio length in bytes.
pub fn assert_valid_wav(bytes: &[u8]) -> usize {
    assert!(bytes.len() >= 44, "WAV shorter than its header");
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..12], b"WAVE");
    assert_eq!(&bytes[36..40], b"data");
    let u32_at =
        |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    assert_eq!(u32_at(4) as usize, bytes.len() - 8, "RIFF size");
    assert_eq!(u32_at(40) as usize, bytes.len() - 44, "data size");
    assert_eq!(u32_at(24), 8000, "sample rate");
    bytes.len() - 44
}

/// The permission bits of `path`.
pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Waits for a delivered webhook of `kind` whose `data.id` satisfies `id`; returns it.
pub async fn webhook(receiver: &Receiver, kind: &str, id: impl Fn(&str) -> bool) -> Value {
    let matches = |r: &Received| {
        let body = r.json();
        r.answered < 300 && body["type"] == kind && body["data"]["id"].as_str().is_some_and(&id)
    };
    receiver
        .wait_for(Duration::from_secs(20), kind, |log| log.iter().any(matches))
        .await;
    receiver
        .log()
        .iter()
        .find(|r| matches(r))
        .map(Received::json)
        .expect("found")
}

/// The metrics of an in-process gateway, rendered.
pub fn metrics(gw: &super::common::gateway::TestGateway) -> String {
    gw.server
        .as_ref()
        .expect("running")
        .gateway
        .metrics
        .render()
}
