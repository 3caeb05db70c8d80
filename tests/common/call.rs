//! Drives one call over protocol v1 with the test browser: relays the SDP answer and
//! ICE candidates both ways while waiting for the call's messages.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use callbridge::media::webrtc_leg::IceCandidate;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::browser::Browser;
use super::gateway::{WAIT, WsClient};

/// One call in progress from the test browser's point of view.
pub struct TestCall {
    /// The call id chosen by the client.
    pub call_id: String,
    /// The browser placing the call.
    pub browser: Arc<Browser>,
    /// The browser's trickled candidates still to send.
    candidates: Option<mpsc::UnboundedReceiver<Option<IceCandidate>>>,
    /// Message types seen so far for this call, in order.
    pub seen: Vec<String>,
    /// UDP addresses of the gateway's ICE candidates (answer SDP and trickled `ice`).
    pub gateway_candidates: Vec<SocketAddr>,
}

/// The UDP address of an ICE `candidate:` line (or `a=candidate:` SDP line).
pub fn candidate_addr(line: &str) -> Option<SocketAddr> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if !fields.get(2)?.eq_ignore_ascii_case("udp") {
        return None;
    }
    let ip: std::net::IpAddr = fields.get(4)?.parse().ok()?;
    let port: u16 = fields.get(5)?.parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

impl TestCall {
    /// Sends `call` with the browser's offer.
    pub async fn place(
        ws: &mut WsClient,
        browser: Arc<Browser>,
        call_id: &str,
        to: &str,
    ) -> TestCall {
        let candidates = browser.take_candidates();
        ws.send(json!({"type": "call", "call_id": call_id, "to": to, "sdp": browser.offer_sdp()}))
            .await;
        TestCall {
            call_id: call_id.into(),
            browser,
            candidates: Some(candidates),
            seen: Vec::new(),
            gateway_candidates: Vec::new(),
        }
    }

    /// Processes messages (answer, ice) until one of `kinds` arrives for this call;
    /// returns it. Panics after [`WAIT`].
    pub async fn until(&mut self, ws: &mut WsClient, kinds: &[&str]) -> Value {
        self.until_within(ws, kinds, WAIT).await
    }

    /// As [`TestCall::until`], waiting at most `within`.
    pub async fn until_within(
        &mut self,
        ws: &mut WsClient,
        kinds: &[&str],
        within: std::time::Duration,
    ) -> Value {
        let wanted: HashSet<&str> = kinds.iter().copied().collect();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let candidate = async {
                match self.candidates.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                message = ws.recv() => {
                    if message["call_id"] != self.call_id.as_str() {
                        continue;
                    }
                    let kind = message["type"].as_str().unwrap_or("").to_owned();
                    self.seen.push(kind.clone());
                    match kind.as_str() {
                        "answer" => {
                            let sdp = message["sdp"].as_str().expect("answer has sdp");
                            self.gateway_candidates.extend(sdp.lines().filter_map(|l| {
                                l.strip_prefix("a=").and_then(candidate_addr)
                            }));
                            self.browser.set_answer(sdp).await;
                        }
                        "ice" => {
                            if let Ok(c) = serde_json::from_value::<IceCandidate>(message["candidate"].clone()) {
                                self.gateway_candidates.extend(candidate_addr(&c.candidate));
                                self.browser.add_remote_candidate(c).await;
                            }
                        }
                        _ => {}
                    }
                    if wanted.contains(kind.as_str()) {
                        return message;
                    }
                }
                c = candidate => match c {
                    Some(c) => ws.send(json!({"type": "ice", "call_id": self.call_id, "candidate": c})).await,
                    None => self.candidates = None,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    panic!("call {}: none of {kinds:?} within {within:?}; saw {:?}", self.call_id, self.seen)
                }
            }
        }
    }

    /// Processes messages until at least one gateway ICE candidate is known. The
    /// gateway trickles its candidates (`ice`) while the call proceeds, so a fast far
    /// end's `answered` can arrive before the first one.
    pub async fn wait_gateway_candidate(&mut self, ws: &mut WsClient) {
        while self.gateway_candidates.is_empty() {
            self.until(ws, &["ice"]).await;
        }
    }

    /// Sends `hangup` for this call.
    pub async fn hangup(&self, ws: &mut WsClient) {
        ws.send(json!({"type": "hangup", "call_id": self.call_id}))
            .await;
    }
}

/// One inbound call answered by a fresh test browser: the gateway's `incoming` offer
/// applied, the answer sent with `accept`, the browser's candidates trickled.
pub struct AcceptedCall {
    /// The gateway's call id.
    pub call_id: String,
    /// The `incoming` message.
    pub incoming: Value,
    /// The answering browser.
    pub browser: Arc<Browser>,
}

impl AcceptedCall {
    /// Waits for `incoming` on `ws` and accepts it.
    pub async fn accept(ws: &mut WsClient) -> AcceptedCall {
        let incoming = ws.recv_type("incoming", |_| {}).await;
        let call_id = incoming["call_id"].as_str().expect("call id").to_string();
        let browser = Browser::answering(incoming["sdp"].as_str().expect("offer")).await;
        ws.send(json!({"type": "accept", "call_id": call_id, "sdp": browser.offer_sdp()}))
            .await;
        let mut candidates = browser.take_candidates();
        // Gathering on loopback ends at once; the end-of-candidates `None` stops it.
        while let Ok(Some(Some(c))) =
            tokio::time::timeout(std::time::Duration::from_millis(500), candidates.recv()).await
        {
            ws.send(json!({"type": "ice", "call_id": call_id, "candidate": c}))
                .await;
        }
        AcceptedCall {
            call_id,
            incoming,
            browser,
        }
    }

    /// Applies `ice` from the gateway until `kind` arrives for this call; returns it.
    pub async fn until(&self, ws: &mut WsClient, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = tokio::time::timeout(remaining, ws.recv())
                .await
                .unwrap_or_else(|_| panic!("call {}: no `{kind}` within {WAIT:?}", self.call_id));
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
