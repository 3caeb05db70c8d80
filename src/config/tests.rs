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
fn debug_of_a_config_with_every_kind_of_secret_shows_none_of_them() {
    let text = format!(
        r#"{}
[turn]
listen = "127.0.0.1:3478"
secret = "turn-secret-turn-secret-777"
[cluster]
redis_url = "redis://:redis-pass-555@127.0.0.1:6379/0"
[storage]
url = "postgres://cb:pg-pass-444@127.0.0.1/cb"
[[webhooks.endpoints]]
name = "crm"
url = "https://crm.example/hook"
secret = "webhook-secret-333"
"#,
        minimal().replace(
            "address = \"127.0.0.1:5070\"",
            "address = \"127.0.0.1:5070\"\nusername = \"acct\"\npassword = \"trunk-pass-222\""
        )
    );
    let c = load_text(&text, vec![]).expect("loads");
    assert_eq!(c.sip.trunks[0].password.as_deref(), Some("trunk-pass-222"));
    let dump = format!("{c:?} {c:#?}");
    for secret in [
        SECRET,
        "turn-secret-turn-secret-777",
        "redis-pass-555",
        "pg-pass-444",
        "webhook-secret-333",
        "trunk-pass-222",
    ] {
        assert!(
            !dump.contains(secret),
            "`{secret}` in the config's Debug output"
        );
    }
    assert!(
        dump.contains("<redacted>") && dump.contains("crm.example"),
        "{dump}"
    );
    let verifier = crate::auth::Verifier::from_config(&c.auth).expect("verifier");
    assert!(!format!("{verifier:?}").contains(SECRET));
}

