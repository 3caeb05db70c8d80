//! Call recording as the call layer sees it, for both directions:
//!
//! - [`plan`]: whether a call that should be recorded is (the disk quota has room),
//!   where, and the note written beside the file ([`RecordingNote`]: whose call it
//!   is), so that a file left by a killed process can still be registered;
//! - [`finish_call`]: the end of a call: the call record gets the recording (or why
//!   it was skipped), then `recording.ready` registers the file (recordings table,
//!   download API, webhook); the writer deletes the note once that is stored;
//! - [`start`]: at start, registers what a killed process left (header repaired,
//!   call record written when there is none) and keeps the quota's count of the
//!   directory current.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::CallManager;
use super::registry::{CallInfo, CallState, Direction};
use crate::config::MediaConfig;
use crate::events::record::{from_unix_ms, millis, unix_ms};
use crate::events::{CallRecord, RecordingInfo as StoredRecording};
use crate::media::recording::{self, DiskQuota, RecordingInfo, RecordingTarget, quota};
use crate::metrics::Metrics;
use crate::signaling::protocol::EndReason;

/// How often the quota's count is set again from the directory.
const RESCAN_EVERY: Duration = Duration::from_secs(60);
/// Version of [`RecordingNote`].
const NOTE_VERSION: u32 = 1;

/// The note written beside a recording when it starts (JSON): whose call it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingNote {
    /// Format version (1).
    pub version: u32,
    /// The gateway call id (the recording id).
    pub id: String,
    /// The client's call id.
    pub call_id: String,
    /// The session that placed or took the call.
    pub session_id: String,
    /// Correlation id of the call.
    pub correlation_id: String,
    /// The user whose call it is.
    pub user: String,
    /// `outbound` or `inbound`.
    pub direction: String,
    /// Caller.
    pub from: String,
    /// Callee.
    pub to: String,
    /// The trunk, when known.
    pub trunk: Option<String>,
    /// When the call started, Unix ms.
    pub started_at_ms: i64,
}

impl RecordingNote {
    /// The note of the call `info`.
    pub fn of(info: &CallInfo) -> RecordingNote {
        RecordingNote {
            version: NOTE_VERSION,
            id: info.id.clone(),
            call_id: info.call_id.clone(),
            session_id: info.session_id.clone(),
            correlation_id: info.correlation_id.clone(),
            user: info.user.clone(),
            direction: info.direction.as_str().to_string(),
            from: info.from.clone(),
            to: info.to.clone(),
            trunk: info.trunk.clone(),
            started_at_ms: unix_ms(info.started_at),
        }
    }

    /// The call as the registry would have shown it.
    fn call_info(&self) -> CallInfo {
        CallInfo {
            id: self.id.clone(),
            call_id: self.call_id.clone(),
            session_id: self.session_id.clone(),
            user: self.user.clone(),
            direction: if self.direction == "inbound" {
                Direction::Inbound
            } else {
                Direction::Outbound
            },
            from: self.from.clone(),
            to: self.to.clone(),
            trunk: self.trunk.clone(),
            state: CallState::Answered,
            correlation_id: self.correlation_id.clone(),
            sip_call_id: None,
            started_at: from_unix_ms(self.started_at_ms),
            ringing_at: None,
            answered_at: None,
        }
    }
}

/// Whether and where a call is recorded.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The file to record into, when recording.
    pub target: Option<RecordingTarget>,
    /// Why a wanted recording is not made (`quota`).
    pub skipped: Option<&'static str>,
}

/// The disk quota of `media`, counted from what is in the directory now.
pub fn quota_for(media: &MediaConfig, metrics: &Metrics) -> DiskQuota {
    let used = quota::scan(&media.recording_dir).unwrap_or_else(|e| {
        warn!(dir = %media.recording_dir.display(), error = %e, "cannot scan the recording directory");
        0
    });
    DiskQuota::new(
        media.recording_max_total_bytes,
        used,
        Some(metrics.recordings_disk_bytes.clone()),
    )
}

/// The recording of the call `info` when `wanted`: none when the disk quota is
/// full (the call goes on; the record says `recording_skipped: quota`).
pub fn plan(manager: &CallManager, info: &CallInfo, wanted: bool) -> Plan {
    if !wanted {
        return Plan::default();
    }
    let media = &manager.config.media;
    if !manager.recording_quota.can_start() {
        manager
            .metrics
            .recordings_skipped_total
            .with_label_values(&["quota"])
            .inc();
        warn!(
            call = %info.id,
            used = manager.recording_quota.used(),
            limit = manager.recording_quota.limit(),
            "recording disk quota (media.recording_max_total_bytes) is full: call not recorded"
        );
        return Plan {
            target: None,
            skipped: Some("quota"),
        };
    }
    let note = serde_json::to_vec(&RecordingNote::of(info)).unwrap_or_default();
    let target = RecordingTarget::in_dir(&media.recording_dir, &info.id, media.recording_max_bytes)
        .with_note(note)
        .with_quota(manager.recording_quota.clone());
    Plan {
        target: Some(target),
        skipped: None,
    }
}

