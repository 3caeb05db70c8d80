//! What is kept of a finished call (the CDR) and of a finished recording.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::call::registry::{CallInfo, Direction, rfc3339, rfc3339_opt};
use crate::signaling::protocol::EndReason;

/// How the audio went between the legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaMode {
    /// Packets relayed without decoding (both legs share a codec).
    Relay,
    /// Decoded and re-encoded (e.g. Opus <-> G.711).
    Transcode,
}

impl MediaMode {
    /// The stored / wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaMode::Relay => "relay",
            MediaMode::Transcode => "transcode",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<MediaMode> {
        match text {
            "relay" => Some(MediaMode::Relay),
            "transcode" => Some(MediaMode::Transcode),
            _ => None,
        }
    }
}

/// The call detail record of one finished call: what billing, CRM and support need.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    /// Gateway-wide call id (`c-…`), the API's `{id}`.
    pub id: String,
    /// The client's call id within its session.
    pub call_id: String,
    /// The WebSocket session that placed or took the call.
    pub session_id: String,
    /// Correlation id of the call's logs, SIP INVITE and webhooks.
    pub correlation_id: String,
    /// SIP Call-ID of the last SIP leg, if one was created.
    pub sip_call_id: Option<String>,
    /// The authenticated user (`sub`).
    pub user: String,
    /// `outbound` or `inbound`.
    pub direction: Direction,
    /// Caller.
    pub from: String,
    /// Callee (normalised number).
    pub to: String,
    /// The last trunk tried, if any.
    pub trunk: Option<String>,
    /// When the call was requested.
    #[serde(with = "rfc3339")]
    pub started_at: SystemTime,
    /// First 180/183, if any.
    #[serde(with = "rfc3339_opt")]
    pub ringing_at: Option<SystemTime>,
    /// 200 OK, if answered.
    #[serde(with = "rfc3339_opt")]
    pub answered_at: Option<SystemTime>,
    /// When the call ended.
    #[serde(with = "rfc3339")]
    pub ended_at: SystemTime,
    /// Billable time: from answer to end (0 when not answered), milliseconds.
    pub duration_ms: u64,
    /// Final SIP status, if the SIP side gave one.
    pub sip_status: Option<u16>,
    /// Protocol v1 `ended` reason (`hangup`, `busy`, …).
    pub end_reason: String,
    /// `relay` or `transcode`, once media was set up.
    pub mode: Option<MediaMode>,
    /// Codec on the WebRTC leg (`opus`, `PCMU`, …).
    pub browser_codec: Option<String>,
    /// Codec on the SIP leg.
    pub sip_codec: Option<String>,
    /// Estimated mean opinion score (1..5).
    pub mos: Option<f64>,
    /// Interarrival jitter, milliseconds.
    pub jitter_ms: Option<f64>,
    /// Packet loss, percent.
    pub loss_pct: Option<f64>,
    /// Round-trip time, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Recording file on the gateway, if recorded.
    pub recording_path: Option<String>,
    /// Size of the recording, bytes.
    pub recording_bytes: Option<u64>,
    /// Length of the recording, milliseconds.
    pub recording_duration_ms: Option<u64>,
    /// Why a call that should have been recorded was not (`quota`: the recording
    /// disk quota was full; `error`: the file could not be written).
    pub recording_skipped: Option<String>,
}

impl CallRecord {
    /// The record of the call `info` that ended at `ended_at` for `reason`; the
    /// optional fields (media, quality, recording) start empty.
    pub fn new(
        info: &CallInfo,
        reason: EndReason,
        sip_status: Option<u16>,
        ended_at: SystemTime,
    ) -> CallRecord {
        let duration_ms = info
            .answered_at
            .and_then(|a| ended_at.duration_since(a).ok())
            .map(millis)
            .unwrap_or(0);
        CallRecord {
            id: info.id.clone(),
            call_id: info.call_id.clone(),
            session_id: info.session_id.clone(),
            correlation_id: info.correlation_id.clone(),
            sip_call_id: info.sip_call_id.clone(),
            user: info.user.clone(),
            direction: info.direction,
            from: info.from.clone(),
            to: info.to.clone(),
            trunk: info.trunk.clone(),
            started_at: info.started_at,
            ringing_at: info.ringing_at,
            answered_at: info.answered_at,
            ended_at,
            duration_ms,
            sip_status,
            end_reason: reason.as_str().to_string(),
            mode: None,
            browser_codec: None,
            sip_codec: None,
            mos: None,
            jitter_ms: None,
            loss_pct: None,
            rtt_ms: None,
            recording_path: None,
            recording_bytes: None,
            recording_duration_ms: None,
            recording_skipped: None,
        }
    }
}

/// A recording that is complete on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordingInfo {
    /// Recording id, the `{id}` of `GET /v1/recordings/{id}` (the call's id).
    pub id: String,
    /// Correlation id of the call.
    pub correlation_id: String,
    /// The user whose call was recorded: the only user (besides the operator) who
    /// may download it.
    pub user: String,
    /// The file on the gateway (not sent in webhooks).
    #[serde(skip)]
    pub path: String,
    /// Media type of the file, e.g. `audio/wav`.
    pub content_type: String,
    /// Size, bytes.
    pub bytes: u64,
    /// Length, milliseconds.
    pub duration_ms: u64,
    /// The recording's crash-recovery note, deleted once the recording is stored.
    #[serde(skip)]
    pub sidecar: Option<std::path::PathBuf>,
}

/// Milliseconds of a duration, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Unix milliseconds of a time (0 before 1970).
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The time of Unix milliseconds.
pub fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::registry::CallState;

    fn info() -> CallInfo {
        CallInfo {
            id: "c-1".into(),
            call_id: "c1".into(),
            session_id: "s-1".into(),
            user: "alice".into(),
            direction: Direction::Outbound,
            from: "alice".into(),
            to: "+15551234567".into(),
            trunk: Some("carrier-a".into()),
            state: CallState::Answered,
            correlation_id: "corr-1".into(),
            sip_call_id: Some("abc".into()),
            started_at: from_unix_ms(1_000),
            ringing_at: None,
            answered_at: Some(from_unix_ms(3_000)),
        }
    }

    #[test]
    fn duration_counts_from_answer() {
        let r = CallRecord::new(&info(), EndReason::Hangup, Some(200), from_unix_ms(63_500));
        assert_eq!(r.duration_ms, 60_500);
        assert_eq!(r.end_reason, "hangup");
        let mut unanswered = info();
        unanswered.answered_at = None;
        let r = CallRecord::new(&unanswered, EndReason::Busy, Some(486), from_unix_ms(5_000));
        assert_eq!(r.duration_ms, 0);
    }

    #[test]
    fn serialises_times_as_rfc3339_and_direction_lowercase() {
        let r = CallRecord::new(&info(), EndReason::Hangup, None, from_unix_ms(4_000));
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["started_at"], "1970-01-01T00:00:01.000Z");
        assert_eq!(v["direction"], "outbound");
        assert!(v["ringing_at"].is_null());
    }

    #[test]
    fn unix_ms_round_trips() {
        assert_eq!(unix_ms(from_unix_ms(1_234_567)), 1_234_567);
        assert_eq!(MediaMode::parse("relay"), Some(MediaMode::Relay));
    }
}
