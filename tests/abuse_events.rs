//! Jamming the event writer, against a running gateway storing in a real
//! PostgreSQL (which refuses NUL in `TEXT`):
//!
//! 1. The attack: an inbound INVITE whose Call-ID holds a NUL byte. Before the fix
//!    the call's record reached PostgreSQL with the NUL, the whole batch was
//!    refused and retried forever, and every later CDR and webhook was lost. Now
//!    the SIP layer answers 400 naming the header (control characters are not SIP),
//!    and stored text is cleaned anyway (a NUL would become U+FFFD; unit tests).
//!    SIPp cannot send a NUL (its scenarios are XML, which cannot hold one), so
//!    this INVITE comes from a raw UDP socket of the test to the gateway's real
//!    SIP listener.
//! 2. Since no network path carries a NUL into the database any more, the
//!    dead-letter path is proven with an in-test fault: a CHECK constraint added to
//!    the real `cdrs` table refuses the record of calls to one number. That record
//!    is retried, moved to `events_dead_letter` with a metric, and the writer goes
//!    on: a later real call's record and webhook still arrive.
//!
//! Skipped with a message only when PostgreSQL is not installed.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use callbridge::config::{Config, DidConfig, RouteConfig, TrunkConfig, WebhookEndpoint};
use common::browser::{Browser, BrowserOptions};
use common::call::TestCall;
use common::gateway::{TestGateway, WsClient, test_config};
use common::http::admin_get;
use common::postgres::Postgres;
use common::receiver::{Policy, Receiver};
use common::sipp::Sipp;
use serde_json::Value;
use tokio::net::UdpSocket;

const DID: &str = "+15550001111";
const POISON: &str = "+15550000666";
const HOOK_SECRET: &str = "abuse-events-hook-secret-0123";

/// PostgreSQL storage, webhooks for `call.ended`, [`DID`] ringing alice (inbound
/// admitted from 127.0.0.1), and one busy SIPp trunk per outbound number.
fn config(pg: &Postgres, receiver: &Receiver, trunks: &[(&str, SocketAddr)]) -> Config {
    let mut c = test_config(None);
    c.storage.url = pg.url.clone();
    c.webhooks.initial_backoff = Duration::from_millis(100);
    c.webhooks.endpoints = vec![WebhookEndpoint {
        name: "crm".into(),
        url: receiver.url(),
        secret: HOOK_SECRET.into(),
        events: vec!["call.ended".into()],
    }];
    c.sip.trunks.push(TrunkConfig {
        name: "carrier".into(),
        address: "127.0.0.1:9".into(),
        ..TrunkConfig::default()
    });
    c.dids.push(DidConfig {
        number: DID.into(),
        user: "alice".into(),
    });
    for (n, (number, addr)) in trunks.iter().enumerate() {
        let name = format!("busy{n}");
        c.sip.trunks.push(TrunkConfig {
            name: name.clone(),
            address: addr.to_string(),
            ..TrunkConfig::default()
        });
        c.dialplan
            .routes
            .push(RouteConfig::new(format!("^\\{number}$"), vec![name]));
    }
    c
}

/// The INVITE of the attack: Call-ID `nul<NUL>call@127.0.0.1`.
fn nul_invite(gateway: SocketAddr, me: SocketAddr) -> Vec<u8> {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";
    format!(
        "INVITE sip:{DID}@{gateway} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK-nul-1;rport\r\n\
         From: \"Mallory\" <sip:+15552223333@{me}>;tag=nul-1\r\n\
         To: <sip:{DID}@{gateway}>\r\n\
         Call-ID: nul\0call@127.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:mallory@{me}>\r\n\
         Max-Forwards: 70\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

/// The next SIP response on `socket` with a final status (>= 200): (status, text).
async fn final_response(socket: &UdpSocket) -> (u16, String) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(15), socket.recv_from(&mut buf))
            .await
            .expect("a SIP response")
            .expect("recv");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let status = text
            .strip_prefix("SIP/2.0 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse::<u16>().ok());
        if let Some(status) = status.filter(|s| *s >= 200) {
            return (status, text);
        }
    }
}

/// A delivered `call.ended` webhook whose data satisfies `which`.
async fn ended_hook(receiver: &Receiver, what: &str, which: impl Fn(&Value) -> bool) -> Value {
    let find = |log: &[common::receiver::Received]| {
        log.iter()
            .filter(|r| r.answered < 300)
            .map(common::receiver::Received::json)
            .find(|b| b["type"] == "call.ended" && which(&b["data"]))
    };
    receiver
        .wait_for(Duration::from_secs(20), what, |log| find(log).is_some())
        .await;
    find(&receiver.log()).expect("found")
}