/// What a registered recording is in the events module.
fn stored(info: &CallInfo, r: &RecordingInfo) -> StoredRecording {
    StoredRecording {
        id: info.id.clone(),
        correlation_id: info.correlation_id.clone(),
        user: info.user.clone(),
        path: r.path.display().to_string(),
        content_type: "audio/wav".into(),
        bytes: r.bytes,
        duration_ms: millis(r.duration),
        sidecar: Some(recording::note_path(&r.path)),
    }
}

/// Puts the recording into the call record (or why there is none).
fn attach(record: &mut CallRecord, r: &RecordingInfo) {
    record.recording_path = Some(r.path.display().to_string());
    record.recording_bytes = Some(r.bytes);
    record.recording_duration_ms = Some(millis(r.duration));
}

/// Stores the record of a finished call (`call.ended`) with its recording, then
/// registers the recording (`recording.ready`). `result` is the bridge's recording.
pub fn finish_call(
    manager: &CallManager,
    info: &CallInfo,
    mut record: CallRecord,
    plan: &Plan,
    result: Option<&Result<RecordingInfo, String>>,
) {
    let finished = match result {
        Some(Ok(r)) => {
            attach(&mut record, r);
            if r.quota_cut {
                manager
                    .metrics
                    .recordings_skipped_total
                    .with_label_values(&["quota_cut"])
                    .inc();
            }
            Some(r)
        }
        Some(Err(e)) => {
            warn!(call = %info.id, error = %e, "recording failed");
            manager
                .metrics
                .recordings_skipped_total
                .with_label_values(&["error"])
                .inc();
            record.recording_skipped = Some("error".into());
            None
        }
        None => {
            record.recording_skipped = plan.skipped.map(str::to_string);
            None
        }
    };
    manager.events.call_ended(record);
    if let Some(r) = finished {
        manager.events.recording_ready(stored(info, r));
    }
}

/// Registers the recordings a killed process left, then keeps the quota's count
/// current until the manager stops.
pub fn start(manager: &Arc<CallManager>) {
    let m = Arc::clone(manager);
    let stop = manager.presence_stop.clone();
    tokio::spawn(async move {
        recover(&m).await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RESCAN_EVERY) => {}
                _ = stop.cancelled() => break,
            }
            let dir = m.config.media.recording_dir.clone();
            match tokio::task::spawn_blocking(move || quota::scan(&dir)).await {
                Ok(Ok(used)) => m.recording_quota.set_used(used),
                Ok(Err(e)) => warn!(error = %e, "cannot scan the recording directory"),
                Err(e) => warn!(error = %e, "recording directory scan failed"),
            }
        }
    });
}

/// The notes in `dir` (`*.wav.json`).
fn notes_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(".wav.json")))
        .collect()
}

/// Finds every recording note in the recording directory and registers what it
/// describes unless that is already done. Returns how many were registered.
pub async fn recover(manager: &CallManager) -> usize {
    let dir = manager.config.media.recording_dir.clone();
    if !dir.is_dir() {
        return 0;
    }
    crate::private_fs::warn_if_shared(&dir, "the recording directory");
    let notes = tokio::task::spawn_blocking(move || notes_in(&dir))
        .await
        .unwrap_or_default();
    let mut registered = 0;
    for note in notes {
        match recover_one(manager, &note).await {
            Ok(true) => registered += 1,
            Ok(false) => {}
            Err(e) => warn!(note = %note.display(), error = %e, "recording not recovered"),
        }
    }
    if registered > 0 {
        info!(
            registered,
            "recordings left by a stopped process registered"
        );
    }
    registered
}

/// Registers the recording of one note; false when there was nothing to do.
async fn recover_one(manager: &CallManager, note_path: &Path) -> Result<bool, String> {
    let text = tokio::fs::read(note_path)
        .await
        .map_err(|e| e.to_string())?;
    let note: RecordingNote =
        serde_json::from_slice(&text).map_err(|e| format!("unreadable note: {e}"))?;
    let wav = PathBuf::from(
        note_path
            .to_str()
            .and_then(|s| s.strip_suffix(".json"))
            .ok_or("note name does not end in .json")?,
    );
    let remove_note = || async {
        if let Err(e) = tokio::fs::remove_file(note_path).await {
            debug!(error = %e, "note already gone");
        }
    };
    if !tokio::fs::try_exists(&wav).await.unwrap_or(false) {
        remove_note().await;
        return Ok(false);
    }
    let store = manager.events.store();
    if store
        .recording_registered(&note.id)
        .await
        .map_err(|e| e.to_string())?
    {
        remove_note().await;
        return Ok(false);
    }
    let path = wav.clone();
    let repaired = tokio::task::spawn_blocking(move || recording::repair(&path))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let Some(file) = repaired else {
        debug!(path = %wav.display(), "recording in use by a live process: left alone");
        return Ok(false);
    };
    let info = note.call_info();
    if store
        .cdr(&note.id)
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        // The process died during the call: its record is written now, ended when
        // the file was last written, reason `error`.
        let ended = tokio::fs::metadata(&wav)
            .await
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        let mut record = CallRecord::new(&info, EndReason::Error, None, ended);
        attach(&mut record, &file);
        manager.events.call_ended(record);
    }
    manager.events.recording_ready(stored(&info, &file));
    info!(call = %note.id, path = %wav.display(), bytes = file.bytes, "recording recovered");
    Ok(true)
}
