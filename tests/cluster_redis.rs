//! Two gateway instances on loopback sharing a real redis-server as the location
//! store: an INVITE for a user whose sessions live on instance B reaches instance A,
//! which redirects it (302) — or, in proxy mode, forwards it — to B, where the
//! browser accepts.

mod common;

use std::time::Duration;

use callbridge::config::{Config, DidConfig, TrunkConfig};
use common::gateway::{TestGateway, WsClient, test_config};
use common::redis::RedisServer;
use common::sipp::Sipp;
use serde_json::json;

const DID: &str = "+15550001111";

fn instance(redis: &RedisServer, mode: &str) -> Config {
    let mut config = test_config(None);
    config.sip.trunks.push(TrunkConfig {
        name: "carrier".into(),
        address: "127.0.0.1:9".into(),
        ..TrunkConfig::default()
    });
    config.dids.push(DidConfig {
        number: DID.into(),
        user: "bob".into(),
    });
    config.cluster.redis_url = Some(redis.url.as_str().into());
    config.cluster.inbound_mode = mode.into();
    config.sip.trusted_proxies = vec!["127.0.0.0/8".into()];
    // Forwarded INVITEs are signed (the same secret on every instance).
    config.cluster.forward_secret = "cluster-forward-secret-0123456789abcdef".into();
    config
}

/// Waits for `incoming` on `ws` and accepts it with a test browser; returns the call id.
async fn accept(ws: &mut WsClient) -> (String, std::sync::Arc<common::browser::Browser>) {
    let incoming = ws.recv_type("incoming", |_| {}).await;
    let call_id = incoming["call_id"].as_str().expect("id").to_string();
    let browser = common::browser::Browser::answering(incoming["sdp"].as_str().expect("sdp")).await;
    ws.send(json!({"type": "accept", "call_id": call_id, "sdp": browser.offer_sdp()}))
        .await;
    (call_id, browser)
}

async fn call_reaches_b_through_a(mode: &str, scenario: &str) {
    let redis = RedisServer::start();
    let a = TestGateway::start(instance(&redis, mode)).await;
    let b = TestGateway::start(instance(&redis, mode)).await;
    let (mut ws, _) = b.connect_as("bob", "calls:inbound").await;
    // B announces bob in Redis: wait until A can find him there.
    common::redis::wait_located(&redis.url, "bob").await;
    let a_sip = a.server.as_ref().expect("a").sip_addr;
    let mut sipp = Sipp::uac(&Sipp::scenario(scenario), a_sip, DID, &["-d", "500"]);
    let (call_id, browser) = accept(&mut ws).await;
    let answered = ws.recv_type("answered", |_| {}).await;
    assert_eq!(answered["call_id"], call_id.as_str());
    let ended = ws.recv_type("ended", |_| {}).await;
    assert_eq!(ended["reason"], "remote_hangup");
    let outcome = sipp.wait(Duration::from_secs(20)).await;
    outcome.assert_one_success();
    if mode == "redirect" {
        assert!(
            outcome.messages.contains("SIP/2.0 302"),
            "A redirected: {}",
            outcome.messages
        );
    }
    browser.close().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn invite_at_the_wrong_instance_is_redirected_to_the_right_one() {
    call_reaches_b_through_a("redirect", "uac_follow_redirect.xml").await;
}

#[tokio::test]
async fn invite_at_the_wrong_instance_is_proxied_in_proxy_mode() {
    call_reaches_b_through_a("proxy", "uac_via_proxy.xml").await;
}
