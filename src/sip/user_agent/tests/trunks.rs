//! Trunk services with fake time: OPTIONS health (any answer but 503 is up; a
//! timeout or 503 is down) and registration (challenge, backoff, refresh), plus the
//! bound on server transactions; services moving to a trunk's next (SRV) address.

use super::*;
use crate::sip::Credentials;

const TRUNK: &str = "10.0.0.7:5060";

fn trunk(register: bool, ping: bool) -> TrunkSettings {
    TrunkSettings {
        name: "t".into(),
        host: "10.0.0.7".into(),
        port: 5060,
        credentials: Some(Credentials {
            username: "acct".into(),
            password: "pw".into(),
        }),
        register,
        register_expires: Duration::from_secs(600),
        options_interval: ping.then(|| Duration::from_secs(30)),
        ..TrunkSettings::default()
    }
}

fn start(h: &mut Harness, settings: TrunkSettings) {
    let target = Peer::udp(TRUNK.parse().unwrap());
    let local = Peer::udp(LOCAL.parse().unwrap());
    h.ua.start_trunk(h.now, settings, (target, Vec::new()), local);
    h.drain();
}

fn trunk_sends(h: &mut Harness, text: &str) {
    h.ua.handle_message(h.now, Peer::udp(TRUNK.parse().unwrap()), text.as_bytes());
    h.drain();
}

fn last_status(h: &mut Harness) -> crate::sip::TrunkStatus {
    h.trunk_events.last().expect("a status").1.clone()
}

#[test]
fn options_health_goes_down_on_timeout_and_503_and_up_on_any_other_answer() {
    let mut h = Harness::new();
    start(&mut h, trunk(false, true));
    let ping = h.take_sent().remove(0);
    assert!(ping.starts_with("OPTIONS sip:10.0.0.7 SIP/2.0"), "{ping}");
    trunk_sends(&mut h, &reply(&ping, 404, "Not Found", ""));
    assert!(
        last_status(&mut h).reachable,
        "a 404 still proves the trunk is up"
    );

    // The next ping 30 s later gets no answer: down after Timer F.
    h.advance(Duration::from_secs(30));
    assert_eq!(starting(&h.take_sent(), "OPTIONS ").len(), 1);
    h.advance(Duration::from_secs(32));
    let status = last_status(&mut h);
    assert!(!status.reachable);
    assert_eq!(status.detail.as_deref(), Some("OPTIONS timeout"));
    assert!(status.last_change.is_some());

    h.sent.clear();
    h.advance(Duration::from_secs(30));
    let ping = h.take_sent().remove(0);
    trunk_sends(&mut h, &reply(&ping, 503, "Service Unavailable", ""));
    assert!(!last_status(&mut h).reachable, "503 keeps it down");
    h.advance(Duration::from_secs(30));
    let ping = h.take_sent().remove(0);
    let changes = h.trunk_events.len();
    trunk_sends(&mut h, &reply(&ping, 200, "OK", ""));
    assert!(last_status(&mut h).reachable);
    assert_eq!(h.trunk_events.len(), changes + 1, "one change event");
}

#[test]
fn register_and_options_name_the_trunk_with_its_port() {
    let mut h = Harness::new();
    start(
        &mut h,
        TrunkSettings {
            port: 5080,
            ..trunk(true, false)
        },
    );
    let register = h.take_sent().remove(0);
    assert!(
        register.starts_with("REGISTER sip:10.0.0.7:5080 SIP/2.0"),
        "{register}"
    );
    assert_eq!(header(&register, "To"), "<sip:acct@10.0.0.7:5080>");
    assert!(header(&register, "From").starts_with("<sip:acct@10.0.0.7:5080>;tag="));
    // `from_user` / `from_domain` make the address of record and the contact.
    let mut h = Harness::new();
    start(
        &mut h,
        TrunkSettings {
            from_user: Some("+15550000000".into()),
            from_domain: Some("carrier.example".into()),
            ..trunk(true, false)
        },
    );
    let register = h.take_sent().remove(0);
    assert_eq!(
        header(&register, "To"),
        "<sip:+15550000000@carrier.example>"
    );
    assert_eq!(
        header(&register, "Contact"),
        "<sip:+15550000000@127.0.0.1:5070>"
    );
}

