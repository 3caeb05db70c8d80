//! Attacks on browser sessions against a running gateway, each next to the legitimate
//! use that must keep working: a session outliving its token, `reauth` as another
//! user, `resume` with an expired token (and the call ending `signaling_lost`), TURN
//! credentials outliving the token, a client frame crossing the gateway's Close (a
//! reset instead of a clean close), one user opening sessions without bound, an
//! oversized first frame, oversized frames after auth.

mod common;

use std::time::Duration;

use callbridge::auth::{Claims, mint_hs256};
use callbridge::config::{Config, DEFAULT_TURN_SOCKET_BUFFER_BYTES, TurnConfig};
use common::browser::{Browser, BrowserOptions};
use common::call::TestCall;
use common::gateway::{
    Closed, SECRET, TestGateway, WAIT, WsClient, claims, http_get, now, test_config, token,
};
use common::sipp::Sipp;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

/// Test gateways here apply `exp` without leeway, so "at exp" is exact to a second.
fn strict_config() -> Config {
    let mut config = test_config(None);
    config.auth.leeway = Duration::ZERO;
    config
}

/// Authenticates `ws` with `token`; returns `ready`.
async fn auth(ws: &mut WsClient, token: &str) -> Value {
    ws.send(json!({"type": "auth", "token": token})).await;
    let ready = ws.recv().await;
    assert_eq!(ready["type"], "ready", "{ready}");
    ready
}

/// The close frame's code and reason, waiting at most [`WAIT`].
async fn close_frame(
    ws: &mut tokio_tungstenite::WebSocketStream<
        impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    >,
) -> (Vec<Value>, Option<(u16, String)>) {
    let mut messages = Vec::new();
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for close");
        match frame {
            Some(Ok(Message::Text(t))) => {
                messages.push(serde_json::from_str(&t).expect("server sent JSON"));
            }
            Some(Ok(Message::Close(Some(c)))) => {
                return (messages, Some((u16::from(c.code), c.reason.to_string())));
            }
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return (messages, None),
            Some(Ok(_)) => continue,
        }
    }
}

/// A raw WebSocket (for writing frames the client library refuses to write).
async fn raw_socket(gw: &TestGateway) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(gw.http_addr())
        .await
        .expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(gw.ws_url(), tcp)
        .await
        .expect("upgrade");
    ws
}

#[tokio::test]
async fn a_session_is_closed_4001_when_its_token_expires() {
    let gw = TestGateway::start(strict_config()).await;
    let mut ws = gw.connect().await;
    let short = token("tess", "calls:outbound", 2);
    let ready = auth(&mut ws, &short).await;
    let exp = claims("tess", "calls:outbound", 2).exp;
    assert!(
        ready["expires_at"]
            .as_u64()
            .is_some_and(|e| e.abs_diff(exp) <= 1),
        "{ready}"
    );
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.recv().await["type"], "pong", "usable before exp");

    let error = ws.recv().await;
    assert_eq!(error["code"], "unauthorized", "{error}");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .starts_with("token expired"),
        "{error}"
    );
    assert_eq!(ws.closed().await, Closed::Code(4001));
    assert!(now() >= exp, "not closed before exp");
    gw.stop().await;
}

/// A browser's frame (a pong, say) can cross the gateway's Close. The gateway must
/// finish the closing handshake before dropping the socket: dropped with the frame
/// unread, the kernel resets the connection and Chromium reports 1006 instead of 4001
/// (seen in `e2e_reauth.mjs`, whose token expired just as a ping was answered).
#[tokio::test]
async fn a_frame_crossing_the_close_does_not_reset_the_connection() {
    let gw = TestGateway::start(strict_config()).await;
    let mut ws = raw_socket(&gw).await;
    let short = token("tess", "calls:outbound", 2);
    ws.send(Message::text(
        json!({"type": "auth", "token": short}).to_string(),
    ))
    .await
    .expect("send auth");
    assert_eq!(next(&mut ws).await["type"], "ready");
    let error = next(&mut ws).await;
    assert_eq!(error["code"], "unauthorized", "{error}");
    // Sent after the gateway decided to close: it crosses the Close frame.
    ws.send(Message::text(json!({"type": "ping"}).to_string()))
        .await
        .expect("send the crossing frame");
    let (_, close) = close_frame(&mut ws).await;
    assert_eq!(close, Some((4001, "token expired".to_string())));
    // tungstenite answers the Close; the gateway then ends the connection with FIN.
    let end = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("the gateway never ended the connection");
    assert!(
        end.is_none(),
        "the connection ended with {end:?}, not a clean close (a reset loses the Close frame)"
    );
    gw.stop().await;
}

