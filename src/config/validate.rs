//! Validation of a parsed [`Config`]: every error names the key and says what to do.

use std::collections::HashSet;

use super::{Config, ConfigError};

/// Minimum HS256 secret length in bytes (RFC 7518 §3.2: key ≥ hash output size).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// Checks values that parse but make no sense.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    let auth = &config.auth;
    if auth.audience.trim().is_empty() {
        return Err(ConfigError::invalid(
            "auth.audience",
            "must not be empty; set it to the `aud` your token issuer puts in tokens",
        ));
    }
    if auth.hs256_secret.is_empty() && auth.public_keys.is_empty() {
        return Err(ConfigError::invalid(
            "auth",
            "no way to verify tokens: set auth.hs256_secret or auth.public_keys",
        ));
    }
    if !auth.hs256_secret.is_empty() && auth.hs256_secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(ConfigError::invalid(
            "auth.hs256_secret",
            format!(
                "is {} bytes; use at least {MIN_HS256_SECRET_BYTES} random bytes (e.g. `openssl rand -hex 32`)",
                auth.hs256_secret.len()
            ),
        ));
    }
    for (i, path) in auth.public_keys.iter().enumerate() {
        if !path.is_file() {
            return Err(ConfigError::invalid(
                format!("auth.public_keys[{i}]"),
                format!("{} is not a readable file", path.display()),
            ));
        }
    }
    if let Some(tls) = &config.tls {
        for (key, path) in [("tls.cert", &tls.cert), ("tls.key", &tls.key)] {
            if !path.is_file() {
                return Err(ConfigError::invalid(
                    key,
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
    }
    if config.server.max_calls == 0 {
        return Err(ConfigError::invalid(
            "server.max_calls",
            "must be at least 1",
        ));
    }
    if config.server.auth_timeout.is_zero() {
        return Err(ConfigError::invalid(
            "server.auth_timeout",
            "must be more than 0s, e.g. \"5s\"",
        ));
    }
    let limits = &config.limits;
    for (key, value) in [
        ("limits.max_message_bytes", limits.max_message_bytes),
        ("limits.max_sessions_per_ip", limits.max_sessions_per_ip),
        ("limits.max_calls_per_user", limits.max_calls_per_user),
    ] {
        if value == 0 {
            return Err(ConfigError::invalid(key, "must be at least 1"));
        }
    }
    if limits.max_message_bytes < 4096 {
        return Err(ConfigError::invalid(
            "limits.max_message_bytes",
            "must be at least 4096: SDP offers are a few KiB",
        ));
    }
    if limits.max_call_duration.is_zero() {
        return Err(ConfigError::invalid(
            "limits.max_call_duration",
            "must be more than 0s",
        ));
    }
    parse_port_range(&config.sip.rtp_ports)
        .map_err(|m| ConfigError::invalid("sip.rtp_ports", m))?;

    let mut names = HashSet::new();
    for (i, trunk) in config.sip.trunks.iter().enumerate() {
        let key = format!("sip.trunks[{i}]");
        if trunk.name.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.name"),
                "must not be empty",
            ));
        }
        if !names.insert(trunk.name.as_str()) {
            return Err(ConfigError::invalid(
                format!("{key}.name"),
                format!(
                    "trunk name `{}` is used twice; names must be unique",
                    trunk.name
                ),
            ));
        }
        split_host_port(&trunk.address)
            .map_err(|m| ConfigError::invalid(format!("{key}.address"), m))?;
        if !matches!(trunk.transport.as_str(), "udp" | "tcp" | "tls") {
            return Err(ConfigError::invalid(
                format!("{key}.transport"),
                format!("`{}` is not one of udp, tcp, tls", trunk.transport),
            ));
        }
        if trunk.transport != "udp" {
            return Err(ConfigError::invalid(
                format!("{key}.transport"),
                format!("`{}` is not supported yet; use udp", trunk.transport),
            ));
        }
        if trunk.username.is_some() != trunk.password.is_some() {
            return Err(ConfigError::invalid(
                key.clone(),
                "set both username and password, or neither",
            ));
        }
    }
    for (i, route) in config.dialplan.routes.iter().enumerate() {
        let key = format!("dialplan.routes[{i}]");
        if let Err(e) = regex::Regex::new(&route.pattern) {
            return Err(ConfigError::invalid(
                format!("{key}.pattern"),
                format!("not a valid regular expression: {e}"),
            ));
        }
        if route.trunks.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.trunks"),
                "must name at least one trunk",
            ));
        }
        for name in &route.trunks {
            if !names.contains(name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{key}.trunks"),
                    format!("unknown trunk `{name}`; define it under [[sip.trunks]]"),
                ));
            }
        }
    }
    if let Some(turn) = &config.turn
        && turn.secret.len() < 16
    {
        return Err(ConfigError::invalid(
            "turn.secret",
            "must be at least 16 characters of random data",
        ));
    }
    if !matches!(config.log.format.as_str(), "text" | "json") {
        return Err(ConfigError::invalid(
            "log.format",
            format!("`{}` is not one of text, json", config.log.format),
        ));
    }
    super::validate_ops(config)?;
    Ok(())
}

/// Parses `"low-high"` into an inclusive even-aligned port range.
pub fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let (low, high) = text
        .split_once('-')
        .ok_or_else(|| format!("`{text}` is not a range like \"20000-29999\""))?;
    let low: u16 = low
        .trim()
        .parse()
        .map_err(|_| format!("`{low}` is not a port number"))?;
    let high: u16 = high
        .trim()
        .parse()
        .map_err(|_| format!("`{high}` is not a port number"))?;
    if low < 1024 || high < low + 1 {
        return Err(format!(
            "`{text}`: need 1024 <= low < high (RTP uses an even port and the odd one above it)"
        ));
    }
    Ok((low, high))
}

/// Splits `host:port` (IPv6 in brackets); the port is required.
pub fn split_host_port(address: &str) -> Result<(String, u16), String> {
    let (host, port) = address.rsplit_once(':').ok_or_else(|| {
        format!("`{address}` has no port; write host:port, e.g. sip.example.com:5060")
    })?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{port}` in `{address}` is not a port number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("`{address}` has no host"));
    }
    Ok((host.to_string(), port))
}
