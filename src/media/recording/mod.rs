//! Call recording: a stereo 16-bit 8 kHz WAV (browser on the left, far end on the
//! right), written while the call runs, capped in size, closed and fsynced at the end.
//!
//! I/O contract: the bridge's two directions hand the SIP-side audio packets to
//! [`Recorder::tap`] (a bounded channel; a full channel drops the packet rather than
//! delay media). A task decodes them, places them on the timeline
//! ([`mixer::StereoMixer`]), and appends to the file every 200 ms, keeping 300 ms for
//! late packets. [`Recorder::finish`] writes out everything up to the end of the call,
//! patches the header, fsyncs and returns a [`RecordingInfo`]. Hitting `max_bytes`
//! or the shared disk quota ([`quota::DiskQuota`]) finishes the file early
//! (`truncated`) and reports it through the bridge's events. The file itself
//! (modes, lock, the crash-recovery note, header repair) is [`output`].

pub mod mixer;
pub mod output;
pub mod quota;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::MediaError;
use super::audio::{Decoder, MAX_FRAME};
use super::codec::AudioCodec;
use mixer::StereoMixer;
use output::Output;
pub use output::{note_path, repair};
pub use quota::DiskQuota;

/// Audio packets that may wait for the recorder task.
const QUEUE: usize = 256;
/// How often audio is appended to the file.
const WRITE_EVERY: Duration = Duration::from_millis(200);
/// Audio younger than this stays in memory for late packets.
const HOLD_BACK: Duration = Duration::from_millis(300);

/// Where to record one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingTarget {
    /// The WAV file to create (parent directories are created).
    pub path: PathBuf,
    /// Largest file size, header included; the recording stops there.
    pub max_bytes: u64,
    /// Written to [`note_path`] before the file is created (the caller's record of
    /// whose recording it is, for recovery after a crash); `None`: no note.
    pub note: Option<Vec<u8>>,
    /// The disk budget shared with the other recordings.
    pub quota: DiskQuota,
}

impl RecordingTarget {
    /// `<dir>/<call id>.wav`, with every character outside `[A-Za-z0-9._-]` of the call
    /// id replaced by `_` (call ids come from clients).
    pub fn in_dir(dir: &Path, call_id: &str, max_bytes: u64) -> RecordingTarget {
        let mut name: String = call_id
            .chars()
            .take(100)
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if name.is_empty() || name.starts_with('.') {
            name.insert(0, '_');
        }
        RecordingTarget {
            path: dir.join(format!("{name}.wav")),
            max_bytes,
            note: None,
            quota: DiskQuota::unlimited(),
        }
    }

    /// The same target with a crash-recovery note.
    pub fn with_note(mut self, note: Vec<u8>) -> RecordingTarget {
        self.note = Some(note);
        self
    }

    /// The same target counted against `quota`.
    pub fn with_quota(mut self, quota: DiskQuota) -> RecordingTarget {
        self.quota = quota;
        self
    }
}

/// A finished recording, for the call record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecordingInfo {
    /// The WAV file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Duration of the audio.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Whether the size cap or the disk quota cut it short.
    pub truncated: bool,
    /// Whether it was the disk quota (`media.recording_max_total_bytes`).
    pub quota_cut: bool,
}

/// Which side of the call an audio packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Spoken by the browser user (left channel).
    Browser,
    /// Spoken by the far end (right channel).
    Far,
}

/// One audio packet for the recorder.
#[derive(Debug, Clone)]
struct Chunk {
    /// Channel.
    side: Side,
    /// When it was sent or received.
    at: Instant,
    /// Its RTP timestamp.
    ts: u32,
    /// Its codec.
    codec: AudioCodec,
    /// The encoded payload.
    payload: Bytes,
}

/// Handle of a running recorder.
#[derive(Debug)]
pub struct Recorder {
    /// Packets to record.
    tx: mpsc::Sender<Chunk>,
    /// Tells the task the call ended at this instant.
    stop: Option<oneshot::Sender<Instant>>,
    /// The task; yields the finished recording.
    task: Option<JoinHandle<Result<RecordingInfo, MediaError>>>,
}

