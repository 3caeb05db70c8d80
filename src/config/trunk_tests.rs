use super::super::{Config, load};

const BASE: &str = r#"
[auth]
hs256_secret = "0123456789abcdef0123456789abcdef"
[[sip.trunks]]
name = "a"
address = "127.0.0.1:5070"
"#;

fn load_with(extra: &str, env: &[(&str, &str)]) -> Result<Config, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, format!("{BASE}{extra}")).expect("write");
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    load(Some(&path), env)
        .map(|(c, _)| c)
        .map_err(|e| e.to_string())
}

#[test]
fn trunk_keys_have_defaults_and_parse() {
    let c = load_with("", &[]).expect("loads");
    let t = &c.sip.trunks[0];
    assert_eq!(t.transport, "udp");
    assert_eq!(t.register_expires, 3600);
    assert_eq!(t.session_expires, 1800);
    assert_eq!(t.min_se, 90);
    assert_eq!(t.dtmf_mode, "rfc4733");
    assert_eq!(t.options_interval, None);
    let c = load_with(
        "transport = \"tcp\"\nusername = \"u\"\npassword = \"p\"\nregister = true\noptions_interval = \"15s\"\ndtmf_mode = \"info\"\nreliable_provisional = \"required\"\nsession_expires = 0\n",
        &[],
    )
    .expect("loads");
    let t = &c.sip.trunks[0];
    assert_eq!(t.options_interval, Some(std::time::Duration::from_secs(15)));
    assert!(t.register);
    let settings = crate::sip::TrunkSettings::from_config(t);
    assert_eq!(settings.transport, crate::sip::Transport::Tcp);
    assert_eq!(settings.dtmf_mode, crate::sip::DtmfMode::Info);
    assert_eq!(settings.port, 5070);
    assert!(settings.credentials.is_some());
    assert!(
        !format!("{t:?}").contains("\"p\""),
        "Debug redacts the password"
    );
}

#[test]
fn bad_trunk_values_name_the_key() {
    for (extra, key) in [
        ("transport = \"sctp\"\n", "sip.trunks[0].transport"),
        ("dtmf_mode = \"inband\"\n", "sip.trunks[0].dtmf_mode"),
        (
            "reliable_provisional = \"always\"\n",
            "sip.trunks[0].reliable_provisional",
        ),
        ("session_expires = 60\n", "sip.trunks[0].session_expires"),
        ("min_se = 30\n", "sip.trunks[0].min_se"),
        (
            "register_expires = 10\nusername = \"u\"\npassword = \"p\"\n",
            "sip.trunks[0].register_expires",
        ),
        ("register = true\n", "sip.trunks[0].register"),
        (
            "options_interval = \"10ms\"\n",
            "sip.trunks[0].options_interval",
        ),
        ("tls_ca = \"ca.pem\"\n", "sip.trunks[0].tls_ca"),
        (
            "transport = \"tls\"\ntls_ca = \"/nonexistent/ca.pem\"\n",
            "sip.trunks[0].tls_ca",
        ),
        ("username = \"u\"\n", "sip.trunks[0]"),
        (
            "inbound_from = [\"10.0.0.0/33\"]\n",
            "sip.trunks[0].inbound_from",
        ),
        ("inbound_auth = true\n", "sip.trunks[0].inbound_auth"),
    ] {
        let err = load_with(extra, &[]).expect_err(key);
        assert!(
            err.contains(&format!("`{key}`")),
            "expected `{key}` in: {err}"
        );
    }
}

#[test]
fn password_env_is_read_at_load_time() {
    let extra = "username = \"u\"\npassword_env = \"TRUNK_A_PW\"\n";
    let c = load_with(extra, &[("TRUNK_A_PW", "from-env")]).expect("loads");
    assert_eq!(c.sip.trunks[0].password.as_deref(), Some("from-env"));
    let err = load_with(extra, &[]).expect_err("unset variable");
    assert!(
        err.contains("sip.trunks[0].password_env") && err.contains("TRUNK_A_PW"),
        "{err}"
    );
    let err = load_with(
        &format!("{extra}password = \"x\"\n"),
        &[("TRUNK_A_PW", "y")],
    )
    .expect_err("both");
    assert!(err.contains("not both"), "{err}");
}

#[test]
fn zero_options_interval_means_off() {
    let c = load_with("options_interval = \"0s\"\n", &[]).expect("loads");
    let settings = crate::sip::TrunkSettings::from_config(&c.sip.trunks[0]);
    assert_eq!(settings.options_interval, None);
}

