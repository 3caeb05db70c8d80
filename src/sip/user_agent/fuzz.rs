//! A fuzzing entry point: a fresh core with one answered call that also takes
//! inbound calls from the peer, fed arbitrary bytes as a datagram and as a TCP
//! stream; inbound calls it admits are answered, then the bytes come again.

use std::sync::Arc;
use std::time::Instant;

use super::{InboundAction, UaConfig, UaEvent, UserAgent};
use crate::sip::transaction::TimerConfig;
use crate::sip::transport::Peer;
use crate::sip::{InviteRequest, TrunkSettings};

/// See [`crate::sip::fuzz_user_agent`].
pub(crate) fn fuzz(bytes: &[u8]) {
    use crate::sip::framer::StreamFramer;
    use crate::sip::transport::Transport;
    let now = Instant::now();
    let peer = Peer::udp(std::net::SocketAddr::from(([10, 0, 0, 2], 5060)));
    let local = Peer::udp(std::net::SocketAddr::from(([10, 0, 0, 1], 5060)));
    let mut ua = UserAgent::new(UaConfig::fixed(
        TimerConfig::default(),
        "fuzz",
        "127.0.0.1:5070".parse().expect("addr"),
    ));
    let request = InviteRequest {
        target: peer.addr,
        target_host: "trunk.example".into(),
        to_user: "+15551234567".into(),
        from_user: "alice".into(),
        sdp: "v=0\r\n".into(),
        correlation_id: "fuzz".into(),
        trunk: TrunkSettings {
            credentials: Some(crate::sip::Credentials {
                username: "u".into(),
                password: "p".into(),
            }),
            ..TrunkSettings::default()
        },
        answerer: Arc::new(|offer: &str| Ok(offer.to_string())),
        ..InviteRequest::default()
    };
    ua.set_accept_inbound(true);
    let inbound = TrunkSettings {
        name: "fuzz-in".into(),
        inbound_from: crate::sip::parse_net("10.0.0.0/8").into_iter().collect(),
        ..TrunkSettings::default()
    };
    ua.set_inbound_trunk(inbound, vec![peer.addr]);
    if ua
        .start_call(now, "fuzz-call".into(), request, local, peer)
        .is_err()
    {
        return;
    }
    // Answer the INVITE so the dialog exists (Call-ID fuzz-call, our tag unknown to
    // the input, which still reaches the dialog code through the Call-ID).
    let mut invite = None;
    while let Some(t) = ua.poll_transmit() {
        invite.get_or_insert(t.payload);
    }
    let mut input = bytes.to_vec();
    if let Some(invite) = invite.and_then(|i| String::from_utf8(i).ok()) {
        // Seeds write `LOCALTAG` where our (random) From tag goes, to reach the dialog.
        if let Some(tag) = invite
            .lines()
            .find(|l| l.starts_with("From:"))
            .and_then(|l| l.split("tag=").nth(1))
        {
            input = replace_all(&input, b"LOCALTAG", tag.trim().as_bytes());
        }
        let line = |name: &str| {
            invite
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_default()
                .to_string()
        };
        let ok = format!(
            "SIP/2.0 200 OK\r\n{}\r\n{}\r\n{};tag=peer\r\n{}\r\n{}\r\nContact: <sip:gw@10.0.0.2>\r\nSession-Expires: 90;refresher=uas\r\nContent-Length: 0\r\n\r\n",
            line("Via:"),
            line("From:"),
            line("To:"),
            line("Call-ID:"),
            line("CSeq:")
        );
        ua.handle_message(now, peer, ok.as_bytes());
    }
    ua.handle_message(now, peer, &input);
    let mut admitted = false;
    while let Some(event) = ua.poll_event() {
        if let UaEvent::Incoming(info) = event {
            admitted = true;
            let answerer: crate::sip::SdpAnswerer = Arc::new(|offer: &str| Ok(offer.to_string()));
            ua.respond(
                now,
                &info.id,
                InboundAction::Answer("v=0\r\n".into(), answerer),
            );
        }
    }
    if admitted {
        ua.handle_message(now, peer, &input);
    }
    let mut framer = StreamFramer::default();
    framer.push(&input);
    let tcp = peer.with_transport(Transport::Tcp);
    while let Ok(Some(message)) = framer.next_message() {
        ua.handle_message(now, tcp, &message);
    }
    ua.handle_timeout(now + std::time::Duration::from_secs(40));
    while ua.poll_transmit().is_some() {}
    while ua.poll_event().is_some() {}
}

/// `haystack` with every `needle` replaced by `with`.
fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}
