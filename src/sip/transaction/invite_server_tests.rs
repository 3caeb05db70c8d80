use std::time::{Duration, Instant};

use super::super::test_util::{first_line, ms, response, run_until};
use super::*;

fn start(reliability: Reliability) -> (Instant, InviteServer) {
    let now = Instant::now();
    let tx = InviteServer::new(
        now,
        &response("INVITE", 100),
        TimerConfig::default(),
        reliability,
    );
    (now, tx)
}

#[test]
fn sends_100_trying_when_the_tu_is_silent_for_200_ms() {
    let (now, mut tx) = start(Reliability::Unreliable);
    assert_eq!(tx.poll_timeout(), Some(now + Duration::from_millis(200)));
    tx.handle_timeout(now + Duration::from_millis(199));
    assert!(tx.poll_transmit().is_none());
    tx.handle_timeout(now + Duration::from_millis(200));
    assert_eq!(
        first_line(&tx.poll_transmit().unwrap()),
        "SIP/2.0 100 Trying"
    );
    tx.handle_request(now);
    assert!(
        tx.poll_transmit().is_some(),
        "100 resent for a retransmission"
    );
    assert_eq!(tx.poll_timeout(), None);
}

#[test]
fn a_prompt_answer_sends_no_100() {
    let (now, mut tx) = start(Reliability::Unreliable);
    tx.send_response(now, &response("INVITE", 180)).unwrap();
    assert_eq!(tx.poll_timeout(), None, "no 100 once the TU answered");
    assert!(first_line(&tx.poll_transmit().unwrap()).starts_with("SIP/2.0 180"));
}

#[test]
fn timer_g_resends_a_failure_doubling_to_t2_until_timer_h() {
    let (now, mut tx) = start(Reliability::Unreliable);
    tx.send_response(now, &response("INVITE", 486)).unwrap();
    let sent = run_until(&mut tx, now, Duration::from_secs(40));
    // 0, then G at T1, 3*T1, 7*T1, then every T2 (4 s) up to H at 64*T1 = 32 s.
    assert_eq!(
        ms(&sent),
        vec![
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(tx.poll_event(), Some(ServerEvent::NoAck));
    assert!(tx.is_terminated());
}

#[test]
fn ack_stops_g_and_timer_i_absorbs_acks() {
    let (now, mut tx) = start(Reliability::Unreliable);
    tx.send_response(now, &response("INVITE", 488)).unwrap();
    tx.poll_transmit();
    tx.handle_request(now + Duration::from_millis(100));
    assert!(
        tx.poll_transmit().is_some(),
        "final resent on INVITE retransmission"
    );
    tx.handle_ack(now + Duration::from_millis(600));
    assert_eq!(tx.poll_timeout(), Some(now + Duration::from_millis(5600)));
    tx.handle_ack(now + Duration::from_secs(1));
    tx.handle_timeout(now + Duration::from_millis(5599));
    assert!(!tx.is_terminated());
    assert!(tx.poll_transmit().is_none(), "no resend in Confirmed");
    tx.handle_timeout(now + Duration::from_millis(5600));
    assert!(tx.is_terminated());
    assert_eq!(tx.poll_event(), None);
}

#[test]
fn accepted_resends_2xx_until_ack() {
    let (now, mut tx) = start(Reliability::Unreliable);
    tx.send_response(now, &response("INVITE", 200)).unwrap();
    assert!(tx.is_accepted());
    let sent = run_until(&mut tx, now, Duration::from_millis(1600));
    assert_eq!(ms(&sent), vec![0, 500, 1500]);
    tx.handle_ack(now + Duration::from_millis(1700));
    assert!(tx.is_terminated());
    assert_eq!(tx.poll_event(), None);
}

#[test]
fn accepted_without_ack_reports_no_ack_at_64_t1() {
    let (now, mut tx) = start(Reliability::Unreliable);
    tx.send_response(now, &response("INVITE", 200)).unwrap();
    tx.handle_timeout(now + Duration::from_millis(31_999));
    assert_eq!(tx.poll_event(), None);
    tx.handle_timeout(now + Duration::from_secs(32));
    assert_eq!(tx.poll_event(), Some(ServerEvent::NoAck));
}

#[test]
fn reliable_has_no_g_keeps_h_and_i_is_zero() {
    let (now, mut tx) = start(Reliability::Reliable);
    tx.send_response(now, &response("INVITE", 603)).unwrap();
    let sent = run_until(&mut tx, now, Duration::from_secs(20));
    assert_eq!(ms(&sent), vec![0], "no Timer G on TCP/TLS");
    assert_eq!(tx.poll_timeout(), Some(now + Duration::from_secs(32)), "H");
    tx.handle_ack(now + Duration::from_secs(1));
    assert!(tx.is_terminated(), "Timer I is zero on reliable transports");

    let (now, mut tx) = start(Reliability::Reliable);
    tx.send_response(now, &response("INVITE", 200)).unwrap();
    let sent = run_until(&mut tx, now, Duration::from_secs(40));
    assert_eq!(ms(&sent), vec![0]);
    assert_eq!(tx.poll_event(), Some(ServerEvent::NoAck));
}

#[test]
fn a_second_final_is_an_error() {
    let (now, mut tx) = start(Reliability::Unreliable);
    tx.send_response(now, &response("INVITE", 200)).unwrap();
    let err = tx.send_response(now, &response("INVITE", 500)).unwrap_err();
    assert!(err.to_string().contains("Accepted"), "{err}");
}
