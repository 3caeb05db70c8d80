use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn minimal() -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:9000"
[auth]
hs256_secret = "{SECRET}"
[[sip.trunks]]
name = "a"
address = "127.0.0.1:5070"
[[dialplan.routes]]
pattern = '^\+1[0-9]{{10}}$'
trunks = ["a"]
"#
    )
}

fn load_text(text: &str, env: Vec<(&str, &str)>) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).expect("write");
    let env = env.into_iter().map(|(k, v)| (k.to_string(), v.to_string()));
    load(Some(&path), env).map(|(c, _)| c)
}

#[test]
fn minimal_file_loads_with_defaults() {
    let c = load_text(&minimal(), vec![]).expect("loads");
    assert_eq!(c.server.listen.port(), 9000);
    assert_eq!(c.server.max_calls, 500);
    assert_eq!(c.sip.rtp_port_range().expect("range"), (20000, 29999));
    assert_eq!(c.auth.audience, "callbridge");
}

#[test]
fn env_overrides_nested_keys_and_types() {
    let c = load_text(
        &minimal(),
        vec![
            ("CALLBRIDGE_SERVER__MAX_CALLS", "42"),
            ("CALLBRIDGE_AUTH__AUDIENCE", "other"),
            ("CALLBRIDGE_SERVER__PUBLIC_IP", "203.0.113.10"),
            ("UNRELATED", "x"),
        ],
    )
    .expect("loads");
    assert_eq!(c.server.max_calls, 42);
    assert_eq!(c.auth.audience, "other");
    assert_eq!(
        c.server.public_ip,
        Some("203.0.113.10".parse().expect("ip"))
    );
}

#[test]
fn unknown_key_is_named() {
    let text = minimal().replace("[server]", "[server]\nlisten_port = 1");
    let err = load_text(&text, vec![]).expect_err("must fail").to_string();
    assert!(err.contains("listen_port"), "{err}");
}

