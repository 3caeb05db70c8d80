//! RFC 4733 telephone events: the 4-byte payload, a sans-IO generator for digits the
//! gateway sends on its own (protocol `dtmf`), and a detector that reports each event
//! received from a leg once.
//!
//! The generator only decides payloads and timing (`poll_output(now)`,
//! `poll_timeout()`); the caller stamps sequence numbers and the event's RTP timestamp
//! (taken when [`EventPacket::first`] is set) on the output stream.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Telephone-event clock rate: durations are in 8 kHz ticks (we negotiate `/8000`).
const EVENT_CLOCK: u32 = 8000;
/// Digits that may wait to be sent.
const MAX_QUEUED: usize = 64;
/// Times the end packet is sent (RFC 4733 §2.5.1.4).
const END_REPEATS: u8 = 3;

/// The RFC 4733 event code of a DTMF digit (`0-9 * # A-D`, case-insensitive).
pub fn digit_to_event(digit: char) -> Option<u8> {
    match digit.to_ascii_uppercase() {
        d @ '0'..='9' => Some(d as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        d @ 'A'..='D' => Some(d as u8 - b'A' + 12),
        _ => None,
    }
}

/// The DTMF digit of an RFC 4733 event code (`None` for non-DTMF events).
pub fn event_to_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

/// A decoded telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPayload {
    /// Event code (0-15 are DTMF).
    pub event: u8,
    /// The E bit: this is (a repetition of) the last packet of the event.
    pub end: bool,
    /// Power level, -dBm0 (0-63).
    pub volume: u8,
    /// Duration so far, in event clock ticks.
    pub duration: u16,
}

impl EventPayload {
    /// Parses the first 4 bytes of `payload`.
    pub fn parse(payload: &[u8]) -> Option<EventPayload> {
        let b = payload.get(..4)?;
        Some(EventPayload {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3F,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// The 4 payload bytes.
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }
}

/// Timing of generated digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfTiming {
    /// How long each digit lasts.
    pub tone: Duration,
    /// Pause between digits.
    pub gap: Duration,
    /// Interval between event packets.
    pub interval: Duration,
    /// Power level, -dBm0.
    pub volume: u8,
}

impl Default for DtmfTiming {
    fn default() -> Self {
        DtmfTiming {
            tone: Duration::from_millis(100),
            gap: Duration::from_millis(60),
            interval: Duration::from_millis(20),
            volume: 10,
        }
    }
}

/// One generated event packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// The RTP payload.
    pub payload: [u8; 4],
    /// The RTP marker bit (first packet of the event).
    pub marker: bool,
    /// First packet of a new event: the caller takes the event timestamp now.
    pub first: bool,
}

/// The digit being sent.
#[derive(Debug, Clone, Copy)]
struct Active {
    /// Event code.
    event: u8,
    /// When the first packet went out.
    started: Instant,
    /// Packets sent so far.
    sent: u32,
    /// End packets sent so far.
    ends: u8,
    /// When the next packet is due.
    next_at: Instant,
}

/// Why digits were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    /// A character is not a DTMF digit.
    #[error("'{0}' is not a DTMF digit (use 0-9 * # A-D)")]
    InvalidDigit(char),
    /// Too many digits are already waiting.
    #[error("too many DTMF digits queued (at most {MAX_QUEUED})")]
    QueueFull,
    /// The SIP peer did not negotiate telephone-event.
    #[error("the SIP peer did not negotiate telephone-event; send SIP INFO instead")]
    NotNegotiated,
}

/// Generates RFC 4733 packets for queued digits, one digit after the other.
#[derive(Debug, Clone)]
pub struct DtmfSender {
    /// Timing.
    timing: DtmfTiming,
    /// Event codes waiting.
    queue: VecDeque<u8>,
    /// The digit in progress.
    active: Option<Active>,
    /// Earliest start of the next digit (after the gap).
    not_before: Option<Instant>,
}

