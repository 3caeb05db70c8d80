//! The recording file: created private (0600, in a 0700 directory) with a
//! placeholder header and, before it, the call's note (`<file>.json`, opaque to
//! this module) that lets a restarted gateway register a file its killed
//! predecessor left; appended under the per-file cap and the disk quota; closed
//! with the real header and fsynced. While it is written the file holds an
//! exclusive lock, so recovery never touches a recording a live process owns.

use std::ffi::OsString;
use std::fs::TryLockError;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::mixer::{self, FRAME_BYTES, HEADER_BYTES, StereoMixer};
use super::quota::DiskQuota;
use super::{RecordingInfo, RecordingTarget};
use crate::media::MediaError;
use crate::private_fs;

/// The note written beside a recording: `<file>.json`.
pub fn note_path(wav: &Path) -> PathBuf {
    let mut name = OsString::from(wav.as_os_str());
    name.push(".json");
    PathBuf::from(name)
}

/// Maps an I/O error on the recording into [`MediaError::Recording`].
pub(super) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> MediaError + '_ {
    move |e| MediaError::Recording(format!("{}: {e}", path.display()))
}

/// Length of `frames` stereo frames of audio.
fn duration_of(data_bytes: u64) -> Duration {
    let frames = data_bytes / FRAME_BYTES;
    Duration::from_micros(frames * 1_000_000 / u64::from(mixer::RATE))
}

/// Largest audio size a WAV header can describe, whole frames.
const MAX_WAV_DATA: u64 = (u32::MAX as u64 - 36) / FRAME_BYTES * FRAME_BYTES;

/// The open file and how much of the cap is left.
pub(super) struct Output {
    /// The WAV file (locked while open).
    file: tokio::fs::File,
    /// Where it is.
    path: PathBuf,
    /// Audio bytes written.
    data_bytes: u64,
    /// Largest audio size allowed (cap minus header).
    max_data: u64,
    /// The shared disk budget.
    quota: DiskQuota,
    /// The per-file cap was hit.
    pub truncated: bool,
    /// The disk quota was hit: nothing more is written.
    pub quota_cut: bool,
}

/// Creates the note (if any), then the locked file with a placeholder header.
fn create_blocking(target: &RecordingTarget) -> std::io::Result<std::fs::File> {
    if let Some(dir) = target.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_fs::create_dir_all(dir)?;
    }
    if let Some(note) = &target.note {
        let mut f = private_fs::create_file(&note_path(&target.path))?;
        f.write_all(note)?;
        f.sync_all()?;
    }
    let mut file = private_fs::create_file(&target.path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(std::io::Error::other(
                "another process is writing this recording",
            ));
        }
        Err(TryLockError::Error(e)) => return Err(e),
    }
    file.write_all(&mixer::wav_header(0))?;
    Ok(file)
}

impl Output {
    /// Creates the file with a placeholder header (and its note).
    pub(super) async fn create(target: &RecordingTarget) -> Result<Output, MediaError> {
        let err = io_err(&target.path);
        let owned = target.clone();
        let file = tokio::task::spawn_blocking(move || create_blocking(&owned))
            .await
            .map_err(|e| MediaError::Recording(format!("recorder setup: {e}")))?
            .map_err(&err)?;
        let note = target.note.as_ref().map_or(0, |n| n.len() as u64);
        target.quota.reserve(HEADER_BYTES + note);
        let max_data = target.max_bytes.saturating_sub(HEADER_BYTES) / FRAME_BYTES * FRAME_BYTES;
        Ok(Output {
            file: tokio::fs::File::from_std(file),
            path: target.path.clone(),
            data_bytes: 0,
            max_data: max_data.min(MAX_WAV_DATA),
            quota: target.quota.clone(),
            truncated: false,
            quota_cut: false,
        })
    }

    /// Frames that still fit under the per-file cap (none once the quota is hit).
    pub(super) fn room(&self) -> u64 {
        if self.quota_cut {
            return 0;
        }
        (self.max_data - self.data_bytes) / FRAME_BYTES
    }

