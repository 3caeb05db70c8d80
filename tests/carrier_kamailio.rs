//! Calls through a real carrier: Kamailio 5.6 with the stock routing
//! (tests/kamailio/kamailio.cfg) as the trunk's registrar and record-routing proxy,
//! SIPp as the far end behind it, the test browser on the gateway's side.
//!
//! - inbound: the gateway registers (digest); the carrier sends a DID's call to the
//!   registered contact (`sip:<account>@<gateway>`, the DID in `To`); the DID's user
//!   answers; audio both ways; either side hangs up, loose-routed through Kamailio;
//! - outbound to a carrier on a port other than 5060: the Request-URI keeps the port,
//!   or the stock proxy refuses the call as foreign ("403 Not relaying");
//! - outbound to a carrier that checks that the From user is the authenticated user
//!   (stock `WITH_AUTH`): From carries the account, the caller id goes in
//!   P-Asserted-Identity / Remote-Party-ID.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use callbridge::config::{Config, DidConfig, RouteConfig, TrunkConfig};
use common::browser::{Browser, BrowserOptions, frame_number};
use common::call::{AcceptedCall, TestCall};
use common::gateway::{SECRET, TestGateway, claims, test_config};
use common::kamailio::{Kamailio, KamailioOptions};
use common::sipp::{Sipp, SippOutcome, eventually};
use serde_json::json;

/// The carrier account of the gateway.
const ACCOUNT: &str = "acct";
/// Its password.
const PASSWORD: &str = "s3cret";
/// A DID the carrier routes to the account.
const DID: &str = "+15550001111";
/// A number the browser calls out to.
const NUMBER: &str = "+15551234567";
/// The caller id in the browser's token.
const CALLER_ID: &str = "+15550009999";

/// A gateway with one trunk, `carrier`, at `kamailio`; every number routes to it.
fn gateway_config(kamailio: SocketAddr) -> Config {
    let mut config = test_config(None);
    config.sip.trunks.push(TrunkConfig {
        name: "carrier".into(),
        address: kamailio.to_string(),
        ..TrunkConfig::default()
    });
    config
        .dialplan
        .routes
        .push(RouteConfig::new(r"^\+[1-9][0-9]+$", vec!["carrier".into()]));
    config
}

/// The trunk with the account's digest credentials.
fn with_account(mut config: Config) -> Config {
    let trunk = &mut config.sip.trunks[0];
    trunk.username = Some(ACCOUNT.into());
    trunk.password = Some(PASSWORD.into());
    config
}

/// Sends a numbered tone from `browser` and asserts the far end's echo brought most
/// of it back.
async fn assert_audio_echoes(browser: &Arc<Browser>) {
    assert!(
        browser.wait_connected(Duration::from_secs(10)).await,
        "ICE/DTLS up"
    );
    let sent = browser.start_sending_tone(60).await.expect("tone");
    assert!(
        browser.wait_received(45, Duration::from_secs(10)).await,
        "the far end's echo came back through the carrier's media path"
    );
    let back: HashSet<u32> = browser
        .received()
        .iter()
        .filter_map(|p| frame_number(&p.payload))
        .collect();
    let echoed = sent
        .iter()
        .filter_map(|p| frame_number(p))
        .filter(|n| back.contains(n))
        .count();
    assert!(echoed >= 45, "{echoed}/60 tone frames came back");
}

/// The first message SIPp received whose start line starts with `start`.
fn received<'a>(outcome: &'a SippOutcome, start: &str) -> &'a str {
    outcome
        .messages
        .split("message received")
        .skip(1)
        .map(|m| m.split_once('\n').map(|(_, rest)| rest).unwrap_or(m))
        .map(|m| m.trim_start())
        .find(|m| m.starts_with(start))
        .unwrap_or_else(|| panic!("SIPp received no {start}: {}", outcome.messages))
}