#[tokio::test]
async fn reauth_before_exp_keeps_the_session_past_the_first_exp() {
    let gw = TestGateway::start(strict_config()).await;
    // A control session with the same short token and no reauth: its close marks
    // the first exp.
    let mut control = gw.connect().await;
    auth(&mut control, &token("rhea", "calls:outbound", 2)).await;
    let mut ws = gw.connect().await;
    auth(&mut ws, &token("rhea", "calls:outbound", 2)).await;

    let fresh = claims("rhea", "calls:outbound", 3600);
    let fresh_token = mint_hs256(SECRET, &fresh).expect("mint");
    ws.send(json!({"type": "reauth", "token": fresh_token}))
        .await;
    let reauthed = ws.recv().await;
    assert_eq!(reauthed["type"], "reauthed", "{reauthed}");
    assert_eq!(reauthed["expires_at"], fresh.exp);

    assert_eq!(control.recv().await["code"], "unauthorized");
    assert_eq!(
        control.closed().await,
        Closed::Code(4001),
        "the first exp passed"
    );
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(
        ws.recv().await["type"],
        "pong",
        "the reauthed session lives on"
    );
    ws.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn reauth_as_another_user_or_with_fewer_scopes_is_refused_and_the_old_exp_stands() {
    let gw = TestGateway::start(strict_config()).await;
    let mut ws = gw.connect().await;
    auth(&mut ws, &token("una", "calls:outbound calls:inbound", 3)).await;

    let attempts = [
        (
            token("mallory", "calls:outbound calls:inbound", 3600),
            "unauthorized",
            "mallory",
        ),
        (
            token("una", "calls:outbound", 3600),
            "forbidden",
            "calls:inbound",
        ),
        (
            token("una", "calls:outbound calls:inbound", -60),
            "unauthorized",
            "expired",
        ),
        ("not-a-jwt".to_string(), "unauthorized", "malformed"),
    ];
    for (bad, code, needle) in attempts {
        ws.send(json!({"type": "reauth", "token": bad})).await;
        let error = ws.recv().await;
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(error["code"], code, "{error}");
        assert!(
            error["message"].as_str().expect("message").contains(needle),
            "{error}"
        );
    }
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(
        ws.recv().await["type"],
        "pong",
        "a refused reauth does not close"
    );
    let error = ws.recv().await;
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .starts_with("token expired")
    );
    assert_eq!(
        ws.closed().await,
        Closed::Code(4001),
        "the old exp still applies"
    );

    // The legitimate refresh of the same user works on another session.
    let mut ok = gw.connect().await;
    auth(&mut ok, &token("una", "calls:outbound calls:inbound", 60)).await;
    ok.send(json!({"type": "reauth", "token": token("una", "calls:outbound calls:inbound calls:extra", 3600)}))
        .await;
    assert_eq!(ok.recv().await["type"], "reauthed");
    gw.stop().await;
}

