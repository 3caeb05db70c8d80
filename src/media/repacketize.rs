//! Repacketiser: turns decoded audio chunks of any length into frames of a fixed
//! number of samples (the output leg's ptime), keeping their position on the timeline.
//!
//! Sans-IO and allocation-free after construction: [`Repacketizer::push`] calls `emit`
//! for every complete frame with the frame's position (in samples of the 8 kHz
//! timeline) and its samples. A small gap (at most one frame, e.g. a rounding
//! difference) is filled with silence; a larger gap completes the pending frame with
//! silence and starts over at the new position. Frames never overlap: samples before
//! the end of the last emitted frame are dropped, so output timestamps only grow.

/// Collects samples into fixed-size frames.
#[derive(Debug, Clone)]
pub struct Repacketizer {
    /// Samples per output frame.
    frame: usize,
    /// Samples of the frame being filled (`len < frame`).
    pending: Vec<i16>,
    /// Timeline position of `pending[0]`.
    pending_pos: i64,
    /// End of the last emitted frame (`None` before the first).
    emitted_end: Option<i64>,
}

impl Repacketizer {
    /// A repacketiser producing frames of `frame` samples (at least 1).
    pub fn new(frame: usize) -> Self {
        let frame = frame.max(1);
        Repacketizer {
            frame,
            pending: Vec::with_capacity(frame),
            pending_pos: 0,
            emitted_end: None,
        }
    }

    /// Samples per output frame.
    pub fn frame_len(&self) -> usize {
        self.frame
    }

    /// Samples waiting for the next frame.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Where the pending (incomplete) frame starts, if one is pending.
    pub fn pending_start(&self) -> Option<i64> {
        (!self.pending.is_empty()).then_some(self.pending_pos)
    }

    /// The position right after the last sample taken (`None` before any).
    pub fn next_position(&self) -> Option<i64> {
        if self.pending.is_empty() {
            self.emitted_end
        } else {
            Some(self.pending_pos + self.pending.len() as i64)
        }
    }

    /// Adds `samples` starting at timeline position `pos`; emits every completed frame.
    pub fn push(&mut self, pos: i64, samples: &[i16], emit: &mut impl FnMut(i64, &[i16])) {
        let mut samples = samples;
        let mut pos = pos;
        if !self.pending.is_empty() {
            let end = self.pending_pos + self.pending.len() as i64;
            let gap = pos - end;
            if gap > 0 && gap <= self.frame as i64 {
                self.fill_silence(gap as usize, emit);
            } else if gap > 0 {
                self.flush(emit);
            } else if gap < 0 {
                // Overlap with what we already have: keep ours, take the rest.
                let skip = usize::try_from(-gap).unwrap_or(usize::MAX);
                if skip >= samples.len() {
                    return;
                }
                samples = &samples[skip..];
                pos = end;
            }
        }
        if self.pending.is_empty() {
            if let Some(end) = self.emitted_end
                && pos < end
            {
                // Already covered by an emitted frame: keep only what comes after it.
                let skip = usize::try_from(end - pos).unwrap_or(usize::MAX);
                if skip >= samples.len() {
                    return;
                }
                samples = &samples[skip..];
                pos = end;
            }
            self.pending_pos = pos;
        }
        while !samples.is_empty() {
            let room = self.frame - self.pending.len();
            let take = room.min(samples.len());
            self.pending.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.pending.len() == self.frame {
                self.emit_pending(emit);
            }
        }
    }

    /// Emits the (complete) pending frame.
    fn emit_pending(&mut self, emit: &mut impl FnMut(i64, &[i16])) {
        emit(self.pending_pos, &self.pending);
        self.pending_pos += self.frame as i64;
        self.emitted_end = Some(self.pending_pos);
        self.pending.clear();
    }

    /// Appends `n` zero samples (emitting frames as they complete).
    fn fill_silence(&mut self, n: usize, emit: &mut impl FnMut(i64, &[i16])) {
        let mut n = n;
        while n > 0 {
            let take = (self.frame - self.pending.len()).min(n);
            self.pending.resize(self.pending.len() + take, 0);
            n -= take;
            if self.pending.len() == self.frame {
                self.emit_pending(emit);
            }
        }
    }

