//! The `tasks` engine of the WebRTC leg (`media.engine = "tasks"`): one `webrtc`-crate
//! peer connection per call with its own UDP socket and driver task, on a
//! [`GuardedRuntime`] that registers the socket's port for the call's user and drops
//! datagrams to addresses the [`CandidatePolicy`] refuses. Local candidates come from
//! the crate's gathering, with `public_ip` substituted for host candidates.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rtc::ice::mdns::MulticastDnsMode;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceCandidateType, RTCIceGatheringState, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

use super::MediaError;
use super::browser_media::{BrowserMedia, BrowserSink, BrowserSource, BrowserStats};
use super::codec::PayloadFormat;
use super::ice_runtime::GuardedRuntime;
use super::webrtc_leg::{IceCandidate, WebRtcEvent, WebRtcLegConfig, local_track, media_engine};
use super::webrtc_setup;
use crate::netguard::ice_ports::IceLease;

/// A `webrtc`-crate peer connection with our audio track.
pub(super) struct TasksLeg {
    /// The peer connection (its driver task owns the ICE socket).
    pub(super) pc: Arc<dyn PeerConnection>,
    /// Our outgoing audio track; the bridge writes RTP into it.
    local_track: Arc<TrackLocalStaticRTP>,
    /// The browser's audio track, once the stack reports it.
    remote_track: watch::Receiver<Option<Arc<dyn TrackRemote>>>,
    /// Set by [`TasksLeg::close`] so the handler does not report our own close as a failure.
    closing: Arc<AtomicBool>,
}

