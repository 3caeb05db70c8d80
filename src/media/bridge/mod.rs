//! The bridge: moves audio between a WebRTC leg and an RTP leg for one call.
//!
//! ```text
//!            ┌─ to_sip task ────────────────────────────────────────────┐
//! browser ──>│ track ─> Pipeline (relay | JB→decode→repack→encode) ─────│──> RTP socket ──> SIP peer
//!            │          + our DTMF (RFC 4733)            recording tap │      (latched address)
//!            └──────────────────────────────────────────────────────────┘
//!            ┌─ to_browser task ────────────────────────────────────────┐
//! browser <──│ track <─ Pipeline <─ latch, RTCP (SR/RR, RTT) <──────────│<── RTP/RTCP sockets <── SIP peer
//!            └──────────────────────────────────────────────────────────┘
//!            supervisor task: inactivity (1 s), quality report (stats_interval)
//! ```
//!
//! Only the far end's media is played: the latch accepts the SDP's address (or, with
//! symmetric RTP, one source latched right after the answer) and drops and counts
//! everything else. A direction carries audio only while both SDPs allow it (the far
//! end's `a=sendonly|recvonly|inactive`) and we do not hold the call
//! ([`Bridge::set_local_direction`]).
//!
//! I/O contract: three tokio tasks per call, in the call's span; they and the
//! SIP-side sockets run on the browser leg's media worker runtime, so a call's
//! packets stay on one thread. The sans-IO parts ([`Pipeline`],
//! [`crate::media::latch::Latch`], [`crate::media::rtcp::RtcpSession`], the jitter
//! buffer, the E-model) never read the clock. Per packet there is no lock and, when
//! relaying, no allocation of ours. Everything the call needs comes back through
//! [`MediaEvent`]s, [`Bridge::stats`]/[`Bridge::quality`], and the [`BridgeReport`]
//! returned by [`Bridge::stop`].

mod shared;
mod supervisor;
mod to_browser;
mod to_sip;
mod types;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use types::{BridgeConfig, BridgeReport, BridgeStats, DropCounter, Leg, MediaEvent};

use super::MediaError;
use super::browser_media::{BrowserMedia, BrowserStats};
use super::dtmf::{DtmfError, DtmfSender, digit_to_event};
use super::negotiate::{DEFAULT_PTIME_MS, LegMedia, MediaMode};
use super::pipeline::{LegFormat, Pipeline};
use super::quality::QualityReport;
use super::recording::{Recorder, RecordingInfo, Side};
use super::relay::Towards;
use super::rewrite::RtpRewriter;
use super::rtcp::RtcpSession;
use super::rtp_leg::RtpLeg;
use super::rtp_stats::ReceiveSnapshot;
use super::sdp::{Direction, RemoteMedia};
use super::webrtc_leg::WebRtcLeg;
use shared::Shared;

/// How long [`Bridge::stop`] waits for a task before aborting it.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Commands from the handle to the browser → SIP task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Generate these digits toward the SIP peer.
    SendDtmf(String),
}

/// The SIP leg's format for `remote`, and whether the call must be transcoded.
pub(crate) fn formats_for(browser: &LegFormat, remote: &RemoteMedia) -> (LegFormat, bool) {
    let sip = LegFormat {
        format: remote.format,
        ptime_ms: remote.ptime_ms.unwrap_or(DEFAULT_PTIME_MS),
    };
    (sip, mode_for(browser, &sip).is_transcoding())
}

/// The mode for two leg formats.
fn mode_for(browser: &LegFormat, sip: &LegFormat) -> MediaMode {
    let leg = |f: &LegFormat| LegMedia {
        codec: f.format.codec,
        ptime_ms: f.ptime_ms,
    };
    MediaMode::choose(leg(browser), leg(sip))
}

/// Spawns `task` on `runtime` in the current (the call's) span.
fn spawn_on(
    runtime: &tokio::runtime::Handle,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    use tracing::Instrument;
    runtime.spawn(task.in_current_span())
}

/// The SIP-side sockets, moved to `runtime`'s reactor (the leg's media worker: the
/// bridge's tasks run there and should not be woken from another thread).
fn on_runtime(
    (rtp, rtcp): (tokio::net::UdpSocket, tokio::net::UdpSocket),
    runtime: &tokio::runtime::Handle,
) -> Result<(tokio::net::UdpSocket, tokio::net::UdpSocket), MediaError> {
    let (rtp, rtcp) = (rtp.into_std()?, rtcp.into_std()?);
    let _in_worker = runtime.enter();
    Ok((
        tokio::net::UdpSocket::from_std(rtp)?,
        tokio::net::UdpSocket::from_std(rtcp)?,
    ))
}

