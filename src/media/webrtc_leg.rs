//! The WebRTC leg: answers the browser's offer with the `webrtc` crate, trickles ICE
//! candidates both ways and exposes the audio track as RTP packet streams.
//!
//! I/O contract: [`WebRtcLeg::answer`] builds one peer connection (its own UDP socket
//! on `bind_ip`, no STUN/TURN servers, no mDNS, the config's shared DTLS certificate
//! and RTCP reports as its only interceptors (see [`super::webrtc_setup`]), on a
//! [`GuardedRuntime`] that registers the socket's port for the call's user and drops
//! datagrams to addresses the [`CandidatePolicy`] refuses), answers with exactly one
//! audio codec (the first of the configured preference list that the browser offers:
//! PCMU, PCMA or Opus) plus `telephone-event/8000`, and from then on reports through
//! the `events` channel: local candidates (with `public_ip` substituted for host
//! candidates when set), the end of gathering, and `Connected`/`Failed`. The bridge
//! reads the browser's track and writes ours through crate-internal handles. Browser
//! candidates (SDP and trickled) that the policy refuses are ignored.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_PCMA, MIME_TYPE_PCMU, MIME_TYPE_TELEPHONE_EVENT,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceCandidateType, RTCIceGatheringState,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

use super::MediaError;
use super::candidates::CandidatePolicy;
use super::codec::{AudioCodec, PayloadFormat};
use super::ice_runtime::GuardedRuntime;
use super::offer::{self, OfferChoice};
use super::webrtc_setup::{self, DtlsIdentity};
use crate::netguard::ice_ports::{IceLease, IcePorts};

/// Settings for WebRTC legs, derived from the gateway config.
#[derive(Debug, Clone)]
pub struct WebRtcLegConfig {
    /// Local address the ICE UDP sockets bind to.
    pub bind_ip: IpAddr,
    /// Address advertised in host candidates instead of `bind_ip` (1:1 NAT), if any.
    pub public_ip: Option<IpAddr>,
    /// Codecs the gateway accepts from the browser, in order of preference.
    pub codecs: Vec<AudioCodec>,
    /// Which browser candidates are used and where the legs' sockets may send.
    pub candidates: Arc<CandidatePolicy>,
    /// Where the legs register their ICE ports (read by the TURN peer policy).
    pub ice_ports: IcePorts,
    /// The user the legs belong to: that user's TURN relay may reach their ICE ports.
    pub owner: String,
    /// The DTLS certificate of every leg made from this config (and its clones).
    pub identity: DtlsIdentity,
    /// Interval of the legs' RTCP sender and receiver reports (`media.rtcp_interval`).
    pub rtcp_interval: Duration,
    /// ICE-lite (`media.ice_lite`): answer `a=ice-lite` and only answer the browser's
    /// checks, never send our own.
    pub ice_lite: bool,
}

impl WebRtcLegConfig {
    /// Legs on 127.0.0.1 that use loopback browser candidates (local tools and tests).
    pub fn loopback(codecs: Vec<AudioCodec>) -> WebRtcLegConfig {
        let loopback = ["127.0.0.0/8", "::1/128"]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        WebRtcLegConfig {
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            public_ip: None,
            codecs,
            candidates: Arc::new(CandidatePolicy::new(loopback, Default::default())),
            ice_ports: IcePorts::default(),
            owner: "local".into(),
            identity: DtlsIdentity::new(),
            rtcp_interval: webrtc_setup::DEFAULT_RTCP_INTERVAL,
            ice_lite: false,
        }
    }

    /// This config for the legs of `user`'s calls.
    pub fn for_user(&self, user: &str) -> WebRtcLegConfig {
        WebRtcLegConfig {
            owner: user.to_string(),
            ..self.clone()
        }
    }
}

/// An ICE candidate as exchanged in protocol v1 `ice` messages (browser JSON shape).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IceCandidate {
    /// The `candidate:` attribute line.
    pub candidate: String,
    /// The media stream identification tag.
    #[serde(rename = "sdpMid", default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// The m-line index.
    #[serde(
        rename = "sdpMLineIndex",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_mline_index: Option<u16>,
}