#[tokio::test]
async fn resume_with_an_expired_token_is_refused_and_the_call_ends_signaling_lost() {
    let mut sipp = Sipp::uas(None, &["-mp", &common::ports::port().to_string()]);
    let mut config = test_config(Some(sipp.addr));
    config.server.resume_grace = Duration::from_secs(3);
    let gw = TestGateway::start(config).await;
    let (mut ws, ready) = gw.connect_as("vera", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "c1", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    ws.close().await;

    let resume = |token: Option<String>| {
        let mut m = json!({"type": "resume", "session_id": ready["session_id"], "resume_token": ready["resume_token"]});
        if let Some(t) = token {
            m["token"] = json!(t);
        }
        m
    };
    // The resume token alone (all that was needed before) is refused with advice.
    let mut attacker = gw.connect().await;
    attacker.send(resume(None)).await;
    let error = attacker.recv().await;
    assert_eq!(error["code"], "unauthorized");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("token"),
        "{error}"
    );
    assert_eq!(attacker.closed().await, Closed::Code(4001));
    // With an expired token of the same user.
    let mut attacker = gw.connect().await;
    attacker
        .send(resume(Some(token("vera", "calls:outbound", -120))))
        .await;
    let error = attacker.recv().await;
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("expired"),
        "{error}"
    );
    assert_eq!(attacker.closed().await, Closed::Code(4001));
    // With a valid token of another user.
    let mut attacker = gw.connect().await;
    attacker
        .send(resume(Some(token("mallory", "calls:outbound", 3600))))
        .await;
    let error = attacker.recv().await;
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("another user"),
        "{error}"
    );
    assert_eq!(attacker.closed().await, Closed::Code(4001));

    // Nobody resumed: after the grace the call ends and the trunk gets its BYE.
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    let metrics = http_get(gw.admin_addr(), "/metrics").await;
    assert!(
        metrics
            .contains(r#"callbridge_calls_total{direction="outbound",outcome="signaling_lost"} 1"#),
        "{metrics}"
    );
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn resume_with_a_valid_token_of_the_same_user_works() {
    let gw = TestGateway::start(test_config(None)).await;
    let (ws, ready) = gw.connect_as("wren", "calls:outbound").await;
    ws.close().await;
    let mut ws = gw.connect().await;
    let fresh = claims("wren", "calls:outbound", 1800);
    ws.send(json!({"type": "resume", "session_id": ready["session_id"], "resume_token": ready["resume_token"], "token": mint_hs256(SECRET, &fresh).expect("mint")}))
        .await;
    let again = ws.recv().await;
    assert_eq!(again["type"], "ready", "{again}");
    assert_eq!(again["session_id"], ready["session_id"]);
    assert_eq!(
        again["expires_at"], fresh.exp,
        "the fresh token's exp applies"
    );
    ws.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn turn_credentials_never_outlive_the_token() {
    let mut config = test_config(None);
    config.turn = Some(TurnConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tls_listen: None,
        secret: "turn-secret-for-abuse-tests".into(),
        credential_ttl: Duration::from_secs(24 * 3600),
        realm: "callbridge".into(),
        relay_ports: "51000-51999".into(),
        allow_peers: vec![],
        deny_peers: vec![],
        max_allocations: 10,
        max_allocations_per_user: 5,
        socket_buffer_bytes: DEFAULT_TURN_SOCKET_BUFFER_BYTES,
    });
    let gw = TestGateway::start(config).await;
    let expiry_of = |ice: &Value| -> u64 {
        let username = ice["ice_servers"][0]["username"]
            .as_str()
            .expect("username");
        let credential = ice["ice_servers"][0]["credential"]
            .as_str()
            .expect("credential");
        assert_eq!(
            credential,
            callbridge::auth::turn_password("turn-secret-for-abuse-tests", username),
            "valid REST credentials"
        );
        username
            .split(':')
            .next()
            .expect("expiry")
            .parse()
            .expect("number")
    };
    let mut ws = gw.connect().await;
    let short = claims("xena", "calls:outbound", 600);
    let ready = auth(&mut ws, &mint_hs256(SECRET, &short).expect("mint")).await;
    assert!(expiry_of(&ready) <= short.exp, "{ready}");
    assert!(
        expiry_of(&ready) + 5 >= short.exp,
        "as long as the token: {ready}"
    );

    let fresh = claims("xena", "calls:outbound", 7200);
    ws.send(json!({"type": "reauth", "token": mint_hs256(SECRET, &fresh).expect("mint")}))
        .await;
    let reauthed = ws.recv().await;
    assert_eq!(reauthed["type"], "reauthed", "{reauthed}");
    let renewed = expiry_of(&reauthed);
    assert!(renewed <= fresh.exp && renewed > short.exp, "{reauthed}");
    ws.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn one_user_cannot_open_more_than_max_sessions_per_user() {
    let mut config = test_config(None);
    config.limits.max_sessions_per_user = 3;
    let gw = TestGateway::start(config).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(gw.connect_as("yuri", "calls:inbound").await.0);
    }
    let mut extra = gw.connect().await;
    extra
        .send(json!({"type": "auth", "token": token("yuri", "calls:inbound", 3600)}))
        .await;
    let error = extra.recv().await;
    assert_eq!(error["code"], "rate_limited", "{error}");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("limits.max_sessions_per_user = 3"),
        "{error}"
    );
    assert_eq!(error["retry_after_ms"], 2000, "the resume grace: {error}");
    assert_eq!(extra.closed().await, Closed::Code(4029));

    // Other users are not affected; the user's open sessions keep working.
    let (mut other, _) = gw.connect_as("zoe", "calls:inbound").await;
    other.send(json!({"type": "ping"})).await;
    assert_eq!(other.recv().await["type"], "pong");
    open[0].send(json!({"type": "ping"})).await;
    assert_eq!(open[0].recv().await["type"], "pong");

    // A dropped session holds its place until its resume grace is over.
    open.pop().expect("one").close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut ws = gw.connect().await;
        ws.send(json!({"type": "auth", "token": token("yuri", "calls:inbound", 3600)}))
            .await;
        match ws.message_or_close().await {
            Ok(m) if m["type"] == "ready" => break,
            Ok(m) => assert_eq!(m["code"], "rate_limited", "{m}"),
            Err(closed) => panic!("closed without a message: {closed:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    gw.stop().await;
}

/// Claims with `pad` bytes of caller id, signed: a valid token of about 4/3 × `pad`.
fn padded_token(user: &str, pad: usize) -> String {
    let mut c: Claims = claims(user, "calls:outbound", 3600);
    c.caller_id = Some("1".repeat(pad));
    mint_hs256(SECRET, &c).expect("mint")
}

#[tokio::test]
async fn an_oversized_first_frame_is_refused_before_auth() {
    let gw = TestGateway::start(test_config(None)).await;
    // A validly signed 128 KiB token: read, parsed and accepted before the limit.
    for pad in [96 * 1024, 12 * 1024] {
        let big = padded_token("ada", pad);
        let mut ws = raw_socket(&gw).await;
        futures_util::SinkExt::send(
            &mut ws,
            Message::Text(json!({"type": "auth", "token": big}).to_string().into()),
        )
        .await
        .expect("send");
        let (messages, close) = close_frame(&mut ws).await;
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert_eq!(messages[0]["code"], "bad_request", "{messages:?}");
        assert!(
            messages[0]["message"]
                .as_str()
                .expect("message")
                .contains("limits.max_auth_message_bytes"),
            "{messages:?}"
        );
        assert_eq!(close.map(|c| c.0), Some(1009), "pad {pad}");
    }
    // A frame beyond the socket's hard cap: refused from its header.
    let mut ws = raw_socket(&gw).await;
    ws.get_mut()
        .write_all(&frame_header(1 << 30))
        .await
        .expect("write");
    let (messages, close) = close_frame(&mut ws).await;
    assert_eq!(
        messages.first().map(|m| m["code"].clone()),
        Some(json!("bad_request"))
    );
    assert_eq!(close.map(|c| c.0), Some(1009));
    // A normal auth works.
    let (mut ws, _) = gw.connect_as("ada", "calls:outbound").await;
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.recv().await["type"], "pong");
    gw.stop().await;
}

/// The next text message as JSON.
async fn next(ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> Value {
    match tokio::time::timeout(WAIT, ws.next()).await.expect("reply") {
        Some(Ok(Message::Text(t))) => serde_json::from_str::<Value>(&t).expect("json"),
        other => panic!("unexpected {other:?}"),
    }
}

/// A masked text frame header announcing `len` payload bytes, with a few of them.
fn frame_header(len: u64) -> Vec<u8> {
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(b"{\"type\":");
    frame
}

#[tokio::test]
async fn oversized_frames_after_auth_get_bad_request_and_beyond_the_hard_cap_1009() {
    let gw = TestGateway::start(test_config(None)).await;
    let mut ws = raw_socket(&gw).await;
    futures_util::SinkExt::send(
        &mut ws,
        Message::Text(
            json!({"type": "auth", "token": token("bo", "calls:outbound", 3600)})
                .to_string()
                .into(),
        ),
    )
    .await
    .expect("send");
    assert_eq!(next(&mut ws).await["type"], "ready");
    // Between max_message_bytes (64 KiB) and the hard cap (256 KiB): an error, and
    // the session goes on.
    let big = json!({"type": "ping", "pad": "x".repeat(200 * 1024)}).to_string();
    futures_util::SinkExt::send(&mut ws, Message::Text(big.into()))
        .await
        .expect("send");
    let error = next(&mut ws).await;
    assert_eq!(error["code"], "bad_request", "{error}");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("max_message_bytes (65536)"),
        "{error}"
    );
    futures_util::SinkExt::send(&mut ws, Message::Text(r#"{"type":"ping"}"#.into()))
        .await
        .expect("send");
    assert_eq!(next(&mut ws).await["type"], "pong");
    // Beyond the hard cap: refused from the frame header (the gigabyte never has to
    // arrive), error and close 1009.
    ws.get_mut()
        .write_all(&frame_header(1 << 30))
        .await
        .expect("write");
    let (messages, close) = close_frame(&mut ws).await;
    assert_eq!(
        messages.first().map(|m| m["code"].clone()),
        Some(json!("bad_request")),
        "{messages:?}"
    );
    assert_eq!(close.map(|c| c.0), Some(1009));
    gw.stop().await;
}
