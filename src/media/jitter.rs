//! Adaptive jitter buffer for the decoding path, sans-IO.
//!
//! ```text
//! handle_packet(now, Incoming) ──> [ reorder queue ] ──> poll_output(now) -> Playout
//!                                   poll_timeout() -> when the head is due
//! ```
//!
//! Packets are released in sequence order when their playout deadline has passed:
//! `deadline(ts) = anchor + ts/clock + floor + margin`, where `floor` is the smallest
//! transit delay seen over the last ~2 s (so a drifting sender clock is followed) and
//! `margin` is the largest transit spread within one second seen over the last ~8 s,
//! clamped to `[min_delay, max_delay]`. A missing packet is declared [`Playout::Lost`]
//! once its own (interpolated) deadline has passed; if the packet right after it is
//! already here, its payload comes along for in-band FEC. A packet that arrives after
//! its slot was given up is dropped as late.
//!
//! Timestamps and sequence numbers come out extended to 64 bits and continuous across
//! a source restart (new SSRC or a sequence jump): the new source continues the
//! timeline after the wall-clock time that passed, so later stages never see a jump.
//! The buffer never reads the clock; every input carries `now`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// A forward sequence jump larger than this restarts the source (RFC 3550 A.1).
const MAX_DROPOUT: i64 = 3000;
/// A backward sequence jump larger than this restarts the source (RFC 3550 A.1).
const MAX_MISORDER: i64 = 100;
/// Consecutive missing packets concealed one by one; a longer gap is skipped as silence
/// except for the last packet before the next one (recoverable through FEC).
const MAX_CONCEALED_RUN: i64 = 3;
/// Length of one delay-statistics bucket.
const BUCKET: Duration = Duration::from_secs(1);
/// Buckets kept for the margin (spread) estimate: the window is this many seconds.
const SPREAD_BUCKETS: usize = 8;
/// Buckets (newest first) that the floor is taken from.
const FLOOR_BUCKETS: usize = 2;
/// Added to the measured spread so that a packet exactly at the worst seen delay is on time.
const SAFETY: Duration = Duration::from_millis(2);

/// Bounds of the jitter buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// Smallest wait beyond the fastest packet, even on a jitter-free network.
    pub min_delay: Duration,
    /// Largest wait; packets later than this are lost.
    pub max_delay: Duration,
    /// Packets held at most; beyond this the head is released without waiting.
    pub max_packets: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            max_packets: 50,
        }
    }
}

/// One RTP packet handed to the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// RTP SSRC.
    pub ssrc: u32,
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub ts: u32,
    /// RTP payload type.
    pub payload_type: u8,
    /// RTP marker bit.
    pub marker: bool,
    /// Whether the packet carries audio (timing is learnt from audio only; events such
    /// as RFC 4733 repeat their start timestamp).
    pub audio: bool,
    /// The payload.
    pub payload: Bytes,
}

/// A packet released for decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Extended, restart-free sequence number.
    pub seq: i64,
    /// Extended, restart-free timestamp (input clock).
    pub ts: i64,
    /// RTP payload type.
    pub payload_type: u8,
    /// RTP marker bit.
    pub marker: bool,
    /// Whether this is audio (see [`Incoming::audio`]).
    pub audio: bool,
    /// The first packet of a restarted source (new SSRC or sequence jump): a
    /// discontinuity the timeline hides, which the output marks.
    pub restart: bool,
    /// The payload.
    pub payload: Bytes,
}

/// What the buffer releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// The next packet, in order.
    Frame(Frame),
    /// The next packet is missing and its time is up: conceal `duration` ticks at `ts`.
    Lost {
        /// Extended timestamp of the missing audio.
        ts: i64,
        /// Its duration in input clock ticks.
        duration: u32,
        /// The payload of the packet right after it, for in-band FEC, if it is here.
        fec: Option<Bytes>,
    },
}

/// Counters and the current delay of a buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets accepted.
    pub received: u64,
    /// Packets released as [`Playout::Frame`].
    pub released: u64,
    /// Missing packets released as [`Playout::Lost`].
    pub concealed: u64,
    /// Missing packets skipped without concealment (long gaps, or before the first packet).
    pub skipped: u64,
    /// Packets dropped because their slot had already been played out.
    pub late: u64,
    /// Packets dropped as duplicates.
    pub duplicates: u64,
    /// Packets released early because the buffer was full.
    pub overflows: u64,
    /// Source restarts (SSRC change or sequence jump).
    pub resets: u64,
    /// Packets that arrived out of order (but in time).
    pub reordered: u64,
    /// Current wait beyond the fastest packet (the adaptive margin).
    pub target_delay: Duration,
}

