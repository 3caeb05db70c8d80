//! `[http]` (connection limits and timeouts of the HTTP/WebSocket listeners) and
//! `[admin]` (the operator listener for `/v1` and `/metrics`), with their
//! validation, and the checks that keep development conveniences off public
//! listeners (`demo.dev_tokens`, a catch-all dial plan).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

/// `[http]`: what one client may hold on the HTTP/WebSocket listeners. Every limit
/// has a safe default; connections over a cap are closed at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// A request head (request line and headers) must arrive within this, counted
    /// from when the server starts waiting for it; a keep-alive connection waiting
    /// for its next request is closed after it too (slowloris).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// An HTTP connection (not an upgraded WebSocket) on which no byte moved either
    /// way for this long is closed: stalled bodies, clients that stop reading.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Open connections on the public listener (WebSockets included), all clients.
    pub max_connections: usize,
    /// Open connections from one client address (IPv6: one /64).
    pub max_connections_per_ip: usize,
    /// TLS handshakes in progress at once; when full, the oldest one is dropped to
    /// make room, so stalled handshakes cannot lock out new clients.
    pub max_tls_handshakes: usize,
    /// A TLS handshake not finished within this is dropped.
    #[serde(with = "humantime_serde")]
    pub tls_handshake_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 8192,
            max_connections_per_ip: 100,
            max_tls_handshakes: 256,
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// `[admin]`: the operator listener. `/v1` (operator API) and `/metrics` are served
/// only here; the public listener answers 404 for them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Run the operator listener. `false`: `/v1` and `/metrics` move to the public
    /// listener, where both need an operator token (`auth.admin_audience`).
    pub enabled: bool,
    /// Where the operator listener binds (plain HTTP; keep it on loopback or a
    /// private network).
    pub listen: SocketAddr,
    /// Open connections on the operator listener: its own budget, so a flood on the
    /// public listener cannot take probes and scrapes down.
    pub max_connections: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            max_connections: 64,
        }
    }
}

/// Shortest accepted timeout of `[http]`.
const MIN_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest accepted timeout of `[http]`.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// Checks `[http]`, `[admin]` and `auth.admin_audience`.
pub fn validate_http(config: &Config) -> Result<(), ConfigError> {
    let http = &config.http;
    for (key, value) in [
        ("http.header_read_timeout", http.header_read_timeout),
        ("http.idle_timeout", http.idle_timeout),
        ("http.tls_handshake_timeout", http.tls_handshake_timeout),
    ] {
        if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&value) {
            return Err(ConfigError::invalid(
                key,
                "must be between 100ms and 10m (e.g. \"10s\")",
            ));
        }
    }
    for (key, value) in [
        ("http.max_connections", http.max_connections),
        ("http.max_connections_per_ip", http.max_connections_per_ip),
        ("http.max_tls_handshakes", http.max_tls_handshakes),
        ("admin.max_connections", config.admin.max_connections),
    ] {
        if value == 0 {
            return Err(ConfigError::invalid(key, "must be at least 1"));
        }
    }
    if http.max_connections_per_ip > http.max_connections {
        return Err(ConfigError::invalid(
            "http.max_connections_per_ip",
            format!(
                "{} is above http.max_connections ({}); one client could take every connection",
                http.max_connections_per_ip, http.max_connections
            ),
        ));
    }
    if http.max_connections_per_ip < config.limits.max_sessions_per_ip {
        return Err(ConfigError::invalid(
            "http.max_connections_per_ip",
            format!(
                "{} is below limits.max_sessions_per_ip ({}); every WebSocket session is a \
                 connection, so raise http.max_connections_per_ip or lower limits.max_sessions_per_ip",
                http.max_connections_per_ip, config.limits.max_sessions_per_ip
            ),
        ));
    }
    let auth = &config.auth;
    if auth.admin_audience.trim().is_empty() {
        return Err(ConfigError::invalid(
            "auth.admin_audience",
            "must not be empty; operator tokens carry it as their `aud`",
        ));
    }
    if auth.admin_audience == auth.audience {
        return Err(ConfigError::invalid(
            "auth.admin_audience",
            format!(
                "must differ from auth.audience (`{}`), or every browser token could use the \
                 operator API; e.g. \"callbridge-admin\"",
                auth.audience
            ),
        ));
    }
    let admin = &config.admin;
    if admin.enabled && overlaps(admin.listen, config.server.listen) {
        return Err(ConfigError::invalid(
            "admin.listen",
            format!(
                "{} is server.listen's port; give the operator listener its own port, e.g. 127.0.0.1:8081",
                admin.listen
            ),
        ));
    }
    Ok(())
}