impl DtmfSender {
    /// A generator with `timing`.
    pub fn new(timing: DtmfTiming) -> Self {
        DtmfSender {
            timing,
            queue: VecDeque::new(),
            active: None,
            not_before: None,
        }
    }

    /// Queues `digits` at `now`; all or nothing.
    pub fn push_digits(&mut self, now: Instant, digits: &str) -> Result<(), DtmfError> {
        let events = digits
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| digit_to_event(c).ok_or(DtmfError::InvalidDigit(c)))
            .collect::<Result<Vec<u8>, _>>()?;
        if self.queue.len() + events.len() > MAX_QUEUED {
            return Err(DtmfError::QueueFull);
        }
        if self.active.is_none() && self.queue.is_empty() {
            self.not_before = Some(self.not_before.map_or(now, |t| t.max(now)));
        }
        self.queue.extend(events);
        Ok(())
    }

    /// Whether an event is being sent (audio may be held back meanwhile).
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Ticks of the event clock in `d`, capped at `u16::MAX`.
    fn ticks(d: Duration) -> u16 {
        (d.as_micros() * u128::from(EVENT_CLOCK) / 1_000_000).min(u128::from(u16::MAX)) as u16
    }

    /// The next packet due at `now`.
    pub fn poll_output(&mut self, now: Instant) -> Option<EventPacket> {
        if self.active.is_none() {
            if self.not_before.is_some_and(|t| now < t) {
                return None;
            }
            let event = self.queue.pop_front()?;
            self.active = Some(Active {
                event,
                started: now,
                sent: 0,
                ends: 0,
                next_at: now,
            });
        }
        let timing = self.timing;
        let a = self.active.as_mut()?;
        if now < a.next_at {
            return None;
        }
        let tone = Self::ticks(timing.tone);
        let interval = Self::ticks(timing.interval);
        let so_far = interval.saturating_mul((a.sent + 1).min(u32::from(u16::MAX)) as u16);
        let end = so_far >= tone;
        let payload = EventPayload {
            event: a.event,
            end,
            volume: timing.volume,
            duration: so_far.min(tone),
        };
        let first = a.sent == 0;
        a.sent += 1;
        a.next_at += timing.interval;
        if end {
            a.ends += 1;
            if a.ends >= END_REPEATS {
                self.not_before = Some(a.started + timing.tone + timing.gap);
                self.active = None;
            }
        }
        Some(EventPacket {
            payload: payload.to_bytes(),
            marker: first,
            first,
        })
    }

    /// When the next packet is due (`None`: nothing to send).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (&self.active, self.queue.is_empty()) {
            (Some(a), _) => Some(a.next_at),
            (None, false) => self.not_before,
            (None, true) => None,
        }
    }
}

/// Reports each incoming event once, on its first packet.
#[derive(Debug, Clone, Default)]
pub struct DtmfDetector {
    /// RTP timestamp and event code of the last event reported.
    last: Option<(u32, u8)>,
}

