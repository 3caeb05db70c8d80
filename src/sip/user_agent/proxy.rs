//! Stateless forwarding of an inbound INVITE to another instance (RFC 3261 §16.11),
//! sans-IO. The INVITE goes on with our Via on top (its branch derived from the
//! incoming one, so a retransmission, the CANCEL and the ACK of a non-2xx get the
//! same branch) and Max-Forwards decremented; responses come back through us, lose
//! our Via and follow the next one. No Record-Route: the trunk talks to the other
//! instance directly from its 2xx on (its Contact).
//!
//! The only state is the route of each forwarded INVITE (incoming branch and
//! sent-by → target), so that its retransmissions, CANCEL and non-2xx ACK, whose
//! Request-URI is the DID, reach the same instance, and so that a response is only
//! relayed for a request we forwarded.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rsip::headers::UntypedHeader;
use rsip::{Header, Request, Response};

use super::forwarded::{HEADER as FORWARDED, Origin};
use crate::sip::message::build::{self, reason_phrase, stamp_via};
use crate::sip::message::{branch, split_elements, via_peer};
use crate::sip::transport::Peer;

/// Prefix of the branches of the requests we forward.
pub(crate) const BRANCH_PREFIX: &str = "z9hG4bKcbpx";
/// How long a forwarded INVITE's route is kept (ringing, then the non-2xx ACK).
const ROUTE_LIFETIME: Duration = Duration::from_secs(360);
/// Most routes held.
const MAX_ROUTES: usize = 4096;

/// `(branch, sent-by)` of the incoming INVITE.
pub(crate) type RouteKey = (String, String);

/// Where a forwarded INVITE went.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route {
    /// The other instance.
    pub target: Peer,
    /// Our address in the Via we add.
    pub local: Peer,
    /// Who sent the INVITE, as our forwarding header vouches (for retransmissions).
    pub origin: Origin,
    /// When the route is forgotten.
    expires: Instant,
}

/// Why a request was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ForwardError {
    /// Max-Forwards reached 0 (answer 483).
    #[error("Max-Forwards exhausted")]
    TooManyHops,
}

/// The routes of the INVITEs we forwarded.
#[derive(Debug)]
pub(crate) struct Routes {
    /// Routes by incoming branch and sent-by.
    routes: HashMap<RouteKey, Route>,
    /// Salt of the derived branches.
    salt: u64,
}

impl Default for Routes {
    fn default() -> Self {
        Self {
            routes: HashMap::new(),
            salt: rand::random(),
        }
    }
}

impl Routes {
    /// Remembers where the INVITE with `key` went.
    pub(crate) fn insert(
        &mut self,
        now: Instant,
        key: RouteKey,
        target: Peer,
        local: Peer,
        origin: Origin,
    ) {
        self.routes.retain(|_, r| r.expires > now);
        if self.routes.len() >= MAX_ROUTES
            && let Some(oldest) = self
                .routes
                .iter()
                .min_by_key(|(_, r)| r.expires)
                .map(|(k, _)| k.clone())
        {
            self.routes.remove(&oldest);
        }
        let route = Route {
            target,
            local,
            origin,
            expires: now + ROUTE_LIFETIME,
        };
        self.routes.insert(key, route);
    }

    /// The route of a forwarded INVITE, if it is still held.
    pub(crate) fn get(&self, now: Instant, key: &RouteKey) -> Option<Route> {
        self.routes.get(key).filter(|r| r.expires > now).copied()
    }

    /// The branch our Via carries for requests with `key` (the same every time).
    pub(crate) fn branch_for(&self, key: &RouteKey) -> String {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.salt.hash(&mut hasher);
        key.hash(&mut hasher);
        format!("{BRANCH_PREFIX}{:016x}", hasher.finish())
    }

    /// Where a response to a request we forwarded goes, with our Via removed; `None`
    /// if its top Via is not one of our forwarding branches for a held route.
    pub(crate) fn relay_response(
        &self,
        now: Instant,
        response: &Response,
        reason: &str,
    ) -> Option<(Peer, Response)> {
        let ours = branch(response).filter(|b| b.starts_with(BRANCH_PREFIX))?;
        let mut headers = Vec::new();
        let mut removed = false;
        for header in response.headers.iter() {
            match header {
                Header::Via(via) if !removed => {
                    removed = true;
                    let rest = split_elements(via.value())[1..].join(", ");
                    if !rest.is_empty() {
                        headers.push(Header::Via(rest.into()));
                    }
                }
                h => headers.push(h.clone()),
            }
        }
        let next = headers.iter().find_map(|h| match h {
            Header::Via(v) => Some(v.value().to_string()),
            _ => None,
        })?;
        let next_branch = crate::sip::message::header_param(&next, "branch")?;
        let key = (next_branch, sent_by(&next));
        if self.get(now, &key).is_none() || self.branch_for(&key) != ours {
            return None;
        }
        let dest = via_peer(&next)?;
        let code = response.status_code.code();
        let phrase = if reason.trim().is_empty() {
            reason_phrase(code).to_string()
        } else {
            reason.to_string()
        };
        let relayed = Response {
            status_code: rsip::StatusCode::Other(code, phrase),
            version: response.version.clone(),
            headers: headers.into(),
            body: response.body.clone(),
        };
        Some((dest, relayed))
    }
}

