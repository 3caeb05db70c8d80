//! State shared by the bridge handle and its tasks: atomic counters written per packet
//! (relaxed stores, no locks), and snapshots behind mutexes written about once a second.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::types::{BridgeStats, DropCounter, Leg};
use crate::media::jitter::JitterStats;
use crate::media::negotiate::MediaMode;
use crate::media::quality::QualityReport;
use crate::media::relay::Dropped;
use crate::media::rtcp::PeerReport;
use crate::media::rtp_stats::ReceiveSnapshot;
use crate::media::transcode::CodecWork;

/// Codec work of one direction, as atomics.
#[derive(Debug, Default)]
pub(super) struct WorkCounters {
    /// See [`CodecWork::decoded`].
    decoded: AtomicU64,
    /// See [`CodecWork::encoded`].
    encoded: AtomicU64,
    /// See [`CodecWork::concealed`].
    concealed: AtomicU64,
    /// See [`CodecWork::fec_recovered`].
    fec_recovered: AtomicU64,
    /// See [`CodecWork::decode_errors`].
    decode_errors: AtomicU64,
}

impl WorkCounters {
    /// Publishes `w`.
    pub fn store(&self, w: CodecWork) {
        self.decoded.store(w.decoded, Ordering::Relaxed);
        self.encoded.store(w.encoded, Ordering::Relaxed);
        self.concealed.store(w.concealed, Ordering::Relaxed);
        self.fec_recovered.store(w.fec_recovered, Ordering::Relaxed);
        self.decode_errors.store(w.decode_errors, Ordering::Relaxed);
    }

    /// Reads the counters.
    fn load(&self) -> CodecWork {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CodecWork {
            decoded: get(&self.decoded),
            encoded: get(&self.encoded),
            concealed: get(&self.concealed),
            fec_recovered: get(&self.fec_recovered),
            decode_errors: get(&self.decode_errors),
        }
    }
}

/// What we sent on the SIP leg, for the sender info of our RTCP SR.
#[derive(Debug, Default)]
pub(super) struct SentCounters {
    /// RTP packets sent.
    pub packets: AtomicU64,
    /// Payload octets sent.
    pub octets: AtomicU64,
    /// RTP timestamp of the last packet sent.
    pub last_ts: AtomicU32,
    /// When it was sent, µs since the bridge started.
    pub last_at_us: AtomicU64,
}

/// Per-direction snapshot published by the direction's task about once a second.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct DirectionSnapshot {
    /// Reception statistics of the incoming stream.
    pub receive: ReceiveSnapshot,
    /// The jitter buffer, when transcoding.
    pub jitter: Option<JitterStats>,
    /// Round-trip time (SIP leg: from RTCP).
    pub rtt: Option<Duration>,
    /// What the peer reports about our stream (SIP leg: from RTCP).
    pub peer_report: Option<PeerReport>,
}

/// Everything shared.
#[derive(Debug)]
pub(super) struct Shared {
    /// When the bridge started (time origin of the µs counters).
    pub epoch: Instant,
    /// RTP packets sent to the SIP peer.
    pub to_sip: AtomicU64,
    /// RTP packets sent to the browser.
    pub to_browser: AtomicU64,
    /// Packets dropped for their payload type.
    pub dropped_payload_type: AtomicU64,
    /// Non-RTP datagrams from the SIP side.
    pub dropped_malformed: AtomicU64,
    /// Datagrams from strangers on the SIP side.
    pub dropped_foreign: AtomicU64,
    /// Packets not relayed because of hold.
    pub held: AtomicU64,
    /// Send failures.
    pub send_errors: AtomicU64,
    /// Rewriter resyncs, per direction (index: [`Leg::index`] of the output leg).
    pub resyncs: [AtomicU64; 2],
    /// Codec work per direction (index: [`Leg::index`] of the output leg).
    pub work: [WorkCounters; 2],
    /// RTCP datagrams received from the SIP peer.
    pub rtcp_received: AtomicU64,
    /// RTCP reports sent to the SIP peer.
    pub rtcp_sent: AtomicU64,
    /// Last packet from each leg, µs since `epoch` plus one (0: never).
    pub last_heard: [AtomicU64; 2],
    /// What we sent to the SIP peer.
    pub sent: SentCounters,
    /// Snapshots per incoming leg (index: [`Leg::index`] of the leg received from).
    pub snapshots: [Mutex<DirectionSnapshot>; 2],
    /// The current relay/transcode decision.
    pub mode: Mutex<MediaMode>,
    /// The latest periodic quality report.
    pub quality: Mutex<Option<QualityReport>>,
}

