//! One call as a browser places it over protocol v1, timed; its audio sent, echoed
//! back and checked; then held or hung up.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use callbridge::auth::{Claims, claims_audience, mint_hs256};
use callbridge::media::webrtc_leg::IceCandidate;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::STEP;
use crate::browser::{
    Browser, BrowserOptions, FRAME_SAMPLES, PT_OPUS, PT_PCMU, frame_number, tone_frame,
};
use crate::sip_echo::EchoCounters;

/// A WebSocket session to the gateway.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Echoes slower than this (sent → back at the client) count as late.
pub const LATE: Duration = Duration::from_millis(100);

/// The browser's audio codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// PCMU both ways: the gateway relays (DTLS-SRTP ↔ RTP).
    Pcmu,
    /// An Opus-only browser: the gateway transcodes Opus ↔ PCMU.
    Opus,
}

/// Where and how calls are placed.
#[derive(Clone)]
pub struct Dialer {
    /// `ws://…/ws`.
    pub url: String,
    /// The gateway's HS256 secret.
    pub secret: Arc<str>,
    /// Number dialed.
    pub to: String,
    /// The browser's codec.
    pub codec: Codec,
    /// The tool's SIP echo, when calls go there (for the gateway-added setup times).
    pub echo: Option<Arc<EchoCounters>>,
    /// The SIP URI to call when the gateway is Janus (its SIP plugin).
    pub janus_uri: Option<String>,
    /// The address the browsers gather host candidates on.
    pub bind_ip: std::net::IpAddr,
    /// Browsers keep Chrome's RTCP and keepalive intervals ([`BrowserOptions::chrome_timers`]).
    pub chrome_timers: bool,
}

/// When each step of a call's setup happened, after `call` was sent.
#[derive(Debug, Clone, Copy)]
pub struct SetupTimes {
    /// The SDP answer arrived.
    pub answer: Duration,
    /// `answered` arrived.
    pub answered: Duration,
    /// The first echoed RTP packet reached the browser.
    pub first_audio: Duration,
    /// Gateway-added, outbound: `call` sent → INVITE at the SIP echo (tool's echo only).
    pub to_invite: Option<Duration>,
    /// Gateway-added, inbound: 200 OK sent by the SIP echo → `answered` at the browser.
    pub ok_to_answered: Option<Duration>,
}

/// A call that is set up and echoing.
pub struct ActiveCall {
    pub(crate) ws: Ws,
    pub(crate) browser: Arc<Browser>,
    pub(crate) call_id: String,
    pub(crate) codec: Codec,
    /// The audio sender (sends until aborted).
    pub(crate) sender: tokio::task::JoinHandle<()>,
    /// When each frame was sent (frame n at index n).
    pub(crate) sent_at: Arc<Mutex<Vec<Instant>>>,
    /// Janus's session and handle when the call goes through Janus.
    pub(crate) janus: Option<JanusIds>,
    /// How the setup went.
    pub times: SetupTimes,
}

/// A call's Janus session and plugin handle.
#[derive(Debug, Clone, Copy)]
pub struct JanusIds {
    /// Session id.
    pub session: u64,
    /// SIP plugin handle id.
    pub handle: u64,
}

/// The browser's offer for `dialer.codec` (PCMU and telephone-event only, or Opus only),
/// gathering on `dialer.bind_ip`.
pub(crate) fn browser_options(dialer: &Dialer) -> BrowserOptions {
    let options = match dialer.codec {
        Codec::Pcmu => BrowserOptions {
            offer_opus: false,
            offer_pcma: false,
            ..BrowserOptions::default()
        },
        Codec::Opus => BrowserOptions::opus_only(),
    };
    BrowserOptions {
        bind_ip: dialer.bind_ip,
        chrome_timers: dialer.chrome_timers,
        ..options
    }
}

/// What came back of a call's audio.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct AudioStats {
    /// Frames the browser sent.
    pub sent: u64,
    /// Distinct frames echoed back (PCMU: by frame number; Opus: packets of pt 111).
    pub echoed: u64,
    /// sent − echoed.
    pub lost: u64,
    /// Echoed frames that came back more than [`LATE`] after being sent (PCMU only).
    pub late: u64,
    /// Echoed PCMU frames whose frame number came twice.
    pub duplicated: u64,
    /// Frames whose whole payload was compared with what was sent (1 %: the first
    /// echoed and every frame number divisible by 100).
    pub checked: u64,
    /// Checked frames that differed, and echoed PCMU packets without a valid frame
    /// number.
    pub corrupt: u64,
}

