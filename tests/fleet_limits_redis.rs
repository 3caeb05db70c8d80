//! Per-user concurrent calls hold across the fleet: two instances share a real
//! redis-server (`[cluster] redis_url`) and a user allowed one call places it on
//! instance A; the same user's call on instance B is refused (`limit`) while it is
//! up, and taken once it has ended. Before the leases, each instance counted only
//! its own calls and B admitted the second call.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use callbridge::config::Config;
use common::browser::{Browser, BrowserOptions};
use common::call::TestCall;
use common::gateway::{TestGateway, test_config};
use common::redis::RedisServer;
use common::sipp::Sipp;

fn instance(redis: &RedisServer, trunk: SocketAddr) -> Config {
    let mut config = test_config(Some(trunk));
    config.cluster.redis_url = Some(redis.url.as_str().into());
    config.limits.max_calls_per_user = 1;
    config
}

fn echo() -> Sipp {
    Sipp::uas(
        None,
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    )
}

#[tokio::test]
async fn a_users_call_limit_holds_across_two_instances() {
    let redis = RedisServer::start();
    let (mut trunk_a, mut trunk_b) = (echo(), echo());
    let a = TestGateway::start(instance(&redis, trunk_a.addr)).await;
    let b = TestGateway::start(instance(&redis, trunk_b.addr)).await;
    let (mut ws_a, _) = a.connect_as("alice", "calls:outbound").await;
    let (mut ws_b, _) = b.connect_as("alice", "calls:outbound").await;

    // Alice's one call, on A.
    let browser_a = Browser::new(BrowserOptions::default()).await;
    let mut first = TestCall::place(&mut ws_a, browser_a.clone(), "c1", "+15551234567").await;
    first.until(&mut ws_a, &["answered"]).await;

    // A second one on B is over her limit across the fleet.
    let browser_b = Browser::new(BrowserOptions::default()).await;
    let mut second = TestCall::place(&mut ws_b, browser_b.clone(), "c2", "+15551234567").await;
    let error = second.until(&mut ws_b, &["error"]).await;
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("across the gateway fleet")),
        "{error}"
    );
    let ended = second.until(&mut ws_b, &["ended"]).await;
    assert_eq!(ended["reason"], "limit", "{ended}");
    assert!(
        !second
            .seen
            .iter()
            .any(|k| k == "ringing" || k == "answered"),
        "no INVITE left B: {:?}",
        second.seen
    );

    // Once the call on A has ended, B takes her next call.
    first.hangup(&mut ws_a).await;
    first.until(&mut ws_a, &["ended"]).await;
    let browser_c = Browser::new(BrowserOptions::default()).await;
    let mut third = TestCall::place(&mut ws_b, browser_c.clone(), "c3", "+15551234567").await;
    third.until(&mut ws_b, &["answered"]).await;
    third.hangup(&mut ws_b).await;
    third.until(&mut ws_b, &["ended"]).await;

    for sipp in [&mut trunk_a, &mut trunk_b] {
        sipp.wait(Duration::from_secs(20))
            .await
            .assert_one_success();
    }
    browser_a.close().await;
    browser_b.close().await;
    browser_c.close().await;
    a.stop().await;
    b.stop().await;
}

/// The leases against a real Redis with the time passed in: a crashed instance's
/// lease runs out after `LEASE` unless renewed, and a released one frees its slot.
#[tokio::test]
async fn leases_run_out_unless_renewed_and_free_their_slot_when_released() {
    use callbridge::call::fleet_limits::{FleetLimits, LEASE, OverFleetLimit};
    let redis = RedisServer::start();
    let unchecked = prometheus::IntCounter::new("u", "u").expect("counter");
    let limits = FleetLimits::redis(&redis.url, unchecked.clone())
        .await
        .expect("redis");
    let lease = LEASE.as_millis() as u64;
    let t0 = 1_000_000;
    assert_eq!(limits.admit("bob", "c-1", 1, t0).await, Ok(()));
    assert_eq!(
        limits.admit("bob", "c-2", 1, t0 + 1_000).await,
        Err(OverFleetLimit { held: 1 })
    );
    // Another user is not counted with bob; the same call admitted twice is one lease.
    assert_eq!(limits.admit("carol", "c-3", 1, t0).await, Ok(()));
    assert_eq!(limits.admit("bob", "c-1", 1, t0 + 2_000).await, Ok(()));
    // Renewed at t0 + 60 s: still held just after the first lease would have run out.
    limits
        .renew(&[("bob".into(), "c-1".into())], t0 + 60_000)
        .await;
    assert_eq!(
        limits.admit("bob", "c-2", 1, t0 + lease + 1).await,
        Err(OverFleetLimit { held: 1 })
    );
    // Not renewed again (its instance died): gone after its lease.
    assert_eq!(
        limits.admit("bob", "c-2", 1, t0 + 60_000 + lease + 1).await,
        Ok(())
    );
    // Released: the slot is free at once; a released lease is not renewed back.
    limits.release("bob", "c-2").await;
    limits
        .renew(&[("bob".into(), "c-2".into())], t0 + 70_000 + lease)
        .await;
    assert_eq!(
        limits.admit("bob", "c-4", 1, t0 + 70_000 + lease + 1).await,
        Ok(())
    );
    assert_eq!(unchecked.get(), 0, "every admission asked Redis");
}

/// Redis gone: calls are admitted on the instance's own count (the local registry
/// already applied the limit), and counted, rather than every call being refused.
#[tokio::test]
async fn with_redis_gone_admission_falls_back_to_the_local_count_and_is_counted() {
    use callbridge::call::fleet_limits::FleetLimits;
    let redis = RedisServer::start();
    let unchecked = prometheus::IntCounter::new("u", "u").expect("counter");
    let limits = FleetLimits::redis(&redis.url, unchecked.clone())
        .await
        .expect("redis");
    drop(redis);
    let admitted = tokio::time::timeout(
        Duration::from_secs(30),
        limits.admit("bob", "c-1", 1, 1_000),
    )
    .await
    .expect("a dead Redis is given up on within bounded time");
    assert_eq!(admitted, Ok(()));
    assert_eq!(unchecked.get(), 1);
}