/// Handles the peer connection's callbacks (they run on its driver task: never block).
struct LegHandler {
    /// Where events for the call go.
    events: mpsc::UnboundedSender<WebRtcEvent>,
    /// Replaces the address of host candidates, for 1:1 NAT.
    public_ip: Option<IpAddr>,
    /// `sdpMid` put on our trickled candidates (the browser needs the real mid).
    mid: Option<String>,
    /// `sdpMLineIndex` put on our trickled candidates.
    mline_index: u16,
    /// Publishes the browser's audio track to the leg.
    remote_track: watch::Sender<Option<Arc<dyn TrackRemote>>>,
    /// Whether `Connected` was already reported.
    connected: AtomicBool,
    /// Shared with the leg; set when we close on purpose.
    closing: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for LegHandler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let mut candidate = event.candidate;
        if let Some(ip) = self.public_ip
            && candidate.typ == RTCIceCandidateType::Host
        {
            candidate.address = ip.to_string();
        }
        match candidate.to_json() {
            Ok(init) => {
                tracing::debug!(candidate = %init.candidate, "local ICE candidate");
                let _ = self
                    .events
                    .send(WebRtcEvent::LocalCandidate(Some(IceCandidate {
                        candidate: init.candidate,
                        sdp_mid: self.mid.clone(),
                        sdp_mline_index: Some(self.mline_index),
                    })));
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialise local ICE candidate"),
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.events.send(WebRtcEvent::LocalCandidate(None));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(%state, "browser peer connection state");
        match state {
            RTCPeerConnectionState::Connected if !self.connected.swap(true, Ordering::SeqCst) => {
                let _ = self.events.send(WebRtcEvent::Connected);
            }
            RTCPeerConnectionState::Failed => {
                let _ = self
                    .events
                    .send(WebRtcEvent::Failed("ICE or DTLS failed".into()));
            }
            RTCPeerConnectionState::Closed if !self.closing.load(Ordering::SeqCst) => {
                let _ = self
                    .events
                    .send(WebRtcEvent::Failed("peer connection closed".into()));
            }
            _ => {}
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if track.kind().await == RtpCodecKind::Audio {
            tracing::debug!("browser audio track open");
            self.remote_track.send_replace(Some(track));
        }
    }
}

/// Maps a `webrtc` error into [`MediaError::WebRtc`] with what we were doing.
fn webrtc_err(what: &'static str) -> impl Fn(webrtc::error::Error) -> MediaError {
    move |e| MediaError::WebRtc(format!("{what}: {e}"))
}

impl TasksLeg {
    /// A peer connection for `format` with our audio track (SSRC `ssrc`) not yet added.
    pub(super) async fn build(
        config: &WebRtcLegConfig,
        format: &PayloadFormat,
        ssrc: u32,
        mid: Option<String>,
        mline_index: u16,
        lease: &Arc<IceLease>,
        events: mpsc::UnboundedSender<WebRtcEvent>,
    ) -> Result<TasksLeg, MediaError> {
        let engine = media_engine(format)?;
        // The gateway's one certificate: no key generation per call.
        let certificate = config.identity.certificate()?;
        let closing = Arc::new(AtomicBool::new(false));
        let (track_tx, track_rx) = watch::channel(None);
        let handler = Arc::new(LegHandler {
            events,
            public_ip: config.public_ip,
            mid,
            mline_index,
            remote_track: track_tx,
            connected: AtomicBool::new(false),
            closing: closing.clone(),
        });
        let runtime = GuardedRuntime::new(Arc::clone(&config.candidates), Arc::clone(lease))
            .ok_or_else(|| MediaError::WebRtc("no async runtime compiled in".into()))?;
        let settings = SettingEngineBuilder::new()
            // A server cannot resolve a browser's mDNS names; never query for them.
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_lite(config.ice_lite)
            .build();
        let pc = PeerConnectionBuilder::new()
            .with_runtime(Arc::new(runtime))
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_ice_servers(vec![])
                    .with_certificates(vec![certificate])
                    .build(),
            )
            .with_media_engine(engine)
            .with_interceptor_registry(webrtc_setup::audio_interceptors(config.rtcp_interval))
            .with_setting_engine(settings)
            .with_handler(handler)
            .with_udp_addrs(vec![SocketAddr::new(config.bind_ip, 0)])
            .build()
            .await
            .map_err(webrtc_err("create peer connection"))?;
        Ok(TasksLeg {
            pc: Arc::new(pc),
            local_track: Arc::new(TrackLocalStaticRTP::new(local_track(ssrc))),
            remote_track: track_rx,
            closing,
        })
    }

    /// Adds our track, applies the (narrowed) offer and creates and applies the answer.
    pub(super) async fn negotiate(&self, offer_sdp: String) -> Result<String, MediaError> {
        let track: Arc<dyn TrackLocal> = self.local_track.clone();
        self.pc
            .add_track(track)
            .await
            .map_err(webrtc_err("add audio track"))?;
        let offer = RTCSessionDescription::offer(offer_sdp)
            .map_err(|e| MediaError::BadOffer(e.to_string()))?;
        self.pc
            .set_remote_description(offer)
            .await
            .map_err(|e| MediaError::BadOffer(e.to_string()))?;
        let answer = self
            .pc
            .create_answer(None)
            .await
            .map_err(webrtc_err("create answer"))?;
        let sdp = answer.sdp.clone();
        self.pc
            .set_local_description(answer)
            .await
            .map_err(webrtc_err("set local description"))?;
        Ok(sdp)
    }

    /// Adds our track, creates our offer and applies it.
    pub(super) async fn make_offer(&self) -> Result<String, MediaError> {
        let track: Arc<dyn TrackLocal> = self.local_track.clone();
        self.pc
            .add_track(track)
            .await
            .map_err(webrtc_err("add audio track"))?;
        let offer = self
            .pc
            .create_offer(None)
            .await
            .map_err(webrtc_err("create offer"))?;
        let sdp = offer.sdp.clone();
        self.pc
            .set_local_description(offer)
            .await
            .map_err(webrtc_err("set local description"))?;
        Ok(sdp)
    }

    /// Applies the browser's answer to our offer (already filtered).
    pub(super) async fn accept_answer(&self, answer_sdp: String) -> Result<(), MediaError> {
        let answer = RTCSessionDescription::answer(answer_sdp)
            .map_err(|e| MediaError::BadOffer(format!("browser answer: {e}")))?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(|e| MediaError::BadOffer(format!("browser answer: {e}")))
    }

    /// Adds a browser candidate the policy accepted.
    pub(super) async fn add_remote_candidate(&self, c: IceCandidate) -> Result<(), MediaError> {
        let init = RTCIceCandidateInit {
            candidate: c.candidate.clone(),
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdp_mline_index,
            ..Default::default()
        };
        self.pc
            .add_ice_candidate(init)
            .await
            .map_err(|e| MediaError::BadCandidate(format!("'{}': {e}", c.candidate)))
    }

    /// Closes the peer connection.
    pub(super) async fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        if let Err(e) = self.pc.close().await {
            tracing::debug!(error = %e, "closing browser peer connection");
        }
    }

    /// The bridge's handles on this leg.
    pub(super) fn media(&self, ssrc: u32) -> BrowserMedia {
        BrowserMedia {
            source: BrowserSource::Track(self.remote_track.clone(), None),
            sink: (BrowserSink::Track(self.local_track.clone()), ssrc),
            stats: BrowserStats::Pc(self.pc.clone()),
            runtime: None,
        }
    }
}
