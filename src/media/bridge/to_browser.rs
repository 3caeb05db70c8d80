//! The SIP → browser direction, and everything else that reads the SIP side: receives
//! RTP (and RTCP, on the RTCP socket or multiplexed), keeps only what comes from the
//! far end ([`Latch`]: its SDP address, or with symmetric RTP the source latched right
//! after the answer; strangers are dropped and counted), runs the [`Pipeline`] and
//! writes into our WebRTC track (unless that direction is on hold), and sends our RTCP
//! reports.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use rtc::rtp;
use rtc::shared::marshal::Unmarshal;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::shared::{DirectionSnapshot, Shared};
use super::types::{BridgeConfig, Leg, MediaEvent};
use super::{formats_for, to_sip::earliest};
use crate::media::browser_media::BrowserSink;
use crate::media::coalesce::coalesce;
use crate::media::latch::{Latch, LatchPolicy, Verdict};
use crate::media::pipeline::{LegFormat, Pipeline};
use crate::media::recording::Tap;
use crate::media::rtcp::{self, RtcpSession, SenderInfo};
use crate::media::sdp::{Direction, RemoteMedia};

/// Bytes allocated at once for received datagrams (they are sliced, not copied).
/// Small: every call holds one, and its pages count in the gateway's memory per call.
/// Once the packets sliced from a block are gone (relayed within the turn), the
/// block is reused in place.
const RECV_BLOCK: usize = 4 * 1024;
/// Largest datagram we accept.
const MAX_DATAGRAM: usize = 1500;
/// How often the snapshot is published.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Everything the SIP → browser task owns.
pub(super) struct ToBrowser {
    /// Counters and snapshots.
    pub shared: Arc<Shared>,
    /// The RTP socket.
    pub socket: Arc<UdpSocket>,
    /// The RTCP socket (RTP port + 1).
    pub rtcp_socket: UdpSocket,
    /// Where our RTP toward the browser goes.
    pub sink: BrowserSink,
    /// Relay or transcode.
    pub pipeline: Pipeline,
    /// The browser leg's format.
    pub browser: LegFormat,
    /// The SIP peer's SDP.
    pub remote_rx: watch::Receiver<RemoteMedia>,
    /// Our own direction (what we relay; `inactive` while we hold).
    pub local_rx: watch::Receiver<Direction>,
    /// Publishes the RTP destination to the other direction: (the SDP address it
    /// applies to, the destination).
    pub target_tx: watch::Sender<(SocketAddr, SocketAddr)>,
    /// RTCP state of the SIP leg.
    pub rtcp: RtcpSession,
    /// Recording of what the far end says, if any.
    pub tap: Option<Tap>,
    /// Events to the call.
    pub events: mpsc::UnboundedSender<MediaEvent>,
    /// Settings.
    pub config: Arc<BridgeConfig>,
    /// Ends the task.
    pub cancel: CancellationToken,
    /// Packets were held back (hold): the next one played starts a new segment.
    pub paused: bool,
}

/// Where RTP and RTCP come from and go, from the SDP (and symmetric latching).
struct Destinations {
    /// RTP source and destination.
    rtp: Latch,
    /// RTCP source and destination when not multiplexed.
    rtcp: Latch,
    /// Whether RTCP shares the RTP port.
    mux: bool,
}

impl Destinations {
    /// Starting from `remote`'s SDP, answered at `now`.
    fn new(now: Instant, remote: &RemoteMedia, policy: LatchPolicy) -> Self {
        Destinations {
            rtp: Latch::new(now, remote.addr, policy),
            rtcp: Latch::new(now, remote.rtcp_addr, policy),
            mux: remote.rtcp_mux,
        }
    }

    /// Follows a new SDP from the far end at `now`.
    fn update(&mut self, now: Instant, remote: &RemoteMedia) {
        self.rtp.update_sdp(now, remote.addr);
        self.rtcp.update_sdp(now, remote.rtcp_addr);
        self.mux = remote.rtcp_mux;
    }

