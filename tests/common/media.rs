//! A media-level call on loopback without SIP signalling: the test browser, a
//! `WebRtcLeg`, a `Bridge` started with a chosen `BridgeConfig`, an `RtpLeg`, and an
//! [`RtpEchoPeer`] standing in for the SIP peer. Included with
//! `#[path = "common/media.rs"] mod media;` by the media test binaries.
//!
//! ```ignore
//! let mut call = LoopbackCall::start(Setup::default()).await;
//! call.browser.start_sending_tone(50).await.unwrap();
//! let report = call.stop().await;
//! ```
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use callbridge::media::bridge::{Bridge, BridgeConfig, BridgeReport, MediaEvent};
use callbridge::media::codec::AudioCodec;
use callbridge::media::negotiate::DEFAULT_BROWSER_CODECS;
use callbridge::media::rtp_leg::RtpLeg;
use callbridge::media::sdp;
use callbridge::media::webrtc_leg::{WebRtcEvent, WebRtcLeg, WebRtcLegConfig};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::common::browser::{Browser, BrowserOptions, PeerOptions, RtpEchoPeer};

/// Loopback address of every socket.
pub const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// What a loopback call is made of.
pub struct Setup {
    /// How the browser offers.
    pub browser: BrowserOptions,
    /// The gateway's browser-leg preference list.
    pub browser_codecs: Vec<AudioCodec>,
    /// Codecs offered to the SIP side, in order.
    pub sip_offer: Vec<AudioCodec>,
    /// What the SIP side answers.
    pub sip_codec: AudioCodec,
    /// `a=ptime` in the SIP answer.
    pub sip_ptime: Option<u32>,
    /// How the SIP side's media behaves.
    pub peer: PeerOptions,
    /// The bridge's settings.
    pub config: BridgeConfig,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            browser: BrowserOptions::default(),
            browser_codecs: DEFAULT_BROWSER_CODECS.to_vec(),
            sip_offer: vec![AudioCodec::Pcmu, AudioCodec::Pcma],
            sip_codec: AudioCodec::Pcmu,
            sip_ptime: None,
            peer: PeerOptions::default(),
            config: BridgeConfig::default(),
        }
    }
}

/// A running loopback call.
pub struct LoopbackCall {
    /// The browser.
    pub browser: Arc<Browser>,
    /// The gateway's WebRTC leg.
    pub leg: Arc<WebRtcLeg>,
    /// The bridge (taken by `stop`).
    pub bridge: Option<Bridge>,
    /// The bridge's events.
    pub events: mpsc::UnboundedReceiver<MediaEvent>,
    /// Events already taken off the channel by `wait_event`.
    pub seen_events: Vec<MediaEvent>,
    /// The SIP side's media.
    pub peer: RtpEchoPeer,
    /// The gateway's SDP answer to the browser.
    pub answer: String,
    /// The SDP offer sent to the SIP side.
    pub sip_offer: String,
    /// When the bridge was started.
    pub started: Instant,
    /// Forwards ICE candidates.
    pump: JoinHandle<()>,
    /// The leg's config: it holds the media worker the leg and bridge run on.
    _legs: WebRtcLegConfig,
}

/// Forwards trickled candidates both ways until both sides ended gathering.
fn pump_candidates(
    browser: Arc<Browser>,
    leg: Arc<WebRtcLeg>,
    mut events: mpsc::UnboundedReceiver<WebRtcEvent>,
) -> JoinHandle<()> {
    let mut from_browser = browser.take_candidates();
    tokio::spawn(async move {
        let (mut gw_done, mut br_done) = (false, false);
        while !(gw_done && br_done) {
            tokio::select! {
                ev = events.recv(), if !gw_done => match ev {
                    Some(WebRtcEvent::LocalCandidate(Some(c))) => browser.add_remote_candidate(c).await,
                    Some(WebRtcEvent::LocalCandidate(None)) | None => gw_done = true,
                    Some(WebRtcEvent::Failed(why)) => panic!("gateway leg failed: {why}"),
                    Some(WebRtcEvent::Connected) => {}
                },
                c = from_browser.recv(), if !br_done => match c {
                    Some(Some(c)) => leg.add_remote_candidate(Some(c)).await.expect("gateway accepts candidate"),
                    Some(None) | None => {
                        leg.add_remote_candidate(None).await.expect("end of candidates");
                        br_done = true;
                    }
                },
            }
        }
    })
}

impl LoopbackCall {
    /// Sets up both legs, starts the bridge and waits for ICE/DTLS (15 s at most).
    pub async fn start(setup: Setup) -> LoopbackCall {
        let peer = RtpEchoPeer::start(setup.peer.clone()).await;
        let browser = Browser::new(setup.browser.clone()).await;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let cfg = WebRtcLegConfig::loopback(setup.browser_codecs.clone()).expect("a media worker");
        let (leg, answer) = WebRtcLeg::answer(&cfg, browser.offer_sdp(), events_tx)
            .await
            .expect("gateway answers the browser");
        let leg = Arc::new(leg);
        browser.set_answer(&answer).await;
        let pump = pump_candidates(browser.clone(), leg.clone(), events_rx);

        let rtp = RtpLeg::bind(LOOPBACK, (30_000, 39_999))
            .await
            .expect("RTP port");
        let sip_offer = sdp::build_offer(LOOPBACK, rtp.local_addr().port(), 1, &setup.sip_offer);
        let remote = sdp::parse_answer(
            &peer.answer_sdp(setup.sip_codec, setup.sip_ptime),
            &setup.sip_offer,
        )
        .expect("SIP answer parses");
        let (media_tx, media_rx) = mpsc::unbounded_channel();
        let started = Instant::now();
        let bridge =
            Bridge::start_with(&leg, rtp, remote, setup.config, media_tx).expect("bridge starts");
        assert!(
            browser.wait_connected(Duration::from_secs(15)).await,
            "browser never connected"
        );
        LoopbackCall {
            browser,
            leg,
            bridge: Some(bridge),
            events: media_rx,
            seen_events: Vec::new(),
            peer,
            answer,
            sip_offer,
            started,
            pump,
            _legs: cfg,
        }
    }

    /// The running bridge.
    pub fn bridge(&self) -> &Bridge {
        self.bridge.as_ref().expect("bridge running")
    }

    /// Waits up to `within` for an event matching `pred` (others are kept in
    /// `seen_events`).
    pub async fn wait_event(
        &mut self,
        within: Duration,
        pred: impl Fn(&MediaEvent) -> bool,
    ) -> Option<MediaEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) if pred(&e) => {
                    self.seen_events.push(e.clone());
                    return Some(e);
                }
                Ok(Some(e)) => self.seen_events.push(e),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Stops the bridge, closes both peers; the bridge's report and every event.
    pub async fn stop(mut self) -> (BridgeReport, Vec<MediaEvent>) {
        let bridge = self.bridge.take().expect("bridge running");
        let report = tokio::time::timeout(Duration::from_secs(10), bridge.stop())
            .await
            .expect("bridge stops in time");
        self.leg.close().await;
        self.browser.close().await;
        self.pump.abort();
        let mut events = std::mem::take(&mut self.seen_events);
        while let Ok(e) = self.events.try_recv() {
            events.push(e);
        }
        (report, events)
    }
}