/// A real outbound call from alice to `to` through a busy SIPp trunk.
async fn busy_call(ws: &mut WsClient, sipp: &mut Sipp, call_id: &str, to: &str) {
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(ws, browser.clone(), call_id, to).await;
    let ended = call.until(ws, &["ended"]).await;
    assert_eq!(ended["reason"], "busy", "{ended}");
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
}

#[tokio::test]
async fn nul_in_a_call_id_and_a_refused_row_do_not_jam_the_event_writer() {
    let pg = match Postgres::start() {
        Ok(pg) => pg,
        Err(why) => {
            eprintln!("SKIPPED abuse_events: cannot run PostgreSQL here: {why}");
            return;
        }
    };
    let receiver = Receiver::start(Policy::AcceptAll).await;
    let busy = || Sipp::uas(Some(&Sipp::scenario("uas_busy.xml")), &[]);
    let (mut first, mut poison, mut later) = (busy(), busy(), busy());
    let gw = TestGateway::start(config(
        &pg,
        &receiver,
        &[
            ("+15551110000", first.addr),
            (POISON, poison.addr),
            ("+15552220000", later.addr),
        ],
    ))
    .await;
    let running = gw.server.as_ref().expect("running");
    let sip = running.sip_addr;
    let (mut ws, _) = gw.connect_as("alice", "calls:inbound calls:outbound").await;

    // 1. The attack: a NUL in the Call-ID of an inbound call.
    let uac = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let me = uac.local_addr().expect("addr");
    uac.send_to(&nul_invite(sip, me), sip).await.expect("send");
    // The SIP layer refuses control characters in header values (RFC 3261 §25.1)
    // with a 400 that names the header, before any call or record exists; the
    // writer's own cleaning and dead-letter table (below) stand behind it.
    let (status, response) = final_response(&uac).await;
    assert_eq!(status, 400, "{response}");
    assert!(response.contains("Call-ID"), "{response}");
    // A legitimate call afterwards is recorded and announced.
    busy_call(&mut ws, &mut first, "legit-1", "+15551110000").await;
    ended_hook(&receiver, "the next call's record", |d| {
        d["call_id"] == "legit-1"
    })
    .await;

    // 2. In-test fault: the database refuses the record of calls to POISON.
    let db = sqlx::PgPool::connect(&pg.url).await.expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE cdrs ADD CONSTRAINT refuse_test CHECK (to_party <> '{POISON}')"
    )))
    .execute(&db)
    .await
    .expect("constraint");
    busy_call(&mut ws, &mut poison, "poison", POISON).await;
    let store = running.gateway.events.store().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let letter = loop {
        let letters = store.dead_letters(10).await.expect("dead letters");
        if let Some(l) = letters.into_iter().next() {
            break l;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refused record never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(letter.event_type, "call.ended");
    assert_eq!(letter.attempts, callbridge::events::ROW_ATTEMPTS);
    assert!(letter.error.contains("refuse_test"), "{}", letter.error);
    let payload: Value = serde_json::from_str(&letter.payload).expect("json");
    assert_eq!(payload["cdr"]["call_id"], "poison");
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT event_id, type FROM events_dead_letter")
            .fetch_all(&db)
            .await
            .expect("select");
    assert_eq!(
        rows,
        vec![(letter.event_id.clone(), "call.ended".to_string())]
    );
    let metrics = running.gateway.metrics.render();
    assert!(
        metrics.contains(r#"callbridge_events_dead_letter_total{event="call.ended"} 1"#),
        "{metrics}"
    );

    // The writer went on: the next call's record and webhook arrive.
    busy_call(&mut ws, &mut later, "legit-2", "+15552220000").await;
    let hook = ended_hook(&receiver, "the record after the refused one", |d| {
        d["call_id"] == "legit-2"
    })
    .await;
    let id = hook["data"]["id"].as_str().expect("id");
    let cdr = admin_get(gw.admin_addr(), &format!("/v1/cdrs/{id}")).await;
    assert_eq!(cdr.status, 200);
    assert!(
        !receiver
            .log()
            .iter()
            .any(|r| r.json()["data"]["call_id"] == "poison"),
        "the refused record was never announced"
    );
    gw.stop().await;
}