/// A running bridge between the two legs of one call.
pub struct Bridge {
    /// Counters, snapshots, mode, latest quality.
    shared: Arc<Shared>,
    /// Latest SIP peer media description; the tasks watch it.
    remote: watch::Sender<RemoteMedia>,
    /// Our own direction: what we relay (`inactive` while we hold the call).
    local: watch::Sender<Direction>,
    /// Commands to the browser → SIP task.
    commands: mpsc::UnboundedSender<Command>,
    /// Ends the tasks.
    cancel: CancellationToken,
    /// The three tasks.
    tasks: Vec<JoinHandle<()>>,
    /// The recorder, when recording.
    recorder: Option<Recorder>,
    /// The browser leg's statistics (for its RTT).
    browser_stats: BrowserStats,
    /// The browser leg's format.
    browser: LegFormat,
    /// Events to the call.
    events: mpsc::UnboundedSender<MediaEvent>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("mode", &self.shared.mode())
            .field("stats", &self.shared.stats())
            .finish()
    }
}

impl Bridge {
    /// Starts with the default [`BridgeConfig`] and no event receiver (see
    /// [`Bridge::start_with`]).
    pub fn start(
        webrtc: &WebRtcLeg,
        rtp: RtpLeg,
        remote: RemoteMedia,
    ) -> Result<Bridge, MediaError> {
        let (events, _) = mpsc::unbounded_channel();
        Self::start_with(webrtc, rtp, remote, BridgeConfig::default(), events)
    }