/// Refuses development conveniences on a listener others can reach: the dev-token
/// endpoint hands a calling token to anyone, and a catch-all route lets any token
/// dial anything (premium and international numbers: toll fraud).
pub fn validate_exposure(config: &Config) -> Result<(), ConfigError> {
    let listen = config.server.listen;
    if listen.ip().is_loopback() {
        return Ok(());
    }
    if config.demo.enabled && config.demo.dev_tokens {
        return Err(ConfigError::invalid(
            "demo.dev_tokens",
            format!(
                "hands a calling token to anyone who reaches server.listen ({listen}); it is only \
                 allowed on a loopback address: set demo.dev_tokens = false (and issue tokens from \
                 your auth service), or listen on 127.0.0.1"
            ),
        ));
    }
    if config.dialplan.allow_catch_all {
        return Ok(());
    }
    for (i, route) in config.dialplan.routes.iter().enumerate() {
        if is_catch_all(&route.pattern) {
            return Err(ConfigError::invalid(
                format!("dialplan.routes[{i}].pattern"),
                format!(
                    "`{}` matches any dialed text, so every token could call premium and \
                     international numbers through {:?} from server.listen ({listen}); write the \
                     numbers you mean (e.g. '^\\+1[0-9]{{10}}$'), listen on 127.0.0.1, or set \
                     dialplan.allow_catch_all = true if the trunk enforces its own restrictions",
                    route.pattern, route.trunks
                ),
            ));
        }
    }
    Ok(())
}

/// Whether a route pattern matches text that is no phone number at all (`.*`,
/// `.+`, an empty pattern…).
pub fn is_catch_all(pattern: &str) -> bool {
    const PROBES: &[&str] = &["zz-not-a-number", "+999"];
    regex::Regex::new(pattern).is_ok_and(|re| PROBES.iter().all(|p| re.is_match(p)))
}

/// Whether two listen addresses would take the same TCP port.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    let same_ip = a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
    same_ip && a.port() != 0 && a.port() == b.port()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteConfig;

    fn base() -> Config {
        let mut c = Config::default();
        c.auth.hs256_secret = "0123456789abcdef0123456789abcdef".into();
        c
    }

    #[test]
    fn catch_all_patterns_are_recognised() {
        for p in [".*", "^.*$", ".+", "", "(?s).*", "^(.*)$"] {
            assert!(is_catch_all(p), "{p}");
        }
        for p in [r"^\+1[0-9]{10}$", r"^\+[0-9]+$", "^(echo|\\+1000)$", "(("] {
            assert!(!is_catch_all(p), "{p}");
        }
    }

    #[test]
    fn dev_tokens_and_catch_all_are_refused_off_loopback() {
        let mut c = Config::embedded().with_random_secret();
        assert!(validate_exposure(&c).is_ok(), "loopback is fine");
        c.server.listen = "0.0.0.0:8080".parse().expect("addr");
        let err = validate_exposure(&c).expect_err("dev tokens").to_string();
        assert!(
            err.contains("demo.dev_tokens") && err.contains("127.0.0.1"),
            "{err}"
        );
        c.demo.dev_tokens = false;
        let err = validate_exposure(&c).expect_err("catch-all").to_string();
        assert!(err.contains("dialplan.routes[0].pattern"), "{err}");
        assert!(err.contains("allow_catch_all"), "{err}");
        c.dialplan.allow_catch_all = true;
        assert!(validate_exposure(&c).is_ok());
        c.dialplan.allow_catch_all = false;
        c.dialplan.routes = vec![RouteConfig::new(r"^\+1[0-9]{10}$", vec!["local".into()])];
        assert!(validate_exposure(&c).is_ok());
        c.server.listen = "[::1]:8080".parse().expect("addr");
        c.demo.dev_tokens = true;
        c.dialplan.routes = vec![RouteConfig::new(".*", vec!["local".into()])];
        assert!(validate_exposure(&c).is_ok(), "IPv6 loopback is loopback");
    }

    #[test]
    fn env_overrides_reach_the_new_sections() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        let text = "[auth]\nhs256_secret = \"0123456789abcdef0123456789abcdef\"\n";
        std::fs::write(&path, text).expect("write");
        let env = [
            ("CALLBRIDGE_HTTP__HEADER_READ_TIMEOUT", "2s"),
            ("CALLBRIDGE_HTTP__MAX_CONNECTIONS_PER_IP", "64"),
            ("CALLBRIDGE_ADMIN__ENABLED", "false"),
            ("CALLBRIDGE_AUTH__ADMIN_AUDIENCE", "ops"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let (c, _) = crate::config::load(Some(&path), env).expect("loads");
        assert_eq!(c.http.header_read_timeout, Duration::from_secs(2));
        assert_eq!(c.http.max_connections_per_ip, 64);
        assert!(!c.admin.enabled);
        assert_eq!(c.auth.admin_audience, "ops");
        assert_eq!(c.http.max_tls_handshakes, 256, "defaults for the rest");
    }

    #[test]
    fn http_limits_name_the_key() {
        type Change = fn(&mut Config);
        let cases: Vec<(Change, &str)> = vec![
            (
                |c| c.http.header_read_timeout = Duration::ZERO,
                "http.header_read_timeout",
            ),
            (|c| c.http.max_connections = 0, "http.max_connections"),
            (
                |c| c.http.max_connections_per_ip = c.http.max_connections + 1,
                "http.max_connections_per_ip",
            ),
            (
                |c| c.limits.max_sessions_per_ip = c.http.max_connections_per_ip + 1,
                "http.max_connections_per_ip",
            ),
            (|c| c.http.max_tls_handshakes = 0, "http.max_tls_handshakes"),
            (
                |c| c.auth.admin_audience = c.auth.audience.clone(),
                "auth.admin_audience",
            ),
            (|c| c.admin.listen = c.server.listen, "admin.listen"),
        ];
        for (change, key) in cases {
            let mut c = base();
            assert!(validate_http(&c).is_ok());
            change(&mut c);
            let err = validate_http(&c).expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }
}