    /// Whether RTCP from `from` is the far end's (its RTCP address, or its RTP source).
    fn rtcp_from_far_end(&self, from: SocketAddr) -> bool {
        self.rtp.accepts(from) || self.rtcp.accepts(from)
    }

    /// Where our RTCP goes.
    fn rtcp_target(&self) -> SocketAddr {
        if self.mux {
            self.rtp.target()
        } else {
            self.rtcp.target()
        }
    }
}

/// A random RTCP interval around `mean` (0.5 to 1.5 times, RFC 3550 §6.2).
fn rtcp_delay(mean: Duration) -> Duration {
    mean.mul_f64(0.5 + rand::random::<f64>())
}

impl ToBrowser {
    /// Runs until cancelled.
    pub async fn run(mut self) {
        let mut remote = self.remote_rx.borrow_and_update().clone();
        let mut dest = Destinations::new(Instant::now(), &remote, self.config.latch);
        let mut rbuf = BytesMut::with_capacity(RECV_BLOCK);
        let mut cbuf = vec![0u8; MAX_DATAGRAM];
        self.drain_stale(&dest, &mut cbuf);
        let mut next_rtcp = coalesce(Instant::now() + rtcp_delay(self.config.rtcp_interval));
        let mut next_publish = Instant::now() + PUBLISH_EVERY;
        // Something changed since the last publish: only then does the publish
        // interval wake the task (an idle call's statistics do not change).
        let mut dirty = false;
        loop {
            let due = if dirty {
                next_rtcp.min(next_publish)
            } else {
                next_rtcp
            };
            let deadline = earliest(self.pipeline.poll_timeout(), Some(due));
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(
                deadline.unwrap_or(next_rtcp),
            ));
            let mut timer = false;
            // Reclaims the block when nothing sliced from it is alive, else takes a
            // new one of the same size.
            rbuf.reserve(MAX_DATAGRAM);
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                r = self.socket.recv_buf_from(&mut rbuf) => match r {
                    Ok((_, from)) => {
                        let datagram = rbuf.split().freeze();
                        let now = Instant::now();
                        if rtcp::is_rtcp(&datagram) {
                            // Multiplexed RTCP: from the far end's RTP source only.
                            if dest.rtcp_from_far_end(from) {
                                self.on_rtcp(now, &datagram);
                            } else {
                                self.shared.foreign(from, "RTCP", &self.config.foreign_drops);
                            }
                        } else {
                            let plays = remote.direction.peer_sends()
                                && self.local_rx.borrow().peer_receives();
                            self.on_rtp(now, datagram, from, &mut dest, plays);
                        }
                    }
                    Err(e) => {
                        rbuf.clear();
                        if !quiet_error(&e) {
                            tracing::warn!(error = %e, "RTP socket receive error");
                            // Do not spin on a persistent error.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                },
                r = self.rtcp_socket.recv_from(&mut cbuf) => match r {
                    Ok((n, from)) => {
                        let now = Instant::now();
                        let datagram = &cbuf[..n];
                        // RTCP may latch (symmetric RTP) only from the host whose RTP
                        // was latched, reporting as the SSRC of the stream it sends us:
                        // a stranger cannot take our reports.
                        let plausible = rtcp::is_rtcp(datagram)
                            && dest.rtp.locked_source().is_some_and(|s| s.ip() == from.ip())
                            && dest.rtp.ssrc().is_some()
                            && rtcp_sender_ssrc(datagram) == dest.rtp.ssrc();
                        let verdict = if dest.rtp.accepts(from) {
                            Verdict::Accept
                        } else {
                            dest.rtcp.handle_packet(now, from, None, plausible)
                        };
                        match verdict {
                            Verdict::Accept => {
                                self.on_rtcp(now, datagram);
                            }
                            Verdict::Latched(addr) => {
                                tracing::debug!(%addr, "RTCP destination latched");
                                self.on_rtcp(now, datagram);
                            }
                            Verdict::Pending => {}
                            Verdict::Foreign => {
                                self.shared.foreign(from, "RTCP", &self.config.foreign_drops);
                            }
                        }
                    }
                    Err(e) => {
                        if !quiet_error(&e) {
                            tracing::debug!(error = %e, "RTCP socket receive error");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                },
                _ = self.remote_rx.changed() => {
                    remote = self.remote_rx.borrow_and_update().clone();
                    let (sip, transcode) = formats_for(&self.browser, &remote);
                    if let Err(e) = self.pipeline.reconfigure(sip, self.browser, transcode, &self.config.transcode) {
                        tracing::warn!(error = %e, "keeping previous SIP format toward the browser");
                    }
                    dest.update(Instant::now(), &remote);
                    self.target_tx.send_replace((dest.rtp.sdp(), dest.rtp.target()));
                }
                _ = sleep => {
                    let now = Instant::now();
                    // Playout (transcoding) changes the statistics; our reports do not.
                    dirty |= self.pipeline.poll_timeout().is_some_and(|at| at <= now);
                    self.pipeline.handle_timeout(now);
                    if now >= next_rtcp {
                        next_rtcp = coalesce(now + rtcp_delay(self.config.rtcp_interval));
                        self.send_rtcp(now, dest.rtcp_target(), dest.mux).await;
                    }
                    timer = true;
                }
            }
            // A datagram, or a new SIP-side description.
            dirty |= !timer;
            while let Some(out) = self.pipeline.poll_output() {
                self.sink.write(out);
                self.shared.to_browser.fetch_add(1, Ordering::Relaxed);
            }
            let now = Instant::now();
            if dirty && now >= next_publish {
                next_publish = coalesce(now + PUBLISH_EVERY);
                dirty = false;
                self.publish();
            }
        }
        self.publish();
        tracing::debug!("SIP to browser direction ended");
    }

    /// Reads and drops what reached the sockets before the answer (the bridge starts
    /// with it): nobody was told where to send yet, so it is stale at best. Sources
    /// other than the far end's SDP address are counted as strangers.
    fn drain_stale(&self, dest: &Destinations, buf: &mut [u8]) {
        for (socket, what) in [(&*self.socket, "RTP"), (&self.rtcp_socket, "RTCP")] {
            while let Ok((_, from)) = socket.try_recv_from(buf) {
                let far_end = match what {
                    "RTP" => dest.rtp.accepts(from),
                    _ => dest.rtcp_from_far_end(from),
                };
                if !far_end {
                    self.shared.foreign(from, what, &self.config.foreign_drops);
                }
            }
        }
    }

    /// Handles one RTP datagram from `from`; `plays` says whether this direction may
    /// carry audio now (not on hold).
    fn on_rtp(
        &mut self,
        now: Instant,
        mut datagram: bytes::Bytes,
        from: SocketAddr,
        dest: &mut Destinations,
        plays: bool,
    ) {
        let packet = match rtp::Packet::unmarshal(&mut datagram) {
            Ok(p) if p.header.version == 2 => p,
            _ => {
                if dest.rtp.accepts(from) {
                    self.shared
                        .dropped_malformed
                        .fetch_add(1, Ordering::Relaxed);
                } else {
                    self.shared.foreign(from, "RTP", &self.config.foreign_drops);
                }
                return;
            }
        };
        let plausible = self
            .pipeline
            .accepts_payload_type(packet.header.payload_type);
        match dest
            .rtp
            .handle_packet(now, from, Some(packet.header.ssrc), plausible)
        {
            Verdict::Accept => {}
            Verdict::Latched(addr) => {
                tracing::info!(%addr, "SIP media latched on its real source");
                self.target_tx.send_replace((dest.rtp.sdp(), addr));
                let _ = self.events.send(MediaEvent::Latched(addr));
            }
            Verdict::Pending => return,
            Verdict::Foreign => {
                return self.shared.foreign(from, "RTP", &self.config.foreign_drops);
            }
        }
        if !plays {
            // On hold: the far end is alive, but nothing reaches the browser.
            self.shared.heard(Leg::Sip, now);
            self.shared.held();
            self.paused = true;
            return;
        }
        if std::mem::take(&mut self.paused) {
            self.pipeline.restart_source();
        }
        let input = self.pipeline.input().format;
        let (ts, pt, payload) = (
            packet.header.timestamp,
            packet.header.payload_type,
            packet.payload.clone(),
        );
        match self.pipeline.handle_packet(now, packet) {
            Ok(digit) => {
                self.shared.heard(Leg::Sip, now);
                if let Some(digit) = digit {
                    tracing::debug!(%digit, "DTMF from the SIP peer");
                    let _ = self.events.send(MediaEvent::Dtmf {
                        leg: Leg::Sip,
                        digit,
                    });
                }
                if let Some(tap) = &self.tap
                    && pt == input.payload_type
                {
                    tap.offer(now, ts, input.codec, payload);
                }
            }
            Err(why) => self.shared.dropped(why),
        }
        if self.pipeline.is_transcoding() {
            self.shared.work[Leg::Browser.index()].store(self.pipeline.work());
        }
    }

    /// Handles one RTCP datagram; false when it did not parse.
    fn on_rtcp(&mut self, now: Instant, datagram: &[u8]) -> bool {
        if !self.rtcp.handle(now, datagram) {
            self.shared
                .dropped_malformed
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.shared.heard(Leg::Sip, now);
        self.shared.rtcp_received.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Sends our SR (or RR before we sent anything) to `to`, from the RTP socket when
    /// RTCP is multiplexed (`mux`).
    async fn send_rtcp(&mut self, now: Instant, to: SocketAddr, mux: bool) {
        let s = &self.shared;
        let packets = s.sent.packets.load(Ordering::Relaxed);
        let sender = (packets > 0).then(|| {
            let last_at =
                s.epoch + Duration::from_micros(s.sent.last_at_us.load(Ordering::Relaxed));
            let clock = u64::from(self.pipeline.input().format.codec.clock_rate());
            let since = now.saturating_duration_since(last_at).as_micros() as u64;
            SenderInfo {
                packets: packets as u32,
                octets: s.sent.octets.load(Ordering::Relaxed) as u32,
                rtp_ts: s
                    .sent
                    .last_ts
                    .load(Ordering::Relaxed)
                    .wrapping_add((since * clock / 1_000_000) as u32),
            }
        });
        let block = self.pipeline.receive_stats_mut().report_block();
        let report = match self
            .rtcp
            .build_report(now, SystemTime::now(), sender, block)
        {
            Ok(r) => r,
            Err(e) => return tracing::debug!(error = %e, "RTCP report not built"),
        };
        let socket = if mux {
            &*self.socket
        } else {
            &self.rtcp_socket
        };
        match socket.send_to(&report, to).await {
            Ok(_) => {
                self.shared.rtcp_sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, %to, "RTCP send failed"),
        }
    }

    /// Publishes the SIP stream's statistics, RTT and the resync count.
    fn publish(&self) {
        self.shared.resyncs[Leg::Browser.index()].store(self.pipeline.resyncs(), Ordering::Relaxed);
        self.shared.work[Leg::Browser.index()].store(self.pipeline.work());
        self.shared.publish(
            Leg::Sip,
            DirectionSnapshot {
                receive: self.pipeline.receive_stats(),
                jitter: self.pipeline.jitter_stats(),
                rtt: self.rtcp.rtt(),
                peer_report: self.rtcp.peer_report(),
            },
        );
    }
}

/// The SSRC of the first RTCP packet's sender (SR, RR, the first SDES chunk or BYE
/// source), if the datagram is long enough.
fn rtcp_sender_ssrc(datagram: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = datagram.get(4..8)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// Receive errors that only echo an ICMP error of an earlier send.
fn quiet_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
    )
}
