use super::*;
use crate::config::RouteConfig;

fn route(pattern: &str, trunks: &[&str]) -> RouteConfig {
    RouteConfig::new(pattern, trunks.iter().map(|s| s.to_string()).collect())
}

fn plan(routes: Vec<RouteConfig>) -> Dialplan {
    let config = DialplanConfig {
        routes,
        ..DialplanConfig::default()
    };
    Dialplan::from_config(&config).expect("valid plan")
}

#[test]
fn first_matching_route_wins() {
    let p = plan(vec![
        route(r"^\+1900[0-9]{7}$", &["premium"]),
        route(r"^\+1[0-9]{10}$", &["a", "b"]),
        route(r"^\+44", &["uk"]),
    ]);
    let r = p.route("+15551234567").expect("us route");
    assert_eq!(
        (r.route, r.trunks.clone()),
        (1, vec!["a".to_string(), "b".to_string()])
    );
    assert_eq!(r.dial, "+15551234567");
    assert_eq!(p.route("+19005551234").expect("premium").route, 0);
    assert_eq!(
        p.route("+442071234567").expect("uk").trunks,
        vec!["uk".to_string()]
    );
}

#[test]
fn no_match_is_an_error_naming_the_number() {
    let p = plan(vec![route(r"^\+1[0-9]{10}$", &["a"])]);
    assert_eq!(p.route("+4420"), Err(RouteError::NoRoute("+4420".into())));
    assert_eq!(
        p.route("+1555123456"),
        Err(RouteError::NoRoute("+1555123456".into()))
    );
    assert!(matches!(p.route(""), Err(RouteError::BadNumber(_))));
    assert!(matches!(
        Dialplan::default().route("+15551234567"),
        Err(RouteError::NoRoute(_))
    ));
}

#[test]
fn e164_normalisation() {
    let config = DialplanConfig {
        default_country_code: "44".into(),
        routes: vec![route(".*", &["a"])],
        ..DialplanConfig::default()
    };
    let p = Dialplan::from_config(&config).expect("plan");
    for (dialed, expected) in [
        ("+44 20 7123-4567", "+442071234567"),
        ("020 7123 4567", "+442071234567"),
        ("0044 (20) 7123.4567", "+442071234567"),
        ("0015551234567", "+15551234567"),
        ("2071234567", "+442071234567"),
        ("*98#", "*98#"),
        ("echo", "echo"),
    ] {
        assert_eq!(p.normalize(dialed).as_deref(), Ok(expected), "{dialed}");
    }
    for bad in ["+", "  ", "12ab 34", "<sip:x>", "a@b"] {
        assert!(
            matches!(p.normalize(bad), Err(RouteError::BadNumber(_))),
            "{bad}"
        );
    }
    // Without a default country code a national number cannot be made E.164.
    let p = plan(vec![route(".*", &["a"])]);
    assert_eq!(
        p.normalize("02071234567"),
        Err(RouteError::NoCountryCode("02071234567".into()))
    );
    // With normalisation off, numbers pass as typed (minus separators).
    let off = Dialplan::from_config(&DialplanConfig {
        e164: false,
        ..DialplanConfig::default()
    })
    .expect("plan");
    assert_eq!(off.normalize("020 7123").as_deref(), Ok("0207123"));
}

#[test]
fn strip_prepend_and_privacy_per_route() {
    let mut r = route(r"^\+1[0-9]{10}$", &["us"]);
    r.strip = 2;
    r.prepend = "9".into();
    r.privacy = true;
    let mut intl = route(r"^\+", &["intl"]);
    intl.strip = 1;
    intl.prepend = "011".into();
    let p = plan(vec![r, intl]);
    let us = p.route("+1 555 123 4567").expect("us");
    assert_eq!(us.normalized, "+15551234567");
    assert_eq!(us.dial, "95551234567");
    assert!(us.privacy);
    let uk = p.route("+442071234567").expect("intl");
    assert_eq!(uk.dial, "011442071234567");
    assert!(!uk.privacy);
}

#[test]
fn bad_pattern_is_reported_with_its_index() {
    let config = DialplanConfig {
        routes: vec![route("((", &["a"])],
        ..DialplanConfig::default()
    };
    let err = Dialplan::from_config(&config).expect_err("bad regex");
    assert!(
        err.to_string().starts_with("dialplan.routes[0].pattern"),
        "{err}"
    );
}