/// Events a WebRTC leg reports to its call.
#[derive(Debug, Clone)]
pub enum WebRtcEvent {
    /// A local ICE candidate to trickle to the browser; `None` ends gathering.
    LocalCandidate(Option<IceCandidate>),
    /// ICE and DTLS are up; media can flow.
    Connected,
    /// ICE or DTLS failed, or the peer connection closed on its own.
    Failed(String),
}

/// One browser-facing peer connection with a single audio track.
pub struct WebRtcLeg {
    /// The peer connection (its driver task owns the ICE socket).
    pc: Arc<dyn PeerConnection>,
    /// What the browser sends and expects: codec, payload type, telephone-event type.
    format: PayloadFormat,
    /// Our outgoing audio track; the bridge writes RTP into it.
    local_track: Arc<TrackLocalStaticRTP>,
    /// The SSRC of `local_track` (every packet written must carry it).
    local_ssrc: u32,
    /// The browser's audio track, once the stack reports it.
    remote_track: watch::Receiver<Option<Arc<dyn TrackRemote>>>,
    /// Set by [`WebRtcLeg::close`] so the handler does not report our own close as a failure.
    closing: Arc<AtomicBool>,
    /// Which browser candidates are used.
    candidates: Arc<CandidatePolicy>,
    /// This leg's ICE ports, registered for the call's user until the leg closes.
    lease: Arc<IceLease>,
}

impl std::fmt::Debug for WebRtcLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcLeg")
            .field("format", &self.format)
            .field("local_ssrc", &self.local_ssrc)
            .finish()
    }
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

/// `a=fmtp` of the Opus we answer: 10 ms packets allowed, in-band FEC welcome, and no
/// more than wideband (16 kHz): the SIP side is 8 kHz G.711 or at most wideband Opus,
/// and a narrower signal is cheaper to decode and to send.
const OPUS_FMTP: &str = "minptime=10;useinbandfec=1;maxplaybackrate=16000";

/// Payload type of Opus in our offers to browsers (Chrome's usual one).
const OFFER_OPUS_PAYLOAD_TYPE: u8 = 111;
/// Payload type of telephone-event in our offers to browsers.
const OFFER_DTMF_PAYLOAD_TYPE: u8 = 101;

/// The `webrtc` codec description of `codec`.
fn rtp_codec(codec: AudioCodec) -> RTCRtpCodec {
    match codec {
        AudioCodec::Pcmu | AudioCodec::Pcma => RTCRtpCodec {
            mime_type: if codec == AudioCodec::Pcmu {
                MIME_TYPE_PCMU
            } else {
                MIME_TYPE_PCMA
            }
            .to_owned(),
            clock_rate: codec.clock_rate(),
            ..Default::default()
        },
        AudioCodec::Opus => RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: codec.clock_rate(),
            channels: 2,
            sdp_fmtp_line: OPUS_FMTP.to_owned(),
            ..Default::default()
        },
    }
}

/// A media engine holding exactly the chosen codec and telephone-event, at the offer's types.
fn media_engine(format: &PayloadFormat) -> Result<MediaEngine, MediaError> {
    let mut engine = MediaEngine::default();
    let mut register = |rtp_codec: RTCRtpCodec, payload_type: u8| {
        engine
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec,
                    payload_type,
                },
                RtpCodecKind::Audio,
            )
            .map_err(|e| MediaError::WebRtc(format!("register codec: {e}")))
    };
    register(rtp_codec(format.codec), format.payload_type)?;
    if let Some(pt) = format.dtmf_payload_type {
        let te = RTCRtpCodec {
            mime_type: MIME_TYPE_TELEPHONE_EVENT.to_owned(),
            clock_rate: 8000,
            sdp_fmtp_line: "0-16".to_owned(),
            ..Default::default()
        };
        register(te, pt)?;
    }
    Ok(engine)
}

/// Maps a `webrtc` error into [`MediaError::WebRtc`] with what we were doing.
fn webrtc_err(what: &'static str) -> impl Fn(webrtc::error::Error) -> MediaError {
    move |e| MediaError::WebRtc(format!("{what}: {e}"))
}

