use std::time::{Duration, Instant};

use super::super::test_util::{first_line, ms, request, response, run_until};
use super::*;

fn start() -> (Instant, InviteClient) {
    let now = Instant::now();
    let tx = InviteClient::new(
        now,
        request("INVITE"),
        TimerConfig::default(),
        Reliability::Unreliable,
    );
    (now, tx)
}

#[test]
fn timer_a_doubles_and_timer_b_times_out_at_64_t1() {
    let (now, mut tx) = start();
    let sent = run_until(&mut tx, now, Duration::from_secs(60));
    // Sent at 0, then Timer A: T1, 3*T1, 7*T1, 15*T1, 31*T1, 63*T1 (interval doubling).
    assert_eq!(ms(&sent), vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(tx.poll_event(), Some(ClientEvent::Timeout));
    assert!(tx.is_terminated());
    assert_eq!(tx.poll_timeout(), None);
}

#[test]
fn timer_b_fires_exactly_at_64_t1() {
    let (now, mut tx) = start();
    tx.handle_timeout(now + Duration::from_millis(31_999));
    assert_eq!(tx.poll_event(), None);
    tx.handle_timeout(now + Duration::from_secs(32));
    assert_eq!(tx.poll_event(), Some(ClientEvent::Timeout));
}

#[test]
fn provisional_stops_retransmissions() {
    let (now, mut tx) = start();
    assert!(tx.poll_transmit().is_some());
    tx.handle_response(now, response("INVITE", 180)).unwrap();
    assert!(matches!(tx.poll_event(), Some(ClientEvent::Provisional(_))));
    assert_eq!(tx.poll_timeout(), None, "Proceeding has no timer");
    assert!(!tx.is_calling());
}

#[test]
fn ok_terminates_without_ack() {
    let (now, mut tx) = start();
    tx.poll_transmit();
    tx.handle_response(now, response("INVITE", 200)).unwrap();
    assert!(matches!(tx.poll_event(), Some(ClientEvent::Final(_))));
    assert!(tx.poll_transmit().is_none(), "2xx is ACKed by the TU");
    assert!(tx.is_terminated());
}

#[test]
fn non_2xx_is_acked_on_same_branch_and_timer_d_absorbs() {
    let (now, mut tx) = start();
    tx.poll_transmit();
    tx.handle_response(now, response("INVITE", 486)).unwrap();
    let ack = String::from_utf8(tx.poll_transmit().unwrap()).unwrap();
    assert_eq!(
        first_line(ack.as_bytes()),
        "ACK sip:bob@example.com SIP/2.0"
    );
    assert!(ack.contains("branch=z9hG4bKtest"), "{ack}");
    assert!(ack.contains("CSeq: 1 ACK"), "{ack}");
    assert!(ack.contains(";tag=tt"), "To comes from the response: {ack}");
    assert!(matches!(tx.poll_event(), Some(ClientEvent::Final(r)) if r.status_code.code() == 486));

    // A retransmitted 486 is absorbed with another ACK and no event.
    tx.handle_response(now + Duration::from_secs(1), response("INVITE", 486))
        .unwrap();
    assert!(tx.poll_transmit().is_some());
    assert_eq!(tx.poll_event(), None);

    assert_eq!(tx.poll_timeout(), Some(now + Duration::from_secs(32)));
    tx.handle_timeout(now + Duration::from_secs(32));
    assert!(tx.is_terminated());
}

#[test]
fn unexpected_response_in_completed_is_an_error() {
    let (now, mut tx) = start();
    tx.handle_response(now, response("INVITE", 404)).unwrap();
    let err = tx
        .handle_response(now, response("INVITE", 200))
        .unwrap_err();
    assert!(err.to_string().contains("Completed"), "{err}");
}

#[test]
fn transport_error_is_reported_once() {
    let (now, mut tx) = start();
    tx.handle_transport_error(now, "unreachable".into());
    assert_eq!(
        tx.poll_event(),
        Some(ClientEvent::TransportError("unreachable".into()))
    );
    assert!(tx.is_terminated());
}

#[test]
fn reliable_transport_has_no_timer_a() {
    let now = Instant::now();
    let mut tx = InviteClient::new(
        now,
        request("INVITE"),
        TimerConfig::default(),
        Reliability::Reliable,
    );
    let sent = run_until(&mut tx, now, Duration::from_secs(60));
    assert_eq!(ms(&sent), vec![0]);
    assert_eq!(tx.poll_event(), Some(ClientEvent::Timeout));
}
