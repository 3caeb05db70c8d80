//! Call setup and teardown, refusals and robustness.

use super::*;
#[test]
fn invite_carries_every_required_header() {
    let mut h = Harness::new();
    h.call();
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    let inv = &sent[0];
    assert!(
        inv.starts_with("INVITE sip:+15551234567@trunk.example SIP/2.0\r\n"),
        "{inv}"
    );
    assert!(header(inv, "Via").starts_with("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK"));
    assert!(header(inv, "Via").ends_with(";rport"));
    assert!(header(inv, "From").starts_with("<sip:alice@127.0.0.1>;tag="));
    assert_eq!(header(inv, "To"), "<sip:+15551234567@trunk.example>");
    assert_eq!(header(inv, "Contact"), "<sip:alice@127.0.0.1:5070>");
    assert_eq!(header(inv, "Max-Forwards"), "70");
    assert_eq!(header(inv, "CSeq"), "1 INVITE");
    assert_eq!(header(inv, "Call-ID"), "cid-1");
    assert_eq!(header(inv, "User-Agent"), "callbridge-test");
    assert_eq!(header(inv, "X-Correlation-ID"), "corr-1");
    assert_eq!(header(inv, "Content-Type"), "application/sdp");
    assert_eq!(header(inv, "Content-Length"), "5");
    assert!(header(inv, "Allow").contains("BYE"));
    assert!(inv.ends_with("\r\n\r\nv=0\r\n"));
}

/// A request through a trunk with the account `acct` at `trunk.example:5080`.
fn account_request() -> InviteRequest {
    let mut request = base_request();
    request.target_host = "trunk.example:5080".into();
    request.trunk.host = "trunk.example".into();
    request.trunk.port = 5080;
    request.trunk.credentials = Some(crate::sip::auth::Credentials {
        username: "acct".into(),
        password: "pw".into(),
    });
    request
}

#[test]
fn a_trunk_with_an_account_gets_it_in_from_and_the_caller_in_p_asserted_identity() {
    let mut h = Harness::new();
    let mut request = account_request();
    request.asserted_identity = Some("+15550009999".into());
    h.call_with(request);
    let inv = h.take_sent().remove(0);
    assert!(
        inv.starts_with("INVITE sip:+15551234567@trunk.example:5080 SIP/2.0\r\n"),
        "{inv}"
    );
    assert!(
        header(inv.as_str(), "From").starts_with("<sip:acct@trunk.example:5080>;tag="),
        "{inv}"
    );
    assert_eq!(header(&inv, "Contact"), "<sip:acct@127.0.0.1:5070>");
    assert_eq!(
        header(&inv, "P-Asserted-Identity"),
        "<sip:+15550009999@trunk.example:5080>"
    );
    assert!(!inv.contains("Remote-Party-ID"), "pai only by default");

    // Without a caller id, the caller's user (which From no longer shows) is asserted.
    let mut h = Harness::new();
    h.call_with(account_request());
    let inv = h.take_sent().remove(0);
    assert_eq!(
        header(&inv, "P-Asserted-Identity"),
        "<sip:alice@trunk.example:5080>"
    );
}

#[test]
fn caller_id_headers_and_privacy_follow_the_trunk() {
    let mut h = Harness::new();
    let mut request = account_request();
    request.asserted_identity = Some("+15550009999".into());
    request.privacy = true;
    request.trunk.caller_id_headers = crate::sip::CallerIdHeaders {
        pai: false,
        rpid: true,
    };
    request.trunk.from_domain = Some("carrier.example".into());
    h.call_with(request);
    let inv = h.take_sent().remove(0);
    assert!(
        header(&inv, "From").starts_with("<sip:acct@carrier.example>;tag="),
        "the account stays in From with privacy: {inv}"
    );
    assert_eq!(header(&inv, "Privacy"), "id");
    assert!(!inv.contains("P-Asserted-Identity"), "{inv}");
    assert_eq!(
        header(&inv, "Remote-Party-ID"),
        "<sip:+15550009999@trunk.example:5080>;party=calling;screen=yes;privacy=full"
    );

    // `none`: no caller id header; a trunk without an account keeps today's From.
    let mut h = Harness::new();
    let mut request = base_request();
    request.asserted_identity = Some("+15550009999".into());
    request.trunk.caller_id_headers = crate::sip::CallerIdHeaders {
        pai: false,
        rpid: false,
    };
    request.trunk.from_domain = Some("gw.example".into());
    h.call_with(request);
    let inv = h.take_sent().remove(0);
    assert!(header(&inv, "From").starts_with("<sip:alice@gw.example>;tag="));
    assert!(
        !inv.contains("P-Asserted-Identity") && !inv.contains("Remote-Party-ID"),
        "{inv}"
    );
}

