use stun::attributes::{ATTR_REALM, ATTR_USERNAME};
use stun::textattrs::TextAttribute;
use turn::proto::peeraddr::PeerAddress;

use super::*;
use crate::auth::turn_credentials;
use crate::netguard::OwnAddrs;
use crate::netguard::ice_ports::IcePorts;
use crate::turn::policy::GatewayView;

const SECRET: &str = "guard-test-secret-123";
const REALM: &str = "callbridge";

/// A guard for a gateway whose media address is 127.0.0.1, and its ICE port registry.
fn guard_with_ports(total: usize, per_user: usize) -> (Guard, IcePorts) {
    let ports = IcePorts::default();
    let media: IpAddr = "127.0.0.1".parse().expect("ip");
    let view = GatewayView {
        own: OwnAddrs::new([media]),
        media: vec![media],
        ice_ports: ports.clone(),
    };
    let policy = PeerPolicy::new(&[], &[], view).expect("policy");
    let guard = Guard::new(
        policy,
        Arc::new(RestAuthHandler::new(SECRET.into())),
        Quotas { total, per_user },
    );
    (guard, ports)
}

fn guard(total: usize, per_user: usize) -> Guard {
    guard_with_ports(total, per_user).0
}

fn request(method: Method, user: &str, password: Option<&str>, peers: &[&str]) -> Message {
    signed(method, user, password, peers, vec![])
}

fn signed(
    method: Method,
    user: &str,
    password: Option<&str>,
    peers: &[&str],
    extra: Vec<Box<dyn Setter>>,
) -> Message {
    let creds = turn_credentials(SECRET, user, super::super::auth::unix_now(), 600);
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(TransactionId::new()),
        Box::new(MessageType::new(method, CLASS_REQUEST)),
    ];
    for p in peers {
        let addr: SocketAddr = p.parse().expect("addr");
        setters.push(Box::new(PeerAddress {
            ip: addr.ip(),
            port: addr.port(),
        }));
    }
    setters.extend(extra);
    setters.push(Box::new(TextAttribute::new(
        ATTR_USERNAME,
        creds.username.clone(),
    )));
    setters.push(Box::new(TextAttribute::new(ATTR_REALM, REALM.into())));
    let password = password
        .map(str::to_owned)
        .unwrap_or_else(|| creds.password.expose().to_owned());
    setters.push(Box::new(MessageIntegrity::new_long_term_integrity(
        creds.username,
        REALM.into(),
        password,
    )));
    let mut m = Message::new();
    m.build(&setters).expect("build");
    m
}

fn error_code(reply: &[u8]) -> u16 {
    let mut m = Message::new();
    m.unmarshal_binary(reply).expect("reply parses");
    assert_eq!(m.typ.class, CLASS_ERROR_RESPONSE);
    let mut code = ErrorCodeAttribute::default();
    stun::message::Getter::get_from(&mut code, &m).expect("error code");
    code.code.0
}

fn client() -> SocketAddr {
    "198.51.100.7:40000".parse().expect("addr")
}

fn local() -> SocketAddr {
    "127.0.0.1:3478".parse().expect("addr")
}

#[test]
fn permission_to_internal_peer_is_refused_403_signed() {
    let g = guard(10, 10);
    let m = request(METHOD_CREATE_PERMISSION, "alice", None, &["127.0.0.2:5000"]);
    match g.inspect(&m.raw, client(), local()) {
        Verdict::Reply(bytes) => assert_eq!(error_code(&bytes), 403),
        other => panic!("must be refused: {other:?}"),
    }
    // One bad peer among good ones refuses the whole request.
    let m = request(
        METHOD_CHANNEL_BIND,
        "alice",
        None,
        &["8.8.8.8:5000", "10.0.0.1:5000"],
    );
    assert!(matches!(
        g.inspect(&m.raw, client(), local()),
        Verdict::Reply(_)
    ));
    assert_eq!(g.stats.refused_peers.load(Ordering::Relaxed), 2);
}

#[test]
fn permissions_to_public_and_own_addresses_pass() {
    let (g, ports) = guard_with_ports(10, 10);
    let lease = ports.lease("alice");
    lease.add(40000);
    for peer in ["8.8.8.8:5000", "127.0.0.1:40000", "[2a00:1450::1]:5000"] {
        let m = request(METHOD_CREATE_PERMISSION, "alice", None, &[peer]);
        assert_eq!(
            g.inspect(&m.raw, client(), local()),
            Verdict::Pass,
            "{peer}"
        );
    }
}

