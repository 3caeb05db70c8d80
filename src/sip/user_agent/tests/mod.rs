//! The user agent core driven with fake time and a scripted peer (no sockets):
//! the harness, and one file per concern.

mod basic;
mod credentials;
mod dialog_source;
mod inbound;
mod midcall;
mod proxy;
mod transfer;
mod trunks;

pub(super) use super::*;
pub(super) use crate::sip::TrunkSettings;
pub(super) use std::time::{Duration, Instant};

pub(super) const PEER: &str = "10.0.0.2:5060";
pub(super) const LOCAL: &str = "127.0.0.1:5070";

pub(super) fn base_request() -> InviteRequest {
    InviteRequest {
        target: PEER.parse().unwrap(),
        target_host: "trunk.example".into(),
        to_user: "+15551234567".into(),
        from_user: "alice".into(),
        sdp: "v=0\r\n".into(),
        correlation_id: "corr-1".into(),
        trunk: TrunkSettings {
            session_timer: crate::sip::SessionTimerSettings {
                session_expires: 0,
                min_se: 90,
            },
            reliable_provisional: crate::sip::RelPolicy::Disabled,
            ..TrunkSettings::default()
        },
        ..InviteRequest::default()
    }
}

pub(super) struct Harness {
    pub(super) ua: UserAgent,
    pub(super) now: Instant,
    pub(super) sent: Vec<Transmit>,
    pub(super) events: Vec<SipCallEvent>,
    pub(super) trunk_events: Vec<(String, crate::sip::TrunkStatus)>,
    pub(super) incoming: Vec<IncomingInfo>,
    pub(super) inbound_events: Vec<(String, InboundSipEvent)>,
}

impl Harness {
    pub(super) fn new() -> Self {
        Self {
            ua: UserAgent::new(UaConfig::fixed(
                TimerConfig::default(),
                "callbridge-test",
                "127.0.0.1:5070".parse().expect("addr"),
            )),
            now: Instant::now(),
            sent: Vec::new(),
            events: Vec::new(),
            trunk_events: Vec::new(),
            incoming: Vec::new(),
            inbound_events: Vec::new(),
        }
    }

    pub(super) fn call(&mut self) {
        self.call_with(base_request());
    }

    pub(super) fn call_with(&mut self, request: InviteRequest) {
        let transport = request.trunk.transport;
        let local = Peer::udp(LOCAL.parse().unwrap()).with_transport(transport);
        let target = Peer::udp(request.target).with_transport(transport);
        self.ua
            .start_call(self.now, "cid-1".into(), request, local, target)
            .unwrap();
        self.drain();
    }

    pub(super) fn drain(&mut self) {
        while let Some(t) = self.ua.poll_transmit() {
            self.sent.push(t);
        }
        while let Some(e) = self.ua.poll_event() {
            match e {
                UaEvent::Call(id, e) => {
                    assert_eq!(id, "cid-1");
                    self.events.push(e);
                }
                UaEvent::Trunk(name, status) => self.trunk_events.push((name, status)),
                UaEvent::Incoming(info) => self.incoming.push(*info),
                UaEvent::Inbound(id, e) => self.inbound_events.push((id, e)),
            }
        }
    }

    pub(super) fn peer_sends(&mut self, text: &str) {
        self.ua
            .handle_message(self.now, Peer::udp(PEER.parse().unwrap()), text.as_bytes());
        self.drain();
    }

    /// `text` arrives from `source` instead of the trunk at PEER.
    pub(super) fn sends_from(&mut self, source: &str, text: &str) {
        self.ua.handle_message(
            self.now,
            Peer::udp(source.parse().unwrap()),
            text.as_bytes(),
        );
        self.drain();
    }