impl Recorder {
    /// Starts recording into `target` with the timeline at `start`; the finished file
    /// (also when the cap is hit) is reported to `finished`.
    pub fn start(
        target: RecordingTarget,
        start: Instant,
        finished: impl FnOnce(&Result<RecordingInfo, MediaError>) + Send + 'static,
    ) -> Recorder {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let result = run(target, start, rx, stop_rx).await;
            finished(&result);
            result
        });
        Recorder {
            tx,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// A sender the bridge's directions can tap audio into.
    pub fn tap(&self, side: Side) -> Tap {
        Tap {
            side,
            tx: self.tx.clone(),
        }
    }

    /// Ends the recording at `end`: writes the rest, fixes the header, fsyncs.
    pub async fn finish(mut self, end: Instant) -> Result<RecordingInfo, MediaError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(end);
        }
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| MediaError::Recording(format!("recorder task: {e}")))?,
            None => Err(MediaError::Recording("recorder already finished".into())),
        }
    }
}

/// Hands one side's audio to the recorder without ever waiting.
#[derive(Debug, Clone)]
pub struct Tap {
    /// Channel.
    side: Side,
    /// The recorder's queue.
    tx: mpsc::Sender<Chunk>,
}

impl Tap {
    /// Offers one audio payload; dropped when the recorder is behind or gone.
    pub fn offer(&self, at: Instant, ts: u32, codec: AudioCodec, payload: Bytes) {
        let _ = self.tx.try_send(Chunk {
            side: self.side,
            at,
            ts,
            codec,
            payload,
        });
    }
}

/// Per-channel decoders, created for the codec that arrives.
#[derive(Default)]
struct Decoders {
    /// Left and right: the codec and its decoder.
    channels: [Option<(AudioCodec, Decoder)>; 2],
}

impl Decoders {
    /// Decodes `chunk` into `pcm`; the sample count.
    fn decode(&mut self, chunk: &Chunk, pcm: &mut [i16]) -> Option<usize> {
        let slot = &mut self.channels[usize::from(chunk.side == Side::Far)];
        if slot.as_ref().is_none_or(|(c, _)| *c != chunk.codec) {
            *slot = Some((chunk.codec, Decoder::new(chunk.codec).ok()?));
        }
        let (_, decoder) = slot.as_mut()?;
        decoder.decode(&chunk.payload, pcm)
    }
}