/// A packet waiting in the queue.
#[derive(Debug, Clone)]
struct Entry {
    /// Extended sequence number.
    seq: i64,
    /// Extended timestamp.
    ts: i64,
    /// Arrival time (events are released on arrival once at the head).
    arrival: Instant,
    /// RTP payload type.
    payload_type: u8,
    /// RTP marker bit.
    marker: bool,
    /// Audio or event.
    audio: bool,
    /// First packet of a restarted source (new SSRC or sequence jump).
    restart: bool,
    /// The payload.
    payload: Bytes,
}

/// How raw sequence numbers and timestamps of the current source map to extended ones.
#[derive(Debug, Clone, Copy)]
struct Source {
    /// SSRC of the current source.
    ssrc: u32,
    /// Last raw sequence number seen.
    seq: u16,
    /// Its extended value.
    ext_seq: i64,
    /// Last raw timestamp seen.
    ts: u32,
    /// Its extended value.
    ext_ts: i64,
    /// Arrival time of the last packet.
    arrival: Instant,
}

/// The last audio packet played (or concealed), for loss interpolation.
#[derive(Debug, Clone, Copy)]
struct Played {
    /// Extended sequence number.
    seq: i64,
    /// Extended timestamp.
    ts: i64,
}

/// Min/max transit of the packets that arrived in one [`BUCKET`].
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Bucket number since the anchor.
    index: u64,
    /// Smallest transit, µs.
    min: i64,
    /// Largest transit, µs.
    max: i64,
}

/// Learns the transit delay (`arrival - ts/clock`) distribution of audio packets.
#[derive(Debug, Clone)]
struct DelayEstimator {
    /// RTP clock rate.
    clock_rate: i64,
    /// Arrival and extended timestamp of the first audio packet.
    anchor: Option<(Instant, i64)>,
    /// Ring of the latest buckets, indexed by `index % SPREAD_BUCKETS`.
    buckets: [Option<Bucket>; SPREAD_BUCKETS],
    /// Newest bucket index seen.
    newest: u64,
}

impl DelayEstimator {
    /// An estimator for a stream at `clock_rate` Hz.
    fn new(clock_rate: u32) -> Self {
        DelayEstimator {
            clock_rate: i64::from(clock_rate.max(1)),
            anchor: None,
            buckets: [None; SPREAD_BUCKETS],
            newest: 0,
        }
    }

    /// Media time of `ts` relative to the anchor, µs.
    fn media_us(&self, anchor_ts: i64, ts: i64) -> i64 {
        (ts - anchor_ts).saturating_mul(1_000_000) / self.clock_rate
    }

    /// Records an audio packet with extended timestamp `ts` arriving at `arrival`.
    fn observe(&mut self, arrival: Instant, ts: i64) {
        let (at, ats) = *self.anchor.get_or_insert((arrival, ts));
        let since = arrival.saturating_duration_since(at);
        let transit = since.as_micros() as i64 - self.media_us(ats, ts);
        let index = (since.as_nanos() / BUCKET.as_nanos()) as u64;
        if index + (SPREAD_BUCKETS as u64) <= self.newest {
            return; // older than the window (a very late packet)
        }
        self.newest = self.newest.max(index);
        let slot = &mut self.buckets[(index % SPREAD_BUCKETS as u64) as usize];
        match slot {
            Some(b) if b.index == index => {
                b.min = b.min.min(transit);
                b.max = b.max.max(transit);
            }
            _ => {
                *slot = Some(Bucket {
                    index,
                    min: transit,
                    max: transit,
                })
            }
        }
    }

    /// Buckets inside the window ending at the newest bucket.
    fn window(&self, len: usize) -> impl Iterator<Item = &Bucket> {
        let newest = self.newest;
        self.buckets
            .iter()
            .flatten()
            .filter(move |b| b.index + len as u64 > newest)
    }

    /// Smallest recent transit, µs (0 before any packet).
    fn floor(&self) -> i64 {
        self.window(FLOOR_BUCKETS).map(|b| b.min).min().unwrap_or(0)
    }

    /// Largest spread of transit within one bucket over the window.
    fn spread(&self) -> Duration {
        let us = self
            .window(SPREAD_BUCKETS)
            .map(|b| b.max - b.min)
            .max()
            .unwrap_or(0);
        Duration::from_micros(us.max(0) as u64)
    }

