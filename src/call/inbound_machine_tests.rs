use super::*;

const RING: Duration = Duration::from_secs(30);
const MAX: Duration = Duration::from_secs(3600);

fn call(sessions: &[&str], now: Instant) -> InboundCall {
    InboundCall::new(
        "i-1",
        now,
        sessions.iter().map(|s| s.to_string()),
        RING,
        MAX,
    )
}

fn drain(c: &mut InboundCall) -> Vec<InboundOutput> {
    std::iter::from_fn(|| c.poll_output()).collect()
}

fn ended(session: &str, reason: EndReason) -> InboundOutput {
    InboundOutput::ToSession(
        session.into(),
        ServerMessage::Ended {
            call_id: "i-1".into(),
            reason,
            sip_status: None,
        },
    )
}

fn finished(out: &[InboundOutput]) -> Option<(EndReason, Option<u16>)> {
    out.iter().find_map(|o| match o {
        InboundOutput::Finished(x) => Some((x.reason, x.sip_status)),
        _ => None,
    })
}

#[test]
fn first_accept_wins_others_get_answered_elsewhere() {
    let t0 = Instant::now();
    let mut c = call(&["s-a", "s-b", "s-c"], t0);
    c.handle(
        t0,
        InboundInput::Accept {
            session: "s-b".into(),
        },
    );
    let out = drain(&mut c);
    assert!(out.contains(&ended("s-a", EndReason::AnsweredElsewhere)));
    assert!(out.contains(&ended("s-c", EndReason::AnsweredElsewhere)));
    assert!(out.contains(&InboundOutput::CloseLeg("s-a".into())));
    assert!(out.contains(&InboundOutput::SipAnswer("s-b".into())));
    assert!(!out.contains(&ended("s-b", EndReason::AnsweredElsewhere)));
    // A late accept from a losing session changes nothing.
    c.handle(
        t0,
        InboundInput::Accept {
            session: "s-a".into(),
        },
    );
    assert!(drain(&mut c).is_empty());
    c.handle(t0, InboundInput::Acked);
    assert_eq!(
        drain(&mut c),
        vec![InboundOutput::ToSession(
            "s-b".into(),
            ServerMessage::Answered {
                call_id: "i-1".into()
            }
        )]
    );
    assert_eq!(c.winner(), Some("s-b"));
    let t1 = t0 + Duration::from_secs(9);
    c.handle(t1, InboundInput::RemoteHangup);
    let out = drain(&mut c);
    assert_eq!(out[0], ended("s-b", EndReason::RemoteHangup));
    assert!(
        !out.contains(&InboundOutput::SipHangup),
        "BYE already answered"
    );
    assert_eq!(finished(&out), Some((EndReason::RemoteHangup, None)));
}

#[test]
fn browser_hangup_after_answer_sends_bye() {
    let t0 = Instant::now();
    let mut c = call(&["s-a"], t0);
    c.handle(
        t0,
        InboundInput::Accept {
            session: "s-a".into(),
        },
    );
    c.handle(t0, InboundInput::Acked);
    drain(&mut c);
    c.handle(
        t0,
        InboundInput::Hangup {
            session: "s-a".into(),
        },
    );
    let out = drain(&mut c);
    assert_eq!(out[0], InboundOutput::SipHangup);
    assert_eq!(out[1], ended("s-a", EndReason::Hangup));
}

#[test]
fn reject_by_every_session_is_603() {
    let t0 = Instant::now();
    let mut c = call(&["s-a", "s-b"], t0);
    c.handle(
        t0,
        InboundInput::Reject {
            session: "s-a".into(),
        },
    );
    let out = drain(&mut c);
    assert_eq!(out[0], ended("s-a", EndReason::Rejected));
    assert!(
        !out.iter().any(|o| matches!(o, InboundOutput::SipReject(_))),
        "s-b still rings"
    );
    c.handle(
        t0,
        InboundInput::Reject {
            session: "s-b".into(),
        },
    );
    let out = drain(&mut c);
    assert!(out.contains(&InboundOutput::SipReject(603)));
    assert_eq!(finished(&out), Some((EndReason::Rejected, Some(603))));
}

#[test]
fn ring_timeout_is_480_and_ends_every_session() {
    let t0 = Instant::now();
    let mut c = call(&["s-a", "s-b"], t0);
    assert_eq!(c.poll_timeout(), Some(t0 + RING));
    c.handle_timeout(t0 + RING - Duration::from_millis(1));
    assert!(drain(&mut c).is_empty());
    c.handle_timeout(t0 + RING);
    let out = drain(&mut c);
    assert!(out.contains(&ended("s-a", EndReason::NoAnswer)));
    assert!(out.contains(&ended("s-b", EndReason::NoAnswer)));
    assert!(out.contains(&InboundOutput::SipReject(480)));
    assert!(c.is_finished());
}

