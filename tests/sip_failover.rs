//! What the call module's failover loop relies on, at SIP level: a 503 from the
//! first trunk (a SIPp) is reported promptly as `Failed { 503 }` and a second trunk
//! (another SIPp) then takes the call; a trunk that never answers over UDP is a 408
//! after Timer B; a refused TCP connection is a prompt 503 (see sip_transport.rs).

mod common;
use common::sipp;

use std::time::Duration;

use callbridge::sip::{SipCallEvent, TimerConfig};
use sipp::{Sipp, endpoint, endpoint_with, invite_request, next_event, next_final_or_answer};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_503_is_reported_promptly_and_the_next_trunk_answers() {
    let mut first = Sipp::uas(Some(&Sipp::scenario("uas_503.xml")), &[]);
    let mut second = Sipp::uas(None, &[]);
    let ep = endpoint().await;

    let (_call, mut events) = ep.invite(invite_request(first.addr)).await.unwrap();
    assert_eq!(
        next_final_or_answer(&mut events).await,
        SipCallEvent::Failed {
            status: 503,
            reason: "Service Unavailable".into()
        }
    );
    // The trunk's own 503 (not a Timer B 408): the failure came from the trunk at once.
    first.wait(WAIT).await.assert_one_success();

    let (call, mut events) = ep.invite(invite_request(second.addr)).await.unwrap();
    assert!(matches!(
        next_final_or_answer(&mut events).await,
        SipCallEvent::Answered { .. }
    ));
    call.hangup();
    assert_eq!(next_event(&mut events).await, SipCallEvent::Terminated);
    second.wait(WAIT).await.assert_one_success();
    ep.shutdown().await;
}

#[tokio::test]
async fn a_silent_udp_trunk_is_a_408_after_timer_b() {
    // T1 = 50 ms: Timer B = 64 * T1 = 3.2 s.
    let timers = TimerConfig {
        t1: Duration::from_millis(50),
        ..TimerConfig::default()
    };
    let ep = endpoint_with(timers).await;
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (_call, mut events) = ep
        .invite(invite_request(silent.local_addr().unwrap()))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut events).await,
        SipCallEvent::Failed {
            status: 408,
            reason: "Request Timeout".into()
        }
    );
    ep.shutdown().await;
}