#[test]
fn bad_values_name_the_key() {
    let cases = [
        (minimal().replace(SECRET, "short"), "auth.hs256_secret"),
        (
            minimal().replace(r#"trunks = ["a"]"#, r#"trunks = ["b"]"#),
            "dialplan.routes[0].trunks",
        ),
        (
            minimal().replace(r"'^\+1[0-9]{10}$'", "'(('"),
            "dialplan.routes[0].pattern",
        ),
        (
            minimal().replace("127.0.0.1:5070", "nohost:sip"),
            "sip.trunks[0].address",
        ),
        (
            format!("{}\n[sip]\nrtp_ports = \"30000-20000\"", minimal()),
            "sip.rtp_ports",
        ),
        (
            minimal().replace(
                "address = \"127.0.0.1:5070\"",
                "address = \"127.0.0.1:5070\"\nsips = true",
            ),
            "sip.trunks[0].sips",
        ),
        (
            minimal().replace(
                "address = \"127.0.0.1:5070\"",
                "address = \"127.0.0.1:5070\"\ntransport = \"tls\"\ntls_client_auth = true",
            ),
            "sip.trunks[0].tls_client_auth",
        ),
    ];
    for (text, key) in cases {
        let err = load_text(&text, vec![]).expect_err(key).to_string();
        assert!(err.contains(key), "expected `{key}` in: {err}");
    }
}

#[test]
fn wrong_type_names_the_key() {
    let err = load_text(
        &minimal(),
        vec![("CALLBRIDGE_SERVER__MAX_CALLS", "\"many\"")],
    )
    .expect_err("must fail")
    .to_string();
    assert!(err.contains("max_calls"), "{err}");
}

#[test]
fn embedded_defaults_validate_and_get_a_fresh_secret() {
    let (a, source) = load(None, Vec::new()).expect("embedded loads");
    let (b, _) = load(None, Vec::new()).expect("embedded loads");
    assert_eq!(source, Source::Embedded);
    assert_eq!(a.server.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
    assert_eq!(a.sip.listen, SocketAddr::from(([127, 0, 0, 1], 5060)));
    assert!(a.auth.hs256_secret.len() >= 32);
    assert_ne!(a.auth.hs256_secret, b.auth.hs256_secret);
}

#[test]
fn example_config_is_valid() {
    let text = include_str!("../../configs/callbridge.example.toml");
    let config = Config::from_toml(text, "example").expect("example parses");
    // public key and TLS files of the example do not exist here; check the rest.
    let mut config = config;
    let existing = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
    config.tls = Some(TlsConfig {
        cert: existing.clone(),
        key: existing,
    });

    config.auth.public_keys.clear();
    validate(&config).expect("example validates");
}

#[test]
fn sip_tls_listen_needs_a_certificate_and_its_own_port() {
    let text = format!("{}\n[sip]\ntls_listen = \"127.0.0.1:5061\"", minimal());
    let err = load_text(&text, vec![]).expect_err("no [tls]").to_string();
    assert!(
        err.contains("sip.tls_listen") && err.contains("[tls]"),
        "{err}"
    );

    let existing = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
    let mut config = load_text(&minimal(), vec![]).expect("minimal");
    config.tls = Some(TlsConfig {
        cert: existing.clone(),
        key: existing,
    });
    config.sip.listen = SocketAddr::from(([0, 0, 0, 0], 5060));
    config.sip.tls_listen = Some(SocketAddr::from(([127, 0, 0, 1], 5060)));
    let err = validate(&config).expect_err("same port").to_string();
    assert!(
        err.contains("sip.tls_listen") && err.contains("5061"),
        "{err}"
    );
    config.sip.tls_listen = Some(SocketAddr::from(([127, 0, 0, 1], 5061)));
    validate(&config).expect("own port");
    config.sip.tls_client_ca = Some("/nonexistent/ca.pem".into());
    let err = validate(&config).expect_err("missing CA file").to_string();
    assert!(err.contains("sip.tls_client_ca"), "{err}");
    config.sip.tls_listen = None;
    let err = validate(&config).expect_err("no listener").to_string();
    assert!(
        err.contains("sip.tls_client_ca") && err.contains("tls_listen"),
        "{err}"
    );
}

#[test]
fn trunk_addresses_with_and_without_port() {
    use crate::sip::{Transport, TrunkSettings};
    let settings = |address: &str, transport: &str| {
        let mut config = load_text(&minimal(), vec![]).expect("minimal");
        config.sip.trunks[0].address = address.into();
        config.sip.trunks[0].transport = transport.into();
        validate(&config).map(|()| TrunkSettings::from_config(&config.sip.trunks[0]))
    };
    let t = settings("carrier.example", "udp").expect("SRV name");
    assert_eq!(
        (t.host.as_str(), t.port, t.srv),
        ("carrier.example", 5060, true)
    );
    let t = settings("carrier.example", "tls").expect("SRV name, TLS");
    assert_eq!((t.port, t.srv, t.transport), (5061, true, Transport::Tls));
    let t = settings("carrier.example:5080", "udp").expect("host:port");
    assert_eq!((t.port, t.srv), (5080, false));
    let t = settings("192.0.2.7", "udp").expect("IP literal");
    assert_eq!((t.host.as_str(), t.port, t.srv), ("192.0.2.7", 5060, false));
    let t = settings("[2001:db8::1]:5070", "tcp").expect("bracketed v6");
    assert_eq!(
        (t.host.as_str(), t.port, t.srv),
        ("2001:db8::1", 5070, false)
    );
    assert_eq!(t.uri_host(), "[2001:db8::1]");
    let t = settings("[2001:db8::1]", "udp").expect("bracketed v6, no port");
    assert_eq!((t.port, t.srv), (5060, false));
    for bad in [
        "",
        "carrier.example:0",
        "carrier.example:sip",
        "[2001:db8::1",
        ":5060",
        "2001:db8::1",
        "2001:db8::1:5080",
        "fe80::1%eth0:5060",
    ] {
        let err = settings(bad, "udp").expect_err(bad).to_string();
        assert!(err.contains("sip.trunks[0].address"), "{bad}: {err}");
    }
}

#[test]
fn symmetric_rtp_is_off_by_default_and_its_window_is_bounded() {
    let config = load_text(&minimal(), vec![]).expect("minimal");
    assert!(!config.media.symmetric_rtp, "closed by default");
    let text = format!(
        "{}\n[media]\nsymmetric_rtp = true\nsymmetric_rtp_window = \"5m\"",
        minimal()
    );
    let err = load_text(&text, vec![]).expect_err("too long").to_string();
    assert!(err.contains("media.symmetric_rtp_window"), "{err}");
    let text = format!(
        "{}\n[media]\nsymmetric_rtp = true\nsymmetric_rtp_packets = 1",
        minimal()
    );
    let err = load_text(&text, vec![]).expect_err("too few").to_string();
    assert!(err.contains("media.symmetric_rtp_packets"), "{err}");
    // From the environment too.
    let env = vec![
        ("CALLBRIDGE_MEDIA__SYMMETRIC_RTP", "true"),
        ("CALLBRIDGE_MEDIA__SYMMETRIC_RTP_WINDOW", "500ms"),
    ];
    let config = load_text(&minimal(), env).expect("env overrides");
    assert!(config.media.symmetric_rtp);
    assert_eq!(
        config.media.symmetric_rtp_window,
        std::time::Duration::from_millis(500)
    );
}
