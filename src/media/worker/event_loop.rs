//! A media worker's thread: a single-threaded tokio runtime whose one loop owns the
//! worker's UDP socket, its control queue and a timer for its legs' deadlines. The
//! bridges of the worker's calls are spawned on the same runtime, so a packet handed
//! between a call's bridge and its leg never crosses a thread.
//!
//! Each turn: control messages first (new legs, RTP to send, candidates), then every
//! datagram the socket holds, then the legs whose deadline passed; a leg is drained
//! (datagrams out, events to its call) after each input. The loop sleeps until the
//! earliest deadline (the runtime's timer has millisecond resolution, so deadlines
//! that close share one wake-up), a datagram or a control message.
//!
//! Datagrams are read through `quinn-udp` in batches of up to [`BATCH`] per system
//! call (`recvmmsg`, with GRO where the kernel coalesces), each with the address it
//! was sent to (`IP_PKTINFO`); what the legs send during a turn is queued and handed
//! to the kernel at the end of the turn with `sendmmsg` ([`super::outbox`]). On a
//! socket bound to a wildcard address, the address a datagram was sent to is the
//! leg's local candidate, and what we send leaves from the candidate address the leg
//! chose, so a multi-homed host answers from the address the browser used (RFC 8445
//! §7.2.5.2.1: a check's response must come from where the request went).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;
use quinn_udp::{RecvMeta, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::budget::{Admit, DEFAULT_BACKLOG, HandshakeBudget};
use super::demux::{Demux, LegId, Refused};
use super::leg::WorkerLeg;
use super::outbox::{Headers, Outbox};
use super::{Control, WorkerShared};
use crate::media::candidates::CandidatePolicy;
use crate::media::coalesce::coalesce;

/// Datagrams read per system call.
pub(super) const BATCH: usize = quinn_udp::BATCH_SIZE;
/// Largest datagram read without GRO.
const MAX_DATAGRAM: usize = 2048;
/// Largest buffer one GRO read can fill (a UDP payload's limit).
const MAX_GRO_READ: usize = 65_535;
/// Most datagrams read per turn: a flood on the port cannot starve the control
/// queue (our RTP toward browsers) and the timers.
const READ_PER_TURN: usize = 256;
/// Longest sleep with nothing due (control messages and datagrams wake it anyway).
const IDLE_SLEEP: Duration = Duration::from_secs(60);

/// Binds a worker's non-blocking socket with `buffer` bytes of receive/send buffer
/// (register it with the worker's runtime with `UdpSocket::from_std`).
pub(super) fn bind(addr: SocketAddr, buffer: usize) -> io::Result<std::net::UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // The kernel may cap these (net.core.rmem_max); what it grants is enough to start.
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The state of one worker thread.
pub(super) struct Worker {
    /// Shared with the calls.
    shared: Arc<WorkerShared>,
    /// The shared WebRTC port.
    socket: UdpSocket,
    /// Its batched, address-aware IO.
    io: UdpSocketState,
    /// Control messages.
    control: mpsc::UnboundedReceiver<Control>,
    /// Our RTP toward the browsers, from the bridges.
    media: mpsc::Receiver<(LegId, rtc::rtp::Packet)>,
    /// Where the legs may send.
    policy: Arc<CandidatePolicy>,
    /// Drop counters by reason.
    dropped: IntCounterVec,
    /// The legs (boxed: a leg is several KiB, and each spare bucket of the map
    /// would take as much).
    legs: HashMap<LegId, Box<WorkerLeg>>,
    /// Which leg a datagram belongs to.
    demux: Demux,
    /// Deadlines; an entry is stale unless it equals its leg's `deadline`.
    timers: BinaryHeap<Reverse<(Instant, LegId)>>,
    /// DTLS handshake datagrams per turn.
    budget: HandshakeBudget,
    /// What the legs send this turn.
    outbox: Outbox,
    /// Set by `Stop`.
    stopping: bool,
}

impl Worker {
    /// A worker over a socket registered with its runtime.
    pub(super) fn new(
        shared: Arc<WorkerShared>,
        socket: UdpSocket,
        (control, media): (
            mpsc::UnboundedReceiver<Control>,
            mpsc::Receiver<(LegId, rtc::rtp::Packet)>,
        ),
        policy: Arc<CandidatePolicy>,
        dropped: IntCounterVec,
        handshakes_per_turn: usize,
    ) -> io::Result<Worker> {
        let io = UdpSocketState::new((&socket).into())?;
        Ok(Worker {
            shared,
            socket,
            io,
            control,
            media,
            policy,
            dropped,
            legs: HashMap::new(),
            demux: Demux::default(),
            timers: BinaryHeap::new(),
            budget: HandshakeBudget::new(handshakes_per_turn, DEFAULT_BACKLOG),
            outbox: Outbox::default(),
            stopping: false,
        })
    }

    /// One read buffer per datagram of a batch; with GRO one read may hold many
    /// datagrams of one source. Pages the kernel never writes stay unmapped.
    fn read_slot(&self) -> usize {
        if self.io.gro_segments() > 1 {
            MAX_GRO_READ
        } else {
            MAX_DATAGRAM
        }
    }

    /// Runs until `Stop` or until every handle on the worker is gone; returns the
    /// number of loop turns (wake-ups).
    pub(super) async fn run(mut self) -> u64 {
        let mut buf = vec![0u8; self.read_slot() * BATCH];
        let mut headers = Headers::new(self.socket.local_addr().is_ok_and(|a| a.is_ipv4()));
        let sleep = tokio::time::sleep(IDLE_SLEEP);
        tokio::pin!(sleep);
        // The leg deadline the sleep is set to (None: the idle sleep), and whether
        // it fired: a fired `Sleep` stays ready, so it must be set again before the
        // next turn waits on it, even when the deadline it should wait for is
        // unchanged (no leg deadline: a new idle sleep).
        let mut armed: Option<Instant> = None;
        let mut fired = false;
        let mut turns: u64 = 0;
        while !self.stopping {
            turns += 1;
            self.take_waiting();
            let next = self.next_deadline();
            if fired || next != armed {
                armed = next;
                fired = false;
                let at = match next {
                    Some(at) => tokio::time::Instant::from_std(at),
                    None => tokio::time::Instant::now() + IDLE_SLEEP,
                };
                sleep.as_mut().reset(at);
            }
            tokio::select! {
                biased;
                control = self.control.recv() => match control {
                    Some(c) => self.on_control(c),
                    None => break,
                },
                Some((id, packet)) = self.media.recv() => self.on_media(id, packet),
                ready = self.socket.readable() => {
                    if ready.is_ok() {
                        self.read_socket(&mut buf);
                    }
                }
                () = &mut sleep => fired = true,
                // Handshakes wait for the next turn: take it without sleeping.
                () = std::future::ready(()), if self.budget.has_waiting() => {}
            }
            self.take_control();
            self.fire_timers(Instant::now());
            self.flush(&mut headers);
        }
        let ids: Vec<LegId> = self.legs.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
        self.flush(&mut headers);
        tracing::debug!(worker = self.shared.index, turns, "media worker stopped");
        turns
    }

    /// The earliest live deadline (stale heap entries are dropped on the way).
    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if self.legs.get(&id).and_then(|l| l.deadline) == Some(at) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// The handshake datagrams this turn's budget takes from those waiting.
    fn take_waiting(&mut self) {
        for w in self.budget.start_turn() {
            if let Some(leg) = self.legs.get_mut(&w.leg) {
                leg.handle_read(Instant::now(), w.local, w.source, &w.data);
                self.after_input(w.leg, true);
            }
        }
    }

    fn take_control(&mut self) {
        while let Ok(c) = self.control.try_recv() {
            self.on_control(c);
            if self.stopping {
                return;
            }
        }
        // As many as a read turn takes: more wait for the next turn, which the ready
        // queue starts at once.
        for _ in 0..READ_PER_TURN {
            let Ok((id, packet)) = self.media.try_recv() else {
                break;
            };
            self.on_media(id, packet);
        }
    }

    /// Our RTP toward leg `id`'s browser.
    fn on_media(&mut self, id: LegId, packet: rtc::rtp::Packet) {
        if let Some(leg) = self.legs.get_mut(&id) {
            leg.write_rtp(Instant::now(), packet);
            // Media does not move the leg's deadlines (reports run on their own
            // interval): re-query only when none is queued.
            let requery = leg.deadline.is_none();
            self.after_input(id, requery);
        }
    }

    fn on_control(&mut self, control: Control) {
        let now = Instant::now();
        match control {
            Control::Add(new) => {
                let id = new.id;
                if !self.demux.add_leg(id, &new.ufrag) {
                    tracing::warn!(parent: &new.span, leg = id, "ICE ufrag already issued; leg refused");
                    let _ = new
                        .events
                        .send(crate::media::webrtc_leg::WebRtcEvent::Failed(
                            "ICE ufrag collision".into(),
                        ));
                    self.shared.legs.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
                self.legs.insert(id, Box::new(WorkerLeg::new(*new)));
                self.after_input(id, true);
            }
            Control::Candidate(id, init) => {
                if let Some(leg) = self.legs.get_mut(&id) {
                    leg.add_remote_candidate(init);
                    self.after_input(id, true);
                }
            }
            Control::Answer(id, answer, reply) => {
                let result = match self.legs.get_mut(&id) {
                    Some(leg) => leg.set_remote_answer(now, *answer),
                    None => Err("the browser leg is closed".into()),
                };
                let _ = reply.send(result);
                self.after_input(id, true);
            }
            Control::Stats(id, reply) => {
                if let Some(leg) = self.legs.get_mut(&id) {
                    let _ = reply.send(leg.stats(now));
                }
            }
            Control::Close(id) => self.close(id),
            Control::Stop => self.stopping = true,
        }
    }

    fn read_socket(&mut self, buf: &mut [u8]) {
        let slot = buf.len() / BATCH;
        let mut metas = [RecvMeta::default(); BATCH];
        let mut read = 0;
        while read < READ_PER_TURN {
            let received = {
                let mut slices: Vec<IoSliceMut<'_>> =
                    buf.chunks_mut(slot).map(IoSliceMut::new).collect();
                let (socket, io) = (&self.socket, &self.io);
                socket.try_io(Interest::READABLE, || {
                    io.recv(socket.into(), &mut slices, &mut metas)
                })
            };
            let n = match received {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors surface here on some systems: one bad peer, not the socket.
                    tracing::debug!(worker = self.shared.index, error = %e, "media worker receive");
                    read += 1;
                    continue;
                }
            };
            for (meta, chunk) in metas.iter().zip(buf.chunks(slot)).take(n) {
                let local = self.local_address(meta.dst_ip);
                let stride = if meta.stride == 0 {
                    meta.len
                } else {
                    meta.stride
                };
                for datagram in chunk[..meta.len.min(slot)].chunks(stride.max(1)) {
                    read += 1;
                    self.on_datagram(meta.addr, local, datagram);
                }
            }
        }
    }

    /// The local candidate a datagram sent to `dst_ip` arrived on.
    fn local_address(&self, dst_ip: Option<IpAddr>) -> SocketAddr {
        match dst_ip {
            Some(ip) if self.shared.per_datagram_local => SocketAddr::new(ip, self.shared.port()),
            _ => self.shared.hosts[0],
        }
    }

    /// A datagram from `source` to our `local` address.
    fn on_datagram(&mut self, source: SocketAddr, local: SocketAddr, datagram: &[u8]) {
        let mut routed = self.demux.route(source, datagram);
        if routed == Err(Refused::UnknownUfrag) {
            // The leg may still wait in the control queue: its call queues it before
            // sending our answer, but the browser's first check can be read in a turn
            // that started before the leg arrived. Dropping that check cost 200 ms
            // (the browser's next check) on a loaded worker.
            self.take_control();
            routed = self.demux.route(source, datagram);
        }
        match routed {
            Ok(id) => {
                let Some(handshaking) = self.legs.get(&id).map(|l| !l.is_connected()) else {
                    return;
                };
                match self
                    .budget
                    .admit(id, (source, local), datagram, handshaking)
                {
                    Admit::Now => {}
                    Admit::Deferred => {
                        tracing::trace!(
                            leg = id,
                            "DTLS handshake datagram waits for the next turn"
                        );
                        return;
                    }
                    Admit::Dropped => {
                        self.dropped.with_label_values(&["handshake_backlog"]).inc();
                        return;
                    }
                }
                if let Some(leg) = self.legs.get_mut(&id) {
                    leg.handle_read(Instant::now(), local, source, datagram);
                    self.after_input(id, true);
                }
            }
            Err(why) => {
                self.dropped.with_label_values(&[why.label()]).inc();
                tracing::trace!(%source, reason = why.label(), "datagram on the WebRTC port dropped");
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                return;
            }
            self.timers.pop();
            let Some(leg) = self.legs.get_mut(&id) else {
                continue;
            };
            if leg.deadline != Some(at) {
                continue;
            }
            leg.deadline = None;
            leg.handle_timeout(now);
            self.after_input(id, true);
        }
    }

    /// Drains leg `id` after an input; `requery`: ask for its next deadline.
    fn after_input(&mut self, id: LegId, requery: bool) {
        let Some(leg) = self.legs.get_mut(&id) else {
            return;
        };
        let per_datagram_local = self.shared.per_datagram_local;
        let policy = &self.policy;
        let demux = &mut self.demux;
        let dropped = &self.dropped;
        let outbox = &mut self.outbox;
        let drained = leg.drain(Instant::now(), |span, local, dest, data| {
            if let Err(why) = policy.judge(dest) {
                policy.count_dropped_send();
                dropped.with_label_values(&["refused_destination"]).inc();
                tracing::debug!(parent: span, %dest, %why, "datagram to a refused address dropped");
                return;
            }
            demux.note_destination(id, dest);
            // Leave from the candidate address the leg chose (bound to a wildcard).
            let src = Some(local.ip()).filter(|ip| per_datagram_local && !ip.is_unspecified());
            outbox.push(dest, src, data);
        });
        if drained.media_dropped > 0 {
            dropped
                .with_label_values(&["bridge_full"])
                .inc_by(drained.media_dropped);
        }
        if leg.done {
            self.remove(id);
            return;
        }
        if requery {
            // A connected leg's deadlines are reports and keepalives: they share the
            // worker's wake-ups with other calls' (handshakes keep their own timing).
            let next = leg
                .poll_timeout()
                .map(|at| if leg.is_connected() { coalesce(at) } else { at });
            if next != leg.deadline {
                leg.deadline = next;
                if let Some(at) = next {
                    self.timers.push(Reverse((at, id)));
                }
            }
        }
    }

    /// Sends what the legs queued this turn.
    fn flush(&mut self, headers: &mut Headers) {
        if self.outbox.len() == 0 {
            return;
        }
        let flushed = self.outbox.flush(self.socket.as_raw_fd(), headers);
        if flushed.failed > 0 {
            self.dropped
                .with_label_values(&["send_failed"])
                .inc_by(flushed.failed as u64);
            tracing::trace!(
                worker = self.shared.index,
                failed = flushed.failed,
                "datagrams to browsers not sent"
            );
        }
    }

    fn close(&mut self, id: LegId) {
        if let Some(leg) = self.legs.get_mut(&id) {
            leg.close();
            // Flush what closing produced (DTLS close_notify), then forget the leg.
            self.after_input(id, false);
            self.remove(id);
        }
    }

    fn remove(&mut self, id: LegId) {
        if self.legs.remove(&id).is_some() {
            self.demux.remove_leg(id);
            self.budget.forget(id);
            self.shared.legs.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
#[path = "event_loop_tests.rs"]
mod tests;
