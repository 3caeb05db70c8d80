//! What the bridge sees of a browser leg: a source of the browser's RTP, a sink for
//! ours, and the stack's view of the path (RTT, loss), all channels to the leg's
//! media worker thread.

use std::time::Duration;

use rtc::statistics::report::{RTCStatsReport, RTCStatsReportEntry};
use tokio::sync::mpsc;

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

/// The browser's RTP, as the bridge reads it: packets from the leg's media worker.
pub(crate) struct BrowserSource(pub(crate) mpsc::Receiver<rtc::rtp::Packet>);

impl BrowserSource {
    /// The next packet; `None` when the leg is gone. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Option<rtc::rtp::Packet> {
        self.0.recv().await
    }
}

/// Where the bridge writes our RTP toward the browser: the leg's media worker.
#[derive(Clone)]
pub(crate) struct BrowserSink(pub(crate) WorkerLink);

impl BrowserSink {
    /// Sends one packet (the SSRC must already be the leg's).
    pub(crate) fn write(&self, packet: rtc::rtp::Packet) {
        self.0.write_rtp(packet);
    }
}

/// Where the bridge asks for the stack's view of the browser path.
#[derive(Clone)]
pub(crate) struct BrowserStats(pub(crate) WorkerLink);

impl BrowserStats {
    /// RTT and remote loss now.
    pub(crate) async fn view(&self) -> BrowserView {
        self.0.view().await
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
    /// The leg's media worker runtime: the bridge's tasks and SIP-side sockets belong there.
    pub runtime: tokio::runtime::Handle,
}
