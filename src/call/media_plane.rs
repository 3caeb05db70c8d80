//! The media side of one call as the call driver sees it: the SIP-side RTP socket
//! until the bridge takes it, the bridge, our SIP-side SDP (versions, hold), hold
//! state of both ends, and the bridge's events.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::config::MediaConfig;
use crate::media::audio::OpusSettings;
use crate::media::bridge::{Bridge, BridgeConfig, BridgeReport, DropCounter, MediaEvent};
use crate::media::codec::AudioCodec;
use crate::media::jitter::JitterConfig;
use crate::media::latch::LatchPolicy;
use crate::media::recording::RecordingTarget;
use crate::media::rtp_leg::RtpLeg;
use crate::media::sdp::{self, Direction, LocalSdp};
use crate::media::transcode::TranscodeConfig;
use crate::media::webrtc_leg::WebRtcLeg;
use crate::sip::SdpAnswerer;

/// Codec names from config as codecs (validated at load).
pub fn codecs(names: &[String]) -> Vec<AudioCodec> {
    names
        .iter()
        .filter_map(|n| AudioCodec::from_encoding_name(n))
        .collect()
}

/// The bridge settings from `[media]`, with an optional recording; packets from
/// strangers are counted into `foreign_drops`.
pub fn bridge_config(
    media: &MediaConfig,
    recording: Option<RecordingTarget>,
    foreign_drops: DropCounter,
) -> BridgeConfig {
    let defaults = BridgeConfig::default();
    BridgeConfig {
        transcode: TranscodeConfig {
            jitter: JitterConfig {
                min_delay: media.jitter_min,
                max_delay: media.jitter_max,
                ..JitterConfig::default()
            },
            opus: OpusSettings {
                complexity: media.opus_complexity,
                bitrate: media.opus_bitrate,
                fec: media.opus_fec,
                ..OpusSettings::default()
            },
        },
        recording,
        inactivity_timeout: (!media.inactivity_timeout.is_zero())
            .then_some(media.inactivity_timeout),
        latch: LatchPolicy {
            symmetric: media.symmetric_rtp,
            window: media.symmetric_rtp_window,
            window_packets: media.symmetric_rtp_packets,
        },
        foreign_drops,
        stats_interval: media.stats_interval,
        rtcp_interval: media.rtcp_interval,
        ..defaults
    }
}

/// A change of who holds the call, for the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldChange {
    /// The far end put the call on hold.
    RemoteHold,
    /// The far end took it off hold.
    RemoteUnhold,
}

/// The SIP-side media of a call.
pub struct CallMedia {
    /// The RTP socket until the bridge takes it.
    rtp: Option<RtpLeg>,
    /// The running bridge.
    bridge: Option<Bridge>,
    /// Our current SIP-side description (shared with the answerer).
    local: Arc<Mutex<LocalSdp>>,
    /// Codecs we accept from the SIP peer.
    sip_codecs: Vec<AudioCodec>,
    /// Bridge settings (taken by the start).
    config: Option<BridgeConfig>,
    /// Where the bridge reports.
    events_tx: mpsc::UnboundedSender<MediaEvent>,
    /// The bridge's reports.
    pub events: mpsc::UnboundedReceiver<MediaEvent>,
    /// Whether the far end has the call on hold.
    remote_hold: bool,
    /// Whether we (the browser) hold the call: the bridge relays nothing meanwhile.
    local_hold: bool,
}

fn lock(local: &Mutex<LocalSdp>) -> std::sync::MutexGuard<'_, LocalSdp> {
    local.lock().unwrap_or_else(|p| p.into_inner())
}

impl CallMedia {
    /// Media for a call whose SIP offer is `local` on `rtp`.
    pub fn new(
        rtp: RtpLeg,
        local: LocalSdp,
        sip_codecs: Vec<AudioCodec>,
        config: BridgeConfig,
    ) -> CallMedia {
        let (events_tx, events) = mpsc::unbounded_channel();
        CallMedia {
            rtp: Some(rtp),
            bridge: None,
            local: Arc::new(Mutex::new(local)),
            sip_codecs,
            config: Some(config),
            events_tx,
            events,
            remote_hold: false,
            local_hold: false,
        }
    }

