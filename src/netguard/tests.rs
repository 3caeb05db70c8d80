use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn mapped_compatible_and_nat64_forms_are_the_ipv4_they_carry() {
    for (v6, v4) in [
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::ffff:0.0.0.0", "0.0.0.0"),
        ("::127.0.0.1", "127.0.0.1"),
        ("::10.0.0.1", "10.0.0.1"),
        ("64:ff9b::127.0.0.1", "127.0.0.1"),
        ("64:ff9b::8.8.8.8", "8.8.8.8"),
    ] {
        assert_eq!(canonical(ip(v6)), ip(v4), "{v6}");
    }
    assert_eq!(canonical(ip("::1")), ip("::1"));
    assert_eq!(canonical(ip("::")), ip("::"));
    assert_eq!(canonical(ip("2a00:1450::1")), ip("2a00:1450::1"));
}

#[test]
fn never_classes_cover_every_form_of_unspecified_and_multicast() {
    for bad in [
        "0.0.0.0",
        "0.1.2.3",
        "::",
        "::ffff:0.0.0.0",
        "::0.0.0.2",
        "64:ff9b::0.0.0.0",
        "224.0.0.251",
        "239.255.255.250",
        "255.255.255.255",
        "ff02::1",
        "::ffff:224.0.0.1",
        "2002:7f00:1::1",                       // 6to4 of 127.0.0.1
        "2002:0:0::1",                          // 6to4 of 0.0.0.0
        "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo client 127.0.0.1
    ] {
        assert!(is_never(ip(bad)), "{bad} is never a peer");
        assert!(is_internal(ip(bad)), "{bad} is internal too");
    }
    for ok in ["127.0.0.1", "10.0.0.1", "8.8.8.8", "::1", "2a00:1450::1"] {
        assert!(!is_never(ip(ok)), "{ok}");
    }
}

#[test]
fn internal_ranges() {
    for bad in [
        "127.0.0.1",
        "::ffff:127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "::1",
        "fc00::1",
        "fd12::1",
        "fe80::1",
        "64:ff9b:1::1",
        "2002:0808:0808::1",
        "2001:0:1:2:3:4:5:6",
        "2001:db8::1",
        "198.18.0.1",
        "240.0.0.1",
    ] {
        assert!(is_internal(ip(bad)), "{bad} is internal");
    }
    for good in ["8.8.8.8", "203.0.114.1", "2a00:1450::1", "::ffff:8.8.4.4"] {
        assert!(!is_internal(ip(good)), "{good} is public");
    }
}

#[test]
fn allow_entries_that_overlap_the_never_classes_are_found() {
    for (net, hit) in [
        ("127.0.0.1/32", true),
        ("0.0.0.0/0", true),
        ("::/0", true),
        ("::ffff:127.0.0.1/128", true),
        ("10.0.0.0/8", false),
        ("fd00::/8", false),
        ("100.64.0.0/10", false),
    ] {
        let net: IpNet = net.parse().expect("net");
        assert_eq!(overlaps_never(&net).is_some(), hit, "{net}");
    }
}

#[test]
fn own_addresses_and_loopback_reach_the_gateway() {
    let own = OwnAddrs::new([ip("203.0.113.10"), ip("0.0.0.0")]);
    assert!(own.reaches_gateway(ip("203.0.113.10")));
    assert!(own.reaches_gateway(ip("::ffff:203.0.113.10")));
    assert!(
        own.reaches_gateway(ip("127.0.0.53")),
        "DNS stub on loopback"
    );
    assert!(own.reaches_gateway(ip("0.0.0.0")));
    assert!(own.reaches_gateway(ip("::")));
    assert!(!own.reaches_gateway(ip("203.0.113.11")));
    assert!(!own.contains(ip("0.0.0.0")), "unspecified is not stored");
    assert!(!own.contains(ip("127.0.0.1")), "loopback only when listed");
    let with = OwnAddrs::new([]).with_interfaces();
    assert!(
        with.contains(ip("127.0.0.1")),
        "the loopback interface is listed"
    );
}

#[test]
fn parse_names_the_bad_entry() {
    assert_eq!(
        parse_net("10.0.0.0/33").expect_err("bad"),
        BadNetwork("10.0.0.0/33".into())
    );
    assert_eq!(
        parse_net("10.1.2.3").expect("single"),
        "10.1.2.3/32".parse::<IpNet>().expect("net")
    );
}
