//! The WebRTC leg: answers the browser's offer (or makes the gateway's), trickles ICE
//! candidates both ways and exposes the audio track as RTP packet streams.
//!
//! The peer connection is an `rtc` core negotiated on the call's task and then run by
//! a media worker thread that shares one port among its calls
//! ([`super::webrtc_worker`], [`super::worker`]). The leg answers with exactly one audio
//! codec (the first of the configured preference list that the browser offers: PCMU,
//! PCMA or Opus) plus `telephone-event/8000`, uses the config's shared DTLS
//! certificate and RTCP reports as its only interceptors (see [`super::webrtc_setup`]),
//! registers its worker's port for the call's user, sends nothing to addresses the
//! [`CandidatePolicy`] refuses, and reports through the `events` channel: its host
//! candidates (the worker's addresses), the end of gathering, and
//! `Connected`/`Failed`. The bridge takes [`BrowserMedia`] from the leg. Browser
//! candidates (SDP and trickled) that the policy refuses are ignored.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_PCMA, MIME_TYPE_PCMU, MIME_TYPE_TELEPHONE_EVENT, MediaEngine,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::mpsc;

use super::MediaError;
use super::browser_media::BrowserMedia;
use super::candidates::CandidatePolicy;
use super::codec::{AudioCodec, PayloadFormat};
use super::offer;
use super::webrtc_setup::{self, DtlsIdentity};
use super::webrtc_worker::WorkerLegHandle;
use super::worker::{MediaWorkers, WorkerPoolConfig};
use crate::netguard::ice_ports::{IceLease, IcePorts};

/// Settings for WebRTC legs, derived from the gateway config.
#[derive(Debug, Clone)]
pub struct WebRtcLegConfig {
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
    /// The media workers that run the legs.
    pub workers: Arc<MediaWorkers>,
}

impl WebRtcLegConfig {
    /// Legs on one media worker at 127.0.0.1 that use loopback browser candidates
    /// (local tools and tests).
    pub fn loopback(codecs: Vec<AudioCodec>) -> Result<WebRtcLegConfig, MediaError> {
        WebRtcLegConfig::loopback_advertising(codecs, None)
    }

    /// [`WebRtcLegConfig::loopback`] with `public_ip` (1:1 NAT) as the host candidate.
    pub fn loopback_advertising(
        codecs: Vec<AudioCodec>,
        public_ip: Option<IpAddr>,
    ) -> Result<WebRtcLegConfig, MediaError> {
        let loopback = ["127.0.0.0/8", "::1/128"]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        let candidates = Arc::new(CandidatePolicy::new(loopback, Default::default()));
        let dropped = prometheus::IntCounterVec::new(
            prometheus::Opts::new("webrtc_dropped_total", "datagrams dropped"),
            &["reason"],
        )
        .map_err(|e| MediaError::WebRtc(e.to_string()))?;
        let workers = MediaWorkers::start(&WorkerPoolConfig {
            workers: 1,
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            port_base: 0,
            public_ip,
            host_ips: Vec::new(),
            socket_buffer_bytes: 1 << 20,
            policy: Arc::clone(&candidates),
            dropped,
            handshakes_per_turn: 4,
        })?;
        Ok(WebRtcLegConfig {
            codecs,
            candidates,
            ice_ports: IcePorts::default(),
            owner: "local".into(),
            identity: DtlsIdentity::new(),
            rtcp_interval: webrtc_setup::DEFAULT_RTCP_INTERVAL,
            ice_lite: false,
            workers,
        })
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
    /// The peer connection in its media worker.
    leg: WorkerLegHandle,
    /// What the browser sends and expects: codec, payload type, telephone-event type.
    format: PayloadFormat,
    /// The SSRC of our audio toward the browser (every packet written must carry it).
    local_ssrc: u32,
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
pub(super) fn media_engine(format: &PayloadFormat) -> Result<MediaEngine, MediaError> {
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

/// Our audio track (SSRC `ssrc`), as both engines add it.
pub(super) fn local_track(ssrc: u32) -> MediaStreamTrack {
    MediaStreamTrack::new(
        "callbridge".to_owned(),
        "callbridge-audio".to_owned(),
        "callbridge-audio".to_owned(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            // No codec here on purpose: naming one makes it the transceiver's only codec
            // preference and drops telephone-event from the negotiation.
            ..Default::default()
        }],
    )
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
        let narrowed = offer::restrict(offer_sdp, &choice);
        let local_ssrc = rand::random::<u32>();
        let lease = config.ice_ports.lease(&config.owner);
        let (leg, answer) = WorkerLegHandle::answer(
            &config.workers,
            config,
            &choice.format,
            local_ssrc,
            narrowed,
            (choice.mid.clone(), choice.mline_index),
            &lease,
            events,
        )?;
        tracing::debug!(format = ?choice.format, "answered browser offer");
        Ok((
            WebRtcLeg {
                leg,
                format: choice.format,
                local_ssrc,
                candidates: Arc::clone(&config.candidates),
                lease,
            },
            answer,
        ))
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
        let local_ssrc = rand::random::<u32>();
        let lease = config.ice_ports.lease(&config.owner);
        let (leg, sdp) =
            WorkerLegHandle::offer(&config.workers, config, &format, local_ssrc, &lease, events)?;
        Ok((
            WebRtcLeg {
                leg,
                format,
                local_ssrc,
                candidates: Arc::clone(&config.candidates),
                lease,
            },
            sdp,
        ))
    }

    /// Applies the browser's answer to our [`WebRtcLeg::offer`].
    pub async fn accept_answer(&self, answer_sdp: &str) -> Result<(), MediaError> {
        let answer_sdp = self.candidates.filter_sdp(answer_sdp);
        self.leg.accept_answer(answer_sdp).await
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
        self.leg.add_remote_candidate(c);
        Ok(())
    }

    /// Closes the peer connection.
    pub async fn close(&self) {
        self.lease.release();
        self.leg.close();
    }

    /// The stack's statistics of this leg (from its worker; empty when it is gone).
    pub async fn stats(&self) -> rtc::statistics::report::RTCStatsReport {
        self.leg.stats().await
    }

    /// The bridge's handles: the browser's RTP, our sink and SSRC, statistics.
    pub(crate) fn media(&self) -> Result<BrowserMedia, MediaError> {
        self.leg.media(self.local_ssrc)
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
    async fn bad_offer_is_rejected_before_any_leg() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let cfg = WebRtcLegConfig::loopback(vec![AudioCodec::Pcmu, AudioCodec::Pcma])
            .expect("a media worker");
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