#[test]
fn an_account_or_from_domain_that_would_break_the_header_is_refused() {
    let mut request = account_request();
    request.trunk.from_user = Some("acct>\r\nX-Injected: 1".into());
    assert!(validate(&request).is_err());
    let mut request = account_request();
    request.trunk.from_domain = Some("carrier.example>;x".into());
    assert!(validate(&request).is_err());
    assert!(validate(&account_request()).is_ok());
}

#[test]
fn provisional_events_carry_early_sdp() {
    let mut h = Harness::new();
    h.call();
    let invite = h.take_sent().remove(0);
    h.peer_sends(&reply(&invite, 100, "Trying", ""));
    let early = reply(
        &invite,
        183,
        "Session Progress",
        "Content-Type: application/sdp\r\n",
    )
    .replace(
        "Content-Length: 0\r\n\r\n",
        "Content-Length: 4\r\n\r\nv=0\n",
    );
    h.peer_sends(&early);
    h.peer_sends(&reply(&invite, 180, "Ringing", ""));
    assert_eq!(
        h.take_events(),
        vec![
            SipCallEvent::Progress {
                sdp: Some("v=0\n".into())
            },
            SipCallEvent::Ringing { sdp: None },
        ]
    );
}

#[test]
fn answer_acks_and_acks_again_on_retransmitted_200() {
    let (mut h, invite) = answered();
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].starts_with("ACK sip:gw@10.0.0.2:5060 SIP/2.0\r\n"),
        "{}",
        sent[0]
    );
    assert_eq!(header(&sent[0], "CSeq"), "1 ACK");
    assert_ne!(
        header(&sent[0], "Via"),
        header(&invite, "Via"),
        "2xx ACK has its own branch"
    );
    h.peer_sends(&reply(&invite, 200, "OK", CONTACT));
    let again = h.take_sent();
    assert_eq!(again, sent, "same ACK for the retransmitted 200");
    assert!(h.take_events().is_empty());
}

#[test]
fn forked_2xx_is_acked_and_byed_without_disturbing_the_call() {
    let (mut h, invite) = answered();
    h.take_sent();
    let fork = reply(&invite, 200, "OK", CONTACT).replace("tag=peer1", "tag=peer2");
    h.peer_sends(&fork);
    let sent = h.take_sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[0].starts_with("ACK ") && header(&sent[0], "To").ends_with("tag=peer2"));
    assert!(sent[1].starts_with("BYE ") && header(&sent[1], "To").ends_with("tag=peer2"));
    h.peer_sends(&fork);
    assert_eq!(
        h.take_sent(),
        vec![sent[0].clone()],
        "same ACK for its retransmission"
    );
    h.peer_sends(&reply(&sent[1], 200, "OK", ""));
    assert!(h.take_events().is_empty(), "the kept dialog is untouched");
    h.ua.hangup(h.now, "cid-1");
    h.drain();
    let bye = h.take_sent().remove(0);
    assert!(header(&bye, "To").ends_with("tag=peer1"), "{bye}");
}

