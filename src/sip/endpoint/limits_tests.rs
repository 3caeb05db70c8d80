use super::*;

fn limits(per_ip: usize, total: usize, trunks: usize) -> Arc<ConnectionLimits> {
    Arc::new(ConnectionLimits::new(ConnectionConfig {
        max_connections: total,
        max_connections_per_ip: per_ip,
        max_trunk_connections: trunks,
        max_tls_handshakes: 1,
        ..ConnectionConfig::default()
    }))
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn refused(stats: &ConnectionStats, label: &str) -> u64 {
    stats
        .refused
        .iter()
        .find(|(l, _)| *l == label)
        .map_or(0, |(_, n)| *n)
}

#[test]
fn one_address_is_capped_and_its_room_comes_back() {
    let l = limits(2, 10, 10);
    let a = l.admit(ip("192.0.2.1")).unwrap();
    let _b = l.admit(ip("192.0.2.1")).unwrap();
    assert_eq!(l.admit(ip("192.0.2.1")).unwrap_err(), Refusal::PerIp);
    assert!(l.admit(ip("192.0.2.2")).is_ok(), "another address is not");
    drop(a);
    assert!(l.admit(ip("192.0.2.1")).is_ok(), "room given back on drop");
    assert_eq!(refused(&l.stats(), "per_ip"), 1);
}

#[test]
fn ipv6_is_counted_by_slash_64_and_mapped_ipv4_as_ipv4() {
    let l = limits(2, 10, 10);
    let _a = l.admit(ip("2001:db8:1:2::1")).unwrap();
    let _b = l.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
    assert_eq!(
        l.admit(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")).unwrap_err(),
        Refusal::PerIp,
        "same /64"
    );
    assert!(l.admit(ip("2001:db8:1:3::1")).is_ok(), "next /64");
    let _c = l.admit(ip("192.0.2.7")).unwrap();
    let _d = l.admit(ip("::ffff:192.0.2.7")).unwrap();
    assert_eq!(l.admit(ip("192.0.2.7")).unwrap_err(), Refusal::PerIp);
    assert_eq!(ip_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
}

#[test]
fn the_total_is_capped_but_trunks_have_their_own_room() {
    let l = limits(5, 3, 2);
    l.set_trunk(
        &TrunkSettings {
            name: "carrier".into(),
            inbound_from: vec![crate::sip::parse_net("203.0.113.0/29").unwrap()],
            ..TrunkSettings::default()
        },
        &[],
    );
    l.set_trunk(
        &TrunkSettings {
            name: "pbx".into(),
            ..TrunkSettings::default()
        },
        &["198.51.100.9:5060".parse().unwrap()],
    );
    let flood: Vec<_> = (1..=3)
        .map(|i| l.admit(ip(&format!("192.0.2.{i}"))).unwrap())
        .collect();
    assert_eq!(l.admit(ip("192.0.2.50")).unwrap_err(), Refusal::Total);
    let t1 = l.admit(ip("203.0.113.3")).unwrap();
    assert!(t1.is_trunk());
    let t2 = l.admit(ip("198.51.100.9")).unwrap();
    assert!(t2.is_trunk(), "by resolved address");
    assert_eq!(
        l.admit(ip("203.0.113.4")).unwrap_err(),
        Refusal::TrunkTotal,
        "trunk room is bounded too"
    );
    assert!(!l.is_trunk(ip("198.51.100.10")));
    drop(flood);
    let stats = l.stats();
    assert_eq!(refused(&stats, "total"), 1);
    assert_eq!(refused(&stats, "trunk_total"), 1);
}

#[test]
fn tls_handshakes_are_capped_except_for_trunks() {
    let l = limits(5, 5, 5);
    l.set_trunk(
        &TrunkSettings {
            name: "carrier".into(),
            inbound_from: vec![crate::sip::parse_net("203.0.113.1").unwrap()],
            ..TrunkSettings::default()
        },
        &[],
    );
    let a = l.admit(ip("192.0.2.1")).unwrap();
    let b = l.admit(ip("192.0.2.2")).unwrap();
    let slot = l.handshake(&a).unwrap();
    assert_eq!(l.handshake(&b).unwrap_err(), Refusal::TlsHandshakes);
    let trunk = l.admit(ip("203.0.113.1")).unwrap();
    assert!(l.handshake(&trunk).is_ok());
    drop(slot);
    assert!(l.handshake(&b).is_ok());
    assert_eq!(refused(&l.stats(), "tls_handshakes"), 1);
    l.count_close(CloseReason::Idle);
    assert!(l.stats().closed.contains(&("idle", 1)));
}
