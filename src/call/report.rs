//! What a call reports, shared by the outbound and inbound drivers: protocol `stats`
//! from a quality report, and the call record at the end.

use std::time::SystemTime;

use super::machine::Outcome;
use super::registry::CallInfo;
use crate::events::{CallRecord, MediaMode as RecordMode};
use crate::media::negotiate::MediaMode;
use crate::media::quality::QualityReport;
use crate::signaling::protocol::ServerMessage;

/// Protocol `stats` for `call_id` (rounded for the wire).
pub fn stats_message(call_id: &str, report: &QualityReport) -> ServerMessage {
    let q = &report.overall;
    ServerMessage::Stats {
        call_id: call_id.to_string(),
        mos: (q.mos * 100.0).round() / 100.0,
        jitter_ms: (q.jitter_ms * 10.0).round() / 10.0,
        loss_pct: (q.loss_pct * 100.0).round() / 100.0,
        rtt_ms: q.rtt_ms.map(|r| r.round()).unwrap_or(0.0),
    }
}

/// The record of a finished call: the registry's view plus outcome, media mode and
/// quality (the recording is added by [`super::recordings::finish_call`]).
pub fn call_record(
    info: &CallInfo,
    outcome: &Outcome,
    mode: Option<MediaMode>,
    quality: Option<&QualityReport>,
) -> CallRecord {
    let mut record = CallRecord::new(info, outcome.reason, outcome.sip_status, SystemTime::now());
    if let Some(mode) = mode {
        let (kind, browser, sip) = match mode {
            MediaMode::Relay { browser, sip } => (RecordMode::Relay, browser, sip),
            MediaMode::Transcode { browser, sip } => (RecordMode::Transcode, browser, sip),
        };
        record.mode = Some(kind);
        record.browser_codec = Some(browser.codec.encoding_name().to_string());
        record.sip_codec = Some(sip.codec.encoding_name().to_string());
    }
    if let Some(q) = quality {
        record.mos = Some(q.overall.mos);
        record.jitter_ms = Some(q.overall.jitter_ms);
        record.loss_pct = Some(q.overall.loss_pct);
        record.rtt_ms = q.overall.rtt_ms;
    }
    record
}
