//! Sans-IO parts of the recorder: placing decoded audio of the two channels on a
//! common 8 kHz timeline, interleaving it into 16-bit stereo frames, and the WAV header.
//!
//! Each channel is positioned by its RTP timestamps, anchored to the wall-clock time of
//! its first packet (so reordering and jitter do not shift audio); when a stream's
//! timestamps and the wall clock disagree by more than [`REANCHOR`] (a restarted source,
//! a long pause with a frozen timestamp), the channel is re-anchored on the wall clock.
//! Samples that arrive after their place has been written out are dropped; places
//! nobody wrote stay silent.

use std::time::{Duration, Instant};

/// Timeline rate.
pub const RATE: u32 = 8000;
/// Bytes of one stereo frame (two 16-bit samples).
pub const FRAME_BYTES: u64 = 4;
/// Bytes of the canonical WAV header we write.
pub const HEADER_BYTES: u64 = 44;
/// How much audio the mixer holds before it is written out (2 s).
const CAPACITY: usize = 2 * RATE as usize;
/// Disagreement between a channel's timestamps and the wall clock that re-anchors it.
const REANCHOR: Duration = Duration::from_millis(250);

/// The 44-byte header of a 16-bit stereo 8 kHz PCM WAV file with `data_bytes` of audio.
pub fn wav_header(data_bytes: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    let byte_rate = RATE * FRAME_BYTES as u32;
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&data_bytes.saturating_add(36).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&2u16.to_le_bytes()); // channels
    h[24..28].copy_from_slice(&RATE.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&(FRAME_BYTES as u16).to_le_bytes()); // block align
    h[34..36].copy_from_slice(&16u16.to_le_bytes()); // bits per sample
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_bytes.to_le_bytes());
    h
}

/// Where a channel's RTP timestamps sit on the timeline.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// Timeline position of `ts`.
    pos: i64,
    /// The RTP timestamp anchored.
    ts: u32,
    /// RTP clock of the stream.
    clock: u32,
}

/// Two channels on one timeline, written out in order.
#[derive(Debug, Clone)]
pub struct StereoMixer {
    /// Time of timeline position 0.
    start: Instant,
    /// Positions before this were written out.
    written: i64,
    /// Samples by position modulo [`CAPACITY`]: `[left, right]`.
    ring: Vec<[i16; 2]>,
    /// Per-channel anchors.
    anchors: [Option<Anchor>; 2],
}

impl StereoMixer {
    /// A mixer whose timeline starts at `start`.
    pub fn new(start: Instant) -> Self {
        StereoMixer {
            start,
            written: 0,
            ring: vec![[0, 0]; CAPACITY],
            anchors: [None, None],
        }
    }

    /// Timeline position of `at`.
    fn wall_pos(&self, at: Instant) -> i64 {
        (at.saturating_duration_since(self.start).as_micros() * u128::from(RATE) / 1_000_000) as i64
    }

    /// Places `pcm` of `channel` (0 left, 1 right) that came with RTP timestamp `ts`
    /// (clock `clock`) at `at`.
    pub fn place(&mut self, channel: usize, at: Instant, ts: u32, clock: u32, pcm: &[i16]) {
        let channel = channel.min(1);
        let wall = self.wall_pos(at);
        let clock = clock.max(1);
        let anchor = match self.anchors[channel] {
            Some(a) if a.clock == clock => a,
            _ => Anchor {
                pos: wall,
                ts,
                clock,
            },
        };
        let mut pos = anchor.pos
            + i64::from(ts.wrapping_sub(anchor.ts) as i32) * i64::from(RATE) / i64::from(clock);
        let limit = (REANCHOR.as_millis() as i64) * i64::from(RATE) / 1000;
        self.anchors[channel] = Some(if (pos - wall).abs() > limit {
            pos = wall;
            Anchor {
                pos: wall,
                ts,
                clock,
            }
        } else {
            anchor
        });
        for (i, &s) in pcm.iter().enumerate() {
            let p = pos + i as i64;
            if p >= self.written && p < self.written + CAPACITY as i64 {
                self.ring[(p as usize) % CAPACITY][channel] = s;
            }
        }
    }

