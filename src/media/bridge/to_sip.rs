//! The browser → SIP direction: reads the browser's track, runs the [`Pipeline`]
//! (relay or transcode), inserts the DTMF we generate into the pipeline's output (so it
//! leaves in timeline order with the audio), and sends datagrams from the RTP socket to
//! the SIP peer's (SDP or latched) address, unless that direction is on hold.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rtc::rtp;
use rtc::shared::marshal::Marshal;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::shared::{DirectionSnapshot, Shared};
use super::types::{BridgeConfig, Leg, MediaEvent};
use super::{Command, formats_for};
use crate::media::browser_media::BrowserSource;
use crate::media::dtmf::DtmfSender;
use crate::media::pipeline::{LegFormat, Pipeline};
use crate::media::recording::Tap;
use crate::media::sdp::{Direction, RemoteMedia};

/// Largest datagram we send.
const MAX_DATAGRAM: usize = 1500;
/// How often the snapshot is published.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Everything the browser → SIP task owns.
pub(super) struct ToSip {
    /// Counters and snapshots.
    pub shared: Arc<Shared>,
    /// The RTP socket (shared with the other direction, which receives on it).
    pub socket: Arc<UdpSocket>,
    /// The browser's RTP.
    pub source: BrowserSource,
    /// Relay or transcode.
    pub pipeline: Pipeline,
    /// The browser leg's format.
    pub browser: LegFormat,
    /// The SIP peer's SDP.
    pub remote_rx: watch::Receiver<RemoteMedia>,
    /// Where to send, as the latch in the other direction decided: (the SDP address
    /// it applies to, the destination).
    pub target_rx: watch::Receiver<(SocketAddr, SocketAddr)>,
    /// Our own direction (what we relay; `inactive` while we hold).
    pub local_rx: watch::Receiver<Direction>,
    /// Commands from the handle.
    pub commands: mpsc::UnboundedReceiver<Command>,
    /// Generator of our own DTMF.
    pub dtmf: DtmfSender,
    /// Recording of what the browser says, if any.
    pub tap: Option<Tap>,
    /// Events to the call.
    pub events: mpsc::UnboundedSender<MediaEvent>,
    /// Settings.
    pub config: Arc<BridgeConfig>,
    /// Ends the task.
    pub cancel: CancellationToken,
    /// Packets were held back (hold): the next one relayed starts a new segment.
    pub paused: bool,
}

impl ToSip {
    /// Whether audio may go to the SIP peer now: it receives (its SDP) and we send (not
    /// on hold).
    fn flows(&self, remote: &RemoteMedia) -> bool {
        remote.direction.peer_receives() && self.local_rx.borrow().peer_sends()
    }