#[test]
fn forged_requests_get_401_and_unsigned_ones_go_to_the_server() {
    let g = guard(10, 10);
    let forged = request(
        METHOD_CREATE_PERMISSION,
        "alice",
        Some("not-the-password"),
        &["10.0.0.1:1"],
    );
    match g.inspect(&forged.raw, client(), local()) {
        Verdict::Reply(r) => assert_eq!(error_code(&r), 401),
        other => panic!("forged integrity must be refused: {other:?}"),
    }
    let mut unsigned = Message::new();
    unsigned
        .build(&[
            Box::new(TransactionId::new()) as Box<dyn Setter>,
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
        ])
        .expect("build");
    assert_eq!(
        g.inspect(&unsigned.raw, client(), local()),
        Verdict::Pass,
        "the server challenges"
    );

    assert_eq!(
        g.inspect(b"\x40\x00\x00\x04abcd", client(), local()),
        Verdict::Drop,
        "ChannelData on a channel the server never bound"
    );
    assert_eq!(g.inspect(b"\xffgarbage", client(), local()), Verdict::Pass);
}

#[test]
fn allocation_quotas_per_user_and_total() {
    let g = guard(3, 2);
    let clients: Vec<SocketAddr> = (0..4)
        .map(|i| SocketAddr::new(client().ip(), 40000 + i))
        .collect();
    let allocate = |user: &str, c: SocketAddr| {
        let m = request(METHOD_ALLOCATE, user, None, &[]);
        let verdict = g.inspect(&m.raw, c, local());
        if verdict == Verdict::Pass {
            // The server's success response makes it live.
            let mut ok = Message::new();
            ok.build(&[
                Box::new(m.transaction_id) as Box<dyn Setter>,
                Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_SUCCESS_RESPONSE)),
            ])
            .expect("build");
            g.observe_outgoing(&ok.raw, c, local());
        }
        verdict
    };
    assert_eq!(allocate("alice", clients[0]), Verdict::Pass);
    assert_eq!(allocate("alice", clients[1]), Verdict::Pass);
    match allocate("alice", clients[2]) {
        Verdict::Reply(r) => assert_eq!(error_code(&r), 486),
        other => panic!("per-user quota: {other:?}"),
    }
    assert_eq!(allocate("bob", clients[2]), Verdict::Pass);
    match allocate("carol", clients[3]) {
        Verdict::Reply(r) => assert_eq!(error_code(&r), 486),
        other => panic!("total quota: {other:?}"),
    }
    assert_eq!(g.allocations(), 3);
    g.released(clients[0], local(), "123:alice", 1000);
    assert_eq!(g.allocations(), 2);
    assert_eq!(allocate("alice", clients[3]), Verdict::Pass, "slot freed");
    assert_eq!(g.stats.relayed_bytes.load(Ordering::Relaxed), 1000);
}

#[test]
fn ipv6_peer_addresses_are_decoded() {
    let m = request(
        METHOD_CREATE_PERMISSION,
        "alice",
        None,
        &["[fe80::1]:9", "[2001:db8::5]:7"],
    );
    let peers = peer_addresses(&m);
    assert_eq!(
        peers,
        vec![
            "[fe80::1]:9".parse::<SocketAddr>().expect("a"),
            "[2001:db8::5]:7".parse().expect("b")
        ]
    );
}

/// Allocates for `user` at `c` and lets the guard see the server's success.
fn allocated(g: &Guard, user: &str, c: SocketAddr) {
    let m = request(METHOD_ALLOCATE, user, None, &[]);
    assert_eq!(g.inspect(&m.raw, c, local()), Verdict::Pass);
    g.observe_outgoing(&success(&m), c, local());
}

fn success(request: &Message) -> Vec<u8> {
    let mut ok = Message::new();
    ok.build(&[
        Box::new(request.transaction_id) as Box<dyn Setter>,
        Box::new(MessageType::new(request.typ.method, CLASS_SUCCESS_RESPONSE)),
    ])
    .expect("build");
    ok.raw
}

fn send_indication(peer: &str) -> Vec<u8> {
    let addr: SocketAddr = peer.parse().expect("addr");
    let mut m = Message::new();
    m.build(&[
        Box::new(TransactionId::new()) as Box<dyn Setter>,
        Box::new(MessageType::new(METHOD_SEND, CLASS_INDICATION)),
        Box::new(PeerAddress {
            ip: addr.ip(),
            port: addr.port(),
        }),
        Box::new(turn::proto::data::Data(
            b"OPTIONS sip:x SIP/2.0\r\n\r\n".to_vec(),
        )),
    ])
    .expect("build");
    m.raw
}

