//! What the bridge sees of a browser leg, whichever engine runs it: a source of the
//! browser's RTP, a sink for ours, and the stack's view of the path (RTT, loss).
//!
//! `tasks` (the `webrtc` crate, a driver task per call) hands out its tracks and peer
//! connection; `worker` (an `rtc` core inside a media worker) hands out channels to
//! the worker thread. The bridge's code is the same for both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, RTCStatsReport, RTCStatsReportEntry, StatsSelector};

use super::worker::WorkerLink;

/// What the WebRTC stack knows about the browser leg.
#[derive(Debug, Clone, Copy, Default)]
pub struct BrowserView {
    /// Round-trip time: RTCP-based when the stack has one, else the ICE checks' RTT.
    pub rtt: Option<Duration>,
    /// Loss the browser reports for our stream (RTCP receiver reports).
    pub remote_loss: Option<f64>,
}

/// The browser leg's RTT and remote loss from a statistics report.
pub fn view_from_report(report: &RTCStatsReport) -> BrowserView {
    let remote_loss = report.iter().find_map(|e| match e {
        RTCStatsReportEntry::RemoteInboundRtp(s) if s.round_trip_time_measurements > 0 => {
            Some(s.fraction_lost.clamp(0.0, 1.0))
        }
        _ => None,
    });
    let from_rtcp = report.iter().find_map(|e| match e {
        RTCStatsReportEntry::RemoteInboundRtp(s)
            if s.round_trip_time_measurements > 0 && s.round_trip_time > 0.0 =>
        {
            Some(s.round_trip_time)
        }
        _ => None,
    });
    let from_ice = || {
        report.candidate_pairs().find_map(|p| {
            (p.nominated && p.current_round_trip_time > 0.0).then_some(p.current_round_trip_time)
        })
    };
    BrowserView {
        rtt: from_rtcp
            .or_else(from_ice)
            .and_then(|s| Duration::try_from_secs_f64(s).ok()),
        remote_loss,
    }
}

/// The browser's RTP, as the bridge reads it.
pub(crate) enum BrowserSource {
    /// The `webrtc` crate's remote track, once the stack reports it.
    Track(
        watch::Receiver<Option<Arc<dyn TrackRemote>>>,
        Option<Arc<dyn TrackRemote>>,
    ),
    /// Packets from the leg's media worker.
    Worker(mpsc::Receiver<rtc::rtp::Packet>),
}

impl BrowserSource {
    /// Waits until packets can flow; false when cancelled or the leg went away first.
    pub(crate) async fn open(&mut self, cancel: &CancellationToken) -> bool {
        match self {
            BrowserSource::Track(rx, track) => {
                let t = tokio::select! {
                    t = rx.wait_for(Option::is_some) => t.ok().and_then(|t| t.clone()),
                    _ = cancel.cancelled() => None,
                };
                *track = t;
                track.is_some()
            }
            BrowserSource::Worker(_) => !cancel.is_cancelled(),
        }
    }

    /// The next packet; `None` when the browser's stream ended. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Option<rtc::rtp::Packet> {
        match self {
            BrowserSource::Track(_, Some(track)) => loop {
                match track.poll().await {
                    Some(TrackRemoteEvent::OnRtpPacket(p)) => return Some(p),
                    Some(TrackRemoteEvent::OnEnded) | None => return None,
                    Some(_) => continue,
                }
            },
            BrowserSource::Track(_, None) => None,
            BrowserSource::Worker(rx) => rx.recv().await,
        }
    }
}

/// Where the bridge writes our RTP toward the browser.
#[derive(Clone)]
pub(crate) enum BrowserSink {
    /// The `webrtc` crate's local track.
    Track(Arc<TrackLocalStaticRTP>),
    /// The leg's media worker.
    Worker(WorkerLink),
}

impl BrowserSink {
    /// Sends one packet (the SSRC must already be the leg's).
    pub(crate) async fn write(&self, packet: rtc::rtp::Packet) -> Result<(), String> {
        match self {
            BrowserSink::Track(track) => track.write_rtp(packet).await.map_err(|e| e.to_string()),
            BrowserSink::Worker(link) => {
                link.write_rtp(packet);
                Ok(())
            }
        }
    }
}

/// Where the bridge asks for the stack's view of the browser path.
#[derive(Clone)]
pub(crate) enum BrowserStats {
    /// The `webrtc` crate's peer connection.
    Pc(Arc<dyn PeerConnection>),
    /// The leg's media worker.
    Worker(WorkerLink),
}

impl BrowserStats {
    /// RTT and remote loss now.
    pub(crate) async fn view(&self) -> BrowserView {
        match self {
            BrowserStats::Pc(pc) => {
                view_from_report(&pc.get_stats(Instant::now(), StatsSelector::None).await)
            }
            BrowserStats::Worker(link) => link.view().await,
        }
    }
}

/// The three handles the bridge takes from a browser leg.
pub(crate) struct BrowserMedia {
    /// The browser's RTP.
    pub source: BrowserSource,
    /// Our RTP toward the browser, and its SSRC.
    pub sink: (BrowserSink, u32),
    /// The stack's view of the path.
    pub stats: BrowserStats,
    /// Where the bridge's tasks and SIP-side sockets belong: the leg's media worker
    /// (`None`: the current runtime).
    pub runtime: Option<tokio::runtime::Handle>,
}