impl AudioStats {
    /// Adds `other` to these.
    pub fn add(&mut self, other: &AudioStats) {
        self.sent += other.sent;
        self.echoed += other.echoed;
        self.lost += other.lost;
        self.late += other.late;
        self.duplicated += other.duplicated;
        self.checked += other.checked;
        self.corrupt += other.corrupt;
    }
}

impl Dialer {
    /// A token for `user`, valid for an hour.
    fn token(&self, user: &str) -> anyhow::Result<String> {
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
        Ok(mint_hs256(&self.secret, &claims)?)
    }

    /// Connects (TCP_NODELAY on, as browsers do), authenticates as `user`, places a
    /// call and returns once the first echoed packet has come back and `answered` is in.
    pub async fn place(&self, user: &str) -> anyhow::Result<ActiveCall> {
        if let Some(uri) = &self.janus_uri {
            return crate::janus::place(self, user, uri).await;
        }
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(&self.url, None, true)
            .await
            .with_context(|| format!("cannot connect to {}", self.url))?;
        send(&mut ws, json!({"type": "auth", "token": self.token(user)?})).await?;
        let ready = next_json(&mut ws).await?;
        if ready["type"] != "ready" {
            bail!("authentication failed: {ready}");
        }
        let browser = Browser::new(browser_options(self)).await;
        let mut candidates = Some(browser.take_candidates());
        let call_id = format!("{user}-call");
        let sent_at = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        send(
            &mut ws,
            json!({"type": "call", "call_id": call_id, "to": self.to, "sdp": browser.offer_sdp()}),
        )
        .await?;
        let (mut answer, mut answered, mut sender) = (None, None, None);
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
                            sender = Some(tokio::spawn(send_audio(
                                browser.clone(),
                                self.codec,
                                sent_at.clone(),
                            )));
                        }
                        "ice" => {
                            if let Ok(c) = serde_json::from_value::<IceCandidate>(message["candidate"].clone()) {
                                browser.add_remote_candidate(c).await;
                            }
                        }
                        "answered" => answered = Some(Instant::now()),
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
                _ = tokio::time::sleep_until(deadline) => bail!(
                    "no echoed audio within {STEP:?} (answer {}, answered {}, browser connected {}, frames sent {})",
                    answer.is_some(),
                    answered.is_some(),
                    browser.wait_connected(Duration::ZERO).await,
                    sent_at.lock().map(|s| s.len()).unwrap_or(0)
                ),
            }
        };
        // `answered` may trail the first audio by a little: wait for it.
        while answered.is_none() {
            let message = next_json(&mut ws).await?;
            if message["type"] == "answered" {
                answered = Some(Instant::now());
            }
        }
        let (Some(answer), Some(answered), Some(sender)) = (answer, answered, sender) else {
            bail!("audio came back before the answer");
        };
        let timing = self.echo.as_ref().and_then(|e| e.take_timing(user));
        let to_invite = timing.map(|(invite, _)| invite.saturating_duration_since(t0));
        let ok_to_answered = timing.map(|(_, ok)| answered.saturating_duration_since(ok));
        Ok(ActiveCall {
            ws,
            browser,
            call_id,
            codec: self.codec,
            sender,
            sent_at,
            janus: None,
            times: SetupTimes {
                answer,
                answered: answered.duration_since(t0),
                first_audio,
                to_invite,
                ok_to_answered,
            },
        })
    }
}

pub(crate) async fn send(ws: &mut Ws, value: Value) -> anyhow::Result<()> {
    ws.send(Message::Text(value.to_string().into())).await?;
    Ok(())
}