    /// Writes interleaved little-endian frames for every position before `upto` into
    /// `out`, at most `max_frames`; returns the frames written.
    pub fn flush(&mut self, upto: Instant, max_frames: u64, out: &mut Vec<u8>) -> u64 {
        let end = self
            .wall_pos(upto)
            .min(self.written + max_frames.min(i64::MAX as u64) as i64);
        let mut n = 0;
        while self.written < end {
            let slot = &mut self.ring[(self.written as usize) % CAPACITY];
            out.extend_from_slice(&slot[0].to_le_bytes());
            out.extend_from_slice(&slot[1].to_le_bytes());
            *slot = [0, 0];
            self.written += 1;
            n += 1;
        }
        n
    }

    /// Frames on the timeline up to `upto`, written or not.
    pub fn frames_until(&self, upto: Instant) -> u64 {
        self.wall_pos(upto).max(0) as u64
    }

    /// Frames written out so far.
    pub fn frames_written(&self) -> u64 {
        self.written.max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn frames(bytes: &[u8]) -> Vec<[i16; 2]> {
        bytes
            .chunks(4)
            .map(|c| {
                [
                    i16::from_le_bytes([c[0], c[1]]),
                    i16::from_le_bytes([c[2], c[3]]),
                ]
            })
            .collect()
    }

    #[test]
    fn header_describes_stereo_8khz_pcm() {
        let h = wav_header(32_000);
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes([h[4], h[5], h[6], h[7]]), 32_036);
        assert_eq!(u16::from_le_bytes([h[22], h[23]]), 2);
        assert_eq!(u32::from_le_bytes([h[24], h[25], h[26], h[27]]), 8000);
        assert_eq!(u32::from_le_bytes([h[28], h[29], h[30], h[31]]), 32_000);
        assert_eq!(u32::from_le_bytes([h[40], h[41], h[42], h[43]]), 32_000);
    }

    #[test]
    fn channels_are_placed_by_timestamp_despite_jitter() {
        let t0 = Instant::now();
        let mut m = StereoMixer::new(t0);
        // Left: 20 ms frames of 1s arriving with jitter; right: 2s, 48 kHz clock.
        for k in 0..10u32 {
            let jitter = if k % 2 == 0 { 0 } else { 7 };
            m.place(
                0,
                t0 + 20 * MS * k + MS * jitter,
                1000 + 160 * k,
                8000,
                &[1; 160],
            );
            m.place(1, t0 + 20 * MS * k + 5 * MS, 960 * k, 48_000, &[2; 160]);
        }
        let mut out = Vec::new();
        assert_eq!(m.flush(t0 + 250 * MS, u64::MAX, &mut out), 2000);
        let f = frames(&out);
        assert!(f[..1600].iter().all(|s| s[0] == 1), "left continuous");
        assert!(f[40..1640].iter().all(|s| s[1] == 2), "right from 5 ms on");
        assert!(f[..40].iter().all(|s| s[1] == 0));
        assert!(f[1640..].iter().all(|s| *s == [0, 0]), "silence after");
        assert_eq!(m.frames_written(), 2000);
    }

    #[test]
    fn restarted_source_is_reanchored_on_the_wall_clock() {
        let t0 = Instant::now();
        let mut m = StereoMixer::new(t0);
        m.place(1, t0, 5000, 8000, &[3; 160]);
        // New source with unrelated timestamps one second later.
        m.place(1, t0 + Duration::from_secs(1), 123, 8000, &[4; 160]);
        let mut out = Vec::new();
        m.flush(t0 + Duration::from_millis(1100), u64::MAX, &mut out);
        let f = frames(&out);
        assert_eq!(f[8000][1], 4);
        assert_eq!(f[7999][1], 0);
    }

    #[test]
    fn late_audio_is_dropped_and_flush_respects_the_cap() {
        let t0 = Instant::now();
        let mut m = StereoMixer::new(t0);
        let mut out = Vec::new();
        m.flush(t0 + 100 * MS, u64::MAX, &mut out);
        out.clear();
        m.place(0, t0, 0, 8000, &[9; 160]);
        assert_eq!(m.flush(t0 + 200 * MS, 100, &mut out), 100);
        assert!(frames(&out).iter().all(|s| *s == [0, 0]));
    }
}
