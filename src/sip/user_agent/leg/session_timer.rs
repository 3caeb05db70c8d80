//! Session timers (RFC 4028), sans-IO: who refreshes, when to refresh (half the
//! interval) and when an unrefreshed session expires.

use std::time::{Duration, Instant};

use rsip::{Header, Request, Response};

use crate::sip::message::{header_first, header_param, lists_token};

/// Which side sends the refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresher {
    /// We refresh (re-INVITE or UPDATE at half the interval).
    Local,
    /// The peer refreshes; we BYE if it does not in time.
    Remote,
}

/// A running session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionTimer {
    /// Negotiated Session-Expires.
    pub interval: Duration,
    /// Who refreshes.
    pub refresher: Refresher,
    /// Last successful refresh (or session start).
    pub since: Instant,
    /// A refresh of ours is in flight.
    pub refreshing: bool,
}

/// `Session-Expires` value and `refresher` parameter of a message's headers.
fn session_expires(headers: &rsip::Headers) -> Option<(u32, Option<String>)> {
    let value = header_first(headers, "Session-Expires")?;
    let seconds = value.split(';').next()?.trim().parse().ok()?;
    let refresher = header_param(&value, "refresher").map(|r| r.to_ascii_lowercase());
    Some((seconds, refresher))
}