#[test]
fn cancel_while_ringing_tells_every_session_remote_hangup() {
    let t0 = Instant::now();
    let mut c = call(&["s-a", "s-b"], t0);
    c.handle(t0, InboundInput::Cancelled);
    let out = drain(&mut c);
    assert!(out.contains(&ended("s-a", EndReason::RemoteHangup)));
    assert!(out.contains(&ended("s-b", EndReason::RemoteHangup)));
    assert_eq!(finished(&out), Some((EndReason::RemoteHangup, Some(487))));
    assert!(
        !out.iter().any(|o| matches!(o, InboundOutput::SipReject(_))),
        "the SIP layer sends 487"
    );
}

#[test]
fn last_session_gone_is_480() {
    let t0 = Instant::now();
    let mut c = call(&["s-a"], t0);
    c.handle(
        t0,
        InboundInput::SessionGone {
            session: "s-a".into(),
        },
    );
    let out = drain(&mut c);
    assert!(out.contains(&InboundOutput::SipReject(480)));
    assert_eq!(finished(&out), Some((EndReason::NoAnswer, Some(480))));
}

#[test]
fn winner_socket_lost_after_answer_sends_bye() {
    let t0 = Instant::now();
    let mut c = call(&["s-a"], t0);
    c.handle(
        t0,
        InboundInput::Accept {
            session: "s-a".into(),
        },
    );
    c.handle(t0, InboundInput::Acked);
    drain(&mut c);
    c.handle(
        t0,
        InboundInput::SessionGone {
            session: "s-a".into(),
        },
    );
    let out = drain(&mut c);
    assert_eq!(out[0], InboundOutput::SipHangup);
    assert_eq!(finished(&out), Some((EndReason::SignalingLost, None)));
}

#[test]
fn max_duration_after_answer() {
    let t0 = Instant::now();
    let mut c = call(&["s-a"], t0);
    c.handle(
        t0,
        InboundInput::Accept {
            session: "s-a".into(),
        },
    );
    assert_eq!(
        c.poll_timeout(),
        None,
        "waiting for ACK: the SIP layer times out"
    );
    let t1 = t0 + Duration::from_secs(2);
    c.handle(t1, InboundInput::Acked);
    drain(&mut c);
    assert_eq!(c.poll_timeout(), Some(t1 + MAX));
    c.handle_timeout(t1 + MAX);
    let out = drain(&mut c);
    assert_eq!(out[0], InboundOutput::SipHangup);
    assert_eq!(finished(&out), Some((EndReason::Limit, None)));
}

#[test]
fn the_gateway_ending_a_call_says_why_on_both_sides() {
    // Ringing, drain timeout: every session hears `unavailable`, the trunk 503 (it
    // may try elsewhere).
    let t0 = Instant::now();
    let mut c = call(&["s-a", "s-b"], t0);
    c.handle(t0, InboundInput::Terminate(EndReason::Unavailable));
    let out = drain(&mut c);
    assert!(out.contains(&ended("s-a", EndReason::Unavailable)));
    assert!(out.contains(&ended("s-b", EndReason::Unavailable)));
    assert!(out.contains(&InboundOutput::SipReject(503)));
    assert_eq!(finished(&out), Some((EndReason::Unavailable, Some(503))));

    // Ringing, operator hangup: 480 to the trunk, `hangup` to the sessions.
    let mut c = call(&["s-a"], t0);
    c.handle(t0, InboundInput::Terminate(EndReason::Hangup));
    let out = drain(&mut c);
    assert!(out.contains(&ended("s-a", EndReason::Hangup)));
    assert!(out.contains(&InboundOutput::SipReject(480)));

    // Answered: BYE to the trunk and the reason to the winner.
    let mut c = call(&["s-a"], t0);
    c.handle(
        t0,
        InboundInput::Accept {
            session: "s-a".into(),
        },
    );
    c.handle(t0, InboundInput::Acked);
    drain(&mut c);
    c.handle(t0, InboundInput::Terminate(EndReason::Unavailable));
    let out = drain(&mut c);
    assert!(out.contains(&InboundOutput::SipHangup));
    assert!(out.contains(&ended("s-a", EndReason::Unavailable)));
    assert_eq!(finished(&out).map(|f| f.0), Some(EndReason::Unavailable));
}