/// The sent-by of a Via value's first element, lowercase (as in server keys).
fn sent_by(via: &str) -> String {
    crate::sip::message::first_element(via)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// `request` (from `source`) as we forward it: our Via with `branch` on top, the
/// previous top Via stamped with `received`/`rport`, Max-Forwards decremented (70
/// added if absent, §16.6), any `X-Callbridge-Forwarded` it came with removed and
/// `stamp` (ours) added.
pub(crate) fn forward_request(
    request: &Request,
    source: Peer,
    local: Peer,
    branch: &str,
    stamp: Option<Header>,
) -> Result<Request, ForwardError> {
    let mut headers = vec![Header::Via(build::via(local, branch).into())];
    let mut first_via = true;
    let mut max_forwards = false;
    for header in request.headers.iter() {
        match header {
            Header::Via(via) if first_via => {
                first_via = false;
                headers.push(Header::Via(stamp_via(via.value(), source.addr).into()));
            }
            Header::MaxForwards(value) => {
                max_forwards = true;
                let hops: u32 = value.value().trim().parse().unwrap_or(70);
                if hops == 0 {
                    return Err(ForwardError::TooManyHops);
                }
                headers.push(Header::MaxForwards((hops - 1).to_string().into()));
            }
            Header::Other(name, _) if name.eq_ignore_ascii_case(FORWARDED) => {}
            h => headers.push(h.clone()),
        }
    }
    if !max_forwards {
        headers.push(Header::MaxForwards("70".into()));
    }
    headers.extend(stamp);
    Ok(Request {
        method: request.method,
        uri: request.uri.clone(),
        version: request.version.clone(),
        headers: headers.into(),
        body: request.body.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Incoming, parse};

    fn invite(max_forwards: &str) -> Request {
        let raw = format!(
            "INVITE sip:+1555@gw SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKt1;rport\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:+1555@gw>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{max_forwards}Contact: <sip:a@10.0.0.2>\r\nContent-Length: 0\r\n\r\n"
        );
        match parse(raw.as_bytes()) {
            Ok(Incoming::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn forwards_with_our_via_and_one_hop_less() {
        let source = Peer::udp("10.0.0.2:5060".parse().unwrap());
        let local = Peer::udp("10.0.0.5:5060".parse().unwrap());
        let out = forward_request(
            &invite("Max-Forwards: 5\r\nX-Callbridge-Forwarded: forged\r\n"),
            source,
            local,
            "z9hG4bKcbpx1",
            Some(Header::Other(FORWARDED.into(), "ours".into())),
        )
        .unwrap()
        .to_string();
        let vias: Vec<&str> = out.lines().filter(|l| l.starts_with("Via:")).collect();
        assert_eq!(
            vias,
            [
                "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKcbpx1;rport",
                "Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKt1;received=10.0.0.2;rport=5060"
            ]
        );
        assert!(out.contains("Max-Forwards: 4\r\n"), "{out}");
        assert!(
            !out.contains("forged"),
            "an incoming header is not passed on: {out}"
        );
        assert!(out.contains("X-Callbridge-Forwarded: ours\r\n"), "{out}");
        assert_eq!(
            forward_request(&invite("Max-Forwards: 0\r\n"), source, local, "b", None).unwrap_err(),
            ForwardError::TooManyHops
        );
        let added = forward_request(&invite(""), source, local, "b", None)
            .unwrap()
            .to_string();
        assert!(added.contains("Max-Forwards: 70\r\n"));
    }

    #[test]
    fn relays_responses_of_held_routes_only() {
        let now = Instant::now();
        let mut routes = Routes::default();
        let key: RouteKey = ("z9hG4bKt1".into(), "10.0.0.2:5060".into());
        let ours = routes.branch_for(&key);
        assert_eq!(ours, routes.branch_for(&key), "stable");
        let response = |branch: &str| {
            let raw = format!(
                "SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch={branch};rport=5060\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKt1;received=10.0.0.2;rport=5999\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:+1555@gw>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            );
            match parse(raw.as_bytes()) {
                Ok(Incoming::Response(r, _)) => r,
                other => panic!("{other:?}"),
            }
        };
        assert!(
            routes
                .relay_response(now, &response(&ours), "Busy Here")
                .is_none(),
            "no route yet"
        );
        let target = Peer::udp("10.0.0.6:5060".parse().unwrap());
        let origin = Origin {
            source: target,
            digest_checked: false,
        };
        routes.insert(now, key, target, target, origin);
        let (dest, relayed) = routes
            .relay_response(now, &response(&ours), "Busy Here")
            .unwrap();
        assert_eq!(dest.addr.to_string(), "10.0.0.2:5999");
        let text = relayed.to_string();
        assert!(text.starts_with("SIP/2.0 486 Busy Here\r\n"), "{text}");
        assert_eq!(text.matches("Via:").count(), 1, "{text}");
        assert!(
            routes
                .relay_response(now, &response("z9hG4bKcbpxforged"), "")
                .is_none()
        );
        let later = now + ROUTE_LIFETIME;
        assert!(
            routes.relay_response(later, &response(&ours), "").is_none(),
            "expired"
        );
    }
}