/// The `Min-SE` of a 422 response.
pub(crate) fn min_se(response: &Response) -> Option<u32> {
    header_first(&response.headers, "Min-SE")?
        .split(';')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Headers asking for a session timer of `interval` seconds in a request we send.
pub(crate) fn request_headers(interval: u32, min_se: u32, refresher_uac: bool) -> Vec<Header> {
    let se = if refresher_uac {
        format!("{interval};refresher=uac")
    } else {
        interval.to_string()
    };
    vec![
        Header::Other("Session-Expires".into(), se),
        Header::Other("Min-SE".into(), min_se.to_string()),
    ]
}

impl SessionTimer {
    /// The timer a 2xx to our INVITE, re-INVITE or UPDATE sets up (RFC 4028 §7.2):
    /// none when the 2xx has no Session-Expires.
    pub(crate) fn from_uac_response(now: Instant, response: &Response) -> Option<SessionTimer> {
        let (seconds, refresher) = session_expires(&response.headers)?;
        if seconds == 0 {
            return None;
        }
        Some(SessionTimer {
            interval: Duration::from_secs(u64::from(seconds)),
            refresher: match refresher.as_deref() {
                Some("uas") => Refresher::Remote,
                _ => Refresher::Local,
            },
            since: now,
            refreshing: false,
        })
    }

    /// The timer a refresh request from the peer sets up (RFC 4028 §9), with the
    /// headers of our 2xx; `Err(min_se)` when the interval is too small (answer 422).
    #[allow(clippy::type_complexity)]
    pub(crate) fn from_uas_request(
        now: Instant,
        request: &Request,
        min_se: u32,
    ) -> Result<Option<(SessionTimer, Vec<Header>)>, u32> {
        let Some((seconds, refresher)) = session_expires(&request.headers) else {
            return Ok(None);
        };
        if seconds < min_se {
            return Err(min_se);
        }
        let peer_supports = lists_token(&request.headers, "Supported", "timer");
        let theirs = match refresher.as_deref() {
            Some("uac") => true,
            Some("uas") => false,
            _ => peer_supports,
        };
        let mut headers = vec![Header::Other(
            "Session-Expires".into(),
            format!("{seconds};refresher={}", if theirs { "uac" } else { "uas" }),
        )];
        if peer_supports {
            headers.push(Header::Require("timer".into()));
        }
        let timer = SessionTimer {
            interval: Duration::from_secs(u64::from(seconds)),
            refresher: if theirs {
                Refresher::Remote
            } else {
                Refresher::Local
            },
            since: now,
            refreshing: false,
        };
        Ok(Some((timer, headers)))
    }

    /// When we must send a refresh (half the interval), if we are the refresher.
    pub(crate) fn refresh_at(&self) -> Option<Instant> {
        (self.refresher == Refresher::Local && !self.refreshing)
            .then(|| self.since + self.interval / 2)
    }

    /// When the session expires without a refresh: the interval minus
    /// min(32 s, interval/3) (RFC 4028 §10).
    pub(crate) fn expires_at(&self) -> Instant {
        self.since + self.interval - (self.interval / 3).min(Duration::from_secs(32))
    }

    /// The earliest of the two deadlines.
    pub(crate) fn poll_timeout(&self) -> Instant {
        match self.refresh_at() {
            Some(at) => at.min(self.expires_at()),
            None => self.expires_at(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Incoming, parse};

    fn ok(headers: &str) -> Response {
        let raw = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{headers}Content-Length: 0\r\n\r\n"
        );
        match parse(raw.as_bytes()) {
            Ok(Incoming::Response(r, _)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn reinvite(headers: &str) -> Request {
        let raw = format!(
            "INVITE sip:a@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:b@h>;tag=2\r\nTo: <sip:a@h>;tag=1\r\nCall-ID: c\r\nCSeq: 5 INVITE\r\n{headers}Content-Length: 0\r\n\r\n"
        );
        match parse(raw.as_bytes()) {
            Ok(Incoming::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn uac_refreshes_at_half_and_expires_before_the_end() {
        let now = Instant::now();
        let t = SessionTimer::from_uac_response(now, &ok("Session-Expires: 90;refresher=uac\r\n"))
            .unwrap();
        assert_eq!(t.refresher, Refresher::Local);
        assert_eq!(t.refresh_at(), Some(now + Duration::from_secs(45)));
        assert_eq!(t.expires_at(), now + Duration::from_secs(60));
        let t = SessionTimer::from_uac_response(now, &ok("x: 1800;refresher=uas\r\n")).unwrap();
        assert_eq!(t.refresher, Refresher::Remote);
        assert_eq!(t.refresh_at(), None);
        assert_eq!(t.poll_timeout(), now + Duration::from_secs(1768));
        assert!(SessionTimer::from_uac_response(now, &ok("")).is_none());
    }

    #[test]
    fn a_session_interval_at_u32_max_or_beyond_is_safe() {
        let now = Instant::now();
        let t =
            SessionTimer::from_uac_response(now, &ok("Session-Expires: 4294967295\r\n")).unwrap();
        assert_eq!(t.interval, Duration::from_secs(u64::from(u32::MAX)));
        assert!(t.expires_at() > now && t.refresh_at().is_some_and(|r| r > now));
        assert!(t.poll_timeout() > now);
        let (t, _) =
            SessionTimer::from_uas_request(now, &reinvite("Session-Expires: 4294967295\r\n"), 90)
                .unwrap()
                .unwrap();
        assert!(t.poll_timeout() > now);
        // One past u32::MAX is no number: no session timer, no panic.
        assert!(
            SessionTimer::from_uac_response(now, &ok("Session-Expires: 4294967296\r\n")).is_none()
        );
    }

    #[test]
    fn uas_honours_the_requested_refresher_and_refuses_small_intervals() {
        let now = Instant::now();
        let (t, headers) = SessionTimer::from_uas_request(
            now,
            &reinvite("Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n"),
            90,
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.refresher, Refresher::Remote);
        let text: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
        assert_eq!(
            text,
            vec!["Session-Expires: 120;refresher=uac", "Require: timer"]
        );
        let (t, headers) =
            SessionTimer::from_uas_request(now, &reinvite("Session-Expires: 300\r\n"), 90)
                .unwrap()
                .unwrap();
        assert_eq!(
            t.refresher,
            Refresher::Local,
            "no timer support: we refresh"
        );
        assert_eq!(headers.len(), 1);
        assert_eq!(
            SessionTimer::from_uas_request(now, &reinvite("Session-Expires: 30\r\n"), 90),
            Err(90)
        );
        assert_eq!(
            SessionTimer::from_uas_request(now, &reinvite(""), 90),
            Ok(None)
        );
    }

    #[test]
    fn reads_min_se_of_a_422() {
        assert_eq!(min_se(&ok("Min-SE: 600\r\n")), Some(600));
        assert_eq!(
            request_headers(1800, 90, false)
                .iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>(),
            vec!["Session-Expires: 1800", "Min-SE: 90"]
        );
    }
}
