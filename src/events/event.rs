//! The webhook event envelope: a unique id (for the receiver's idempotency), the
//! type, the time, the correlation id and the data, frozen as the JSON body that
//! every delivery attempt sends byte for byte.
//!
//! ```json
//! {"id":"ev-…","type":"call.ended","created_at":"2026-…Z",
//!  "correlation_id":"…","data":{…}}
//! ```

use std::time::SystemTime;

use serde::Serialize;

use super::record::{rfc3339, unix_ms};
use crate::signaling::random_id;

/// The kinds of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A call was admitted (INVITE about to go out / came in).
    CallStarted,
    /// The far end is ringing (first 180/183).
    CallRinging,
    /// The call was answered.
    CallAnswered,
    /// The call ended; the data is the call record.
    CallEnded,
    /// A recording is complete and can be downloaded.
    RecordingReady,
    /// Sent by `POST /v1/webhooks/test` to every endpoint, whatever its filter.
    Test,
}

impl EventKind {
    /// The `type` on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::CallStarted => "call.started",
            EventKind::CallRinging => "call.ringing",
            EventKind::CallAnswered => "call.answered",
            EventKind::CallEnded => "call.ended",
            EventKind::RecordingReady => "recording.ready",
            EventKind::Test => "webhook.test",
        }
    }
}

/// One event, ready to be stored and delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique id (`ev-` + 128 random bits).
    pub id: String,
    /// What happened.
    pub kind: EventKind,
    /// When it happened, Unix milliseconds.
    pub created_at_ms: i64,
    /// Correlation id of the call (or request).
    pub correlation_id: String,
    /// The gateway call id the event is about, if any.
    pub call_id: Option<String>,
    /// The JSON body sent to receivers.
    pub body: String,
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    created_at: String,
    correlation_id: &'a str,
    data: &'a T,
}

impl Event {
    /// Builds an event of `kind` at `now` with `data` as its payload.
    pub fn new<T: Serialize>(
        kind: EventKind,
        now: SystemTime,
        correlation_id: &str,
        call_id: Option<&str>,
        data: &T,
    ) -> Event {
        let id = random_id("ev-");
        let envelope = Envelope {
            id: &id,
            kind: kind.as_str(),
            created_at: rfc3339(now),
            correlation_id,
            data,
        };
        // Serialising plain data structs cannot fail; keep the event even if it did.
        let body = serde_json::to_string(&envelope).unwrap_or_else(|e| {
            serde_json::json!({
                "id": id, "type": kind.as_str(), "created_at": rfc3339(now),
                "correlation_id": correlation_id, "data": null, "error": e.to_string(),
            })
            .to_string()
        });
        Event {
            id,
            kind,
            created_at_ms: unix_ms(now),
            correlation_id: correlation_id.to_string(),
            call_id: call_id.map(str::to_string),
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_kind_and_delivery_outcome_is_a_preregistered_label() {
        // Adding a kind fails to compile here until it is listed below.
        let listed = |k: EventKind| match k {
            EventKind::CallStarted
            | EventKind::CallRinging
            | EventKind::CallAnswered
            | EventKind::CallEnded
            | EventKind::RecordingReady
            | EventKind::Test => k.as_str(),
        };
        let kinds: Vec<&str> = [
            EventKind::CallStarted,
            EventKind::CallRinging,
            EventKind::CallAnswered,
            EventKind::CallEnded,
            EventKind::RecordingReady,
            EventKind::Test,
        ]
        .into_iter()
        .map(listed)
        .collect();
        assert_eq!(kinds, crate::metrics::EVENT_KINDS);
        use crate::events::store::AttemptOutcome;
        let outcome = |o: AttemptOutcome| match o {
            AttemptOutcome::Delivered | AttemptOutcome::Failed | AttemptOutcome::Dead => o.as_str(),
        };
        let outcomes: Vec<&str> = [
            AttemptOutcome::Delivered,
            AttemptOutcome::Failed,
            AttemptOutcome::Dead,
        ]
        .into_iter()
        .map(outcome)
        .collect();
        assert_eq!(outcomes, crate::metrics::DELIVERY_OUTCOMES);
    }

    #[test]
    fn envelope_has_id_type_time_correlation_and_data() {
        let e = Event::new(
            EventKind::CallAnswered,
            SystemTime::UNIX_EPOCH,
            "corr",
            Some("c-1"),
            &serde_json::json!({"x": 1}),
        );
        let v: serde_json::Value = serde_json::from_str(&e.body).expect("json");
        assert_eq!(v["id"], e.id.as_str());
        assert_eq!(v["type"], "call.answered");
        assert_eq!(v["created_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["correlation_id"], "corr");
        assert_eq!(v["data"]["x"], 1);
        let other = Event::new(EventKind::Test, SystemTime::UNIX_EPOCH, "c", None, &1);
        assert_ne!(e.id, other.id);
    }
}