/// The recorder task.
async fn run(
    target: RecordingTarget,
    start: Instant,
    mut rx: mpsc::Receiver<Chunk>,
    mut stop: oneshot::Receiver<Instant>,
) -> Result<RecordingInfo, MediaError> {
    let mut out = Output::create(&target).await?;
    tracing::debug!(path = %target.path.display(), "recording started");
    let mut mixer = StereoMixer::new(start);
    let mut decoders = Decoders::default();
    let mut pcm = vec![0i16; MAX_FRAME];
    let mut buf = Vec::with_capacity(8 * 1024);
    let mut tick = tokio::time::interval(WRITE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = loop {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Some(c) => {
                    if let Some(n) = decoders.decode(&c, &mut pcm) {
                        let clock = c.codec.clock_rate();
                        mixer.place(usize::from(c.side == Side::Far), c.at, c.ts, clock, &pcm[..n]);
                    }
                }
                None => break Instant::now(),
            },
            _ = tick.tick() => {
                let upto = Instant::now().checked_sub(HOLD_BACK).unwrap_or(start);
                out.append(&mut mixer, upto, &mut buf).await?;
                if out.room() == 0 {
                    out.truncated = true;
                    if !out.quota_cut {
                        tracing::warn!(path = %target.path.display(), "recording reached its size cap");
                    }
                    break Instant::now();
                }
            }
            end = &mut stop => break end.unwrap_or_else(|_| Instant::now()),
        }
    };
    // Whatever is still queued belongs to the call.
    while let Ok(c) = rx.try_recv() {
        if let Some(n) = decoders.decode(&c, &mut pcm) {
            mixer.place(
                usize::from(c.side == Side::Far),
                c.at,
                c.ts,
                c.codec.clock_rate(),
                &pcm[..n],
            );
        }
    }
    out.append(&mut mixer, end, &mut buf).await?;
    let info = out.close().await?;
    tracing::info!(
        path = %info.path.display(),
        bytes = info.bytes,
        duration_ms = info.duration.as_millis() as u64,
        truncated = info.truncated,
        "recording finished"
    );
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::g711;

    #[test]
    fn call_ids_become_safe_file_names() {
        let dir = Path::new("/rec");
        let t = RecordingTarget::in_dir(dir, "c-1.ok_X", 10);
        assert_eq!(t.path, Path::new("/rec/c-1.ok_X.wav"));
        let t = RecordingTarget::in_dir(dir, "../../etc/passwd", 10);
        assert_eq!(t.path, Path::new("/rec/_.._.._etc_passwd.wav"));
        assert_eq!(t.path.parent(), Some(dir));
        assert_eq!(
            RecordingTarget::in_dir(dir, "", 1).path,
            Path::new("/rec/_.wav")
        );
    }

    fn ulaw_frame(value: i16) -> Bytes {
        Bytes::from(vec![g711::linear_to_ulaw(value); 160])
    }

    #[tokio::test]
    async fn writes_a_stereo_wav_of_the_call_duration() {
        let dir = tempfile::tempdir().unwrap();
        let target = RecordingTarget::in_dir(&dir.path().join("sub"), "call", 1 << 20);
        let start = Instant::now();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let rec = Recorder::start(target.clone(), start, move |r| {
            let _ = done_tx.send(r.is_ok());
        });
        let (left, right) = (rec.tap(Side::Browser), rec.tap(Side::Far));
        for k in 0..25u32 {
            let at = start + Duration::from_millis(20 * u64::from(k));
            left.offer(at, 160 * k, AudioCodec::Pcmu, ulaw_frame(1000));
            right.offer(at, 160 * k, AudioCodec::Pcmu, ulaw_frame(-2000));
        }
        let end = start + Duration::from_millis(600);
        let info = rec.finish(end).await.unwrap();
        assert!(done_rx.recv().unwrap());
        assert_eq!(info.duration, Duration::from_millis(600));
        assert_eq!(info.bytes, 44 + 4800 * 4);
        assert!(!info.truncated);
        let bytes = std::fs::read(&target.path).unwrap();
        assert_eq!(bytes.len() as u64, info.bytes);
        assert_eq!(&bytes[..4], b"RIFF");
        let frame = |i: usize| {
            let o = 44 + 4 * i;
            (
                i16::from_le_bytes([bytes[o], bytes[o + 1]]),
                i16::from_le_bytes([bytes[o + 2], bytes[o + 3]]),
            )
        };
        let (l, r) = frame(100);
        assert!((l - 1000).abs() < 40 && (r + 2000).abs() < 80, "{l} {r}");
        assert_eq!(frame(4500), (0, 0), "silence after the last packet");
    }

    #[tokio::test]
    async fn size_cap_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let target = RecordingTarget::in_dir(dir.path(), "capped", 44 + 400 * 4);
        let start = Instant::now();
        let rec = Recorder::start(target.clone(), start, |_| {});
        let info = rec.finish(start + Duration::from_secs(1)).await.unwrap();
        assert!(info.truncated);
        assert_eq!(info.bytes, 44 + 1600);
        assert_eq!(info.duration, Duration::from_millis(50));
        assert_eq!(std::fs::metadata(&target.path).unwrap().len(), info.bytes);
    }

    #[tokio::test]
    async fn disk_quota_cuts_the_file_which_is_private_with_its_note() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let rec_dir = dir.path().join("rec/ordings");
        let note = br#"{"id":"c-9"}"#.to_vec();
        let quota = DiskQuota::new(44 + note.len() as u64 + 8_000 + 2, 0, None);
        let target = RecordingTarget::in_dir(&rec_dir, "c-9", 1 << 20)
            .with_note(note.clone())
            .with_quota(quota.clone());
        let start = Instant::now();
        let rec = Recorder::start(target.clone(), start, |_| {});
        let tap = rec.tap(Side::Browser);
        for k in 0..30u32 {
            let at = start + Duration::from_millis(20 * u64::from(k));
            tap.offer(at, 160 * k, AudioCodec::Pcmu, ulaw_frame(500));
        }
        let info = rec
            .finish(start + Duration::from_millis(600))
            .await
            .unwrap();
        assert!(info.quota_cut && info.truncated, "{info:?}");
        assert_eq!(info.bytes, 44 + 8_000, "whole frames up to the quota");
        assert_eq!(quota.available(), 2, "the partial frame was given back");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&target.path), 0o600);
        assert_eq!(mode(&note_path(&target.path)), 0o600);
        assert_eq!(mode(&rec_dir), 0o700);
        assert_eq!(mode(&dir.path().join("rec")), 0o700);
        assert_eq!(std::fs::read(note_path(&target.path)).unwrap(), note);
        let bytes = std::fs::read(&target.path).unwrap();
        assert_eq!(bytes.len() as u64, info.bytes);
        assert_eq!(&bytes[..44], &mixer::wav_header(8_000));
    }

    #[tokio::test]
    async fn unwritable_target_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let target = RecordingTarget::in_dir(&file, "call", 1000);
        let start = Instant::now();
        let rec = Recorder::start(target, start, |_| {});
        let e = rec.finish(start).await.unwrap_err();
        assert!(e.to_string().contains("call.wav"), "{e}");
    }
}