    pub(super) fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        while let Some(at) = self.ua.poll_timeout().filter(|at| *at <= until) {
            self.now = at;
            self.ua.handle_timeout(at);
            self.drain();
        }
        self.now = until;
    }

    /// Sent datagrams as text, cleared.
    pub(super) fn take_sent(&mut self) -> Vec<String> {
        self.sent
            .drain(..)
            .map(|t| String::from_utf8(t.payload).unwrap())
            .collect()
    }

    pub(super) fn take_events(&mut self) -> Vec<SipCallEvent> {
        std::mem::take(&mut self.events)
    }
}

pub(super) fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find_map(|l| {
            l.split_once(": ")
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        })
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {name} in {msg}"))
}

/// The peer's response to one of our requests.
pub(super) fn reply(request: &str, code: u16, reason: &str, extra: &str) -> String {
    let to = header(request, "To");
    let to = if to.contains("tag=") {
        to.to_string()
    } else {
        format!("{to};tag=peer1")
    };
    format!(
        "SIP/2.0 {code} {reason}\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
        header(request, "Via"),
        header(request, "From"),
        header(request, "Call-ID"),
        header(request, "CSeq"),
    )
}

pub(super) const CONTACT: &str = "Contact: <sip:gw@10.0.0.2:5060>\r\n";

pub(super) fn answered() -> (Harness, String) {
    let mut h = Harness::new();
    h.call();
    let invite = h.take_sent().remove(0);
    h.peer_sends(&reply(&invite, 180, "Ringing", ""));
    h.peer_sends(&reply(&invite, 200, "OK", CONTACT));
    assert_eq!(
        h.take_events()[1],
        SipCallEvent::Answered { sdp: String::new() }
    );
    (h, invite)
}

pub(super) fn peer_request(method: &str, to_tag: &str, branch: &str, seq: u32) -> String {
    format!(
        "{method} sip:alice@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch={branch};rport\r\nFrom: <sip:+15551234567@trunk.example>;tag=peer1\r\nTo: <sip:alice@127.0.0.1>{to_tag}\r\nCall-ID: cid-1\r\nCSeq: {seq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// `msg` (built with `Content-Length: 0`) with a body.
pub(super) fn with_body(msg: &str, content_type: &str, body: &str) -> String {
    msg.replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// SDP with a direction attribute.
pub(super) fn sdp(direction: &str) -> String {
    format!("v=0\r\nm=audio 4000 RTP/AVP 0\r\na={direction}\r\n")
}

/// An answerer that turns sendonly into recvonly and anything else into sendrecv.
pub(super) fn hold_answerer() -> crate::sip::SdpAnswerer {
    std::sync::Arc::new(|offer: &str| {
        if offer.contains("a=sendonly") {
            Ok(sdp("recvonly"))
        } else if offer.contains("refuse") {
            Err("refused".into())
        } else {
            Ok(sdp("sendrecv"))
        }
    })
}

/// A call placed with `request` and answered (180 then 200 with `extra` headers).
pub(super) fn answered_with(request: InviteRequest, extra: &str) -> (Harness, String) {
    let mut h = Harness::new();
    h.call_with(request);
    let invite = h.take_sent().remove(0);
    h.peer_sends(&reply(&invite, 200, "OK", &format!("{CONTACT}{extra}")));
    assert!(matches!(
        h.take_events().last(),
        Some(SipCallEvent::Answered { .. })
    ));
    h.take_sent();
    (h, invite)
}

/// Our From tag in `invite`.
pub(super) fn local_tag(invite: &str) -> String {
    header(invite, "From")
        .split("tag=")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// A request of the peer in the dialog of `invite`.
pub(super) fn in_dialog(method: &str, invite: &str, branch: &str, seq: u32) -> String {
    peer_request(method, &format!(";tag={}", local_tag(invite)), branch, seq)
}

/// The sent messages whose start line begins with `prefix`.
pub(super) fn starting<'a>(sent: &'a [String], prefix: &str) -> Vec<&'a String> {
    sent.iter().filter(|m| m.starts_with(prefix)).collect()
}
