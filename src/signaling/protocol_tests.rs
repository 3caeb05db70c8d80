use serde_json::json;

use super::*;

#[test]
fn parses_every_client_message_of_the_contract() {
    let cases = [
        (
            json!({"type":"auth","token":"t"}),
            ClientMessage::Auth { token: "t".into() },
        ),
        (
            json!({"type":"resume","session_id":"s-1","resume_token":"r"}),
            ClientMessage::Resume {
                session_id: "s-1".into(),
                resume_token: "r".into(),
                token: None,
            },
        ),
        (
            json!({"type":"resume","session_id":"s-1","resume_token":"r","token":"t"}),
            ClientMessage::Resume {
                session_id: "s-1".into(),
                resume_token: "r".into(),
                token: Some("t".into()),
            },
        ),
        (
            json!({"type":"reauth","token":"t2"}),
            ClientMessage::Reauth { token: "t2".into() },
        ),
        (
            json!({"type":"call","call_id":"c1","to":"+15551234567","sdp":"v=0"}),
            ClientMessage::Call {
                call_id: "c1".into(),
                to: "+15551234567".into(),
                sdp: "v=0".into(),
                privacy: false,
            },
        ),
        (
            json!({"type":"accept","call_id":"i-1","sdp":"v=0"}),
            ClientMessage::Accept {
                call_id: "i-1".into(),
                sdp: "v=0".into(),
            },
        ),
        (
            json!({"type":"reject","call_id":"i-1"}),
            ClientMessage::Reject {
                call_id: "i-1".into(),
            },
        ),
        (
            json!({"type":"hangup","call_id":"c1"}),
            ClientMessage::Hangup {
                call_id: "c1".into(),
            },
        ),
        (
            json!({"type":"ice","call_id":"c1","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}),
            ClientMessage::Ice {
                call_id: "c1".into(),
                candidate: Some(IceCandidate {
                    candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host".into(),
                    sdp_mid: Some("0".into()),
                    sdp_mline_index: Some(0),
                }),
            },
        ),
        (
            json!({"type":"ice","call_id":"c1","candidate":null}),
            ClientMessage::Ice {
                call_id: "c1".into(),
                candidate: None,
            },
        ),
        (
            json!({"type":"dtmf","call_id":"c1","digits":"12#"}),
            ClientMessage::Dtmf {
                call_id: "c1".into(),
                digits: "12#".into(),
            },
        ),
        (
            json!({"type":"hold","call_id":"c1"}),
            ClientMessage::Hold {
                call_id: "c1".into(),
            },
        ),
        (
            json!({"type":"unhold","call_id":"c1"}),
            ClientMessage::Unhold {
                call_id: "c1".into(),
            },
        ),
        (json!({"type":"ping"}), ClientMessage::Ping),
        (
            json!({"type":"call","call_id":"c2","to":"+1","sdp":"v=0","privacy":true}),
            ClientMessage::Call {
                call_id: "c2".into(),
                to: "+1".into(),
                sdp: "v=0".into(),
                privacy: true,
            },
        ),
        (
            json!({"type":"call","call_id":"c2","to":"+1","sdp":"v=0","privacy":true}),
            ClientMessage::Call {
                call_id: "c2".into(),
                to: "+1".into(),
                sdp: "v=0".into(),
                privacy: true,
            },
        ),
    ];
    for (value, expected) in cases {
        assert_eq!(
            ClientMessage::parse(&value.to_string()),
            Ok(expected),
            "{value}"
        );
    }
}

#[test]
fn unknown_fields_are_ignored() {
    let m = ClientMessage::parse(r#"{"type":"ping","extra":1}"#).expect("ping");
    assert_eq!(m, ClientMessage::Ping);
}

#[test]
fn bad_frames_say_what_is_wrong() {
    assert!(matches!(
        ClientMessage::parse("{not json"),
        Err(ParseError::NotJson(_))
    ));
    assert_eq!(ClientMessage::parse("[1,2]"), Err(ParseError::NoType));
    assert_eq!(
        ClientMessage::parse(r#"{"type":5}"#),
        Err(ParseError::NoType)
    );
    assert_eq!(
        ClientMessage::parse(r#"{"type":"teleport"}"#),
        Err(ParseError::UnknownType("teleport".into()))
    );
    let err = ClientMessage::parse(r#"{"type":"call","call_id":"c1","sdp":"v=0"}"#)
        .expect_err("missing to");
    assert!(err.to_string().contains("`to`"), "{err}");
    assert_eq!(
        ClientMessage::parse(r#"{"type":"hangup","call_id":"has space"}"#),
        Err(ParseError::BadCallId)
    );
    let long = "x".repeat(65);
    assert_eq!(
        ClientMessage::parse(&format!(r#"{{"type":"hangup","call_id":"{long}"}}"#)),
        Err(ParseError::BadCallId)
    );
}

#[test]
fn server_messages_have_the_contract_shape() {
    let ready = ServerMessage::Ready {
        session_id: "s-1".into(),
        resume_token: "r".into(),
        user: "alice".into(),
        ice_servers: vec![IceServer {
            urls: vec!["turn:h:3478?transport=udp".into()],
            username: Some("1767225600:alice".into()),
            credential: Some("c".into()),
        }],
        expires_at: Some(1_767_225_600),
    };
    let v: serde_json::Value = serde_json::from_str(&ready.to_json()).expect("json");
    assert_eq!(v["type"], "ready");
    assert_eq!(v["ice_servers"][0]["username"], "1767225600:alice");
    assert_eq!(v["ice_servers"][0]["credential"], "c");
    assert_eq!(v["resume_token"], "r");
    assert_eq!(v["expires_at"], 1_767_225_600);

    let reauthed = ServerMessage::Reauthed {
        expires_at: 1_767_229_200,
        ice_servers: Vec::new(),
    };
    assert_eq!(
        reauthed.to_json(),
        r#"{"type":"reauthed","expires_at":1767229200}"#
    );

    let ended = ServerMessage::Ended {
        call_id: "c1".into(),
        reason: EndReason::Busy,
        sip_status: Some(486),
    };
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ended.to_json()).expect("json"),
        json!({"type":"ended","call_id":"c1","reason":"busy","sip_status":486})
    );
    let err = ServerMessage::error(ErrorCode::BadRequest, "nope", "corr-1");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&err.to_json()).expect("json"),
        json!({"type":"error","code":"bad_request","message":"nope","correlation_id":"corr-1"})
    );
    let ice = ServerMessage::Ice {
        call_id: "c1".into(),
        candidate: None,
    };
    assert_eq!(
        ice.to_json(),
        r#"{"type":"ice","call_id":"c1","candidate":null}"#
    );
    assert_eq!(ServerMessage::Pong.to_json(), r#"{"type":"pong"}"#);
    let goaway = ServerMessage::Goaway {
        reason: "draining".into(),
        retry_after_ms: 1200,
    };
    assert_eq!(
        goaway.to_json(),
        r#"{"type":"goaway","reason":"draining","retry_after_ms":1200}"#
    );
}

#[test]
fn sip_statuses_map_to_end_reasons() {
    for (status, reason) in [
        (486, EndReason::Busy),
        (600, EndReason::Busy),
        (603, EndReason::Rejected),
        (404, EndReason::NotFound),
        (484, EndReason::NotFound),
        (408, EndReason::NoAnswer),
        (480, EndReason::NoAnswer),
        (487, EndReason::NoAnswer),
        (503, EndReason::Unavailable),
        (403, EndReason::Forbidden),
        (500, EndReason::Error),
    ] {
        assert_eq!(EndReason::from_sip_status(status), reason, "{status}");
        let s = serde_json::to_string(&reason).expect("json");
        assert_eq!(s.trim_matches('"'), reason.as_str());
    }
}

#[test]
fn debug_output_never_shows_tokens_or_credentials() {
    let auth =
        ClientMessage::parse(r#"{"type":"auth","token":"eyJ.secret-jwt.sig"}"#).expect("auth");
    let resume = ClientMessage::parse(
        r#"{"type":"resume","session_id":"s-1","resume_token":"resume-secret","token":"eyJ.other-jwt.sig"}"#,
    )
    .expect("resume");
    let reauth =
        ClientMessage::parse(r#"{"type":"reauth","token":"eyJ.fresh-jwt.sig"}"#).expect("reauth");
    let ready = ServerMessage::Ready {
        session_id: "s-1".into(),
        resume_token: "resume-secret".into(),
        user: "alice".into(),
        ice_servers: vec![IceServer {
            urls: vec!["turn:h:3478".into()],
            username: Some("1:alice".into()),
            credential: Some("turn-password".into()),
        }],
        expires_at: None,
    };
    let text = format!("{auth:?} {resume:?} {reauth:?} {ready:?}");
    for secret in [
        "secret-jwt",
        "other-jwt",
        "fresh-jwt",
        "resume-secret",
        "turn-password",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(
        text.contains("s-1") && text.contains("alice"),
        "the rest stays visible: {text}"
    );
}

#[test]
fn every_end_reason_is_a_preregistered_calls_total_outcome() {
    // Adding a reason fails to compile here until it is listed below.
    let listed = |r: EndReason| match r {
        EndReason::Hangup
        | EndReason::RemoteHangup
        | EndReason::Busy
        | EndReason::Rejected
        | EndReason::NoAnswer
        | EndReason::NotFound
        | EndReason::Unavailable
        | EndReason::Forbidden
        | EndReason::Limit
        | EndReason::MediaFailed
        | EndReason::SignalingLost
        | EndReason::AnsweredElsewhere
        | EndReason::Error => r.as_str(),
    };
    let all = [
        EndReason::Hangup,
        EndReason::RemoteHangup,
        EndReason::Busy,
        EndReason::Rejected,
        EndReason::NoAnswer,
        EndReason::NotFound,
        EndReason::Unavailable,
        EndReason::Forbidden,
        EndReason::Limit,
        EndReason::MediaFailed,
        EndReason::SignalingLost,
        EndReason::AnsweredElsewhere,
        EndReason::Error,
    ];
    let labels: Vec<&str> = all.into_iter().map(listed).collect();
    assert_eq!(labels, crate::metrics::CALL_OUTCOMES);
}
