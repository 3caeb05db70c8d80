use super::*;

const LIMITS: Limits = Limits {
    max_duration: Duration::from_secs(3600),
    media_timeout: Duration::from_secs(20),
    invite_timeout: Duration::from_secs(60),
};

fn drain(call: &mut OutboundCall) -> Vec<Output> {
    std::iter::from_fn(|| call.poll_output()).collect()
}

fn ended(reason: EndReason, sip_status: Option<u16>) -> Output {
    Output::ToBrowser(ServerMessage::Ended {
        call_id: "c1".into(),
        reason,
        sip_status,
    })
}

fn finished_reason(outputs: &[Output]) -> Option<EndReason> {
    outputs.iter().find_map(|o| match o {
        Output::Finished(outcome) => Some(outcome.reason),
        _ => None,
    })
}

#[test]
fn ringing_answer_remote_bye() {
    let t0 = Instant::now();
    let mut call = OutboundCall::new("c1", t0, LIMITS, 1);
    call.handle(t0, Input::MediaConnected);
    call.handle(t0, Input::Sip(SipCallEvent::Ringing { sdp: None }));
    call.handle(t0, Input::Sip(SipCallEvent::Ringing { sdp: None }));
    assert_eq!(
        drain(&mut call),
        vec![Output::ToBrowser(ServerMessage::Ringing {
            call_id: "c1".into()
        })],
        "a repeated 180 is reported once"
    );
    let t1 = t0 + Duration::from_secs(3);
    call.handle(
        t1,
        Input::Sip(SipCallEvent::Answered {
            sdp: "v=0 a".into(),
        }),
    );
    assert_eq!(
        drain(&mut call),
        vec![
            Output::ApplyRemoteSdp("v=0 a".into()),
            Output::ToBrowser(ServerMessage::Answered {
                call_id: "c1".into()
            }),
        ]
    );
    assert!(call.is_answered());
    let t2 = t1 + Duration::from_secs(10);
    call.handle(t2, Input::Sip(SipCallEvent::RemoteHangup));
    let out = drain(&mut call);
    assert_eq!(out[0], ended(EndReason::RemoteHangup, None));
    match &out[1] {
        Output::Finished(o) => {
            assert_eq!(o.setup_time, Some(Duration::from_secs(3)));
            assert_eq!(o.talk_time, Some(Duration::from_secs(10)));
        }
        other => panic!("expected Finished, got {other:?}"),
    }
    assert!(
        !out.contains(&Output::HangupSip),
        "BYE already answered by the SIP layer"
    );
    assert!(call.is_finished());
    assert_eq!(call.poll_timeout(), None);
}

#[test]
fn early_media_sdp_is_applied_before_answer() {
    let t0 = Instant::now();
    let mut call = OutboundCall::new("c1", t0, LIMITS, 1);
    call.handle(
        t0,
        Input::Sip(SipCallEvent::Progress {
            sdp: Some("early".into()),
        }),
    );
    assert_eq!(
        drain(&mut call),
        vec![
            Output::ToBrowser(ServerMessage::Progress {
                call_id: "c1".into()
            }),
            Output::ApplyRemoteSdp("early".into()),
        ]
    );
}

#[test]
fn failure_statuses_end_with_mapped_reason_and_no_sip_hangup() {
    for (status, reason) in [
        (486, EndReason::Busy),
        (404, EndReason::NotFound),
        (503, EndReason::Unavailable),
    ] {
        let t0 = Instant::now();
        let mut call = OutboundCall::new("c1", t0, LIMITS, 1);
        call.handle(
            t0,
            Input::Sip(SipCallEvent::Failed {
                status,
                reason: "x".into(),
            }),
        );
        let out = drain(&mut call);
        assert_eq!(out[0], ended(reason, Some(status)));
        assert_eq!(finished_reason(&out), Some(reason));
        assert!(!out.contains(&Output::HangupSip));
    }
}

#[test]
fn browser_hangup_before_answer_cancels() {
    let t0 = Instant::now();
    let mut call = OutboundCall::new("c1", t0, LIMITS, 1);
    call.handle(t0, Input::Sip(SipCallEvent::Ringing { sdp: None }));
    drain(&mut call);
    call.handle(t0, Input::BrowserHangup);
    let out = drain(&mut call);
    assert_eq!(out[0], Output::HangupSip);
    assert_eq!(out[1], ended(EndReason::Hangup, None));
    // The 487 / Terminated that follow change nothing.
    call.handle(
        t0,
        Input::Sip(SipCallEvent::Failed {
            status: 487,
            reason: "Request Terminated".into(),
        }),
    );
    call.handle(t0, Input::Sip(SipCallEvent::Terminated));
    assert!(drain(&mut call).is_empty());
}

#[test]
fn signaling_lost_hangs_up_sip_without_telling_the_browser() {
    let t0 = Instant::now();
    let mut call = OutboundCall::new("c1", t0, LIMITS, 1);
    call.handle(t0, Input::Sip(SipCallEvent::Answered { sdp: "s".into() }));
    drain(&mut call);
    call.handle(t0, Input::SignalingLost);
    let out = drain(&mut call);
    assert_eq!(out[0], Output::HangupSip);
    assert_eq!(finished_reason(&out), Some(EndReason::SignalingLost));
    assert_eq!(out.len(), 2);
}

