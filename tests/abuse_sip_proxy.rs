//! Trusted-proxy spoofing against running gateways. An attacker at an address in
//! `sip.trusted_proxies` (another instance's network) sends an INVITE whose second
//! Via, and a forwarding header of its own making, claim that a digest trunk sent
//! it. Before, the Via decided admission and the trunk's digest was skipped: the
//! call rang. Now only a forwarding header signed with `cluster.forward_secret`
//! counts, so the INVITE is the attacker's own: 403 (no trunk's address) or 407
//! (a digest trunk's address). The real path still works: a trunk's authenticated
//! INVITE at instance A is forwarded, signed, to instance B (location in a real
//! redis-server), which admits it without a second challenge.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use callbridge::config::{Config, DidConfig, TrunkConfig};
use common::gateway::{TestGateway, WsClient, test_config};
use common::redis::RedisServer;
use common::sipp::{Sipp, SippTransport};
use serde_json::json;

const DID: &str = "+15550001111";
const SECRET: &str = "cluster-forward-secret-0123456789abcdef";
/// The real trunk's address.
const TRUNK: [u8; 4] = [127, 0, 0, 2];
const SIPP_WAIT: Duration = Duration::from_secs(20);

/// A gateway whose DID rings `alice`; trunk `carrier` needs digest and is admitted
/// from 127.0.0.2 and `also_from`; `trusted` may forward.
fn config(also_from: &[&str], trusted: &[&str]) -> Config {
    let mut config = test_config(None);
    let mut inbound_from = vec!["127.0.0.2".to_string()];
    inbound_from.extend(also_from.iter().map(|s| s.to_string()));
    config.sip.trunks.push(TrunkConfig {
        name: "carrier".into(),
        address: "127.0.0.2:9".into(),
        inbound_from,
        inbound_auth: true,
        username: Some("acct".into()),
        password: Some("s3cret".into()),
        ..TrunkConfig::default()
    });
    config.dids.push(DidConfig {
        number: DID.into(),
        user: "alice".into(),
    });
    config.sip.trusted_proxies = trusted.iter().map(|s| s.to_string()).collect();
    config.cluster.forward_secret = SECRET.into();
    config
}

/// Runs the forged INVITE from `from` and returns SIPp's message log.
async fn forged_invite_from(from: [u8; 4], sip: std::net::SocketAddr) -> String {
    let mut sipp = Sipp::uac_from(
        IpAddr::from(from),
        SippTransport::Udp,
        &Sipp::scenario("uac_forged_forward.xml"),
        sip,
        DID,
        &[],
    );
    let outcome = sipp.wait(SIPP_WAIT).await;
    outcome.assert_one_success();
    outcome.messages
}

/// Waits for `incoming`, accepts it with a test browser, checks the caller, and
/// follows the call to the caller's hangup.
async fn answer_and_follow(ws: &mut WsClient, caller: &str) {
    let incoming = ws.recv_type("incoming", |_| {}).await;
    assert_eq!(
        incoming["from"], caller,
        "the first call to ring: {incoming}"
    );
    let call_id = incoming["call_id"].as_str().expect("call id").to_string();
    let browser = common::browser::Browser::answering(incoming["sdp"].as_str().expect("sdp")).await;
    ws.send(json!({"type": "accept", "call_id": call_id, "sdp": browser.offer_sdp()}))
        .await;
    let answered = ws.recv_type("answered", |_| {}).await;
    assert_eq!(answered["call_id"], call_id.as_str());
    let ended = ws.recv_type("ended", |_| {}).await;
    assert_eq!(ended["reason"], "remote_hangup");
    browser.close().await;
}

#[tokio::test]
async fn a_forged_via_from_a_trusted_proxy_is_refused_or_challenged() {
    // 127.0.0.4 and 127.0.0.5 are trusted to forward; 127.0.0.4 is also one of the
    // digest trunk's own addresses.
    let gw = TestGateway::start(config(&["127.0.0.4"], &["127.0.0.4", "127.0.0.5"])).await;
    let sip = gw.server.as_ref().expect("running").sip_addr;
    let (mut ws, _) = gw.connect_as("alice", "calls:inbound").await;

    let log = forged_invite_from([127, 0, 0, 5], sip).await;
    assert!(
        log.contains("SIP/2.0 403 Forbidden"),
        "the proxy's own INVITE, and the proxy is no trunk: {log}"
    );
    let log = forged_invite_from([127, 0, 0, 4], sip).await;
    assert!(
        log.contains("SIP/2.0 407 Proxy Authentication Required"),
        "digest is not skipped because of a Via: {log}"
    );

    // The trunk itself, with its credentials, rings alice: and the first call she
    // sees is this one (neither forgery rang).
    let mut sipp = Sipp::uac_from(
        IpAddr::from(TRUNK),
        SippTransport::Udp,
        &Sipp::scenario("uac_auth.xml"),
        sip,
        DID,
        &["-au", "acct", "-ap", "s3cret"],
    );
    answer_and_follow(&mut ws, "+15552223333").await;
    sipp.wait(SIPP_WAIT).await.assert_one_success();
    gw.stop().await;
}

#[tokio::test]
async fn the_signed_forward_between_two_gateways_still_works() {
    let redis = RedisServer::start();
    let instance = || {
        // Both instances run on 127.0.0.1, trusted by each other; the trunk is
        // elsewhere (127.0.0.2), so B can only learn it from A's signed header.
        let mut config = config(&[], &["127.0.0.1"]);
        config.cluster.redis_url = Some(redis.url.clone().into());
        config.cluster.inbound_mode = "proxy".into();
        config
    };
    let a = TestGateway::start(instance()).await;
    let b = TestGateway::start(instance()).await;
    let (mut ws, _) = b.connect_as("alice", "calls:inbound").await;
    // Wait until B's presence is in the shared store (the event A will look up).
    common::redis::wait_located(&redis.url, "alice").await;
    let a_sip = a.server.as_ref().expect("a").sip_addr;
    let mut sipp = Sipp::uac_from(
        IpAddr::from(TRUNK),
        SippTransport::Udp,
        &Sipp::scenario("uac_auth_via_proxy.xml"),
        a_sip,
        DID,
        &["-au", "acct", "-ap", "s3cret"],
    );
    answer_and_follow(&mut ws, "+15552223333").await;
    let outcome = sipp.wait(SIPP_WAIT).await;
    outcome.assert_one_success();
    assert_eq!(
        outcome.messages.matches("SIP/2.0 407").count(),
        1,
        "A challenged once; B believed A's signed header: {}",
        outcome.messages
    );
    let b_sip = b.server.as_ref().expect("b").sip_addr;
    assert!(
        outcome.messages.contains(&format!("BYE sip:{DID}@{b_sip}")),
        "the dialog is B's: {}",
        outcome.messages
    );
    a.stop().await;
    b.stop().await;
}