    /// Our current SDP.
    pub fn local_sdp(&self) -> String {
        lock(&self.local).to_sdp()
    }

    /// Answers the peer's mid-call offers (re-INVITE/UPDATE) from our current
    /// description, mirrored; the bridge follows when the SIP leg reports the new SDP.
    pub fn answerer(&self) -> SdpAnswerer {
        let local = Arc::clone(&self.local);
        let codecs = self.sip_codecs.clone();
        Arc::new(move |offer: &str| {
            let remote = sdp::parse_answer(offer, &codecs).map_err(|e| e.to_string())?;
            let mut local = lock(&local);
            *local = local.answer_to(&remote);
            Ok(local.to_sdp())
        })
    }

    /// A new local description for our own hold (`sendonly`) or unhold (`sendrecv`).
    /// Holding stops the bridge relaying at once, both ways (the held party hears
    /// nothing, rather than the holder); unholding resumes once the far end accepted
    /// ([`CallMedia::hold_done`]).
    pub fn hold_offer(&mut self, hold: bool) -> String {
        let sdp = {
            let mut local = lock(&self.local);
            let direction = if hold {
                Direction::SendOnly
            } else {
                Direction::SendRecv
            };
            *local = local.with_direction(direction);
            local.to_sdp()
        };
        if hold {
            self.set_local_hold(true);
        }
        sdp
    }

    /// The far end answered our hold (`hold`) or unhold re-INVITE; `ok`: with 2xx. A
    /// refused hold resumes the media, a refused unhold keeps it held.
    pub fn hold_done(&mut self, hold: bool, ok: bool) {
        self.set_local_hold(if ok { hold } else { !hold });
    }

    /// Whether we hold the call.
    pub fn is_locally_held(&self) -> bool {
        self.local_hold
    }

    /// Tells the bridge whether we hold the call.
    fn set_local_hold(&mut self, held: bool) {
        self.local_hold = held;
        if let Some(bridge) = &self.bridge {
            bridge.set_local_direction(Self::relaying(held));
        }
    }

    /// What the bridge relays while we hold (`held`) or not.
    fn relaying(held: bool) -> Direction {
        if held {
            Direction::Inactive
        } else {
            Direction::SendRecv
        }
    }

    /// Points the bridge at the peer's SDP (starting it the first time); reports a
    /// change of the far end's hold state.
    pub fn apply(&mut self, leg: &WebRtcLeg, sdp_text: &str) -> Result<Option<HoldChange>, String> {
        let remote = sdp::parse_answer(sdp_text, &self.sip_codecs).map_err(|e| e.to_string())?;
        let held = !remote.direction.peer_receives();
        let change = match (self.remote_hold, held) {
            (false, true) => Some(HoldChange::RemoteHold),
            (true, false) => Some(HoldChange::RemoteUnhold),
            _ => None,
        };
        self.remote_hold = held;
        if let Some(bridge) = &self.bridge {
            bridge.update_remote(remote);
            return Ok(change);
        }
        let rtp = self.rtp.take().ok_or("RTP leg already released")?;
        let config = self.config.take().unwrap_or_default();
        let bridge = Bridge::start_with(leg, rtp, remote, config, self.events_tx.clone())
            .map_err(|e| e.to_string())?;
        bridge.set_local_direction(Self::relaying(self.local_hold));
        tracing::info!(mode = bridge.mode().as_str(), media = ?bridge.mode(), "media bridge started");
        self.bridge = Some(bridge);
        Ok(change)
    }

    /// Sends RFC 4733 digits toward the SIP peer.
    pub fn send_dtmf(&self, digits: &str) -> Result<(), String> {
        match &self.bridge {
            Some(bridge) => bridge.send_dtmf(digits).map_err(|e| e.to_string()),
            None => Err("no media yet: DTMF needs an answered call".into()),
        }
    }

    /// Stops the bridge; its report, if it ran.
    pub async fn stop(&mut self) -> Option<BridgeReport> {
        match self.bridge.take() {
            Some(bridge) => Some(bridge.stop().await),
            None => None,
        }
    }
}