    /// Starts relaying or transcoding between `webrtc` and `rtp`, sending to `remote`,
    /// reporting to `events`.
    ///
    /// Must be called inside a tokio runtime. The mode follows from the two legs'
    /// codecs and ptimes ([`MediaMode::choose`]). Packets flow as soon as the browser's
    /// track opens and the SIP peer sends; nothing needs to wait for `Connected`. Keep
    /// `webrtc` open until [`Bridge::stop`] has returned (the bridge holds its tracks, not
    /// the connection). Fails only when a codec cannot be created.
    pub fn start_with(
        webrtc: &WebRtcLeg,
        rtp: RtpLeg,
        remote: RemoteMedia,
        config: BridgeConfig,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> Result<Bridge, MediaError> {
        let epoch = Instant::now();
        let browser = LegFormat {
            format: webrtc.format(),
            ptime_ms: config.browser_ptime_ms.max(10),
        };
        let (sip, transcode) = formats_for(&browser, &remote);
        let mode = mode_for(&browser, &sip);
        let BrowserMedia {
            source,
            sink: (sink, track_ssrc),
            stats: browser_stats,
            runtime,
        } = webrtc.media()?;
        let sip_ssrc = rand::random::<u32>();
        let clock = |f: &LegFormat| f.format.codec.clock_rate();
        let to_sip = Pipeline::new(
            Towards::Sip,
            browser,
            sip,
            transcode,
            RtpRewriter::new(
                sip_ssrc,
                rand::random(),
                rand::random(),
                clock(&sip),
                clock(&sip) / 50,
            ),
            &config.transcode,
        )?;
        let to_browser = Pipeline::new(
            Towards::Browser,
            sip,
            browser,
            transcode,
            RtpRewriter::new(
                track_ssrc,
                rand::random(),
                rand::random(),
                clock(&browser),
                clock(&browser) / 50,
            ),
            &config.transcode,
        )?;
        tracing::info!(%mode, addr = %remote.addr, "media bridge starting");

        let recorder = config.recording.clone().map(|target| {
            let events = events.clone();
            Recorder::start(target, epoch, move |result| {
                let _ = events.send(match result {
                    Ok(info) => MediaEvent::RecordingFinished(Box::new(info.clone())),
                    Err(e) => MediaEvent::RecordingFailed(e.to_string()),
                });
            })
        });
        let config = Arc::new(config);
        let shared = Arc::new(Shared::new(epoch, mode));
        let (rtp_socket, rtcp_socket) = on_runtime(rtp.into_sockets(), &runtime)?;
        let socket = Arc::new(rtp_socket);
        let (remote_tx, remote_rx) = watch::channel(remote.clone());
        let (target_tx, target_rx) = watch::channel((remote.addr, remote.addr));
        let (local_tx, local_rx) = watch::channel(Direction::SendRecv);
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let tasks = vec![
            spawn_on(
                &runtime,
                to_sip::ToSip {
                    shared: shared.clone(),
                    socket: socket.clone(),
                    source,
                    pipeline: to_sip,
                    browser,
                    remote_rx: remote_rx.clone(),
                    target_rx,
                    local_rx: local_rx.clone(),
                    commands: commands_rx,
                    dtmf: DtmfSender::new(config.dtmf),
                    tap: recorder.as_ref().map(|r| r.tap(Side::Browser)),
                    events: events.clone(),
                    config: config.clone(),
                    cancel: cancel.clone(),
                    paused: false,
                }
                .run(),
            ),
            spawn_on(
                &runtime,
                to_browser::ToBrowser {
                    shared: shared.clone(),
                    socket,
                    rtcp_socket,
                    sink,
                    pipeline: to_browser,
                    browser,
                    remote_rx: remote_rx.clone(),
                    local_rx: local_rx.clone(),
                    target_tx,
                    rtcp: RtcpSession::new(sip_ssrc, &format!("callbridge-{:08x}", sip_ssrc)),
                    tap: recorder.as_ref().map(|r| r.tap(Side::Far)),
                    events: events.clone(),
                    config: config.clone(),
                    cancel: cancel.clone(),
                    paused: false,
                }
                .run(),
            ),
            spawn_on(
                &runtime,
                supervisor::Supervisor {
                    shared: shared.clone(),
                    stats: browser_stats.clone(),
                    browser,
                    remote_rx,
                    local_rx,
                    events: events.clone(),
                    config,
                    cancel: cancel.clone(),
                }
                .run(),
            ),
        ];
        Ok(Bridge {
            shared,
            remote: remote_tx,
            local: local_tx,
            commands: commands_tx,
            cancel,
            tasks,
            recorder,
            browser_stats,
            browser,
            events,
        })
    }

    /// Points the SIP side at a new remote (e.g. 200 OK SDP after 183 early media).
    ///
    /// Sequence numbers and timestamps toward both legs stay continuous. When the new
    /// codec or ptime changes the relay/transcode decision, both directions are rebuilt
    /// and [`MediaEvent::ModeChanged`] is reported. A new address is where media is
    /// expected from (and sent to) from now on; the latch starts over there. The far
    /// end's direction (`sendonly`, `recvonly`, `inactive`) holds the matching
    /// direction(s).
    pub fn update_remote(&self, remote: RemoteMedia) {
        let (sip, _) = formats_for(&self.browser, &remote);
        let mode = mode_for(&self.browser, &sip);
        let changed = self.remote.send_if_modified(|current| {
            if *current == remote {
                return false;
            }
            tracing::debug!(from = ?current, to = ?remote, "bridge remote updated");
            *current = remote;
            true
        });
        if !changed {
            return;
        }
        let previous = match self.shared.mode.lock() {
            Ok(mut m) => std::mem::replace(&mut *m, mode),
            Err(_) => mode,
        };
        if previous != mode {
            tracing::info!(%mode, "media mode changed");
            let _ = self.events.send(MediaEvent::ModeChanged(mode));
        }
    }

    /// Sets our own direction: audio goes to the SIP peer only when it includes
    /// sending, and to the browser only when it includes receiving (and the far end's
    /// SDP agrees). `Inactive` while we hold the call: the held party hears nothing,
    /// rather than the holder. A direction that resumes starts a new RTP segment
    /// (continuous sequence, marker set).
    pub fn set_local_direction(&self, direction: Direction) {
        self.local
            .send_if_modified(|d| std::mem::replace(d, direction) != direction);
    }

    /// Relay or transcode, and the codecs of both legs (for the CDR and logs).
    pub fn mode(&self) -> MediaMode {
        self.shared.mode()
    }

    /// Current packet and codec counters.
    pub fn stats(&self) -> BridgeStats {
        self.shared.stats()
    }

    /// The latest periodic quality report (`None` before the first `stats_interval`).
    pub fn quality(&self) -> Option<QualityReport> {
        self.shared.quality.lock().ok().and_then(|q| *q)
    }

    /// Sends `digits` (`0-9 * # A-D`, whitespace ignored) to the SIP peer as RFC 4733
    /// events, one after the other. Fails without sending anything when a digit is
    /// invalid or the peer did not negotiate telephone-event (then use SIP INFO).
    pub fn send_dtmf(&self, digits: &str) -> Result<(), DtmfError> {
        if let Some(bad) = digits
            .chars()
            .find(|c| !c.is_whitespace() && digit_to_event(*c).is_none())
        {
            return Err(DtmfError::InvalidDigit(bad));
        }
        if self.remote.borrow().format.dtmf_payload_type.is_none() {
            return Err(DtmfError::NotNegotiated);
        }
        self.commands
            .send(Command::SendDtmf(digits.to_owned()))
            .map_err(|_| DtmfError::QueueFull)
    }

    /// Stops all tasks, closes the recording and returns the call's media report.
    pub async fn stop(mut self) -> BridgeReport {
        self.cancel.cancel();
        let end = Instant::now();
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.abort_handle();
            match tokio::time::timeout(STOP_GRACE, task).await {
                Ok(Err(e)) if e.is_panic() => tracing::error!(error = %e, "bridge task panicked"),
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!("bridge task did not stop in time; aborting it");
                    abort.abort();
                }
            }
        }
        let view = tokio::time::timeout(Duration::from_secs(1), self.browser_stats.view())
            .await
            .unwrap_or_default();
        let quality = supervisor::report(
            &self.shared,
            self.browser,
            view,
            &[ReceiveSnapshot::default(); 2],
        );
        let recording: Option<Result<RecordingInfo, String>> = match self.recorder.take() {
            Some(r) => Some(r.finish(end).await.map_err(|e| e.to_string())),
            None => None,
        };
        let report = BridgeReport {
            mode: self.shared.mode(),
            stats: self.shared.stats(),
            quality,
            recording,
        };
        tracing::info!(
            mode = %report.mode,
            to_sip = report.stats.to_sip,
            to_browser = report.stats.to_browser,
            codec_frames = report.stats.codec_frames(),
            mos = report.quality.overall.mos,
            "media bridge stopped"
        );
        report
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // A bridge dropped without stop(): end the tasks anyway.
        self.cancel.cancel();
    }
}