#[test]
fn new_limits_are_validated_with_the_key_named() {
    let base = load_text(&minimal(), vec![]).expect("loads");
    assert_eq!(base.limits.max_sessions_per_user, 10);
    assert_eq!(base.limits.max_auth_message_bytes, 16 * 1024);
    assert_eq!(base.auth.max_token_bytes, 8 * 1024);
    assert_eq!(base.limits.ws_hard_cap(), 4 * 64 * 1024);
    type Change = fn(&mut Config);
    let cases: Vec<(Change, &str)> = vec![
        (
            |c| c.limits.max_sessions_per_user = 0,
            "limits.max_sessions_per_user",
        ),
        (|c| c.auth.max_token_bytes = 100, "auth.max_token_bytes"),
        (|c| c.auth.max_token_bytes = 1 << 20, "auth.max_token_bytes"),
        (
            |c| c.limits.max_auth_message_bytes = 8 * 1024,
            "limits.max_auth_message_bytes",
        ),
        (|c| c.auth.leeway = Duration::from_secs(600), "auth.leeway"),
        (
            |c| c.auth.max_token_lifetime = Duration::from_secs(5),
            "auth.max_token_lifetime",
        ),
        (
            |c| c.auth.token_types = vec!["none".into()],
            "auth.token_types[0]",
        ),
    ];
    for (change, key) in cases {
        let mut c = base.clone();
        change(&mut c);
        let err = validate(&c).expect_err(key).to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
    let env = vec![("CALLBRIDGE_LIMITS__MAX_SESSIONS_PER_USER", "3")];
    assert_eq!(
        load_text(&minimal(), env)
            .expect("env")
            .limits
            .max_sessions_per_user,
        3
    );
}

#[test]
fn recording_quota_has_a_safe_default_and_is_validated_by_key() {
    let config = load_text(&minimal(), vec![]).expect("minimal loads");
    assert_eq!(
        config.media.recording_max_total_bytes,
        10 * 1024 * 1024 * 1024
    );
    let text = format!("{}\n[media]\nrecording_max_total_bytes = 1000", minimal());
    let err = load_text(&text, vec![]).expect_err("too small").to_string();
    assert!(err.contains("media.recording_max_total_bytes"), "{err}");
    let text = format!("{}\n[media]\nrecording_max_total_bytes = 65536", minimal());
    load_text(&text, vec![]).expect("64 KiB is enough");
}

/// The minimal configuration with a `[turn]` section holding `extra` lines.
fn with_turn(extra: &str) -> String {
    format!(
        "{}\n[turn]\nlisten = \"127.0.0.1:3478\"\nsecret = \"{SECRET}\"\n{extra}",
        minimal()
    )
}

#[test]
fn turn_allow_peers_cannot_reopen_loopback_or_unspecified() {
    let turn = |allow: &str| with_turn(&format!("allow_peers = [\"10.0.0.0/8\", \"{allow}\"]"));
    for bad in [
        "127.0.0.1",
        "0.0.0.0/0",
        "::1",
        "::ffff:127.0.0.1",
        "224.0.0.0/4",
    ] {
        let err = load_text(&turn(bad), vec![]).expect_err(bad).to_string();
        assert!(
            err.contains("turn.allow_peers[1]") && err.contains("never relays"),
            "{bad}: {err}"
        );
    }
    let ok = load_text(&turn("192.168.0.0/16"), vec![]).expect("private network");
    assert_eq!(ok.turn.expect("turn").allow_peers.len(), 2);
}

#[test]
fn turn_socket_buffer_is_bounded_and_defaults_to_4_mib() {
    let default = load_text(&with_turn(""), vec![]).expect("default");
    assert_eq!(default.turn.expect("turn").socket_buffer_bytes, 4 << 20);
    for bad in [
        "socket_buffer_bytes = 1000",
        "socket_buffer_bytes = 1073741824",
    ] {
        let err = load_text(&with_turn(bad), vec![])
            .expect_err(bad)
            .to_string();
        assert!(
            err.contains("turn.socket_buffer_bytes") && err.contains("between"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn candidate_networks_are_checked_and_closed_by_default() {
    let c = load_text(&minimal(), vec![]).expect("loads");
    assert!(
        c.media.allow_candidate_networks.is_empty(),
        "closed by default"
    );
    let (embedded, _) = load(None, Vec::new()).expect("embedded");
    assert!(
        embedded
            .media
            .allow_candidate_networks
            .contains(&"127.0.0.0/8".to_string()),
        "local use: the browser is on loopback"
    );
    for (bad, says) in [
        ("10.0.0.0/33", "not an address"),
        ("0.0.0.0/0", "every internal"),
    ] {
        let text = format!(
            "{}\n[media]\nallow_candidate_networks = [\"{bad}\"]",
            minimal()
        );
        let err = load_text(&text, vec![]).expect_err(bad).to_string();
        assert!(
            err.contains("media.allow_candidate_networks[0]") && err.contains(says),
            "{bad}: {err}"
        );
    }
    let c = load_text(
        &minimal(),
        vec![(
            "CALLBRIDGE_MEDIA__ALLOW_CANDIDATE_NETWORKS",
            "[\"10.0.0.0/8\"]",
        )],
    )
    .expect("env list");
    assert_eq!(c.media.allow_candidate_networks, vec!["10.0.0.0/8"]);
}

#[test]
fn sip_connection_limits_are_bounded_and_named() {
    let config = load_text(&minimal(), vec![]).expect("minimal");
    let limits = config.sip.connections();
    assert_eq!(
        (limits.max_connections, limits.max_connections_per_ip),
        (1024, 32)
    );
    assert_eq!(limits.max_message_bytes, 65_535);
    for (key, value) in [
        ("max_connections", "0"),
        ("max_connections_per_ip", "2000"),
        ("max_trunk_connections", "0"),
        ("max_tls_handshakes", "0"),
        ("max_message_bytes", "100"),
        ("tcp_idle_timeout", "\"0s\""),
        ("tcp_write_timeout", "\"1h\""),
        ("tls_handshake_timeout", "\"0s\""),
    ] {
        let text = format!("{}\n[sip]\n{key} = {value}", minimal());
        let err = load_text(&text, vec![]).expect_err(key).to_string();
        assert!(err.contains(&format!("sip.{key}")), "{key}: {err}");
    }
    let env = vec![("CALLBRIDGE_SIP__MAX_CONNECTIONS_PER_IP", "4")];
    let config = load_text(&minimal(), env).expect("env override");
    assert_eq!(config.sip.max_connections_per_ip, 4);
}

#[test]
fn forwarding_between_instances_needs_a_signing_secret() {
    let text = format!("{}\n[sip]\ntrusted_proxies = [\"10.0.0.0/24\"]", minimal());
    let err = load_text(&text, vec![]).expect_err("no secret").to_string();
    assert!(
        err.contains("cluster.forward_secret") && err.contains("sip.trusted_proxies"),
        "{err}"
    );
    let text = format!("{}\n[cluster]\ninbound_mode = \"proxy\"", minimal());
    let err = load_text(&text, vec![]).expect_err("no secret").to_string();
    assert!(
        err.contains("cluster.forward_secret") && err.contains("proxy"),
        "{err}"
    );
    let text = format!(
        "{}\n[cluster]\ninbound_mode = \"proxy\"\nforward_secret = \"short\"",
        minimal()
    );
    let err = load_text(&text, vec![]).expect_err("short").to_string();
    assert!(err.contains("at least 32"), "{err}");
    let secret = "f".repeat(32);
    let env = vec![("CALLBRIDGE_CLUSTER__FORWARD_SECRET", secret.as_str())];
    let text = format!("{}\n[cluster]\ninbound_mode = \"proxy\"", minimal());
    let config = load_text(&text, env).expect("secret from the environment");
    let auth = config.cluster.forward_auth().expect("forwarding on");
    assert_eq!(auth.secret, secret.as_bytes());
    assert!(
        !format!("{config:?}").contains(&secret),
        "secret not in Debug"
    );
    assert!(!format!("{auth:?}").contains(&secret));
    let text = format!("{}\n[cluster]\nforward_max_age = \"1h\"", minimal());
    let err = load_text(&text, vec![]).expect_err("window").to_string();
    assert!(err.contains("cluster.forward_max_age"), "{err}");
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

#[test]
fn rtcp_interval_defaults_to_5s_and_is_bounded() {
    let config = load_text(&minimal(), vec![]).expect("minimal");
    assert_eq!(
        config.media.rtcp_interval,
        std::time::Duration::from_secs(5)
    );
    for bad in ["0s", "500ms", "2m"] {
        let text = format!("{}\n[media]\nrtcp_interval = \"{bad}\"", minimal());
        let err = load_text(&text, vec![]).expect_err(bad).to_string();
        assert!(err.contains("media.rtcp_interval"), "{bad}: {err}");
    }
    let env = vec![("CALLBRIDGE_MEDIA__RTCP_INTERVAL", "2s")];
    let config = load_text(&minimal(), env).expect("env override");
    assert_eq!(
        config.media.rtcp_interval,
        std::time::Duration::from_secs(2)
    );
}

#[test]
fn media_engine_is_the_worker_and_its_keys_are_checked() {
    let config = load_text(&minimal(), vec![]).expect("minimal");
    assert_eq!(config.media.engine, MediaEngineKind::Worker);
    assert_eq!(config.media.worker_socket_buffer_bytes, 4 << 20);
    let env = vec![
        ("CALLBRIDGE_MEDIA__ENGINE", "worker"),
        ("CALLBRIDGE_MEDIA__WORKERS", "3"),
        ("CALLBRIDGE_MEDIA__WORKER_PORT_BASE", "20000"),
    ];
    let config = load_text(&minimal(), env).expect("env override");
    assert_eq!(config.media.engine, MediaEngineKind::Worker);
    assert_eq!(config.media.worker_count(), 3);
    assert_eq!(config.media.worker_port_base, 20000);
    let zero = load_text(&minimal(), vec![]).expect("minimal");
    assert!(zero.media.worker_count() >= 1, "0 means one per core");
    for (extra, key) in [
        ("engine = \"threads\"", "engine"),
        ("engine = \"tasks\"", "engine"),
        ("workers = 1000", "media.workers"),
        (
            "workers = 4\nworker_port_base = 65534",
            "media.worker_port_base",
        ),
        (
            "worker_socket_buffer_bytes = 1000",
            "media.worker_socket_buffer_bytes",
        ),
    ] {
        let text = format!("{}\n[media]\n{extra}", minimal());
        let err = load_text(&text, vec![]).expect_err(extra).to_string();
        assert!(err.contains(key), "{extra}: {err}");
    }
}

#[test]
fn host_candidate_ips_only_go_with_a_wildcard_media_ip() {
    let bare = format!("{}\n[media]\nengine = \"worker\"", minimal())
        .replace("[server]", "[server]\nmedia_ip = \"0.0.0.0\"");
    let err = load_text(&bare, vec![]).expect_err("c=0.0.0.0").to_string();
    assert!(
        err.contains("server.media_ip") && err.contains("sip.external_address"),
        "{err}"
    );
    let wildcard = format!("{bare}\n[sip]\nexternal_address = \"192.0.2.9\"");
    load_text(&wildcard, vec![]).expect("a wildcard media_ip: interface addresses");
    let listed = wildcard.replace("[media]", "[media]\nhost_candidate_ips = [\"127.0.0.2\"]");
    let config = load_text(&listed, vec![]).expect("listed");
    assert_eq!(
        config.media.host_candidate_ips,
        vec![std::net::IpAddr::from([127, 0, 0, 2])]
    );
    for (text, why) in [
        (
            listed.replace("[server]", "[server]\npublic_ip = \"192.0.2.10\""),
            "public_ip",
        ),
        (
            listed.replace("media_ip = \"0.0.0.0\"", "media_ip = \"127.0.0.1\""),
            "0.0.0.0",
        ),
        (listed.replace("127.0.0.2", "::1"), "family"),
        (listed.replace("127.0.0.2", "224.0.0.1"), "unicast"),
    ] {
        let err = load_text(&text, vec![]).expect_err(why).to_string();
        assert!(
            err.contains("media.host_candidate_ips") && err.contains(why),
            "{why}: {err}"
        );
    }
}