    /// When audio with extended timestamp `ts` is due with `margin` of wait.
    fn deadline(&self, ts: i64, margin: Duration) -> Option<Instant> {
        let (at, ats) = self.anchor?;
        let offset = self.media_us(ats, ts) + self.floor() + margin.as_micros() as i64;
        Some(if offset >= 0 {
            at + Duration::from_micros(offset as u64)
        } else {
            at.checked_sub(Duration::from_micros(offset.unsigned_abs()))
                .unwrap_or(at)
        })
    }
}

/// The adaptive jitter buffer of one incoming stream.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    /// Bounds.
    config: JitterConfig,
    /// RTP clock rate of the stream.
    clock_rate: u32,
    /// Waiting packets, ascending extended sequence number.
    queue: VecDeque<Entry>,
    /// Raw → extended mapping of the current source.
    source: Option<Source>,
    /// Highest extended sequence number accepted so far.
    highest_seq: i64,
    /// Next extended sequence number to release (`None` before the first release).
    next_seq: Option<i64>,
    /// The last audio packet played or concealed.
    played: Option<Played>,
    /// Transit statistics.
    estimator: DelayEstimator,
    /// Counters.
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer for a stream at `clock_rate` Hz.
    pub fn new(config: JitterConfig, clock_rate: u32) -> Self {
        JitterBuffer {
            config,
            clock_rate: clock_rate.max(1),
            queue: VecDeque::with_capacity(config.max_packets + 1),
            source: None,
            highest_seq: 0,
            next_seq: None,
            played: None,
            estimator: DelayEstimator::new(clock_rate),
            stats: JitterStats {
                target_delay: config.min_delay,
                ..Default::default()
            },
        }
    }

    /// Counters and the current target delay.
    pub fn stats(&self) -> JitterStats {
        JitterStats {
            target_delay: self.margin(),
            ..self.stats
        }
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no packet is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The adaptive wait beyond the fastest packet.
    fn margin(&self) -> Duration {
        (self.estimator.spread() + SAFETY).clamp(self.config.min_delay, self.config.max_delay)
    }

    /// A typical packet duration in ticks (20 ms) when nothing better is known.
    fn default_duration(&self) -> u32 {
        self.clock_rate / 50
    }

    /// Extends `p`'s sequence number and timestamp; starts a new source segment when the
    /// SSRC changed or the sequence jumped (returns whether it did).
    fn extend(&mut self, now: Instant, p: &Incoming) -> (i64, i64, bool) {
        let Some(src) = self.source else {
            self.source = Some(Source {
                ssrc: p.ssrc,
                seq: p.seq,
                ext_seq: 0,
                ts: p.ts,
                ext_ts: i64::from(p.ts),
                arrival: now,
            });
            return (0, i64::from(p.ts), false);
        };
        let dseq = i64::from(p.seq.wrapping_sub(src.seq) as i16);
        let raw_jump = i64::from(p.seq.wrapping_sub(src.seq));
        let restart =
            src.ssrc != p.ssrc || (raw_jump > MAX_DROPOUT && raw_jump < 65536 - MAX_MISORDER);
        let (ext_seq, ext_ts) = if restart {
            // Continue the timeline after the time that passed since the last packet.
            let elapsed = now.saturating_duration_since(src.arrival);
            let ticks = (elapsed.as_micros() * u128::from(self.clock_rate) / 1_000_000) as i64;
            (
                self.highest_seq + 1,
                src.ext_ts + ticks.max(i64::from(self.default_duration())),
            )
        } else {
            let dts = i64::from(p.ts.wrapping_sub(src.ts) as i32);
            (src.ext_seq + dseq, src.ext_ts + dts)
        };
        self.source = Some(Source {
            ssrc: p.ssrc,
            seq: p.seq,
            ext_seq,
            ts: p.ts,
            ext_ts,
            arrival: now,
        });
        (ext_seq, ext_ts, restart)
    }

    /// Accepts one packet that arrived at `now`.
    pub fn handle_packet(&mut self, now: Instant, packet: Incoming) {
        let (seq, ts, restart) = self.extend(now, &packet);
        if restart {
            self.stats.resets += 1;
            tracing::debug!(seq, "jitter buffer: source restarted");
        }
        if self.next_seq.is_some_and(|next| seq < next) {
            self.stats.late += 1;
            return;
        }
        // Insert in order, searching from the back (the usual place).
        let mut at = self.queue.len();
        while at > 0 && self.queue[at - 1].seq >= seq {
            if self.queue[at - 1].seq == seq {
                self.stats.duplicates += 1;
                return;
            }
            at -= 1;
        }
        if at < self.queue.len() || seq < self.highest_seq {
            self.stats.reordered += 1;
        }
        if packet.audio {
            self.estimator.observe(now, ts);
        }
        self.highest_seq = self.highest_seq.max(seq);
        self.stats.received += 1;
        self.queue.insert(
            at,
            Entry {
                seq,
                ts,
                arrival: now,
                payload_type: packet.payload_type,
                marker: packet.marker,
                audio: packet.audio,
                restart,
                payload: packet.payload,
            },
        );
    }

    /// When the head entry (`front`) is due.
    fn entry_deadline(&self, front: &Entry) -> Instant {
        if !front.audio {
            return front.arrival;
        }
        self.estimator
            .deadline(front.ts, self.margin())
            .unwrap_or(front.arrival)
    }

    /// Timestamp and duration of the missing packet `seq`, interpolated between the last
    /// played audio and `front`.
    fn missing_slot(&self, seq: i64, front: &Entry) -> (i64, u32) {
        let fallback = self.default_duration();
        let Some(played) = self.played else {
            return (front.ts - i64::from(fallback) * (front.seq - seq), fallback);
        };
        let span = front.seq - played.seq;
        let step = if span > 0 && front.audio {
            (front.ts - played.ts) / span
        } else {
            0
        };
        // A sane packet: 2.5 ms to 120 ms.
        let lo = i64::from(self.clock_rate / 400);
        let hi = i64::from(self.clock_rate * 12 / 100);
        let step = if (lo..=hi).contains(&step) {
            step
        } else {
            i64::from(fallback)
        };
        (played.ts + step * (seq - played.seq), step as u32)
    }

    /// The next release, if one is due at `now`.
    pub fn poll_output(&mut self, now: Instant) -> Option<Playout> {
        let front = self.queue.front()?;
        let force = self.queue.len() > self.config.max_packets;
        let next = match self.next_seq {
            Some(next) => next,
            None => {
                // Nothing played yet: the first packet in order starts the stream.
                if !force && now < self.entry_deadline(front) {
                    return None;
                }
                front.seq
            }
        };
        if front.seq == next {
            if !force && now < self.entry_deadline(front) {
                return None;
            }
            if force {
                self.stats.overflows += 1;
            }
            let e = self.queue.pop_front()?;
            self.next_seq = Some(e.seq + 1);
            if e.audio {
                self.played = Some(Played {
                    seq: e.seq,
                    ts: e.ts,
                });
            }
            self.stats.released += 1;
            return Some(Playout::Frame(Frame {
                seq: e.seq,
                ts: e.ts,
                payload_type: e.payload_type,
                marker: e.marker,
                audio: e.audio,
                restart: e.restart,
                payload: e.payload,
            }));
        }
        // `next` is missing; `front` is a later packet.
        let (ts, duration) = self.missing_slot(next, front);
        let deadline = self
            .estimator
            .deadline(ts, self.margin())
            .unwrap_or(front.arrival);
        if !force && now < deadline {
            return None;
        }
        let run = front.seq - next;
        if self.played.is_none() || run > MAX_CONCEALED_RUN {
            // Skip to the packet right before `front` (or to `front` with no history).
            let to = if self.played.is_none() {
                front.seq
            } else {
                front.seq - 1
            };
            self.stats.skipped += (to - next) as u64;
            self.next_seq = Some(to);
            return self.poll_output(now);
        }
        let fec = (next + 1 == front.seq && front.audio).then(|| front.payload.clone());
        self.next_seq = Some(next + 1);
        self.played = Some(Played { seq: next, ts });
        self.stats.concealed += 1;
        Some(Playout::Lost { ts, duration, fec })
    }

    /// When [`JitterBuffer::poll_output`] will next have something (`None`: nothing waits).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let front = self.queue.front()?;
        match self.next_seq {
            Some(next) if next != front.seq => {
                let (ts, _) = self.missing_slot(next, front);
                Some(
                    self.estimator
                        .deadline(ts, self.margin())
                        .unwrap_or(front.arrival),
                )
            }
            _ => Some(self.entry_deadline(front)),
        }
    }
}

#[cfg(test)]
#[path = "jitter_tests.rs"]
mod tests;
