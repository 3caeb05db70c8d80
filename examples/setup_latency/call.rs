//! One call as a browser places it over protocol v1, timed; then held or hung up.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use callbridge::auth::{Claims, claims_audience, mint_hs256};
use callbridge::media::webrtc_leg::IceCandidate;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::browser::{Browser, BrowserOptions};
use crate::{SECRET, STEP};

/// A WebSocket session to the gateway.
type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// When each step of a call's setup happened, after `call` was sent.
#[derive(Debug, Clone, Copy)]
pub struct SetupTimes {
    /// The SDP answer arrived.
    pub answer: Duration,
    /// `answered` arrived.
    pub answered: Duration,
    /// The first echoed RTP packet reached the browser.
    pub first_audio: Duration,
}

/// A call that is set up and echoing.
pub struct ActiveCall {
    /// Its session.
    ws: Ws,
    /// Its browser.
    browser: Arc<Browser>,
    /// Its call id.
    call_id: String,
    /// The tone task.
    tone: tokio::task::JoinHandle<()>,
    /// How the setup went.
    pub times: SetupTimes,
}

/// A token for `user`, valid for an hour.
fn token(user: &str) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = Claims {
        sub: user.into(),
        exp: now + 3600,
        nbf: None,
        iat: Some(now),
        aud: Some(claims_audience("callbridge")),
        iss: None,
        scope: "calls:outbound".into(),
        caller_id: None,
        dids: Vec::new(),
        max_calls: None,
        record: None,
    };
    Ok(mint_hs256(SECRET, &claims)?)
}

async fn send(ws: &mut Ws, value: Value) -> anyhow::Result<()> {
    ws.send(Message::Text(value.to_string().into())).await?;
    Ok(())
}

async fn next_json(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        let frame = tokio::time::timeout(STEP, ws.next())
            .await
            .context("no message from the gateway in time")?
            .context("the gateway closed the socket")??;
        match frame {
            Message::Text(t) => return Ok(serde_json::from_str(&t)?),
            Message::Close(c) => bail!("the gateway closed the socket: {c:?}"),
            _ => continue,
        }
    }
}

/// Connects (TCP_NODELAY on, as browsers do), authenticates as `user`, places a call
/// to `to` and returns once the first echoed packet has come back.
pub async fn place(
    url: &str,
    user: &str,
    to: &str,
    tone_frames: u32,
) -> anyhow::Result<ActiveCall> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    send(&mut ws, json!({"type": "auth", "token": token(user)?})).await?;
    let ready = next_json(&mut ws).await?;
    if ready["type"] != "ready" {
        bail!("authentication failed: {ready}");
    }
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut candidates = Some(browser.take_candidates());
    let call_id = format!("{user}-call");
    let t0 = Instant::now();
    send(
        &mut ws,
        json!({"type": "call", "call_id": call_id, "to": to, "sdp": browser.offer_sdp()}),
    )
    .await?;
    let (mut answer, mut answered) = (None, None);
    let mut tone = None;
    let mut poll = tokio::time::interval(Duration::from_millis(1));
    let deadline = tokio::time::Instant::now() + STEP;
    let first_audio = loop {
        tokio::select! {
            message = next_json(&mut ws) => {
                let message = message?;
                match message["type"].as_str().unwrap_or("") {
                    "answer" => {
                        answer = Some(t0.elapsed());
                        browser.set_answer(message["sdp"].as_str().unwrap_or("")).await;
                        // Like a browser: audio flows as soon as ICE and DTLS are up.
                        let b = browser.clone();
                        tone = Some(tokio::spawn(async move {
                            if b.wait_connected(STEP).await {
                                let sending = b.start_sending_tone(tone_frames);
                                let _stop_with_me = AbortOnDrop(sending.abort_handle());
                                let _ = sending.await;
                            }
                        }));
                    }
                    "ice" => {
                        if let Ok(c) = serde_json::from_value::<IceCandidate>(message["candidate"].clone()) {
                            browser.add_remote_candidate(c).await;
                        }
                    }
                    "answered" => answered = Some(t0.elapsed()),
                    "ended" | "error" => bail!("call failed during setup: {message}"),
                    _ => {}
                }
            }
            c = async { candidates.as_mut().expect("guarded").recv().await }, if candidates.is_some() => match c {
                Some(c) => send(&mut ws, json!({"type": "ice", "call_id": call_id, "candidate": c})).await?,
                None => candidates = None,
            },
            _ = poll.tick() => {
                if let Some(first) = browser.received().first() {
                    break first.arrived.duration_since(t0);
                }
            }
            _ = tokio::time::sleep_until(deadline) => bail!("no echoed audio within {STEP:?}"),
        }
    };
    // `answered` may trail the first audio by a little: wait for it.
    while answered.is_none() {
        let message = next_json(&mut ws).await?;
        if message["type"] == "answered" {
            answered = Some(t0.elapsed());
        }
    }
    let (Some(answer), Some(answered), Some(tone)) = (answer, answered, tone) else {
        bail!("audio came back before the answer");
    };
    Ok(ActiveCall {
        ws,
        browser,
        call_id,
        tone,
        times: SetupTimes {
            answer,
            answered,
            first_audio,
        },
    })
}

/// What held calls do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Keep sending the tone.
    Media,
    /// Stop sending (the call stays up, RTCP and ICE consent go on).
    Silent,
    /// Hang up.
    HangUp,
}

/// Aborts a task when dropped (the tone task outlives the task that started it).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ActiveCall {
    /// Keeps the session read and follows `phase` until it says hang up.
    pub async fn hold(mut self, mut phase: watch::Receiver<Phase>) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                changed = phase.changed() => {
                    changed?;
                    match *phase.borrow_and_update() {
                        Phase::Media => {}
                        Phase::Silent => self.tone.abort(),
                        Phase::HangUp => break,
                    }
                }
                frame = self.ws.next() => match frame {
                    Some(Ok(_)) => {}
                    _ => bail!("session of {} lost while held", self.call_id),
                },
            }
        }
        self.hang_up().await
    }

    /// Hangs up and waits for `ended`.
    pub async fn hang_up(mut self) -> anyhow::Result<()> {
        self.tone.abort();
        send(
            &mut self.ws,
            json!({"type": "hangup", "call_id": self.call_id}),
        )
        .await?;
        while next_json(&mut self.ws).await?["type"] != "ended" {}
        self.browser.close().await;
        let _ = self.ws.close(None).await;
        Ok(())
    }
}
