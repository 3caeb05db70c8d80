//! Trunk health checks: OPTIONS pings to a SIPp that answers keep the trunk
//! reachable; once SIPp is killed the next ping times out and the trunk is down;
//! a SIPp started again on the same port brings it back. A TCP trunk nobody
//! listens on is down at once (connection refused). Registration (401 then 200,
//! refresh) is in sip_auth.rs.

mod common;
use common::sipp;

use std::time::Duration;

use callbridge::sip::{Direction, TimerConfig, Transport, TrunkSettings};
use sipp::{Sipp, SippTransport, endpoint_with, eventually};

/// T1 = 50 ms, so an unanswered ping times out after 64 * T1 = 3.2 s.
fn fast_timers() -> TimerConfig {
    TimerConfig {
        t1: Duration::from_millis(50),
        t2: Duration::from_millis(400),
        t4: Duration::from_millis(500),
        timer_d: Duration::from_millis(500),
    }
}

fn pinged(name: &str, port: u16, transport: Transport) -> TrunkSettings {
    TrunkSettings {
        name: name.into(),
        host: "127.0.0.1".into(),
        port,
        transport,
        options_interval: Some(Duration::from_millis(300)),
        ..TrunkSettings::default()
    }
}

#[tokio::test]
async fn options_ping_tracks_a_trunk_going_down_and_up() {
    let scenario = Sipp::scenario("uas_options_loop.xml");
    let mut sipp = Sipp::uas(Some(&scenario), &[]);
    let port = sipp.addr.port();
    let ep = endpoint_with(fast_timers()).await;
    ep.start_trunks(vec![pinged("pinged", port, Transport::Udp)])
        .await
        .unwrap();
    let answered = |n: u64| {
        ep.message_counts().iter().any(|c| {
            c.direction == Direction::Inbound
                && c.method == "OPTIONS"
                && c.status == "200"
                && c.count >= n
        })
    };
    assert!(
        eventually(Duration::from_secs(10), || answered(3)).await,
        "three pings answered"
    );
    let status = ep.trunk_status("pinged").expect("status");
    assert!(status.reachable && status.detail.is_none(), "{status:?}");
    assert!(ep.trunk_usable("pinged"));

    sipp.kill();
    assert!(
        eventually(Duration::from_secs(15), || !ep.trunk_usable("pinged")).await,
        "down after a ping timeout: {:?}",
        ep.trunk_status("pinged")
    );
    let status = ep.trunk_status("pinged").unwrap();
    assert_eq!(status.detail.as_deref(), Some("OPTIONS timeout"));
    assert!(status.last_change.is_some());

    let _again = Sipp::uas_at(SippTransport::Udp, port, Some(&scenario), &[]);
    assert!(
        eventually(Duration::from_secs(15), || ep.trunk_usable("pinged")).await,
        "up again once it answers: {:?}",
        ep.trunk_status("pinged")
    );
    ep.shutdown().await;
}

#[tokio::test]
async fn a_refused_tcp_trunk_is_down_at_once() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ep = endpoint_with(fast_timers()).await;
    ep.start_trunks(vec![pinged("closed", port, Transport::Tcp)])
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || !ep.trunk_usable("closed")).await,
        "{:?}",
        ep.trunk_status("closed")
    );
    let detail = ep
        .trunk_status("closed")
        .unwrap()
        .detail
        .unwrap_or_default();
    assert!(detail.starts_with("OPTIONS transport error"), "{detail}");
    assert_eq!(ep.trunk_statuses().len(), 1);
    ep.shutdown().await;
}
