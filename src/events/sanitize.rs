//! Text from peers (SIP Call-IDs, From users, client call ids) made safe to store:
//! every text field of an event, call record or recording passes through [`clean`]
//! before it is queued, so the database never sees a byte it refuses (PostgreSQL
//! rejects NUL in `TEXT`) and no field grows without bound.
//!
//! What is replaced (by U+FFFD, so a reader sees that something was there): control
//! characters (C0 including NUL, DEL, C1), Unicode noncharacters, and the bidi
//! override/isolate controls that make a value display differently from what it is.

use std::borrow::Cow;

use super::record::{CallRecord, RecordingInfo};
use crate::call::registry::CallInfo;

/// Longest id-like field (call ids, correlation ids, SIP Call-ID, user), characters.
pub const MAX_ID: usize = 256;
/// Longest party field (`from`, `to`), characters.
pub const MAX_PARTY: usize = 256;
/// Longest short label (trunk, codec, end reason), characters.
pub const MAX_LABEL: usize = 128;
/// Longest file path, characters.
pub const MAX_PATH: usize = 4096;
/// Longest stored error message, characters.
pub const MAX_ERROR: usize = 2048;

/// Whether `c` is replaced before storing.
fn unsafe_char(c: char) -> bool {
    let n = u32::from(c);
    c.is_control()
        || (0xFDD0..=0xFDEF).contains(&n)
        || (n & 0xFFFE) == 0xFFFE
        || matches!(n, 0x202A..=0x202E | 0x2066..=0x2069)
}

/// `text` with unsafe characters replaced by U+FFFD and cut to `max` characters;
/// borrowed when nothing changes.
pub fn clean(text: &str, max: usize) -> Cow<'_, str> {
    let mut chars = 0;
    let fits = text.chars().all(|c| {
        chars += 1;
        chars <= max && !unsafe_char(c)
    });
    if fits {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .take(max)
            .map(|c| if unsafe_char(c) { '\u{FFFD}' } else { c })
            .collect(),
    )
}

/// Cleans `field` in place.
fn fix(field: &mut String, max: usize) {
    if let Cow::Owned(clean) = clean(field, max) {
        *field = clean;
    }
}

/// Cleans an optional field in place.
fn fix_opt(field: &mut Option<String>, max: usize) {
    if let Some(value) = field {
        fix(value, max);
    }
}

/// A call record whose text fields are safe to store; reports whether any changed.
pub fn call_record(record: &mut CallRecord) -> bool {
    let before = record.clone();
    fix(&mut record.id, MAX_ID);
    fix(&mut record.call_id, MAX_ID);
    fix(&mut record.session_id, MAX_ID);
    fix(&mut record.correlation_id, MAX_ID);
    fix_opt(&mut record.sip_call_id, MAX_ID);
    fix(&mut record.user, MAX_ID);
    fix(&mut record.from, MAX_PARTY);
    fix(&mut record.to, MAX_PARTY);
    fix_opt(&mut record.trunk, MAX_LABEL);
    fix(&mut record.end_reason, MAX_LABEL);
    fix_opt(&mut record.browser_codec, MAX_LABEL);
    fix_opt(&mut record.sip_codec, MAX_LABEL);
    fix_opt(&mut record.recording_path, MAX_PATH);
    fix_opt(&mut record.recording_skipped, MAX_LABEL);
    *record != before
}

/// A call's registry view whose text fields are safe to store.
pub fn call_info(info: &mut CallInfo) -> bool {
    let before = info.clone();
    fix(&mut info.id, MAX_ID);
    fix(&mut info.call_id, MAX_ID);
    fix(&mut info.session_id, MAX_ID);
    fix(&mut info.user, MAX_ID);
    fix(&mut info.from, MAX_PARTY);
    fix(&mut info.to, MAX_PARTY);
    fix_opt(&mut info.trunk, MAX_LABEL);
    fix(&mut info.correlation_id, MAX_ID);
    fix_opt(&mut info.sip_call_id, MAX_ID);
    *info != before
}

/// A recording whose text fields are safe to store.
pub fn recording(recording: &mut RecordingInfo) -> bool {
    let before = recording.clone();
    fix(&mut recording.id, MAX_ID);
    fix(&mut recording.correlation_id, MAX_ID);
    fix(&mut recording.user, MAX_ID);
    fix(&mut recording.path, MAX_PATH);
    fix(&mut recording.content_type, MAX_LABEL);
    *recording != before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_and_controls_are_replaced_and_plain_text_is_borrowed() {
        assert!(matches!(clean("abc@host-1", 64), Cow::Borrowed(_)));
        assert_eq!(clean("a\0b", 64), "a\u{FFFD}b");
        assert_eq!(
            clean("x\r\ny\u{1b}[31m", 64),
            "x\u{FFFD}\u{FFFD}y\u{FFFD}[31m"
        );
        assert_eq!(clean("\u{7f}\u{85}", 64), "\u{FFFD}\u{FFFD}");
        assert_eq!(
            clean("\u{FFFE}\u{FDD0}\u{10FFFF}", 64),
            "\u{FFFD}".repeat(3)
        );
        assert_eq!(clean("ab\u{202E}cd", 64), "ab\u{FFFD}cd");
        // Ordinary non-ASCII stays.
        assert_eq!(clean("Zoë 北京 ☎", 64), "Zoë 北京 ☎");
    }

    #[test]
    fn length_is_bounded_in_characters() {
        let long = "é".repeat(1000);
        let cut = clean(&long, MAX_ID);
        assert_eq!(cut.chars().count(), MAX_ID);
        assert_eq!(clean("abc", 3), "abc");
        assert_eq!(clean("abcd", 3), "abc");
    }

    #[test]
    fn records_are_cleaned_field_by_field() {
        use crate::call::registry::{CallState, Direction};
        use crate::signaling::protocol::EndReason;
        let mut info = CallInfo {
            id: "i-1".into(),
            call_id: "i-1".into(),
            session_id: String::new(),
            user: "alice".into(),
            direction: Direction::Inbound,
            from: "+1555\0evil".into(),
            to: "+15550001111".into(),
            trunk: None,
            state: CallState::Ringing,
            correlation_id: "corr".into(),
            sip_call_id: Some(format!("abc\0{}", "x".repeat(5000))),
            started_at: std::time::SystemTime::UNIX_EPOCH,
            ringing_at: None,
            answered_at: None,
        };
        let mut record = CallRecord::new(
            &info,
            EndReason::Rejected,
            Some(603),
            std::time::SystemTime::now(),
        );
        assert!(call_info(&mut info));
        assert_eq!(info.from, "+1555\u{FFFD}evil");
        let sip = info.sip_call_id.as_deref().unwrap_or_default();
        assert!(!sip.contains('\0') && sip.chars().count() == MAX_ID);
        assert!(!call_info(&mut info), "clean input is unchanged");
        assert!(call_record(&mut record));
        assert!(!record.from.contains('\0'));
        assert!(!call_record(&mut record));
    }
}