/// The value of header `name` in `message` (first occurrence).
fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Kamailio as the registrar with the account and the DID, the gateway registered
/// with it, and the DID's user (`alice`) online.
async fn registered_gateway() -> (Kamailio, TestGateway, common::gateway::WsClient) {
    let kamailio = Kamailio::start(KamailioOptions {
        defines: vec!["WITH_AUTH", "WITH_ALIASDB"],
        subscribers: vec![(ACCOUNT.into(), PASSWORD.into())],
        aliases: vec![(DID.into(), ACCOUNT.into())],
        ..KamailioOptions::default()
    });
    let mut config = with_account(gateway_config(kamailio.addr));
    config.sip.trunks[0].register = true;
    config.sip.trunks[0].register_expires = 300;
    config.dids.push(DidConfig {
        number: DID.into(),
        user: "alice".into(),
    });
    let gw = TestGateway::start(config).await;
    let sip = gw.server.as_ref().expect("running").gateway.sip.clone();
    assert!(
        eventually(Duration::from_secs(10), || sip
            .trunk_status("carrier")
            .is_some_and(|s| s.registered == Some(true)))
        .await,
        "the gateway did not register with Kamailio: {:?}\n{}",
        sip.trunk_status("carrier"),
        kamailio.log()
    );
    let (ws, _) = gw.connect_as("alice", "calls:inbound").await;
    (kamailio, gw, ws)
}