    /// Runs until cancelled or the browser's track ends.
    pub async fn run(mut self) {
        if self.cancel.is_cancelled() {
            return;
        }
        let mut remote = self.remote_rx.borrow_and_update().clone();
        let mut target = self.target_rx.borrow_and_update().1;
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut next_publish = Instant::now() + PUBLISH_EVERY;
        loop {
            let deadline = earliest(self.pipeline.poll_timeout(), self.dtmf.poll_timeout());
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(
                deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            ));
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                packet = self.source.next() => {
                    let now = Instant::now();
                    match packet {
                        Some(p) => {
                            let flows = self.flows(&remote);
                            self.on_packet(now, p, flows);
                        }
                        None => break,
                    }
                }
                command = self.commands.recv() => match command {
                    Some(Command::SendDtmf(digits)) => {
                        if let Err(e) = self.dtmf.push_digits(Instant::now(), &digits) {
                            tracing::warn!(error = %e, "DTMF not sent");
                        }
                    }
                    None => break,
                },
                _ = self.remote_rx.changed() => {
                    remote = self.take_remote();
                    target = self.target_for(&remote);
                }
                _ = sleep, if deadline.is_some() => {
                    let now = Instant::now();
                    // Audio due now first, then our events: both go into the pipeline's
                    // one output queue, in timeline order.
                    self.pipeline.handle_timeout(now);
                    while let Some(e) = self.dtmf.poll_output(now) {
                        self.pipeline.inject_event(now, e);
                    }
                }
            }
            // Send what this event produced to where and how it was produced for,
            // then take in a new remote: its format before its address, so no packet
            // in the old format goes to the new address.
            let now = Instant::now();
            while let Some(out) = self.pipeline.poll_output() {
                self.send(now, &out, &mut buf, target, &remote).await;
            }
            if self.remote_rx.has_changed().unwrap_or(false) {
                remote = self.take_remote();
                target = self.target_for(&remote);
            }
            if self.target_rx.has_changed().unwrap_or(false) {
                target = self.target_rx.borrow_and_update().1;
            }
            if now >= next_publish {
                next_publish = now + PUBLISH_EVERY;
                self.publish();
            }
        }
        self.publish();
        tracing::debug!("browser to SIP direction ended");
    }

    /// Where to send for `remote`: what the latch decided for its SDP address, or a new
    /// SDP address at once (with the new format; the latch publishes again once it
    /// took the new SDP in).
    fn target_for(&self, remote: &RemoteMedia) -> SocketAddr {
        let (sdp, latched) = *self.target_rx.borrow();
        if sdp == remote.addr {
            latched
        } else {
            remote.addr
        }
    }

    /// Takes the new remote media and reconfigures the pipeline for its format.
    fn take_remote(&mut self) -> RemoteMedia {
        let remote = self.remote_rx.borrow_and_update().clone();
        let (sip, transcode) = formats_for(&self.browser, &remote);
        if let Err(e) =
            self.pipeline
                .reconfigure(self.browser, sip, transcode, &self.config.transcode)
        {
            tracing::warn!(error = %e, "keeping previous SIP format toward the peer");
        }
        remote
    }

    /// Feeds one packet from the browser into the pipeline, unless the direction is on
    /// hold (`flows` false): then it is held back, and the stream resumes as a new
    /// segment (continuous sequence, marker set).
    fn on_packet(&mut self, now: Instant, packet: rtp::Packet, flows: bool) {
        self.shared.heard(Leg::Browser, now);
        if !flows {
            self.shared.held();
            self.paused = true;
            return;
        }
        if std::mem::take(&mut self.paused) {
            self.pipeline.restart_source();
        }
        match self.pipeline.handle_packet(now, packet) {
            Ok(Some(digit)) => {
                tracing::debug!(%digit, "DTMF from the browser");
                let _ = self.events.send(MediaEvent::Dtmf {
                    leg: Leg::Browser,
                    digit,
                });
            }
            Ok(None) => {}
            Err(why) => self.shared.dropped(why),
        }
        if self.pipeline.is_transcoding() {
            self.shared.work[Leg::Sip.index()].store(self.pipeline.work());
        }
    }

    /// Sends `packet` to the SIP peer (unless the direction is on hold).
    async fn send(
        &mut self,
        now: Instant,
        packet: &rtp::Packet,
        buf: &mut [u8],
        to: SocketAddr,
        remote: &RemoteMedia,
    ) {
        if !self.flows(remote) {
            self.shared.held();
            return;
        }
        let n = match packet.marshal_to(buf) {
            Ok(n) => n,
            Err(e) => return self.shared.send_failed("SIP peer", &e),
        };
        if let Err(e) = self.socket.send_to(&buf[..n], to).await {
            return self.shared.send_failed("SIP peer", &e);
        }
        let h = &packet.header;
        let s = &self.shared;
        s.to_sip.fetch_add(1, Ordering::Relaxed);
        s.sent.packets.fetch_add(1, Ordering::Relaxed);
        s.sent
            .octets
            .fetch_add(packet.payload.len() as u64, Ordering::Relaxed);
        s.sent.last_ts.store(h.timestamp, Ordering::Relaxed);
        s.sent.last_at_us.store(s.micros(now), Ordering::Relaxed);
        let output = self.pipeline.output().format;
        if let Some(tap) = &self.tap
            && h.payload_type == output.payload_type
        {
            tap.offer(now, h.timestamp, output.codec, packet.payload.clone());
        }
    }

    /// Publishes the browser stream's statistics and the resync count.
    fn publish(&self) {
        self.shared.resyncs[Leg::Sip.index()].store(self.pipeline.resyncs(), Ordering::Relaxed);
        self.shared.work[Leg::Sip.index()].store(self.pipeline.work());
        self.shared.publish(
            Leg::Browser,
            DirectionSnapshot {
                receive: self.pipeline.receive_stats(),
                jitter: self.pipeline.jitter_stats(),
                rtt: None,
                peer_report: None,
            },
        );
    }
}

/// The earlier of two optional deadlines.
pub(super) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