impl Shared {
    /// Fresh state for a bridge starting at `epoch` in `mode`.
    pub fn new(epoch: Instant, mode: MediaMode) -> Shared {
        Shared {
            epoch,
            to_sip: AtomicU64::new(0),
            to_browser: AtomicU64::new(0),
            dropped_payload_type: AtomicU64::new(0),
            dropped_malformed: AtomicU64::new(0),
            dropped_foreign: AtomicU64::new(0),
            held: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            resyncs: Default::default(),
            work: Default::default(),
            rtcp_received: AtomicU64::new(0),
            rtcp_sent: AtomicU64::new(0),
            last_heard: Default::default(),
            sent: SentCounters::default(),
            snapshots: Default::default(),
            mode: Mutex::new(mode),
            quality: Mutex::new(None),
        }
    }

    /// µs since the bridge started.
    pub fn micros(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// Notes a packet from `leg` at `now`.
    pub fn heard(&self, leg: Leg, now: Instant) {
        self.last_heard[leg.index()].store(self.micros(now) + 1, Ordering::Relaxed);
    }

    /// When `leg` was last heard (`None`: never).
    pub fn last_heard(&self, leg: Leg) -> Option<Instant> {
        match self.last_heard[leg.index()].load(Ordering::Relaxed) {
            0 => None,
            us => Some(self.epoch + Duration::from_micros(us - 1)),
        }
    }

    /// Counts a drop, logging the first one at debug level.
    pub fn dropped(&self, why: Dropped) {
        if self.dropped_payload_type.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::debug!(?why, "dropping RTP packet");
        }
    }

    /// Counts a datagram (`what`: RTP or RTCP) from `from`, which is not the far end,
    /// into the bridge's counter and `metric`; logs the first one of the call.
    pub fn foreign(&self, from: SocketAddr, what: &'static str, metric: &DropCounter) {
        metric.inc();
        if self.dropped_foreign.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(%from, what, "dropping SIP-side media from a source that is not the far end");
        }
    }

    /// Counts a packet not relayed because its direction is on hold.
    pub fn held(&self) {
        self.held.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a send failure, logging the first one.
    pub fn send_failed(&self, what: &str, error: &dyn std::fmt::Display) {
        if self.send_errors.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::debug!(%error, "RTP send to {what} failed");
        }
    }

    /// Publishes a direction's snapshot.
    pub fn publish(&self, from: Leg, snapshot: DirectionSnapshot) {
        if let Ok(mut s) = self.snapshots[from.index()].lock() {
            *s = snapshot;
        }
    }

    /// The latest snapshot of the stream received from `from`.
    pub fn snapshot(&self, from: Leg) -> DirectionSnapshot {
        self.snapshots[from.index()]
            .lock()
            .map(|s| *s)
            .unwrap_or_default()
    }

    /// The current mode.
    pub fn mode(&self) -> MediaMode {
        match self.mode.lock() {
            Ok(m) => *m,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// Counters now.
    pub fn stats(&self) -> BridgeStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BridgeStats {
            to_sip: get(&self.to_sip),
            to_browser: get(&self.to_browser),
            dropped_unknown_payload_type: get(&self.dropped_payload_type),
            dropped_malformed: get(&self.dropped_malformed),
            dropped_foreign_source: get(&self.dropped_foreign),
            held: get(&self.held),
            send_errors: get(&self.send_errors),
            source_resyncs: get(&self.resyncs[0]) + get(&self.resyncs[1]),
            work_to_sip: self.work[Leg::Sip.index()].load(),
            work_to_browser: self.work[Leg::Browser.index()].load(),
            rtcp_received: get(&self.rtcp_received),
            rtcp_sent: get(&self.rtcp_sent),
        }
    }
}