#[test]
fn hangup_after_answer_sends_bye_then_terminated() {
    let (mut h, _) = answered();
    h.take_sent();
    h.ua.hangup(h.now, "cid-1");
    h.drain();
    let bye = h.take_sent().remove(0);
    assert!(bye.starts_with("BYE sip:gw@10.0.0.2:5060 SIP/2.0"), "{bye}");
    assert_eq!(header(&bye, "CSeq"), "2 BYE");
    assert!(header(&bye, "To").ends_with(";tag=peer1"));
    h.peer_sends(&reply(&bye, 200, "OK", ""));
    assert_eq!(h.take_events(), vec![SipCallEvent::Terminated]);
    h.ua.hangup(h.now, "cid-1");
    h.drain();
    assert!(h.take_sent().is_empty(), "hangup is idempotent");
}

#[test]
fn bye_timeout_still_terminates() {
    let (mut h, _) = answered();
    h.ua.hangup(h.now, "cid-1");
    h.advance(Duration::from_secs(40));
    assert_eq!(h.take_events(), vec![SipCallEvent::Terminated]);
    assert_eq!(h.ua.call_count(), 0);
}

#[test]
fn busy_is_acked_and_reported_with_its_reason() {
    let mut h = Harness::new();
    h.call();
    let invite = h.take_sent().remove(0);
    h.peer_sends(&reply(&invite, 486, "Busy Here", ""));
    let ack = h.take_sent().remove(0);
    assert!(ack.starts_with("ACK sip:+15551234567@trunk.example SIP/2.0"));
    assert_eq!(
        header(&ack, "Via"),
        header(&invite, "Via"),
        "same branch as INVITE"
    );
    assert_eq!(
        h.take_events(),
        vec![SipCallEvent::Failed {
            status: 486,
            reason: "Busy Here".into()
        }]
    );
    h.advance(Duration::from_secs(33));
    assert_eq!(h.ua.call_count(), 0, "gone after Timer D");
}

#[test]
fn cancel_waits_for_provisional_then_487_terminates() {
    let mut h = Harness::new();
    h.call();
    let invite = h.take_sent().remove(0);
    h.ua.hangup(h.now, "cid-1");
    h.drain();
    assert!(h.take_sent().is_empty(), "no CANCEL before a provisional");
    h.peer_sends(&reply(&invite, 180, "Ringing", ""));
    let cancel = h.take_sent().remove(0);
    assert!(cancel.starts_with("CANCEL sip:+15551234567@trunk.example SIP/2.0"));
    assert_eq!(header(&cancel, "Via"), header(&invite, "Via"));
    assert_eq!(header(&cancel, "CSeq"), "1 CANCEL");
    assert_eq!(header(&cancel, "To"), header(&invite, "To"));
    h.peer_sends(&reply(&cancel, 200, "OK", ""));
    h.peer_sends(&reply(&invite, 487, "Request Terminated", ""));
    let ack = h.take_sent().remove(0);
    assert!(ack.starts_with("ACK "));
    assert_eq!(
        h.take_events(),
        vec![SipCallEvent::Terminated],
        "no Ringing after hangup"
    );
}

#[test]
fn ok_crossing_cancel_is_acked_then_byed() {
    let mut h = Harness::new();
    h.call();
    let invite = h.take_sent().remove(0);
    h.peer_sends(&reply(&invite, 180, "Ringing", ""));
    h.ua.hangup(h.now, "cid-1");
    h.drain();
    assert!(h.take_sent()[0].starts_with("CANCEL "));
    h.peer_sends(&reply(&invite, 200, "OK", CONTACT));
    let sent = h.take_sent();
    assert!(sent[0].starts_with("ACK sip:gw@"), "{sent:?}");
    assert!(sent[1].starts_with("BYE sip:gw@"), "{sent:?}");
    h.peer_sends(&reply(&sent[1], 200, "OK", ""));
    assert_eq!(
        h.take_events(),
        vec![
            SipCallEvent::Ringing { sdp: None },
            SipCallEvent::Terminated
        ]
    );
}