#[test]
fn registration_answers_the_challenge_refreshes_and_backs_off() {
    let mut h = Harness::new();
    start(&mut h, trunk(true, false));
    assert_eq!(last_status(&mut h).registered, Some(false));
    let register = h.take_sent().remove(0);
    assert!(
        register.starts_with("REGISTER sip:10.0.0.7 SIP/2.0"),
        "{register}"
    );
    assert_eq!(header(&register, "Expires"), "600");
    assert_eq!(header(&register, "To"), "<sip:acct@10.0.0.7>");
    assert_eq!(header(&register, "Contact"), "<sip:acct@127.0.0.1:5070>");
    trunk_sends(
        &mut h,
        &reply(
            &register,
            401,
            "Unauthorized",
            "WWW-Authenticate: Digest realm=\"r\", nonce=\"n1\"\r\n",
        ),
    );
    let again = h.take_sent().remove(0);
    assert_eq!(header(&again, "CSeq"), "2 REGISTER");
    assert_eq!(header(&again, "Call-ID"), header(&register, "Call-ID"));
    assert!(header(&again, "Authorization").starts_with("Digest username=\"acct\""));
    trunk_sends(&mut h, &reply(&again, 200, "OK", "Expires: 120\r\n"));
    assert_eq!(last_status(&mut h).registered, Some(true));

    // Refresh at half the granted 120 s, with the cached challenge.
    h.advance(Duration::from_millis(59_900));
    assert!(h.take_sent().is_empty());
    h.advance(Duration::from_millis(200));
    let refresh = h.take_sent().remove(0);
    assert_eq!(header(&refresh, "CSeq"), "3 REGISTER");
    assert!(header(&refresh, "Authorization").contains("nonce=\"n1\""));

    // Refused: unregistered, retried after 5 s, then 10 s.
    trunk_sends(&mut h, &reply(&refresh, 403, "Forbidden", ""));
    let status = last_status(&mut h);
    assert_eq!(status.registered, Some(false));
    assert_eq!(status.detail.as_deref(), Some("REGISTER answered 403"));
    h.advance(Duration::from_millis(4900));
    assert!(h.take_sent().is_empty());
    h.advance(Duration::from_millis(200));
    let retry = h.take_sent().remove(0);
    trunk_sends(&mut h, &reply(&retry, 403, "Forbidden", ""));
    h.advance(Duration::from_millis(9900));
    assert!(h.take_sent().is_empty(), "backoff doubled");
    h.advance(Duration::from_millis(200));
    assert_eq!(starting(&h.take_sent(), "REGISTER ").len(), 1);

    // Stopping unregisters only when registered.
    h.ua.stop_trunks(h.now);
    h.drain();
    assert!(h.take_sent().is_empty());
}

#[test]
fn server_transactions_are_bounded() {
    let mut h = Harness::new();
    for i in 0..(crate::sip::user_agent::servers::MAX_SERVER_TRANSACTIONS + 100) {
        h.peer_sends(&peer_request("MESSAGE", "", &format!("z9hG4bKm{i}"), 1));
        h.sent.clear();
    }
    assert_eq!(
        h.ua.server_count(),
        crate::sip::user_agent::servers::MAX_SERVER_TRANSACTIONS
    );
    // Out-of-dialog OPTIONS are answered without keeping state.
    h.peer_sends(&peer_request("OPTIONS", "", "z9hG4bKo1", 1));
    assert!(h.take_sent()[0].starts_with("SIP/2.0 200 OK"));
    h.advance(Duration::from_secs(33));
    assert_eq!(h.ua.server_count(), 0, "Timer J freed them");
}

