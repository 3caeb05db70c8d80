//! End to end: a webrtc-crate browser calls through an in-process gateway to a real
//! SIPp trunk on loopback.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use callbridge::config::TrunkConfig;
use common::browser::{Browser, BrowserOptions, frame_number};
use common::call::TestCall;
use common::gateway::{TestGateway, http_get, test_config};
use common::sipp::Sipp;

#[tokio::test]
async fn call_is_answered_audio_echoes_back_and_hangup_sends_bye() {
    let mut sipp = Sipp::uas(
        None,
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let gw = TestGateway::start(test_config(Some(sipp.addr))).await;
    let (mut ws, _) = gw.connect_as("alice", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "c1", "+15551234567").await;

    call.until(&mut ws, &["answered"]).await;
    assert_eq!(
        call.seen.first().map(String::as_str),
        Some("answer"),
        "answer comes first"
    );
    assert!(
        call.seen.contains(&"ringing".to_string()),
        "SIPp's 180 reached the browser: {:?}",
        call.seen
    );
    assert!(
        browser.wait_connected(Duration::from_secs(10)).await,
        "ICE/DTLS up"
    );

    let sent = browser.start_sending_tone(100).await.expect("tone task");
    assert!(
        browser.wait_received(90, Duration::from_secs(10)).await,
        "echo came back"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = browser.received();
    let by_frame: HashMap<u32, &[u8]> = received
        .iter()
        .filter_map(|p| frame_number(&p.payload).map(|n| (n, p.payload.as_ref())))
        .collect();
    let identical = sent
        .iter()
        .filter(|payload| {
            frame_number(payload)
                .and_then(|n| by_frame.get(&n))
                .is_some_and(|back| *back == payload.as_ref())
        })
        .count();
    assert!(
        identical >= 90,
        "only {identical}/100 tone frames came back byte-identical"
    );
    let ssrcs: std::collections::HashSet<u32> = received.iter().map(|p| p.ssrc).collect();
    assert_eq!(ssrcs.len(), 1, "one SSRC toward the browser");
    assert!(
        !ssrcs.contains(&browser.ssrc()),
        "gateway rewrites the SSRC"
    );
    for pair in received.windows(2) {
        let gap = pair[1]
            .sequence_number
            .wrapping_sub(pair[0].sequence_number);
        assert!(gap == 1 || gap > 60000, "sequence continuous: {gap}");
    }
    let metrics = http_get(gw.admin_addr(), "/metrics").await;
    assert!(metrics.contains("callbridge_active_calls 1"), "{metrics}");

    call.hangup(&mut ws).await;
    let ended = call.until(&mut ws, &["ended"]).await;
    assert_eq!(ended["reason"], "hangup");
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    let metrics = http_get(gw.admin_addr(), "/metrics").await;
    assert!(metrics.contains("callbridge_active_calls 0"), "{metrics}");
    assert!(
        metrics.contains(r#"callbridge_calls_total{direction="outbound",outcome="hangup"} 1"#),
        "{metrics}"
    );
    // SIPp rang before it answered: one post-dial delay observed.
    assert!(
        metrics.contains("callbridge_call_pdd_seconds_count 1"),
        "{metrics}"
    );
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn remote_bye_ends_with_remote_hangup() {
    let mut sipp = Sipp::uas(
        Some(&Sipp::scenario("uas_remote_bye.xml")),
        &["-mp", &common::ports::port().to_string()],
    );
    let gw = TestGateway::start(test_config(Some(sipp.addr))).await;
    let (mut ws, _) = gw.connect_as("bob", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "c2", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    let ended = call.until(&mut ws, &["ended"]).await;
    assert_eq!(ended["reason"], "remote_hangup", "{ended}");
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn busy_ends_with_busy_486() {
    let mut sipp = Sipp::uas(Some(&Sipp::scenario("uas_busy.xml")), &[]);
    let gw = TestGateway::start(test_config(Some(sipp.addr))).await;
    let (mut ws, _) = gw.connect_as("carol", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "c3", "+15551234567").await;
    let ended = call.until(&mut ws, &["ended"]).await;
    assert_eq!(ended["reason"], "busy", "{ended}");
    assert_eq!(ended["sip_status"], 486);
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn browser_hangup_while_ringing_sends_cancel() {
    let mut sipp = Sipp::uas(Some(&Sipp::scenario("uas_ring_cancel.xml")), &[]);
    let gw = TestGateway::start(test_config(Some(sipp.addr))).await;
    let (mut ws, _) = gw.connect_as("dan", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "c4", "+15551234567").await;
    call.until(&mut ws, &["ringing"]).await;
    call.hangup(&mut ws).await;
    let ended = call.until(&mut ws, &["ended"]).await;
    assert_eq!(ended["reason"], "hangup");
    // The scenario only succeeds when a CANCEL arrives (then 487 and our ACK).
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn websocket_close_hangs_up_answered_and_ringing_calls() {
    let mut answered = Sipp::uas(
        None,
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let mut ringing = Sipp::uas(Some(&Sipp::scenario("uas_ring_cancel.xml")), &[]);
    let mut config = test_config(Some(answered.addr));
    config.sip.trunks.push(TrunkConfig {
        name: "ringer".into(),
        address: ringing.addr.to_string(),
        ..TrunkConfig::default()
    });
    config.dialplan.routes.insert(
        0,
        callbridge::config::RouteConfig::new(r"^\+1999", vec!["ringer".into()]),
    );
    let gw = TestGateway::start(config).await;
    let (mut ws, _) = gw.connect_as("erin", "calls:outbound").await;
    let b1 = Browser::new(BrowserOptions::default()).await;
    let b2 = Browser::new(BrowserOptions::default()).await;
    let mut c1 = TestCall::place(&mut ws, b1.clone(), "up", "+15551234567").await;
    c1.until(&mut ws, &["answered"]).await;
    let mut c2 = TestCall::place(&mut ws, b2.clone(), "ring", "+19995550000").await;
    c2.until(&mut ws, &["ringing"]).await;

    ws.close().await;
    // SIPp's built-in UAS needs the BYE to complete; the ring scenario needs the CANCEL.
    answered
        .wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    ringing
        .wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    b1.close().await;
    b2.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_503_from_the_first_trunk_fails_over_to_the_second() {
    let mut down = Sipp::uas(Some(&Sipp::scenario("trunk_503.xml")), &[]);
    let mut up = Sipp::uas(
        None,
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let mut config = test_config(Some(down.addr));
    config.sip.trunks.push(TrunkConfig {
        name: "backup".into(),
        address: up.addr.to_string(),
        ..TrunkConfig::default()
    });
    config.dialplan.routes[0].trunks.push("backup".into());
    let gw = TestGateway::start(config).await;
    let (mut ws, _) = gw.connect_as("fay", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "fo", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    assert!(!call.seen.contains(&"ended".to_string()));
    down.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    assert!(browser.wait_connected(Duration::from_secs(10)).await);
    let _ = browser.start_sending_tone(25).await;
    assert!(
        browser.wait_received(20, Duration::from_secs(10)).await,
        "audio through the backup trunk"
    );
    call.hangup(&mut ws).await;
    assert_eq!(call.until(&mut ws, &["ended"]).await["reason"], "hangup");
    up.wait(Duration::from_secs(20)).await.assert_one_success();
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn no_failover_on_busy() {
    let mut busy = Sipp::uas(Some(&Sipp::scenario("uas_busy.xml")), &[]);
    // The second trunk is never contacted: nothing listens there.
    let mut config = test_config(Some(busy.addr));
    config.sip.trunks.push(TrunkConfig {
        name: "never".into(),
        address: "127.0.0.1:9".into(),
        ..TrunkConfig::default()
    });
    config.dialplan.routes[0].trunks.push("never".into());
    let gw = TestGateway::start(config).await;
    let (mut ws, _) = gw.connect_as("gus", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "nb", "+15551234567").await;
    let ended = call.until(&mut ws, &["ended"]).await;
    assert_eq!(
        (ended["reason"].as_str(), ended["sip_status"].as_u64()),
        (Some("busy"), Some(486))
    );
    busy.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn unanswered_invite_is_cancelled_after_the_invite_timeout() {
    let mut ringing = Sipp::uas(Some(&Sipp::scenario("uas_ring_cancel.xml")), &[]);
    let mut config = test_config(Some(ringing.addr));
    config.limits.invite_timeout = Duration::from_secs(2);
    let gw = TestGateway::start(config).await;
    let (mut ws, _) = gw.connect_as("hal", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "nt", "+15551234567").await;
    call.until(&mut ws, &["ringing"]).await;
    let ended = call.until(&mut ws, &["ended"]).await;
    assert_eq!(ended["reason"], "no_answer", "{ended}");
    // The scenario succeeds only when our CANCEL arrives.
    ringing
        .wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_dropped_socket_resumes_and_the_call_survives() {
    let mut sipp = Sipp::uas(
        None,
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let mut config = test_config(Some(sipp.addr));
    config.server.resume_grace = Duration::from_secs(10);
    let gw = TestGateway::start(config).await;
    let (mut ws, ready) = gw.connect_as("ivy", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "rs", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    assert!(browser.wait_connected(Duration::from_secs(10)).await);
    ws.close().await;

    // A wrong resume token is refused; the session is still there for the right one.
    let fresh = common::gateway::token("ivy", "calls:outbound", 3600);
    let mut bad = gw.connect().await;
    bad.send(serde_json::json!({"type": "resume", "session_id": ready["session_id"], "resume_token": "nope", "token": fresh})).await;
    assert_eq!(bad.recv().await["code"], "unauthorized");
    assert_eq!(bad.closed().await, common::gateway::Closed::Code(4001));

    let mut ws = gw.connect().await;
    ws.send(serde_json::json!({"type": "resume", "session_id": ready["session_id"], "resume_token": ready["resume_token"], "token": fresh})).await;
    let again = ws.recv().await;
    assert_eq!(again["type"], "ready", "{again}");
    assert_eq!(again["session_id"], ready["session_id"], "same session");
    assert_ne!(
        again["resume_token"], ready["resume_token"],
        "token rotated"
    );

    // Media kept flowing; the call is still controllable from the new socket.
    let before = browser.received().len();
    let _ = browser.start_sending_tone(25).await;
    assert!(
        browser
            .wait_received(before + 20, Duration::from_secs(10))
            .await,
        "audio after resume"
    );
    call.hangup(&mut ws).await;
    assert_eq!(call.until(&mut ws, &["ended"]).await["reason"], "hangup");
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn far_end_hold_and_unhold_reach_the_browser() {
    // SIPp holds with a re-INVITE (sendonly), checks our recvonly answer, unholds with
    // an UPDATE (sendrecv), checks our sendrecv answer, then hangs up.
    let mut sipp = Sipp::uas(
        Some(&Sipp::scenario("uas_hold_update.xml")),
        &["-mp", &common::ports::port().to_string()],
    );
    let gw = TestGateway::start(test_config(Some(sipp.addr))).await;
    let (mut ws, _) = gw.connect_as("hank", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "h1", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    let hold = call.until(&mut ws, &["hold"]).await;
    assert_eq!(hold["by"], "remote", "{hold}");
    let unhold = call.until(&mut ws, &["unhold"]).await;
    assert_eq!(unhold["by"], "remote", "{unhold}");
    assert_eq!(
        call.until(&mut ws, &["ended"]).await["reason"],
        "remote_hangup"
    );
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn far_end_blind_transfer_moves_the_media_to_the_new_party() {
    // carol echoes audio; the first trunk (refer = "dialplan") answers, then REFERs
    // us to carol's number, which the dial plan routes to carol's trunk.
    let mut carol = Sipp::uas(
        None,
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let mut transferor = Sipp::uas(
        Some(&Sipp::scenario("uas_refer.xml")),
        &[
            "-key",
            "refer_to",
            "sip:+16665550100@127.0.0.1",
            "-mp",
            &common::ports::port().to_string(),
        ],
    );
    let mut config = test_config(Some(transferor.addr));
    config.sip.trunks[0].refer = "dialplan".into();
    config.sip.trunks.push(TrunkConfig {
        name: "carol".into(),
        address: carol.addr.to_string(),
        ..TrunkConfig::default()
    });
    config.dialplan.routes.insert(
        0,
        callbridge::config::RouteConfig::new(r"^\+1666", vec!["carol".into()]),
    );
    let gw = TestGateway::start(config).await;
    let (mut ws, _) = gw.connect_as("tina", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "x1", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    assert!(browser.wait_connected(Duration::from_secs(10)).await);
    transferor
        .wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    // After the transfer our audio reaches carol, whose echo comes back.
    let before = browser.received().len();
    let _ = browser.start_sending_tone(50).await;
    assert!(
        browser
            .wait_received(before + 35, Duration::from_secs(10))
            .await,
        "audio echoed by the transfer target"
    );
    call.hangup(&mut ws).await;
    assert_eq!(call.until(&mut ws, &["ended"]).await["reason"], "hangup");
    let outcome = carol.wait(Duration::from_secs(20)).await;
    outcome.assert_one_success();
    assert!(
        outcome
            .messages
            .contains("INVITE sip:+16665550100@127.0.0.1 SIP/2.0"),
        "the dial plan's number through carol's trunk: {}",
        outcome.messages
    );
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn dtmf_goes_as_sip_info_on_an_info_trunk() {
    // The scenario answers, expects INFO Signal=5 then Signal=# (dtmf-relay), then BYE.
    let mut sipp = Sipp::uas(
        Some(&Sipp::scenario("uas_info_dtmf.xml")),
        &["-mp", &common::ports::port().to_string()],
    );
    let mut config = test_config(Some(sipp.addr));
    config.sip.trunks[0].dtmf_mode = "info".into();
    let gw = TestGateway::start(config).await;
    let (mut ws, _) = gw.connect_as("ida", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "i1", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    ws.send(serde_json::json!({"type": "dtmf", "call_id": "i1", "digits": "5#"}))
        .await;
    // Bad digits are refused with a clear error and the call goes on.
    ws.send(serde_json::json!({"type": "dtmf", "call_id": "i1", "digits": "5x"}))
        .await;
    let error = ws.recv_type("error", |_| {}).await;
    assert_eq!(error["call_id"], "i1");
    assert!(
        error["message"].as_str().expect("message").contains("dtmf"),
        "{error}"
    );
    // Both INFOs ("5", "#") answered before the BYE.
    let sip = &gw.server.as_ref().expect("running").gateway.sip;
    assert!(
        common::sipp::eventually(Duration::from_secs(10), || {
            common::sipp::counted(sip, callbridge::sip::Direction::Inbound, "INFO", "200") == 2
        })
        .await,
        "both INFOs answered 200"
    );
    call.hangup(&mut ws).await;
    call.until(&mut ws, &["ended"]).await;
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn caller_id_goes_in_from_and_p_asserted_identity_and_privacy_when_asked() {
    let mut sipp = Sipp::uas(Some(&Sipp::scenario("uas_busy.xml")), &[]);
    let mut config = test_config(Some(sipp.addr));
    config.dialplan.routes[0].strip = 2;
    config.dialplan.routes[0].prepend = "9".into();
    let gw = TestGateway::start(config).await;
    let mut claims = common::gateway::claims("pat", "calls:outbound", 3600);
    claims.caller_id = Some("+15550009999".into());
    let token = callbridge::auth::mint_hs256(common::gateway::SECRET, &claims).expect("mint");
    let mut ws = gw.connect().await;
    ws.send(serde_json::json!({"type": "auth", "token": token}))
        .await;
    assert_eq!(ws.recv().await["type"], "ready");
    let browser = Browser::new(BrowserOptions::default()).await;
    let candidates = browser.take_candidates();
    drop(candidates);
    ws.send(serde_json::json!({"type": "call", "call_id": "p1", "to": "+1 (555) 123-4567", "sdp": browser.offer_sdp(), "privacy": true})).await;
    let ended = ws.recv_type("ended", |_| {}).await;
    assert_eq!(ended["sip_status"], 486);
    let outcome = sipp.wait(Duration::from_secs(20)).await;
    outcome.assert_one_success();
    let invite = outcome
        .messages
        .split("INVITE sip:")
        .nth(1)
        .expect("INVITE logged");
    assert!(
        invite.starts_with("95551234567@"),
        "strip 2 + prepend 9 of the E.164 number: {invite}"
    );
    assert!(
        invite.contains("P-Asserted-Identity: <sip:+15550009999@"),
        "{invite}"
    );
    assert!(invite.contains("Privacy: id"), "{invite}");
    let from = invite
        .lines()
        .find(|l| l.starts_with("From:"))
        .expect("From");
    assert!(
        !from.contains("+15550009999"),
        "caller id withheld in From: {from}"
    );
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn a_recorded_call_yields_a_stereo_wav_with_both_channels() {
    let mut sipp = Sipp::uas(
        None,
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(Some(sipp.addr));
    config.media.recording_dir = dir.path().to_path_buf();
    let gw = TestGateway::start(config).await;
    let mut claims = common::gateway::claims("rec", "calls:outbound", 3600);
    claims.record = Some(true);
    let token = callbridge::auth::mint_hs256(common::gateway::SECRET, &claims).expect("mint");
    let mut ws = gw.connect().await;
    ws.send(serde_json::json!({"type": "auth", "token": token}))
        .await;
    assert_eq!(ws.recv().await["type"], "ready");
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "r1", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    assert!(browser.wait_connected(Duration::from_secs(10)).await);
    let answered_at = std::time::Instant::now();
    let _ = browser.start_sending_tone(100).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    call.hangup(&mut ws).await;
    call.until(&mut ws, &["ended"]).await;
    let talk = answered_at.elapsed();
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    gw.stop().await;
    let wav = std::fs::read_dir(dir.path())
        .expect("recording dir")
        .filter_map(|e| e.ok())
        .find(|e| e.path().extension().is_some_and(|x| x == "wav"))
        .expect("a WAV was written")
        .path();
    let bytes = std::fs::read(&wav).expect("read wav");
    assert_eq!(&bytes[..4], b"RIFF");
    assert_eq!(u16::from_le_bytes([bytes[22], bytes[23]]), 2, "stereo");
    let rate = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
    let samples: Vec<i16> = bytes[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    let seconds = samples.len() as f64 / 2.0 / f64::from(rate);
    assert!(
        seconds > 1.5 && seconds <= talk.as_secs_f64() + 0.3,
        "{seconds} s recorded for a {talk:?} call"
    );
    let energy = |ch: usize| {
        samples
            .iter()
            .skip(ch)
            .step_by(2)
            .map(|s| i64::from(*s).abs())
            .sum::<i64>()
    };
    assert!(
        energy(0) > 0 && energy(1) > 0,
        "browser (left) and far end (right) both carry audio"
    );
    browser.close().await;
}