#[test]
fn cancel_without_final_response_gives_up_after_64_t1() {
    let mut h = Harness::new();
    h.call();
    let invite = h.take_sent().remove(0);
    h.peer_sends(&reply(&invite, 180, "Ringing", ""));
    h.ua.hangup(h.now, "cid-1");
    h.advance(Duration::from_millis(31_900));
    assert_eq!(h.take_events(), vec![SipCallEvent::Ringing { sdp: None }]);
    h.advance(Duration::from_millis(200));
    assert_eq!(h.take_events(), vec![SipCallEvent::Terminated]);
}

#[test]
fn no_answer_at_all_is_408_after_timer_b() {
    let mut h = Harness::new();
    h.call();
    h.advance(Duration::from_secs(31));
    assert_eq!(h.take_sent().len(), 6, "INVITE + 5 retransmissions by 31 s");
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.take_events(),
        vec![SipCallEvent::Failed {
            status: 408,
            reason: "Request Timeout".into()
        }]
    );
    assert_eq!(h.ua.call_count(), 0);
}

#[test]
fn send_error_fails_the_call_with_503() {
    let mut h = Harness::new();
    h.call();
    h.ua.handle_send_error(
        h.now,
        &Owner::Call("cid-1".into()),
        Peer::udp(PEER.parse().unwrap()),
        "Network is unreachable".into(),
    );
    h.drain();
    assert_eq!(
        h.take_events(),
        vec![SipCallEvent::Failed {
            status: 503,
            reason: "transport error: Network is unreachable".into()
        }]
    );
}

#[test]
fn remote_bye_is_answered_once_and_retransmissions_get_the_same_200() {
    let (mut h, invite) = answered();
    h.take_sent();
    let local_tag = header(&invite, "From")
        .split("tag=")
        .nth(1)
        .unwrap()
        .to_string();
    let bye = peer_request("BYE", &format!(";tag={local_tag}"), "z9hG4bKpb1", 1);
    h.peer_sends(&bye);
    let ok = h.take_sent().remove(0);
    assert!(ok.starts_with("SIP/2.0 200 OK\r\n"), "{ok}");
    assert!(header(&ok, "Via").contains("rport=5060"), "{ok}");
    assert_eq!(h.take_events(), vec![SipCallEvent::RemoteHangup]);
    h.peer_sends(&bye);
    assert_eq!(h.take_sent(), vec![ok], "Timer J: same answer");
    assert!(h.take_events().is_empty());
}

#[test]
fn unknown_dialog_gets_481_and_options_200() {
    let mut h = Harness::new();
    h.peer_sends(&peer_request("BYE", ";tag=nope", "z9hG4bK1", 1));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 481 Call/Transaction Does Not Exist\r\n"));
    h.peer_sends(&peer_request("INFO", ";tag=nope", "z9hG4bK2", 2));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 481 "));
    h.peer_sends(&peer_request("OPTIONS", "", "z9hG4bK3", 3));
    let ok = h.take_sent().remove(0);
    assert!(ok.starts_with("SIP/2.0 200 OK\r\n"), "{ok}");
    assert!(header(&ok, "To").contains(";tag="), "{ok}");
    assert!(header(&ok, "Allow").contains("OPTIONS"));
    h.peer_sends(&peer_request("MESSAGE", "", "z9hG4bK4", 4));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 405 "));
    h.peer_sends(&peer_request("ACK", ";tag=nope", "z9hG4bK5", 5));
    assert!(h.take_sent().is_empty(), "ACK is never answered");
}