impl WebRtcLeg {
    /// Answers `offer_sdp`; returns the leg and the SDP answer to send to the browser.
    ///
    /// Must run inside a tokio runtime. Local candidates start trickling into `events`
    /// as soon as this returns (some may already be queued): send the answer to the
    /// browser before forwarding them. Browser candidates that arrive while this runs
    /// can be queued by the caller and passed to [`WebRtcLeg::add_remote_candidate`]
    /// afterwards.
    pub async fn answer(
        config: &WebRtcLegConfig,
        offer_sdp: &str,
        events: mpsc::UnboundedSender<WebRtcEvent>,
    ) -> Result<(WebRtcLeg, String), MediaError> {
        let offer_sdp = &config.candidates.filter_sdp(offer_sdp);
        let choice = offer::choose(offer_sdp, &config.codecs)?;
        let leg = Self::build(
            config,
            choice.format,
            choice.mid.clone(),
            choice.mline_index,
            events,
        )
        .await?;
        match leg.negotiate(offer_sdp, &choice).await {
            Ok(answer) => {
                tracing::debug!(format = ?leg.format, "answered browser offer");
                Ok((leg, answer))
            }
            Err(e) => {
                leg.close().await;
                Err(e)
            }
        }
    }

    /// A peer connection for `format` with our audio track not yet added.
    async fn build(
        config: &WebRtcLegConfig,
        format: PayloadFormat,
        mid: Option<String>,
        mline_index: u16,
        events: mpsc::UnboundedSender<WebRtcEvent>,
    ) -> Result<WebRtcLeg, MediaError> {
        let engine = media_engine(&format)?;
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
        let lease = config.ice_ports.lease(&config.owner);
        let runtime = GuardedRuntime::new(Arc::clone(&config.candidates), Arc::clone(&lease))
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
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let local_ssrc = rand::random::<u32>();
        let local_track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "callbridge".to_owned(),
            "callbridge-audio".to_owned(),
            "callbridge-audio".to_owned(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(local_ssrc),
                    ..Default::default()
                },
                // No codec here on purpose: naming one makes it the transceiver's only codec
                // preference and drops telephone-event from the negotiation.
                ..Default::default()
            }],
        )));
        Ok(WebRtcLeg {
            pc,
            format,
            local_track,
            local_ssrc,
            remote_track: track_rx,
            closing,
            candidates: Arc::clone(&config.candidates),
            lease,
        })
    }

    /// Makes the gateway's offer to a browser for an incoming call: one audio section
    /// with `codec` and telephone-event. Returns the leg and the offer SDP; apply the
    /// browser's answer with [`WebRtcLeg::accept_answer`].
    pub async fn offer(
        config: &WebRtcLegConfig,
        codec: AudioCodec,
        events: mpsc::UnboundedSender<WebRtcEvent>,
    ) -> Result<(WebRtcLeg, String), MediaError> {
        let format = PayloadFormat {
            codec,
            payload_type: codec
                .static_payload_type()
                .unwrap_or(OFFER_OPUS_PAYLOAD_TYPE),
            dtmf_payload_type: Some(OFFER_DTMF_PAYLOAD_TYPE),
        };
        let leg = Self::build(config, format, Some("0".into()), 0, events).await?;
        let result = async {
            let track: Arc<dyn TrackLocal> = leg.local_track.clone();
            leg.pc
                .add_track(track)
                .await
                .map_err(webrtc_err("add audio track"))?;
            let offer = leg
                .pc
                .create_offer(None)
                .await
                .map_err(webrtc_err("create offer"))?;
            let sdp = offer.sdp.clone();
            leg.pc
                .set_local_description(offer)
                .await
                .map_err(webrtc_err("set local description"))?;
            Ok::<_, MediaError>(sdp)
        }
        .await;
        match result {
            Ok(sdp) => Ok((leg, sdp)),
            Err(e) => {
                leg.close().await;
                Err(e)
            }
        }
    }

    /// Applies the browser's answer to our [`WebRtcLeg::offer`].
    pub async fn accept_answer(&self, answer_sdp: &str) -> Result<(), MediaError> {
        let answer = RTCSessionDescription::answer(self.candidates.filter_sdp(answer_sdp))
            .map_err(|e| MediaError::BadOffer(format!("browser answer: {e}")))?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(|e| MediaError::BadOffer(format!("browser answer: {e}")))
    }

    /// Adds our track, applies the (narrowed) offer and creates and applies the answer.
    async fn negotiate(&self, offer_sdp: &str, choice: &OfferChoice) -> Result<String, MediaError> {
        let track: Arc<dyn TrackLocal> = self.local_track.clone();
        self.pc
            .add_track(track)
            .await
            .map_err(webrtc_err("add audio track"))?;
        let offer = RTCSessionDescription::offer(offer::restrict(offer_sdp, choice))
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

    /// The payload format negotiated with the browser.
    pub fn format(&self) -> PayloadFormat {
        self.format
    }

    /// The SSRC of the audio we send to the browser.
    pub fn local_ssrc(&self) -> u32 {
        self.local_ssrc
    }

    /// Adds a remote candidate trickled by the browser (`None`: end of candidates).
    ///
    /// An empty `candidate` string is treated as end of candidates. A candidate the
    /// [`CandidatePolicy`] refuses is ignored: mDNS (`.local`) names, which a server
    /// cannot resolve (the browser's connectivity checks still reach us and are learnt
    /// as peer-reflexive), internal addresses not allowed, the gateway's own ports.
    pub async fn add_remote_candidate(&self, c: Option<IceCandidate>) -> Result<(), MediaError> {
        let Some(c) = c.filter(|c| !c.candidate.trim().is_empty()) else {
            return Ok(());
        };
        if super::candidates::candidate_fields(&c.candidate).is_none() {
            return Err(MediaError::BadCandidate(format!(
                "'{}': not a candidate line (candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type>)",
                c.candidate
            )));
        }
        if let Err(why) = self.candidates.judge_candidate(&c.candidate) {
            tracing::debug!(candidate = %c.candidate, %why, "browser ICE candidate ignored");
            return Ok(());
        }
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
    pub async fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.lease.release();
        if let Err(e) = self.pc.close().await {
            tracing::debug!(error = %e, "closing browser peer connection");
        }
    }

    /// The peer connection, for statistics (`get_stats`).
    pub fn peer_connection(&self) -> &Arc<dyn PeerConnection> {
        &self.pc
    }

    /// Our outgoing track and its SSRC, for the bridge.
    pub(crate) fn local_track(&self) -> (Arc<TrackLocalStaticRTP>, u32) {
        (self.local_track.clone(), self.local_ssrc)
    }

    /// A receiver of the browser's track (`None` until the stack reports it), for the bridge.
    pub(crate) fn remote_track(&self) -> watch::Receiver<Option<Arc<dyn TrackRemote>>> {
        self.remote_track.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_engine_takes_every_codec() {
        for codec in [AudioCodec::Pcmu, AudioCodec::Pcma, AudioCodec::Opus] {
            let f = PayloadFormat {
                codec,
                payload_type: 111,
                dtmf_payload_type: Some(126),
            };
            assert!(media_engine(&f).is_ok(), "{codec}");
        }
        assert_eq!(rtp_codec(AudioCodec::Opus).channels, 2);
    }

    #[tokio::test]
    async fn bad_offer_is_rejected_before_any_socket() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let cfg = WebRtcLegConfig {
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            public_ip: None,
            codecs: vec![AudioCodec::Pcmu, AudioCodec::Pcma],
            candidates: Arc::default(),
            ice_ports: IcePorts::default(),
            owner: "test".into(),
            identity: DtlsIdentity::new(),
            rtcp_interval: webrtc_setup::DEFAULT_RTCP_INTERVAL,
            ice_lite: false,
        };
        let e = WebRtcLeg::answer(
            &cfg,
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n",
            tx,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("no common audio codec"), "{e}");
    }
}
