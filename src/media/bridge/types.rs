//! The bridge's configuration, the events it reports, and its end-of-call report.

use std::net::SocketAddr;
use std::time::Duration;

use crate::media::dtmf::DtmfTiming;
use crate::media::latch::LatchPolicy;
use crate::media::negotiate::{DEFAULT_PTIME_MS, MediaMode};
use crate::media::quality::QualityReport;
use crate::media::recording::{RecordingInfo, RecordingTarget};
use crate::media::transcode::{CodecWork, TranscodeConfig};

/// Counts the packets a bridge drops because they did not come from the far end
/// (`callbridge_rtp_dropped_total{reason="foreign_source"}`); none in unit tests.
#[derive(Debug, Clone, Default)]
pub struct DropCounter(Option<prometheus::IntCounter>);

impl DropCounter {
    /// Counts into `counter`.
    pub fn new(counter: prometheus::IntCounter) -> Self {
        DropCounter(Some(counter))
    }

    /// Adds one.
    pub fn inc(&self) {
        if let Some(c) = &self.0 {
            c.inc();
        }
    }
}

/// Settings of one bridge (from config `[media]`, plus the per-call recording target).
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Jitter buffer bounds and Opus encoder settings of the transcoding path.
    pub transcode: TranscodeConfig,
    /// Packet duration toward the browser when transcoding, ms.
    pub browser_ptime_ms: u32,
    /// Record the call into this file (`None`: no recording).
    pub recording: Option<RecordingTarget>,
    /// Report [`MediaEvent::InactivityTimeout`] after this long without packets from a
    /// leg (`None`: never).
    pub inactivity_timeout: Option<Duration>,
    /// Which sources the SIP side's media is accepted from (strict: the SDP's
    /// address only; symmetric RTP: a source latched right after the answer).
    pub latch: LatchPolicy,
    /// Where packets from strangers are counted.
    pub foreign_drops: DropCounter,
    /// How often quality is computed and reported ([`MediaEvent::Quality`]).
    pub stats_interval: Duration,
    /// Mean interval of our RTCP reports on the SIP leg.
    pub rtcp_interval: Duration,
    /// Timing of digits sent with [`super::Bridge::send_dtmf`].
    pub dtmf: DtmfTiming,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            transcode: TranscodeConfig::default(),
            browser_ptime_ms: DEFAULT_PTIME_MS,
            recording: None,
            inactivity_timeout: Some(Duration::from_secs(30)),
            latch: LatchPolicy::STRICT,
            foreign_drops: DropCounter::default(),
            stats_interval: Duration::from_secs(5),
            rtcp_interval: Duration::from_secs(5),
            dtmf: DtmfTiming::default(),
        }
    }
}

/// One of the two legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Leg {
    /// Browser ↔ gateway (WebRTC).
    Browser,
    /// Gateway ↔ SIP peer (plain RTP).
    Sip,
}

impl Leg {
    /// `"browser"` or `"sip"` (metric label, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Leg::Browser => "browser",
            Leg::Sip => "sip",
        }
    }

    /// Index into per-leg arrays.
    pub(crate) fn index(self) -> usize {
        match self {
            Leg::Browser => 0,
            Leg::Sip => 1,
        }
    }
}

/// What a running bridge reports to its call.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// Periodic quality (every `stats_interval`): send protocol `stats`, keep for the CDR.
    Quality(Box<QualityReport>),
    /// No RTP or RTCP from `leg` for `silent_for`: end the call with `media_failed`.
    /// Reported once per leg.
    InactivityTimeout {
        /// The silent leg.
        leg: Leg,
        /// How long it has been silent.
        silent_for: Duration,
    },
    /// An RFC 4733 event started on `leg` (once per event).
    Dtmf {
        /// Where it came from.
        leg: Leg,
        /// The digit (`0-9 * # A-D`).
        digit: char,
    },
    /// The relay/transcode decision changed (the SIP peer's SDP changed codec or ptime).
    ModeChanged(MediaMode),
    /// The SIP side's media comes from somewhere else than its SDP said; we now send there.
    Latched(SocketAddr),
    /// The recording was closed (at the end of the call, or early at its size cap).
    RecordingFinished(Box<RecordingInfo>),
    /// The recording could not be written.
    RecordingFailed(String),
}

/// Packet and codec counters of a running bridge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// RTP packets received from the browser and sent to the SIP peer.
    pub to_sip: u64,
    /// RTP packets received from the SIP peer and sent to the browser.
    pub to_browser: u64,
    /// Packets dropped because their payload type was not negotiated (either direction).
    pub dropped_unknown_payload_type: u64,
    /// Datagrams from the SIP side that were not RTP.
    pub dropped_malformed: u64,
    /// RTP and RTCP datagrams dropped because they did not come from the far end's
    /// (SDP or latched) address.
    pub dropped_foreign_source: u64,
    /// Packets not relayed because that direction is on hold (`sendonly`, `recvonly`,
    /// `inactive`, or our own hold).
    pub held: u64,
    /// Packets that could not be sent (socket error, browser track not ready yet).
    pub send_errors: u64,
    /// Times a source changed SSRC or restarted, hidden by the rewriter (both directions).
    pub source_resyncs: u64,
    /// Codec work toward the SIP peer (all zero when relaying).
    pub work_to_sip: CodecWork,
    /// Codec work toward the browser (all zero when relaying).
    pub work_to_browser: CodecWork,
    /// RTCP datagrams received from the SIP peer.
    pub rtcp_received: u64,
    /// RTCP reports sent to the SIP peer.
    pub rtcp_sent: u64,
}

impl BridgeStats {
    /// Frames decoded plus frames encoded, both directions: 0 proves a pure relay.
    pub fn codec_frames(&self) -> u64 {
        let w = self.work_to_sip + self.work_to_browser;
        w.decoded + w.encoded
    }
}

/// Everything the call record needs once the bridge stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeReport {
    /// Relay or transcode, and the codecs (the last one if it changed).
    pub mode: MediaMode,
    /// Final counters.
    pub stats: BridgeStats,
    /// Whole-call quality (loss over the whole call, latest jitter and RTT).
    pub quality: QualityReport,
    /// The recording, if the call was recorded.
    pub recording: Option<Result<RecordingInfo, String>>,
}