#[test]
fn services_move_to_the_next_address_when_one_fails_as_a_server() {
    let mut h = Harness::new();
    let first = Peer::udp(TRUNK.parse().unwrap());
    let second = Peer::udp("10.0.0.8:5070".parse().unwrap());
    let settings = TrunkSettings {
        srv: true,
        host: "carrier.example".into(),
        ..trunk(true, true)
    };
    h.ua.start_trunk(
        h.now,
        settings,
        (first, vec![second]),
        Peer::udp(LOCAL.parse().unwrap()),
    );
    h.drain();
    let dests: Vec<_> = h.sent.iter().map(|t| t.dest).collect();
    assert_eq!(dests, vec![first, first], "ping and REGISTER to the first");
    let sent = h.take_sent();
    let register = sent.iter().find(|m| m.starts_with("REGISTER ")).unwrap();
    assert!(
        register.starts_with("REGISTER sip:carrier.example SIP/2.0"),
        "the domain, no port, for an SRV trunk: {register}"
    );
    // A 503 to the REGISTER: its retry (after the 5 s backoff) and the next ping go
    // to the second address.
    let ping = sent.iter().find(|m| m.starts_with("OPTIONS ")).unwrap();
    h.ua.handle_message(h.now, first, reply(ping, 200, "OK", "").as_bytes());
    h.ua.handle_message(
        h.now,
        first,
        reply(register, 503, "Service Unavailable", "").as_bytes(),
    );
    h.drain();
    assert_eq!(last_status(&mut h).registered, Some(false));
    h.advance(Duration::from_secs(5));
    let retry: Vec<_> = h.sent.drain(..).collect();
    assert_eq!(retry.len(), 1, "the REGISTER retry");
    assert_eq!(retry[0].dest, second);
    let retry = String::from_utf8(retry[0].payload.clone()).unwrap();
    h.ua.handle_message(h.now, second, reply(&retry, 200, "OK", "").as_bytes());
    h.drain();
    assert_eq!(last_status(&mut h).registered, Some(true));
    h.advance(Duration::from_secs(30));
    assert!(h.sent.iter().all(|t| t.dest == second), "{:?}", h.sent);
}

#[test]
fn a_refused_registration_stays_on_the_same_address() {
    let mut h = Harness::new();
    let first = Peer::udp(TRUNK.parse().unwrap());
    let second = Peer::udp("10.0.0.8:5070".parse().unwrap());
    h.ua.start_trunk(
        h.now,
        trunk(true, false),
        (first, vec![second]),
        Peer::udp(LOCAL.parse().unwrap()),
    );
    h.drain();
    let register = h.take_sent().remove(0);
    // A 403 is about our account, not a failing server: retry the same address.
    h.ua.handle_message(
        h.now,
        first,
        reply(&register, 403, "Forbidden", "").as_bytes(),
    );
    h.drain();
    assert_eq!(last_status(&mut h).registered, Some(false));
    h.advance(Duration::from_secs(5));
    let dests: Vec<_> = h.sent.iter().map(|t| t.dest).collect();
    assert_eq!(dests, vec![first]);
}

#[test]
fn an_srv_trunk_is_down_only_when_every_address_fails_its_ping() {
    let mut h = Harness::new();
    let first = Peer::udp(TRUNK.parse().unwrap());
    let second = Peer::udp("10.0.0.8:5070".parse().unwrap());
    h.ua.start_trunk(
        h.now,
        trunk(false, true),
        (first, vec![second]),
        Peer::udp(LOCAL.parse().unwrap()),
    );
    h.drain();
    let ping = h.take_sent().remove(0);
    // The first address answers 503: the next ping goes to the second at once and
    // the trunk stays usable.
    h.ua.handle_message(h.now, first, reply(&ping, 503, "Busy", "").as_bytes());
    h.drain();
    h.advance(Duration::from_millis(1));
    let next: Vec<_> = h.sent.drain(..).collect();
    assert_eq!(next.len(), 1, "one ping to the other address");
    assert_eq!(next[0].dest, second);
    assert!(last_status(&mut h).reachable);
    assert_eq!(
        last_status(&mut h).failing,
        vec![first.addr],
        "calls try it last"
    );
    let ping = String::from_utf8(next[0].payload.clone()).unwrap();
    h.ua.handle_message(h.now, second, reply(&ping, 200, "OK", "").as_bytes());
    h.drain();
    assert!(last_status(&mut h).reachable);
    assert_eq!(last_status(&mut h).failing, vec![first.addr]);
    // Both fail in a row: down.
    h.advance(Duration::from_secs(30));
    let ping = h.take_sent().remove(0);
    h.ua.handle_message(h.now, second, reply(&ping, 503, "Busy", "").as_bytes());
    h.drain();
    assert!(last_status(&mut h).reachable, "the first may still answer");
    h.advance(Duration::from_millis(1));
    let next: Vec<_> = h.sent.drain(..).collect();
    assert_eq!(next[0].dest, first);
    let ping = String::from_utf8(next[0].payload.clone()).unwrap();
    h.ua.handle_message(h.now, first, reply(&ping, 503, "Busy", "").as_bytes());
    h.drain();
    let status = last_status(&mut h);
    assert!(!status.reachable, "{status:?}");
    assert_eq!(status.detail.as_deref(), Some("OPTIONS answered 503"));
    assert_eq!(status.failing, vec![second.addr, first.addr]);
}
