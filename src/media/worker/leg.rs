//! One browser leg inside a media worker: an `rtc` peer connection (sans-IO) and the
//! two channels to its call. The worker feeds it datagrams, RTP to send and timeouts,
//! each with the time passed in, then drains it with [`WorkerLeg::drain`].

use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::mpsc;

use super::demux::LegId;
use crate::media::webrtc_leg::WebRtcEvent;

/// RTP packets from the browser waiting for the call's bridge (≈ 5 s of 20 ms audio);
/// beyond that the bridge is stuck and packets are dropped.
pub const MEDIA_QUEUE: usize = 256;

/// What the worker needs to run a new leg (built and negotiated by the caller).
pub struct NewLeg {
    /// The leg's id (demux key, control address).
    pub id: LegId,
    /// Our ICE ufrag of this leg (what the browser's checks carry).
    pub ufrag: String,
    /// The negotiated peer connection.
    pub pc: RTCPeerConnection,
    /// The sender of our audio track.
    pub sender: RTCRtpSenderId,
    /// Events for the call (connected, failed).
    pub events: mpsc::UnboundedSender<WebRtcEvent>,
    /// The browser's RTP packets, for the bridge.
    pub media: mpsc::Sender<rtc::rtp::Packet>,
    /// The call's span: the worker's log lines about this leg carry its `call_id`.
    pub span: tracing::Span,
}

impl std::fmt::Debug for NewLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewLeg").field("id", &self.id).finish()
    }
}

/// A leg the worker owns.
pub struct WorkerLeg {
    /// The leg's id.
    pub id: LegId,
    /// The peer connection.
    pc: RTCPeerConnection,
    /// The sender of our audio track.
    sender: RTCRtpSenderId,
    /// Events for the call.
    events: mpsc::UnboundedSender<WebRtcEvent>,
    /// The browser's RTP packets, for the bridge.
    media: mpsc::Sender<rtc::rtp::Packet>,
    /// `Connected` was reported.
    connected: bool,
    /// The leg is finished (failed, closed): the worker removes it.
    pub done: bool,
    /// The deadline the worker's timer queue holds for this leg.
    pub deadline: Option<Instant>,
    /// The call's span (parent of every log line about this leg).
    pub span: tracing::Span,
}

/// What draining a leg produced besides datagrams.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Browser RTP packets dropped because the bridge's queue was full.
    pub media_dropped: u64,
}

impl WorkerLeg {
    /// Takes over a negotiated leg.
    pub fn new(leg: NewLeg) -> WorkerLeg {
        WorkerLeg {
            id: leg.id,
            pc: leg.pc,
            sender: leg.sender,
            events: leg.events,
            media: leg.media,
            connected: false,
            done: false,
            deadline: None,
            span: leg.span,
        }
    }

    /// Whether ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// A datagram from `peer`, received on `local` (one of the leg's host candidates).
    pub fn handle_read(&mut self, now: Instant, local: SocketAddr, peer: SocketAddr, data: &[u8]) {
        let message = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: local,
                peer_addr: peer,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(data),
        };
        if let Err(e) = self.pc.handle_read(message) {
            tracing::trace!(parent: &self.span, leg = self.id, error = %e, "datagram not taken by the peer connection");
        }
    }

    /// Our RTP toward the browser.
    pub fn write_rtp(&mut self, now: Instant, packet: rtc::rtp::Packet) {
        if let Some(mut sender) = self.pc.rtp_sender(self.sender)
            && let Err(e) = sender.write_rtp(now, packet)
        {
            tracing::trace!(parent: &self.span, leg = self.id, error = %e, "RTP toward the browser not sent");
        }
    }

    /// A remote candidate trickled by the browser.
    pub fn add_remote_candidate(
        &mut self,
        init: rtc::peer_connection::transport::RTCIceCandidateInit,
    ) {
        if let Err(e) = self.pc.add_remote_candidate(init) {
            tracing::debug!(parent: &self.span, leg = self.id, error = %e, "browser ICE candidate not added");
        }
    }

    /// The browser's answer to our offer.
    pub fn set_remote_answer(
        &mut self,
        now: Instant,
        answer: rtc::peer_connection::sdp::RTCSessionDescription,
    ) -> Result<(), String> {
        self.pc
            .set_remote_description(now, answer)
            .map_err(|e| e.to_string())
    }

    /// The stack's statistics.
    pub fn stats(&mut self, now: Instant) -> rtc::statistics::report::RTCStatsReport {
        self.pc.get_stats(now, rtc::statistics::StatsSelector::None)
    }

    /// The leg's timers are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Err(e) = self.pc.handle_timeout(now) {
            tracing::trace!(parent: &self.span, leg = self.id, error = %e, "peer connection timeout");
        }
    }

    /// The leg's next deadline.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.pc.poll_timeout()
    }

    /// Closes the peer connection (its last datagrams still come out of `drain`).
    pub fn close(&mut self) {
        self.done = true;
        if let Err(e) = self.pc.close() {
            tracing::trace!(parent: &self.span, leg = self.id, error = %e, "closing peer connection");
        }
    }

    /// Everything the peer connection has for the outside at `now`: datagrams to
    /// `send` (our local candidate, the destination, the bytes), events to the call,
    /// browser RTP to the bridge.
    ///
    /// When ICE connects and we are the DTLS client, the `rtc` core prepares the
    /// ClientHello but hands it out only on its next timeout, which used to be the ICE
    /// agent's next 200 ms tick: every call's audio started 200 ms late. The leg runs
    /// a timeout at once instead (the core's timers check their own deadlines, so an
    /// early one does nothing else).
    pub fn drain(
        &mut self,
        now: Instant,
        mut send: impl FnMut(&tracing::Span, SocketAddr, SocketAddr, BytesMut),
    ) -> Drained {
        let mut drained = Drained::default();
        let mut start_dtls = false;
        loop {
            let mut progressed = false;
            while let Some(out) = self.pc.poll_write() {
                progressed = true;
                send(
                    &self.span,
                    out.transport.local_addr,
                    out.transport.peer_addr,
                    out.message,
                );
            }
            while let Some(event) = self.pc.poll_event() {
                progressed = true;
                start_dtls |= matches!(
                    event,
                    RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                        RTCIceConnectionState::Connected
                    )
                );
                self.on_event(event);
            }
            while let Some(read) = self.pc.poll_read() {
                progressed = true;
                if let RTCMessage::RtpPacket(_, packet) = read.message
                    && self.media.try_send(packet).is_err()
                {
                    drained.media_dropped += 1;
                }
            }
            if !progressed {
                if !std::mem::take(&mut start_dtls) {
                    return drained;
                }
                self.handle_timeout(now);
            }
        }
    }

    fn on_event(&mut self, event: RTCPeerConnectionEvent) {
        let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event else {
            return;
        };
        tracing::debug!(parent: &self.span, leg = self.id, %state, "browser peer connection state");
        match state {
            RTCPeerConnectionState::Connected if !self.connected => {
                self.connected = true;
                let _ = self.events.send(WebRtcEvent::Connected);
            }
            RTCPeerConnectionState::Failed => {
                let _ = self
                    .events
                    .send(WebRtcEvent::Failed("ICE or DTLS failed".into()));
            }
            RTCPeerConnectionState::Closed if !self.done => {
                self.done = true;
                let _ = self
                    .events
                    .send(WebRtcEvent::Failed("peer connection closed".into()));
            }
            _ => {}
        }
    }
}