#[tokio::test]
async fn inbound_did_through_the_registrar_rings_the_user_and_the_caller_hangs_up() {
    let (kamailio, gw, mut ws) = registered_gateway().await;
    // The carrier's caller dials the DID at Kamailio, which finds the gateway's
    // registered contact and record-routes.
    let mut sipp = Sipp::uac(
        &Sipp::scenario("uac_via_registrar.xml"),
        kamailio.addr,
        DID,
        &[
            "-d",
            "4000",
            "-rtp_echo",
            "-mp",
            &common::ports::port().to_string(),
        ],
    );
    let call = AcceptedCall::accept(&mut ws).await;
    assert_eq!(call.incoming["to"], DID, "the DID comes from To");
    assert_eq!(call.incoming["from"], "+15552223333");
    call.until(&mut ws, "answered").await;
    assert_audio_echoes(&call.browser).await;
    // SIPp's BYE, loose-routed through Kamailio, ends the call.
    assert_eq!(
        call.until(&mut ws, "ended").await["reason"],
        "remote_hangup"
    );
    let outcome = sipp.wait(Duration::from_secs(20)).await;
    outcome.assert_one_success();
    let ok = received(&outcome, "SIP/2.0 200 OK");
    assert!(
        header(ok, "Record-Route").is_some_and(|rr| rr.contains(&kamailio.addr.to_string())),
        "the 200 came through Kamailio's record-route: {ok}"
    );
    call.browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn inbound_through_the_registrar_browser_hangs_up_and_the_bye_follows_the_route_set() {
    let (kamailio, gw, mut ws) = registered_gateway().await;
    let mut sipp = Sipp::uac(
        &Sipp::scenario("uac_via_registrar_wait_bye.xml"),
        kamailio.addr,
        DID,
        &[],
    );
    let call = AcceptedCall::accept(&mut ws).await;
    call.until(&mut ws, "answered").await;
    ws.send(json!({"type": "hangup", "call_id": call.call_id}))
        .await;
    assert_eq!(call.until(&mut ws, "ended").await["reason"], "hangup");
    let outcome = sipp.wait(Duration::from_secs(20)).await;
    outcome.assert_one_success();
    // Our BYE went to Kamailio with the Route set, and Kamailio relayed it: its Via
    // is on top and the Request-URI is the caller's Contact.
    let bye = received(&outcome, "BYE ");
    let via = header(bye, "Via").expect("Via");
    assert!(
        via.contains(&kamailio.addr.to_string()),
        "the BYE came through Kamailio: {bye}"
    );
    assert!(
        bye.starts_with(&format!("BYE sip:sipp@{}", sipp.addr)),
        "Request-URI is the caller's Contact: {bye}"
    );
    call.browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn outbound_through_a_proxy_on_a_non_5060_port_is_routed_answered_and_hung_up() {
    // A carrier that trusts the gateway by address (no WITH_AUTH): the stock config
    // relays only to its own domain, so the Request-URI must name it with its port.
    let mut sipp = Sipp::uas(
        Some(&Sipp::scenario("uas_behind_proxy.xml")),
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let kamailio = Kamailio::start(KamailioOptions::default());
    assert_ne!(kamailio.addr.port(), 5060);
    // The called number's phone (SIPp) is registered with the carrier.
    kamailio.register(NUMBER, sipp.addr);
    let gw = TestGateway::start(gateway_config(kamailio.addr)).await;
    let (mut ws, _) = gw.connect_as("bob", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "k1", NUMBER).await;
    let answered = call.until(&mut ws, &["answered", "ended"]).await;
    assert_eq!(
        answered["type"],
        "answered",
        "{answered}\nKamailio:\n{}",
        kamailio.log()
    );
    assert_audio_echoes(&browser).await;
    call.hangup(&mut ws).await;
    assert_eq!(call.until(&mut ws, &["ended"]).await["reason"], "hangup");
    let outcome = sipp.wait(Duration::from_secs(20)).await;
    outcome.assert_one_success();
    let invite = received(&outcome, "INVITE ");
    assert!(
        header(invite, "To").is_some_and(|to| to.contains(&format!("{NUMBER}@{}", kamailio.addr))),
        "To names the carrier's domain with its port: {invite}"
    );
    let bye = received(&outcome, "BYE ");
    assert!(
        header(bye, "Via").is_some_and(|v| v.contains(&kamailio.addr.to_string())),
        "our BYE went through Kamailio: {bye}"
    );
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn outbound_to_a_carrier_checking_from_user_is_the_auth_user_passes_digest_with_caller_id_in_pai()
 {
    // Stock WITH_AUTH: a request whose From is the carrier's domain is challenged,
    // and the credentials must belong to the From user; WITH_PSTN then sends the
    // number to the PSTN gateway (SIPp).
    let mut sipp = Sipp::uas(
        Some(&Sipp::scenario("uas_behind_proxy.xml")),
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let kamailio = Kamailio::start(KamailioOptions {
        defines: vec!["WITH_AUTH", "WITH_PSTN"],
        subscribers: vec![(ACCOUNT.into(), PASSWORD.into())],
        pstn_gw: Some(sipp.addr),
        ..KamailioOptions::default()
    });
    let mut config = with_account(gateway_config(kamailio.addr));
    config.sip.trunks[0].caller_id_header = vec!["pai".into(), "rpid".into()];
    // The same account with the caller's user in From (what every trunk got before
    // `from_user`), for UK numbers: the check this carrier makes refuses it.
    config.sip.trunks.push(TrunkConfig {
        name: "caller-in-from".into(),
        from_user: Some("carol".into()),
        ..config.sip.trunks[0].clone()
    });
    config.dialplan.routes.insert(
        0,
        RouteConfig::new(r"^\+44[0-9]+$", vec!["caller-in-from".into()]),
    );
    let gw = TestGateway::start(config).await;
    let mut token = claims("carol", "calls:outbound", 3600);
    token.caller_id = Some(CALLER_ID.into());
    let token = callbridge::auth::mint_hs256(SECRET, &token).expect("mint");
    let mut ws = gw.connect().await;
    ws.send(json!({"type": "auth", "token": token})).await;
    assert_eq!(ws.recv().await["type"], "ready");

    let refused = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, refused.clone(), "k0", "+442079460000").await;
    let ended = call.until(&mut ws, &["answered", "ended"]).await;
    assert_eq!(
        ended["type"], "ended",
        "From user is not the auth user: {ended}"
    );
    assert!(
        ended["sip_status"] == 407,
        "Kamailio refused the mismatched From: {ended}"
    );
    refused.close().await;

    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "k2", NUMBER).await;
    let answered = call.until(&mut ws, &["answered", "ended"]).await;
    assert_eq!(
        answered["type"],
        "answered",
        "{answered}\nKamailio:\n{}",
        kamailio.log()
    );
    assert_audio_echoes(&browser).await;
    call.hangup(&mut ws).await;
    assert_eq!(call.until(&mut ws, &["ended"]).await["reason"], "hangup");
    let outcome = sipp.wait(Duration::from_secs(20)).await;
    outcome.assert_one_success();
    let invite = received(&outcome, "INVITE ");
    let domain = kamailio.addr.to_string();
    assert!(
        header(invite, "From").is_some_and(|f| f.contains(&format!("<sip:{ACCOUNT}@{domain}>"))),
        "From is the account in the carrier's domain: {invite}"
    );
    assert_eq!(
        header(invite, "P-Asserted-Identity"),
        Some(format!("<sip:{CALLER_ID}@{domain}>").as_str()),
        "the browser's caller id: {invite}"
    );
    assert!(
        header(invite, "Remote-Party-ID")
            .is_some_and(|r| r.starts_with(&format!("<sip:{CALLER_ID}@{domain}>;party=calling"))),
        "{invite}"
    );
    assert!(
        header(invite, "Proxy-Authorization").is_none(),
        "Kamailio consumed the credentials it checked: {invite}"
    );
    browser.close().await;
    gw.stop().await;
}