    /// Completes the pending frame with silence and emits it (nothing if none pending).
    pub fn flush(&mut self, emit: &mut impl FnMut(i64, &[i16])) {
        if !self.pending.is_empty() {
            let missing = self.frame - self.pending.len();
            self.fill_silence(missing, emit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(r: &mut Repacketizer, pushes: &[(i64, Vec<i16>)]) -> Vec<(i64, Vec<i16>)> {
        let mut out = Vec::new();
        for (pos, s) in pushes {
            r.push(*pos, s, &mut |p, f| out.push((p, f.to_vec())));
        }
        out
    }

    fn ramp(from: i16, n: usize) -> Vec<i16> {
        (0..n as i16).map(|i| from + i).collect()
    }

    #[test]
    fn twenty_ms_into_thirty_ms() {
        let mut r = Repacketizer::new(240);
        let pushes: Vec<(i64, Vec<i16>)> = (0..6)
            .map(|k| (k * 160, ramp((k * 160) as i16, 160)))
            .collect();
        let out = collect(&mut r, &pushes);
        assert_eq!(out.len(), 4);
        for (k, (pos, f)) in out.iter().enumerate() {
            assert_eq!(*pos, k as i64 * 240);
            assert_eq!(*f, ramp((k * 240) as i16, 240));
        }
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn thirty_ms_into_ten_ms_frames() {
        let mut r = Repacketizer::new(80);
        let out = collect(&mut r, &[(1000, ramp(0, 240)), (1240, ramp(240, 240))]);
        let positions: Vec<i64> = out.iter().map(|o| o.0).collect();
        assert_eq!(positions, vec![1000, 1080, 1160, 1240, 1320, 1400]);
        assert_eq!(out[3].1, ramp(240, 80));
    }

    #[test]
    fn small_gap_is_filled_with_silence() {
        let mut r = Repacketizer::new(160);
        let out = collect(&mut r, &[(0, ramp(1, 100)), (110, ramp(1, 60))]);
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0].1[100..110], &[0; 10]);
        assert_eq!(r.pending(), 10);
    }

    #[test]
    fn large_gap_flushes_and_restarts() {
        let mut r = Repacketizer::new(160);
        let out = collect(&mut r, &[(0, ramp(1, 100)), (8000, ramp(1, 160))]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, 0);
        assert_eq!(&out[0].1[100..], &[0; 60]);
        assert_eq!(out[1], (8000, ramp(1, 160)));
    }

    #[test]
    fn overlap_keeps_the_earlier_samples() {
        let mut r = Repacketizer::new(160);
        let out = collect(&mut r, &[(0, vec![1; 100]), (90, vec![2; 70])]);
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0].1[..100], &[1; 100][..]);
        assert_eq!(&out[0].1[100..], &[2; 60][..]);
    }

    #[test]
    fn audio_overlapping_an_emitted_frame_is_trimmed() {
        let mut r = Repacketizer::new(160);
        let mut out = Vec::new();
        r.push(0, &[1; 100], &mut |p, f| out.push((p, f.to_vec())));
        assert_eq!(r.pending_start(), Some(0));
        assert_eq!(r.next_position(), Some(100));
        // Flushed early (an event must follow this audio), then the audio goes on.
        r.flush(&mut |p, f| out.push((p, f.to_vec())));
        assert_eq!(r.pending_start(), None);
        assert_eq!(r.next_position(), Some(160));
        r.push(100, &[2; 160], &mut |p, f| out.push((p, f.to_vec())));
        r.push(260, &[3; 160], &mut |p, f| out.push((p, f.to_vec())));
        let positions: Vec<i64> = out.iter().map(|o| o.0).collect();
        assert_eq!(positions, vec![0, 160]);
        assert_eq!(&out[1].1[..100], &[2; 100][..]);
        assert_eq!(&out[1].1[100..], &[3; 60][..]);
        // Wholly before the emitted end: dropped.
        r.push(0, &[9; 100], &mut |_, _| panic!("nothing new"));
    }

    #[test]
    fn flush_pads_the_pending_frame() {
        let mut r = Repacketizer::new(160);
        let mut out = Vec::new();
        r.push(0, &[5; 40], &mut |p, f| out.push((p, f.to_vec())));
        r.flush(&mut |p, f| out.push((p, f.to_vec())));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.iter().filter(|&&s| s == 5).count(), 40);
        r.flush(&mut |_, _| panic!("nothing pending"));
    }
}