#[test]
fn send_indications_are_judged_with_their_port_and_the_allocations_user() {
    let (g, ports) = guard_with_ports(10, 10);
    let lease = ports.lease("alice");
    lease.add(40000);
    allocated(&g, "alice", client());
    assert_eq!(
        g.inspect(&send_indication("127.0.0.1:40000"), client(), local()),
        Verdict::Pass,
        "the user's own call's ICE port"
    );
    for peer in [
        "127.0.0.1:5060",
        "0.0.0.0:40000",
        "[::ffff:127.0.0.1]:5060",
        "127.0.0.1:3478",
        "10.0.0.1:40000",
    ] {
        assert_eq!(
            g.inspect(&send_indication(peer), client(), local()),
            Verdict::Drop,
            "{peer}"
        );
    }
    let stranger: SocketAddr = "198.51.100.9:1000".parse().expect("addr");
    assert_eq!(
        g.inspect(&send_indication("127.0.0.1:40000"), stranger, local()),
        Verdict::Drop,
        "no allocation: no user, no call port"
    );
    assert_eq!(
        g.inspect(&send_indication("8.8.8.8:53"), client(), local()),
        Verdict::Pass
    );
    assert_eq!(g.stats.dropped_data.load(Ordering::Relaxed), 6);
}

#[test]
fn channel_data_follows_its_binding_and_stops_when_the_call_ends() {
    let (g, ports) = guard_with_ports(10, 10);
    let lease = ports.lease("alice");
    lease.add(40000);
    allocated(&g, "alice", client());
    let bind = |peer: &str, number: u16| {
        signed(
            METHOD_CHANNEL_BIND,
            "alice",
            None,
            &[peer],
            vec![Box::new(ChannelNumber(number))],
        )
    };
    match g.inspect(&bind("127.0.0.1:5060", 0x4001).raw, client(), local()) {
        Verdict::Reply(r) => assert_eq!(error_code(&r), 403, "bind to our SIP port"),
        other => panic!("must be refused: {other:?}"),
    }
    let ok = bind("127.0.0.1:40000", 0x4000);
    assert_eq!(g.inspect(&ok.raw, client(), local()), Verdict::Pass);
    let data = b"\x40\x00\x00\x04abcd";
    assert_eq!(
        g.inspect(data, client(), local()),
        Verdict::Drop,
        "not confirmed by the server yet"
    );
    g.observe_outgoing(&success(&ok), client(), local());
    assert_eq!(g.inspect(data, client(), local()), Verdict::Pass);
    assert_eq!(
        g.inspect(b"\x40\x01\x00\x04abcd", client(), local()),
        Verdict::Drop,
        "the refused channel"
    );
    drop(lease);
    assert_eq!(
        g.inspect(data, client(), local()),
        Verdict::Drop,
        "the call's port closed: its channel no longer reaches the gateway"
    );
    g.released(client(), local(), "123:alice", 0);
    assert_eq!(g.inspect(data, client(), local()), Verdict::Drop);
}

#[test]
fn an_undecodable_peer_address_is_refused_not_passed() {
    let mut m = request(METHOD_CREATE_PERMISSION, "alice", None, &["8.8.8.8:53"]);
    assert_eq!(
        peer_addresses(&m),
        vec!["8.8.8.8:53".parse::<SocketAddr>().expect("addr")]
    );
    for attr in m.attributes.0.iter_mut() {
        if attr.typ == ATTR_XOR_PEER_ADDRESS {
            attr.value[1] = 0x07; // neither IPv4 (1) nor IPv6 (2)
        }
    }
    assert_eq!(
        peer_addresses(&m),
        vec![SocketAddr::from(([0, 0, 0, 0], 0))],
        "stands as 0.0.0.0:0, which the policy refuses"
    );
}

#[test]
fn a_retransmitted_allocate_is_answered_with_its_success_until_released() {
    let g = guard(10, 10);
    let c = client();
    let m = request(METHOD_ALLOCATE, "alice", None, &[]);
    assert_eq!(g.inspect(&m.raw, c, local()), Verdict::Pass);
    let ok = success(&m);
    g.observe_outgoing(&ok, c, local());
    // The same request again (its response was lost): the same success, server untouched.
    assert_eq!(g.inspect(&m.raw, c, local()), Verdict::Reply(ok.clone()));
    // Another transaction on the live 5-tuple goes to the server (which says 437).
    let other = request(METHOD_ALLOCATE, "alice", None, &[]);
    assert_eq!(g.inspect(&other.raw, c, local()), Verdict::Pass);
    // Once released, the old transaction is no longer replayed.
    g.released(c, local(), "alice", 0);
    assert_eq!(g.inspect(&m.raw, c, local()), Verdict::Pass);
}