impl DtmfDetector {
    /// Looks at one telephone-event packet; the digit if it starts a new event.
    pub fn on_packet(&mut self, rtp_ts: u32, payload: &[u8]) -> Option<char> {
        let ev = EventPayload::parse(payload)?;
        if self.last == Some((rtp_ts, ev.event)) {
            return None;
        }
        self.last = Some((rtp_ts, ev.event));
        event_to_digit(ev.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn digits_map_both_ways() {
        for (c, e) in [
            ('0', 0),
            ('9', 9),
            ('*', 10),
            ('#', 11),
            ('a', 12),
            ('D', 15),
        ] {
            assert_eq!(digit_to_event(c), Some(e));
            assert_eq!(event_to_digit(e), Some(c.to_ascii_uppercase()));
        }
        assert_eq!(digit_to_event('x'), None);
        assert_eq!(event_to_digit(16), None);
    }

    #[test]
    fn payload_round_trip() {
        let p = EventPayload {
            event: 11,
            end: true,
            volume: 10,
            duration: 800,
        };
        assert_eq!(p.to_bytes(), [11, 0x8A, 0x03, 0x20]);
        assert_eq!(EventPayload::parse(&p.to_bytes()), Some(p));
        assert_eq!(EventPayload::parse(&[1, 2, 3]), None);
    }

    /// Runs the sender with fake time until idle; returns (time offset ms, payload).
    fn drain(s: &mut DtmfSender, t0: Instant) -> Vec<(u128, EventPayload, bool)> {
        let mut out = Vec::new();
        let mut now = t0;
        while let Some(t) = s.poll_timeout() {
            now = now.max(t);
            while let Some(p) = s.poll_output(now) {
                let ev = EventPayload::parse(&p.payload).unwrap();
                out.push(((now - t0).as_millis(), ev, p.first));
            }
            assert!(out.len() < 1000);
        }
        out
    }

    #[test]
    fn one_digit_is_seven_packets_with_three_ends() {
        let mut s = DtmfSender::new(DtmfTiming::default());
        let t0 = Instant::now();
        s.push_digits(t0, "5").unwrap();
        let out = drain(&mut s, t0);
        let durations: Vec<u16> = out.iter().map(|o| o.1.duration).collect();
        assert_eq!(durations, vec![160, 320, 480, 640, 800, 800, 800]);
        let ends: Vec<bool> = out.iter().map(|o| o.1.end).collect();
        assert_eq!(ends, vec![false, false, false, false, true, true, true]);
        let times: Vec<u128> = out.iter().map(|o| o.0).collect();
        assert_eq!(times, vec![0, 20, 40, 60, 80, 100, 120]);
        assert!(out[0].2 && out[1..].iter().all(|o| !o.2));
        assert!(out.iter().all(|o| o.1.event == 5 && o.1.volume == 10));
        assert!(!s.is_active());
    }

    #[test]
    fn digits_are_separated_by_the_gap() {
        let mut s = DtmfSender::new(DtmfTiming::default());
        let t0 = Instant::now();
        s.push_digits(t0, "1 #").unwrap();
        let out = drain(&mut s, t0);
        assert_eq!(out.len(), 14);
        let second = out.iter().find(|o| o.1.event == 11).unwrap();
        assert!(second.2);
        // Tone (100) + gap (60) after the first digit's start.
        assert_eq!(second.0, 160);
    }

    #[test]
    fn invalid_digits_are_refused_all_or_nothing() {
        let mut s = DtmfSender::new(DtmfTiming::default());
        let t = Instant::now();
        assert_eq!(s.push_digits(t, "12x"), Err(DtmfError::InvalidDigit('x')));
        assert_eq!(s.poll_timeout(), None);
        let many = "1".repeat(MAX_QUEUED + 1);
        assert_eq!(s.push_digits(t, &many), Err(DtmfError::QueueFull));
        assert!(s.poll_output(t + MS).is_none());
    }

    #[test]
    fn detector_reports_each_event_once() {
        let mut d = DtmfDetector::default();
        let ev = |e: u8, end: bool, dur: u16| {
            EventPayload {
                event: e,
                end,
                volume: 10,
                duration: dur,
            }
            .to_bytes()
        };
        assert_eq!(d.on_packet(1000, &ev(4, false, 160)), Some('4'));
        assert_eq!(d.on_packet(1000, &ev(4, false, 320)), None);
        assert_eq!(d.on_packet(1000, &ev(4, true, 800)), None);
        assert_eq!(d.on_packet(1000, &ev(4, true, 800)), None);
        assert_eq!(d.on_packet(2600, &ev(4, false, 160)), Some('4'));
        assert_eq!(d.on_packet(4200, &ev(20, false, 160)), None);
        assert_eq!(d.on_packet(4200, &[1]), None);
    }
}