#[test]
fn media_timeout_and_max_duration_with_fake_time() {
    let t0 = Instant::now();
    let mut call = OutboundCall::new("c1", t0, LIMITS, 1);
    assert_eq!(call.poll_timeout(), Some(t0 + LIMITS.media_timeout));
    call.handle_timeout(t0 + Duration::from_secs(19));
    assert!(drain(&mut call).is_empty());
    call.handle_timeout(t0 + LIMITS.media_timeout);
    let out = drain(&mut call);
    assert_eq!(out[0], Output::HangupSip);
    assert_eq!(finished_reason(&out), Some(EndReason::MediaFailed));

    let mut call = OutboundCall::new("c1", t0, LIMITS, 1);
    call.handle(t0, Input::MediaConnected);
    assert_eq!(call.poll_timeout(), Some(t0 + LIMITS.invite_timeout));
    let answered = t0 + Duration::from_secs(7);
    call.handle(
        answered,
        Input::Sip(SipCallEvent::Answered { sdp: "s".into() }),
    );
    drain(&mut call);
    assert_eq!(
        call.poll_timeout(),
        Some(answered + LIMITS.max_duration),
        "counted from the answer"
    );
    call.handle_timeout(answered + LIMITS.max_duration - Duration::from_secs(1));
    assert!(drain(&mut call).is_empty());
    call.handle_timeout(answered + LIMITS.max_duration);
    let out = drain(&mut call);
    assert_eq!(out[0], Output::HangupSip);
    assert_eq!(out[1], ended(EndReason::Limit, None));
}

#[test]
fn media_failure_hangs_up() {
    let t0 = Instant::now();
    let mut call = OutboundCall::new("c1", t0, LIMITS, 1);
    call.handle(t0, Input::MediaFailed("ICE failed".into()));
    let out = drain(&mut call);
    assert_eq!(out[0], Output::HangupSip);
    assert_eq!(out[1], ended(EndReason::MediaFailed, None));
}

#[test]
fn failover_on_5xx_408_and_transport_errors_while_trunks_are_left() {
    let t0 = Instant::now();
    let mut call = OutboundCall::new("c1", t0, LIMITS, 3);
    call.handle(
        t0,
        Input::Sip(SipCallEvent::Failed {
            status: 503,
            reason: "Service Unavailable".into(),
        }),
    );
    assert_eq!(drain(&mut call), vec![Output::NextTrunk]);
    let t1 = t0 + Duration::from_secs(5);
    assert_eq!(call.poll_timeout(), Some(t0 + LIMITS.media_timeout));
    call.handle(t0, Input::MediaConnected);
    call.handle(
        t1,
        Input::Sip(SipCallEvent::Failed {
            status: 408,
            reason: "Request Timeout".into(),
        }),
    );
    assert_eq!(drain(&mut call), vec![Output::NextTrunk]);
    assert_eq!(
        call.poll_timeout(),
        Some(t1 + LIMITS.invite_timeout),
        "the new INVITE gets its own timeout"
    );
    // The last trunk's failure ends the call with its status.
    call.handle(
        t1,
        Input::Sip(SipCallEvent::Failed {
            status: 502,
            reason: "Bad Gateway".into(),
        }),
    );
    let out = drain(&mut call);
    assert_eq!(out[0], ended(EndReason::Unavailable, Some(502)));
}

#[test]
fn the_gateway_ends_a_call_with_its_reason() {
    let t0 = Instant::now();
    let mut call = OutboundCall::new("c1", t0, LIMITS, 1);
    call.handle(t0, Input::Sip(SipCallEvent::Answered { sdp: "v=0".into() }));
    drain(&mut call);
    call.handle(t0, Input::Terminate(EndReason::Unavailable));
    let out = drain(&mut call);
    assert_eq!(out[0], Output::HangupSip);
    assert_eq!(out[1], ended(EndReason::Unavailable, None));
}

#[test]
fn no_failover_once_answered() {
    let t0 = Instant::now();
    let mut call = OutboundCall::new("c1", t0, LIMITS, 3);
    call.handle(t0, Input::Sip(SipCallEvent::Answered { sdp: "v=0".into() }));
    drain(&mut call);
    call.handle(
        t0,
        Input::Sip(SipCallEvent::Failed {
            status: 408,
            reason: "dialog lost".into(),
        }),
    );
    let out = drain(&mut call);
    assert!(!out.contains(&Output::NextTrunk), "{out:?}");
    assert_eq!(out[0], ended(EndReason::Error, Some(408)));
}

#[test]
fn no_failover_on_answers_from_the_called_party() {
    for status in [404, 486, 603, 480] {
        let t0 = Instant::now();
        let mut call = OutboundCall::new("c1", t0, LIMITS, 2);
        call.handle(
            t0,
            Input::Sip(SipCallEvent::Failed {
                status,
                reason: "x".into(),
            }),
        );
        let out = drain(&mut call);
        assert!(!out.contains(&Output::NextTrunk), "{status}");
        assert!(call.is_finished());
    }
    assert!(fails_over(500) && fails_over(599) && fails_over(408));
    assert!(!fails_over(404) && !fails_over(600) && !fails_over(486));
}

#[test]
fn invite_timeout_cancels_with_no_answer() {
    let t0 = Instant::now();
    let mut call = OutboundCall::new("c1", t0, LIMITS, 1);
    call.handle(t0, Input::MediaConnected);
    call.handle(t0, Input::Sip(SipCallEvent::Ringing { sdp: None }));
    drain(&mut call);
    call.handle_timeout(t0 + LIMITS.invite_timeout);
    let out = drain(&mut call);
    assert_eq!(out[0], Output::HangupSip);
    assert_eq!(out[1], ended(EndReason::NoAnswer, None));
    call.handle_timeout(t0 + LIMITS.invite_timeout * 2);
    assert!(drain(&mut call).is_empty(), "finished calls ignore timers");
}