#[test]
fn options_are_answered_503_while_draining_or_full_and_200_again_after() {
    use crate::sip::Availability;
    let mut h = Harness::new();
    let probes = [
        (Availability::Draining, "503", Some("30 (Draining)")),
        (Availability::AtCapacity, "503", Some("30 (At Capacity)")),
        (Availability::Available, "200", None),
    ];
    for (i, (availability, code, retry)) in probes.into_iter().enumerate() {
        h.ua.set_availability(availability);
        let branch = format!("z9hG4bKav{i}");
        h.peer_sends(&peer_request("OPTIONS", "", &branch, 10 + i as u32));
        let answer = h.take_sent().remove(0);
        assert!(answer.starts_with(&format!("SIP/2.0 {code} ")), "{answer}");
        assert!(header(&answer, "Allow").contains("INVITE"), "{answer}");
        match retry {
            Some(r) => assert_eq!(header(&answer, "Retry-After"), r, "{answer}"),
            None => assert!(!answer.contains("Retry-After"), "{answer}"),
        }
    }
    // A request in a dialog is not an availability probe: unchanged while draining.
    h.ua.set_availability(Availability::Draining);
    h.peer_sends(&peer_request("OPTIONS", ";tag=nope", "z9hG4bKav9", 20));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 481 "));
}

#[test]
fn malformed_input_never_panics() {
    let mut h = Harness::new();
    h.call();
    h.take_sent();
    let bad_cseq = peer_request("OPTIONS", "", "z9hG4bK9", 1).replace("CSeq: 1", "CSeq: one");
    h.peer_sends(&bad_cseq);
    let sent = h.take_sent();
    assert!(
        sent[0].starts_with("SIP/2.0 400 Bad Request\r\n"),
        "{sent:?}"
    );
    for junk in [
        &b"\r\n\r\n"[..],
        b"",
        b"\x00\x01\x02",
        b"SIP/2.0 200 OK\r\n\r\n",
        b"SIP/2.0 99999 X\r\nCall-ID: cid-1\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\nVia: \r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nCall-ID: cid-1\r\nCSeq: 1 INVITE\r\nFrom: a\r\nTo: b\r\nContent-Length: 99\r\n\r\n",
    ] {
        h.ua.handle_message(h.now, Peer::udp(PEER.parse().unwrap()), junk);
        h.drain();
    }
    assert!(h.take_sent().is_empty());
    assert!(h.take_events().is_empty());
}

#[test]
fn caller_input_is_validated() {
    let mut ua = UserAgent::new(UaConfig::fixed(
        TimerConfig::default(),
        "x",
        "127.0.0.1:5070".parse().expect("addr"),
    ));
    let request = InviteRequest {
        to_user: "155\r\nX-Evil: 1".into(),
        correlation_id: "c".into(),
        ..base_request()
    };
    let peer = Peer::udp(PEER.parse().unwrap());
    let err = ua
        .start_call(Instant::now(), "c1".into(), request.clone(), peer, peer)
        .unwrap_err();
    assert!(matches!(err, SipError::InvalidRequest(_)), "{err}");
    let mut ok = request;
    ok.to_user = "15551234567".into();
    ok.correlation_id = "a b\r\nc".into();
    assert_eq!(validate(&ok).unwrap(), "abc");
}

#[test]
fn mutated_datagrams_never_panic() {
    let mut h = Harness::new();
    h.call();
    let invite = h.take_sent().remove(0);
    let seeds = [
        reply(&invite, 200, "OK", CONTACT),
        reply(
            &invite,
            180,
            "Ringing",
            "Record-Route: <sip:10.0.0.9;lr>\r\n",
        ),
        peer_request("BYE", ";tag=x", "z9hG4bKm", 1),
        peer_request("OPTIONS", "", "z9hG4bKo", 1),
        invite,
    ];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..20_000 {
        let mut bytes = seeds[i % seeds.len()].clone().into_bytes();
        for _ in 0..(1 + rnd() % 4) {
            let pos = (rnd() as usize) % bytes.len().max(1);
            match rnd() % 4 {
                0 => bytes[pos] = rnd() as u8,
                1 => bytes.truncate(pos),
                2 => bytes.insert(pos, b"<>;:,=\"\r\n @[]"[(rnd() % 13) as usize]),
                _ => {
                    bytes.remove(pos.min(bytes.len().saturating_sub(1)));
                }
            }
            if bytes.is_empty() {
                break;
            }
        }
        h.ua.handle_message(h.now, Peer::udp(PEER.parse().unwrap()), &bytes);
        h.drain();
        h.sent.clear();
        h.events.clear();
    }
}