pub(crate) async fn next_json(ws: &mut Ws) -> anyhow::Result<Value> {
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

/// Once ICE and DTLS are up, sends 20 ms frames at 50 packets/s until aborted: PCMU
/// tone frames carrying their frame number, or an Opus-encoded 400 Hz sine.
pub(crate) async fn send_audio(
    browser: Arc<Browser>,
    codec: Codec,
    sent_at: Arc<Mutex<Vec<Instant>>>,
) {
    if !browser.wait_connected(STEP).await {
        return;
    }
    let mut opus = match codec {
        Codec::Opus => {
            match opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip) {
                Ok(enc) => Some(enc),
                Err(_) => return,
            }
        }
        Codec::Pcmu => None,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for n in 0u32.. {
        tick.tick().await;
        let (pt, step, payload) = match opus.as_mut() {
            None => (PT_PCMU, FRAME_SAMPLES as u32, tone_frame(n)),
            Some(enc) => {
                let pcm: Vec<i16> = (0..960)
                    .map(|i| {
                        let t = f64::from(n * 960 + i) / 48_000.0;
                        (8000.0 * (2.0 * std::f64::consts::PI * 400.0 * t).sin()) as i16
                    })
                    .collect();
                let Ok(payload) = enc.encode_vec(&pcm, 1500) else {
                    return;
                };
                (PT_OPUS, 960, payload)
            }
        };
        if let Ok(mut s) = sent_at.lock() {
            s.push(Instant::now());
        }
        browser
            .send_rtp(pt, n == 0, step, Bytes::from(payload))
            .await;
    }
}

/// What held calls do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Keep sending audio.
    Media,
    /// Stop sending (the call stays up, RTCP and ICE consent go on).
    Silent,
    /// Stop holding: [`ActiveCall::hold`] returns the call.
    Release,
}

impl ActiveCall {
    /// Keeps the session read and follows `phase`; returns the call on `Release`.
    pub async fn hold(mut self, mut phase: watch::Receiver<Phase>) -> anyhow::Result<ActiveCall> {
        loop {
            tokio::select! {
                changed = phase.changed() => {
                    changed?;
                    match *phase.borrow_and_update() {
                        Phase::Media => {}
                        Phase::Silent => self.sender.abort(),
                        Phase::Release => return Ok(self),
                    }
                }
                frame = self.ws.next() => match frame {
                    Some(Ok(Message::Text(t))) if t.contains(self.end_marker()) => {
                        bail!("call {} ended while held: {t}", self.call_id)
                    }
                    Some(Ok(_)) => {}
                    _ => bail!("session of {} lost while held", self.call_id),
                },
            }
        }
    }

    /// What a message announcing the end of this call contains.
    fn end_marker(&self) -> &'static str {
        match self.janus {
            Some(_) => "\"hangup\"",
            None => "\"ended\"",
        }
    }

    /// Stops sending audio (echoes in flight still arrive).
    pub fn stop_audio(&self) {
        self.sender.abort();
    }

    /// Counts and checks what came back against what was sent.
    pub fn audio_stats(&self) -> AudioStats {
        let sent_at = self.sent_at.lock().map(|s| s.clone()).unwrap_or_default();
        let received = self.browser.received();
        let mut stats = AudioStats {
            sent: sent_at.len() as u64,
            ..AudioStats::default()
        };
        match self.codec {
            Codec::Opus => {
                stats.echoed = received
                    .iter()
                    .filter(|p| p.payload_type == PT_OPUS)
                    .count() as u64;
            }
            Codec::Pcmu => {
                let mut seen = vec![false; sent_at.len()];
                let mut first = true;
                for p in received.iter().filter(|p| p.payload_type == PT_PCMU) {
                    let Some(n) = frame_number(&p.payload).map(|n| n as usize) else {
                        stats.corrupt += 1;
                        continue;
                    };
                    let Some(sent) = sent_at.get(n) else {
                        stats.corrupt += 1;
                        continue;
                    };
                    if std::mem::replace(&mut seen[n], true) {
                        stats.duplicated += 1;
                        continue;
                    }
                    stats.echoed += 1;
                    if p.arrived.saturating_duration_since(*sent) > LATE {
                        stats.late += 1;
                    }
                    let check = n % 100 == 0 || first;
                    first = false;
                    if check {
                        stats.checked += 1;
                        if p.payload[..] != tone_frame(n as u32)[..] {
                            stats.corrupt += 1;
                        }
                    }
                }
            }
        }
        stats.lost = stats.sent.saturating_sub(stats.echoed);
        stats
    }

    /// Hangs up and waits for `ended`.
    pub async fn hang_up(mut self) -> anyhow::Result<()> {
        self.sender.abort();
        if let Some(ids) = self.janus {
            crate::janus::hang_up(&mut self.ws, ids).await?;
        } else {
            send(
                &mut self.ws,
                json!({"type": "hangup", "call_id": self.call_id}),
            )
            .await?;
            while next_json(&mut self.ws).await?["type"] != "ended" {}
        }
        self.browser.close().await;
        let _ = self.ws.close(None).await;
        Ok(())
    }
}