    /// Appends audio from the mixer up to `upto`, as far as the quota allows.
    pub(super) async fn append(
        &mut self,
        mixer: &mut StereoMixer,
        upto: std::time::Instant,
        buf: &mut Vec<u8>,
    ) -> Result<(), MediaError> {
        buf.clear();
        let room = self.room();
        let frames = mixer.flush(upto, room, buf);
        if frames == room && mixer.frames_written() < mixer.frames_until(upto) {
            self.truncated = true;
        }
        if buf.is_empty() {
            return Ok(());
        }
        let want = buf.len() as u64;
        let raw = self.quota.reserve(want);
        let granted = raw / FRAME_BYTES * FRAME_BYTES;
        if granted < want {
            self.quota.release(raw - granted);
            self.quota_cut = true;
            self.truncated = true;
            buf.truncate(usize::try_from(granted).unwrap_or(0));
            tracing::warn!(path = %self.path.display(), "recording disk quota (media.recording_max_total_bytes) reached: recording cut");
        }
        if !buf.is_empty() {
            self.file.write_all(buf).await.map_err(io_err(&self.path))?;
            self.data_bytes += buf.len() as u64;
        }
        Ok(())
    }

    /// Fixes the header, flushes and fsyncs (and unlocks, by closing).
    pub(super) async fn close(mut self) -> Result<RecordingInfo, MediaError> {
        let path = self.path.clone();
        let err = io_err(&path);
        self.file.flush().await.map_err(&err)?;
        self.file
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(&err)?;
        let data = u32::try_from(self.data_bytes).unwrap_or(u32::MAX);
        self.file
            .write_all(&mixer::wav_header(data))
            .await
            .map_err(&err)?;
        self.file.flush().await.map_err(&err)?;
        self.file.sync_all().await.map_err(&err)?;
        Ok(RecordingInfo {
            bytes: self.data_bytes + HEADER_BYTES,
            duration: duration_of(self.data_bytes),
            truncated: self.truncated,
            quota_cut: self.quota_cut,
            path: self.path,
        })
    }
}

/// Makes a WAV left by a killed process valid: takes its lock (`Ok(None)` when a
/// live process holds it), drops a partial last frame, writes the header for the
/// audio that is there and fsyncs. Blocking.
pub fn repair(path: &Path) -> Result<Option<RecordingInfo>, MediaError> {
    let err = io_err(path);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(&err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(None),
        Err(TryLockError::Error(e)) => return Err(err(e)),
    }
    let len = file.metadata().map_err(&err)?.len();
    let data = (len.saturating_sub(HEADER_BYTES) / FRAME_BYTES * FRAME_BYTES).min(MAX_WAV_DATA);
    file.set_len(HEADER_BYTES + data).map_err(&err)?;
    let header = mixer::wav_header(u32::try_from(data).unwrap_or(u32::MAX));
    file.write_all_at(&header, 0).map_err(&err)?;
    file.sync_all().map_err(&err)?;
    Ok(Some(RecordingInfo {
        path: path.to_path_buf(),
        bytes: HEADER_BYTES + data,
        duration: duration_of(data),
        truncated: false,
        quota_cut: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_fixes_the_header_of_a_killed_recording() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-1.wav");
        // What a killed recorder leaves: the placeholder header, audio, half a frame.
        let mut bytes = mixer::wav_header(0).to_vec();
        bytes.extend(std::iter::repeat_n(7u8, 8000 * 4 + 2));
        std::fs::write(&path, &bytes).unwrap();
        let info = repair(&path).unwrap().expect("not locked");
        assert_eq!(info.bytes, 44 + 32_000);
        assert_eq!(info.duration, Duration::from_secs(1));
        let fixed = std::fs::read(&path).unwrap();
        assert_eq!(fixed.len(), 44 + 32_000);
        assert_eq!(&fixed[..44], &mixer::wav_header(32_000));
        // A file shorter than a header becomes an empty WAV.
        std::fs::write(&path, b"RIFF").unwrap();
        assert_eq!(repair(&path).unwrap().expect("fixed").bytes, 44);
    }

    #[test]
    fn a_locked_recording_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.wav");
        let live = private_fs::create_file(&path).unwrap();
        live.try_lock().unwrap();
        std::fs::write(&path, mixer::wav_header(0)).unwrap();
        assert!(repair(&path).unwrap().is_none());
        drop(live);
        assert!(repair(&path).unwrap().is_some());
    }

    #[test]
    fn note_sits_beside_the_file() {
        assert_eq!(
            note_path(Path::new("/rec/c-1.wav")),
            Path::new("/rec/c-1.wav.json")
        );
    }
}