#[test]
fn inbound_keys_reach_the_trunk_settings() {
    let c = load_with(
        "inbound_from = [\"198.51.100.0/24\", \"203.0.113.7\"]\ninbound_auth = true\nusername = \"u\"\npassword = \"p\"\n",
        &[],
    )
    .expect("loads");
    let settings = crate::sip::TrunkSettings::from_config(&c.sip.trunks[0]);
    let nets: Vec<String> = settings
        .inbound_from
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["198.51.100.0/24", "203.0.113.7/32"]);
    assert!(settings.inbound_auth);
}

#[test]
fn carrier_keys_default_parse_and_reach_the_trunk_settings() {
    let c = load_with("", &[]).expect("loads");
    let t = &c.sip.trunks[0];
    assert_eq!(t.called_number_from, "auto");
    assert_eq!(t.caller_id_header, ["pai"]);
    assert_eq!(
        (t.from_user.as_deref(), t.from_domain.as_deref()),
        (None, None)
    );
    let settings = crate::sip::TrunkSettings::from_config(t);
    assert_eq!(settings.domain(), "127.0.0.1:5070", "the port is kept");

    let c = load_with(
        "called_number_from = \"diversion\"\nfrom_user = \"+15550000000\"\nfrom_domain = \"carrier.example:5080\"\ncaller_id_header = [\"pai\", \"rpid\"]\n",
        &[],
    )
    .expect("loads");
    let settings = crate::sip::TrunkSettings::from_config(&c.sip.trunks[0]);
    assert_eq!(
        settings.called_number_from,
        crate::sip::CalledNumberSource::Diversion
    );
    assert_eq!(settings.account(), Some("+15550000000"));
    assert_eq!(settings.account_domain(), "carrier.example:5080");
    assert!(settings.caller_id_headers.pai && settings.caller_id_headers.rpid);
    // A digest username that is no SIP user is fine with a from_user.
    load_with(
        "username = \"u@carrier.example\"\npassword = \"p\"\nfrom_user = \"u\"\n",
        &[],
    )
    .expect("from_user set");
    // A single string works as well as a list.
    let c = load_with("caller_id_header = \"rpid\"\n", &[]).expect("loads");
    assert_eq!(c.sip.trunks[0].caller_id_header, ["rpid"]);
}

#[test]
fn bad_carrier_keys_name_the_key() {
    for (extra, key) in [
        (
            "called_number_from = \"from\"\n",
            "sip.trunks[0].called_number_from",
        ),
        ("from_user = \"a b\"\n", "sip.trunks[0].from_user"),
        ("from_user = \"\"\n", "sip.trunks[0].from_user"),
        (
            "username = \"u@carrier.example\"\npassword = \"p\"\n",
            "sip.trunks[0].from_user",
        ),
        ("from_domain = \"a/b\"\n", "sip.trunks[0].from_domain"),
        ("from_domain = \"h:99999\"\n", "sip.trunks[0].from_domain"),
        (
            "caller_id_header = \"pidf\"\n",
            "sip.trunks[0].caller_id_header",
        ),
        ("caller_id_header = []\n", "sip.trunks[0].caller_id_header"),
        (
            "caller_id_header = [\"none\", \"pai\"]\n",
            "sip.trunks[0].caller_id_header",
        ),
    ] {
        let err = load_with(extra, &[]).expect_err(key);
        assert!(
            err.contains(&format!("`{key}`")),
            "expected `{key}` in: {err}"
        );
    }
}

#[test]
fn refer_is_rejected_unless_a_trunk_says_dialplan() {
    let c = load_with("", &[]).expect("loads");
    assert_eq!(c.sip.trunks[0].refer, "reject");
    let settings = crate::sip::TrunkSettings::from_config(&c.sip.trunks[0]);
    assert_eq!(settings.refer, crate::sip::ReferPolicy::Reject);
    assert_eq!(settings.realm, None);
    let c = load_with(
        "refer = \"dialplan\"\nrealm = \"sip.carrier.example\"\nusername = \"u\"\npassword = \"p\"\n",
        &[],
    )
    .expect("loads");
    let settings = crate::sip::TrunkSettings::from_config(&c.sip.trunks[0]);
    assert_eq!(settings.refer, crate::sip::ReferPolicy::Dialplan);
    assert_eq!(settings.realm.as_deref(), Some("sip.carrier.example"));
}
