//! The bridge's slow loop: it reports a leg silent for the inactivity timeout, and every
//! `stats_interval` it computes the quality report (browser RTT from the WebRTC stack's
//! statistics, everything else from the directions' snapshots).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::shared::Shared;
use super::types::{BridgeConfig, Leg, MediaEvent};
use crate::media::browser_media::{BrowserStats, BrowserView};
use crate::media::coalesce::coalesce;
use crate::media::pipeline::LegFormat;
use crate::media::quality::{self, LegMeasure, QualityReport};
use crate::media::rtp_stats::ReceiveSnapshot;
use crate::media::sdp::{Direction, RemoteMedia};

/// Everything the supervisor task owns.
pub(super) struct Supervisor {
    /// Counters and snapshots.
    pub shared: Arc<Shared>,
    /// The browser leg's statistics, for its RTT.
    pub stats: BrowserStats,
    /// The browser leg's format.
    pub browser: LegFormat,
    /// The SIP peer's SDP (a peer that does not send is never inactive).
    pub remote_rx: watch::Receiver<RemoteMedia>,
    /// Our own direction (while we hold, the far end is not expected to send).
    pub local_rx: watch::Receiver<Direction>,
    /// Events to the call.
    pub events: mpsc::UnboundedSender<MediaEvent>,
    /// Settings.
    pub config: Arc<BridgeConfig>,
    /// Ends the task.
    pub cancel: CancellationToken,
}

/// The quality report from the shared snapshots; loss is counted since `before`.
pub(super) fn report(
    shared: &Shared,
    browser: LegFormat,
    view: BrowserView,
    before: &[ReceiveSnapshot; 2],
) -> QualityReport {
    let mode = shared.mode();
    let b = shared.snapshot(Leg::Browser);
    let s = shared.snapshot(Leg::Sip);
    let measure =
        |leg: Leg, codec, ptime_ms, snap: super::shared::DirectionSnapshot, rtt, remote_loss| {
            LegMeasure {
                codec,
                ptime_ms,
                now: snap.receive,
                before: before[leg.index()],
                rtt,
                buffer_delay: snap.jitter.map(|j| j.target_delay).unwrap_or_default(),
                remote_loss,
            }
        };
    let sip_remote_loss = s.peer_report.map(|r| f64::from(r.fraction_lost) / 256.0);
    let sip_leg = mode.sip();
    quality::report(
        &measure(
            Leg::Browser,
            browser.format.codec,
            browser.ptime_ms,
            b,
            view.rtt,
            view.remote_loss,
        ),
        &measure(
            Leg::Sip,
            sip_leg.codec,
            sip_leg.ptime_ms,
            s,
            s.rtt,
            sip_remote_loss,
        ),
        mode.is_transcoding(),
    )
}

impl Supervisor {
    /// Runs until cancelled. It wakes only when something is due: the next quality
    /// report, the moment a leg would have been silent for the inactivity timeout
    /// (moved on when packets came meanwhile), or a change of direction (hold).
    pub async fn run(mut self) {
        let mut reported = [false; 2];
        let mut before = [ReceiveSnapshot::default(); 2];
        let mut next_stats = coalesce(Instant::now() + self.config.stats_interval);
        let (mut remote_open, mut local_open) = (true, true);
        loop {
            let now = Instant::now();
            if now >= next_stats {
                next_stats = coalesce(now + self.config.stats_interval);
                let view = self.stats.view().await;
                let r = report(&self.shared, self.browser, view, &before);
                before = [
                    self.shared.snapshot(Leg::Browser).receive,
                    self.shared.snapshot(Leg::Sip).receive,
                ];
                tracing::debug!(
                    mos = r.overall.mos,
                    loss_pct = r.overall.loss_pct,
                    jitter_ms = r.overall.jitter_ms,
                    rtt_ms = r.overall.rtt_ms,
                    "call quality"
                );
                if let Ok(mut q) = self.shared.quality.lock() {
                    *q = Some(r);
                }
                let _ = self.events.send(MediaEvent::Quality(Box::new(r)));
            }
            let silence_due = self
                .config
                .inactivity_timeout
                .and_then(|timeout| self.check_inactivity(now, timeout, &mut reported));
            let wake = silence_due.map_or(next_stats, |at| coalesce(at).min(next_stats));
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
                changed = self.remote_rx.changed(), if remote_open => remote_open = changed.is_ok(),
                changed = self.local_rx.changed(), if local_open => local_open = changed.is_ok(),
            }
        }
    }

    /// Reports each leg silent for longer than `timeout`, once; returns when the next
    /// leg that is expected to send would reach the timeout if nothing comes.
    fn check_inactivity(
        &self,
        now: Instant,
        timeout: Duration,
        reported: &mut [bool; 2],
    ) -> Option<Instant> {
        let mut due: Option<Instant> = None;
        let sip_sends = self.remote_rx.borrow().direction.peer_sends()
            && self.local_rx.borrow().peer_receives();
        for leg in [Leg::Browser, Leg::Sip] {
            if reported[leg.index()] || (leg == Leg::Sip && !sip_sends) {
                continue;
            }
            let since = self.shared.last_heard(leg).unwrap_or(self.shared.epoch);
            let silent_for = now.saturating_duration_since(since);
            if silent_for >= timeout {
                reported[leg.index()] = true;
                tracing::warn!(leg = leg.as_str(), ?silent_for, "media inactivity");
                let _ = self
                    .events
                    .send(MediaEvent::InactivityTimeout { leg, silent_for });
            } else {
                let at = since + timeout;
                due = Some(due.map_or(at, |d| d.min(at)));
            }
        }
        due
    }
}
