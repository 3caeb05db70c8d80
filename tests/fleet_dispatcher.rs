//! A SIP-side balancer in front of two instances, all real: Kamailio 5.6 running
//! `deploy/kamailio/kamailio.cfg` (dispatcher, OPTIONS probes every second) in front
//! of two callbridge processes. One instance drains with a call up; it answers the
//! probes 503, Kamailio marks it down and keeps it down while the call goes on, and
//! the carrier's next INVITEs (SIPp through Kamailio) all reach the other instance.
//! Before the fix the draining instance answered its probes 200 and the dispatcher
//! kept (or put back) it in rotation.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::http::{admin_post, admin_sample};
use common::kamailio::{Kamailio, KamailioOptions};
use common::process::{GatewayProcess, TrunkGateway, answered_call, trunk_config, write_config};
use common::sipp::Sipp;

/// Starts an instance in its own directory on a SIP port from the allocator.
async fn instance(trunk: SocketAddr) -> (GatewayProcess, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sip = SocketAddr::from(([127, 0, 0, 1], common::ports::port()));
    let gw = TrunkGateway {
        sip,
        trunk,
        drain_timeout: "60s",
        max_calls: None,
    };
    let config = write_config(dir.path(), &trunk_config(dir.path(), &gw));
    (GatewayProcess::start(&config, dir.path()).await, sip, dir)
}

/// `callbridge_sip_messages_total` with these labels on the instance at `admin`.
async fn sip_count(admin: SocketAddr, direction: &str, method: &str, status: &str) -> u64 {
    let series = format!(
        r#"callbridge_sip_messages_total{{direction="{direction}",method="{method}",status="{status}"}}"#
    );
    admin_sample(admin, &series).await as u64
}

/// Waits (bounded) until `check` holds, re-testing every 100 ms; panics with `what`
/// and Kamailio's log.
async fn until<F, Fut>(kam: &Kamailio, what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not within {timeout:?}\n--- Kamailio ---\n{}",
            kam.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn deploy_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kamailio/kamailio.cfg")
}

#[tokio::test]
async fn a_draining_instance_is_taken_out_of_the_dispatcher_and_gets_no_new_invite() {
    let mut trunk = Sipp::uas(
        None,
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let (mut a, a_sip, _a_dir) = instance(trunk.addr).await;
    let (b, b_sip, _b_dir) = instance(trunk.addr).await;
    let lists = tempfile::tempdir().expect("tempdir");
    let list = lists.path().join("dispatcher.list");
    std::fs::write(&list, format!("1 sip:{a_sip}\n1 sip:{b_sip}\n")).expect("list");
    let kam = Kamailio::start(KamailioOptions {
        config: Some(deploy_config()),
        raw_defines: vec![
            format!("DS_LIST=\"{}\"", list.display()),
            "DS_PING_INTERVAL=1".into(),
        ],
        ..KamailioOptions::default()
    });
    let (a_admin, b_admin) = (a.admin(), b.admin());

    // Both instances answer the probes 200 while they take calls.
    until(
        &kam,
        "both instances probed and up",
        Duration::from_secs(15),
        || async {
            sip_count(a_admin, "out", "OPTIONS", "200").await > 0
                && sip_count(b_admin, "out", "OPTIONS", "200").await > 0
        },
    )
    .await;

    // A call on instance A, then A drains (a rolling upgrade).
    let (mut ws, mut call, browser) = answered_call(&a).await;
    assert_eq!(admin_post(a_admin, "/v1/drain", None).await.status, 202);

    // Kamailio sees A's 503s and takes it out of rotation.
    let down = format!("dispatcher dst-down sip:{a_sip}");
    until(&kam, "A marked down", Duration::from_secs(15), || async {
        kam.log().contains(&down)
    })
    .await;
    let refused = sip_count(a_admin, "out", "OPTIONS", "503").await;
    assert!(refused > 0, "A answered its probes 503");
    // A stays down while it keeps being probed (two more probes, answered 503).
    until(
        &kam,
        "two more probes of A",
        Duration::from_secs(15),
        || async { sip_count(a_admin, "out", "OPTIONS", "503").await >= refused + 2 },
    )
    .await;

    // The carrier's next INVITEs through Kamailio all reach B (which refuses them,
    // the DID is nobody's: what counts is who was asked).
    for _ in 0..2 {
        let mut carrier = Sipp::uac(
            &Sipp::scenario("uac_refused.xml"),
            kam.addr,
            "+15550001111",
            &[],
        );
        carrier
            .wait(Duration::from_secs(20))
            .await
            .assert_one_success();
    }
    assert_eq!(sip_count(a_admin, "in", "INVITE", "none").await, 0);
    assert!(sip_count(b_admin, "in", "INVITE", "none").await >= 2);
    let log = kam.log();
    assert!(
        !log.contains(&format!("dispatcher dst-up sip:{a_sip}")),
        "{log}"
    );
    assert!(
        !log.contains(&format!("dispatcher dst-down sip:{b_sip}")),
        "{log}"
    );

    // The call on A went on through the drain; A exits 0 once it ends.
    assert!(a.running(), "A keeps running while its call is up");
    call.hangup(&mut ws).await;
    call.until(&mut ws, &["ended"]).await;
    let status = a.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "A exits 0 after the drain: {status:?}");
    trunk
        .wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
}
