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
    super::validate_tokens::validate_tokens(config)?;
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
        split_trunk_address(&trunk.address)
            .map_err(|m| ConfigError::invalid(format!("{key}.address"), m))?;
        if !matches!(trunk.transport.as_str(), "udp" | "tcp" | "tls") {
            return Err(ConfigError::invalid(
                format!("{key}.transport"),
                format!("`{}` is not one of udp, tcp, tls", trunk.transport),
            ));
        }
        if trunk.username.is_some() != (trunk.password.is_some() || trunk.password_env.is_some()) {
            return Err(ConfigError::invalid(
                key.clone(),
                "set username together with password (or password_env), or none of them",
            ));
        }
        if trunk.register && trunk.username.is_none() {
            return Err(ConfigError::invalid(
                format!("{key}.register"),
                "registering needs username and password (or password_env)",
            ));
        }
        if trunk.register_expires < 60 {
            return Err(ConfigError::invalid(
                format!("{key}.register_expires"),
                format!("{} s is too short; use at least 60", trunk.register_expires),
            ));
        }
        if let Some(interval) = trunk.options_interval
            && !interval.is_zero()
            && interval < std::time::Duration::from_secs(1)
        {
            return Err(ConfigError::invalid(
                format!("{key}.options_interval"),
                "must be \"0s\" (off) or at least \"1s\"",
            ));
        }
        if !matches!(trunk.dtmf_mode.as_str(), "rfc4733" | "info") {
            return Err(ConfigError::invalid(
                format!("{key}.dtmf_mode"),
                format!("`{}` is not one of rfc4733, info", trunk.dtmf_mode),
            ));
        }
        if !matches!(
            trunk.reliable_provisional.as_str(),
            "supported" | "required" | "disabled"
        ) {
            return Err(ConfigError::invalid(
                format!("{key}.reliable_provisional"),
                format!(
                    "`{}` is not one of supported, required, disabled",
                    trunk.reliable_provisional
                ),
            ));
        }
        if trunk.min_se < 90 {
            return Err(ConfigError::invalid(
                format!("{key}.min_se"),
                format!("{} s is below the RFC 4028 minimum of 90", trunk.min_se),
            ));
        }
        if trunk.session_expires != 0 && trunk.session_expires < trunk.min_se {
            return Err(ConfigError::invalid(
                format!("{key}.session_expires"),
                format!(
                    "{} s is below min_se ({} s); use 0 to disable session timers",
                    trunk.session_expires, trunk.min_se
                ),
            ));
        }
        if trunk.tls_client_auth && (trunk.transport != "tls" || config.tls.is_none()) {
            return Err(ConfigError::invalid(
                format!("{key}.tls_client_auth"),
                "mutual TLS needs transport = \"tls\" and a certificate in [tls] (cert and key)",
            ));
        }
        if trunk.sips && trunk.transport != "tls" {
            return Err(ConfigError::invalid(
                format!("{key}.sips"),
                "sips: URIs need transport = \"tls\"",
            ));
        }
        if trunk.transport != "tls" && (trunk.tls_ca.is_some() || trunk.tls_server_name.is_some()) {
            return Err(ConfigError::invalid(
                format!("{key}.tls_ca"),
                "tls_ca and tls_server_name only apply to transport = \"tls\"",
            ));
        }
        if let Some(ca) = &trunk.tls_ca
            && !ca.is_file()
        {
            return Err(ConfigError::invalid(
                format!("{key}.tls_ca"),
                format!("{} is not a readable file", ca.display()),
            ));
        }
        for net in &trunk.inbound_from {
            if net.parse::<ipnet::IpNet>().is_err() && net.parse::<std::net::IpAddr>().is_err() {
                return Err(ConfigError::invalid(
                    format!("{key}.inbound_from"),
                    format!("`{net}` is not a network (CIDR) or an IP address"),
                ));
            }
        }
        if trunk.inbound_auth && trunk.username.is_none() {
            return Err(ConfigError::invalid(
                format!("{key}.inbound_auth"),
                "challenging inbound calls needs username and password (or password_env)",
            ));
        }
        super::carrier::validate_carrier_keys(&key, trunk)?;
        if !matches!(trunk.refer.as_str(), "reject" | "dialplan") {
            return Err(ConfigError::invalid(
                format!("{key}.refer"),
                format!(
                    "`{}` is not one of reject, dialplan (reject answers REFER 603; dialplan dials the Refer-To number through the dial plan)",
                    trunk.refer
                ),
            ));
        }
        if let Some(realm) = &trunk.realm
            && (realm.trim().is_empty()
                || realm.len() > 256
                || realm
                    .chars()
                    .any(|c| c.is_control() || c == '"' || c == '\\'))
        {
            return Err(ConfigError::invalid(
                format!("{key}.realm"),
                "must be the trunk's digest realm as it appears in its challenges (1-256 characters, no quotes, backslashes or control characters); remove it to accept the first realm the trunk challenges with",
            ));
        }
        if trunk.realm.is_some() && trunk.username.is_none() {
            return Err(ConfigError::invalid(
                format!("{key}.realm"),
                "a realm only applies to digest credentials: set username and password (or password_env), or remove realm",
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
    if let Some(turn) = &config.turn {
        super::turn::validate(config, turn)?;
    }
    validate_sip_tls(config)?;
    if config.sip.dns_refresh < std::time::Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "sip.dns_refresh",
            "must be at least 1s (e.g. 5m)",
        ));
    }
    let keepalive = config.sip.keepalive_interval;
    if !keepalive.is_zero() && !(5..=3600).contains(&keepalive.as_secs()) {
        return Err(ConfigError::invalid(
            "sip.keepalive_interval",
            "must be 0s (off) or between 5s and 1h; NATs drop idle TCP after a few minutes, so 30s-120s is usual",
        ));
    }

    super::sip::validate_connections(&config.sip)?;
    super::sip::validate_forwarding(config)?;
    super::media::validate(&config.media)?;
    validate_host_candidates(config)?;
    for n in &config.sip.trusted_proxies {
        if crate::sip::parse_net(n).is_none() {
            return Err(ConfigError::invalid(
                "sip.trusted_proxies",
                format!("`{n}` is not a network (CIDR) or an IP address"),
            ));
        }
    }
    for (i, did) in config.dids.iter().enumerate() {
        if did.number.trim().is_empty() || did.user.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("dids[{i}]"),
                "number and user must not be empty",
            ));
        }
    }
    if config.inbound.ring_timeout < std::time::Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "inbound.ring_timeout",
            "must be at least 1s",
        ));
    }
    let cluster = &config.cluster;
    if !matches!(cluster.inbound_mode.as_str(), "redirect" | "proxy") {
        return Err(ConfigError::invalid(
            "cluster.inbound_mode",
            format!("`{}` is not one of redirect, proxy", cluster.inbound_mode),
        ));
    }
    if let Some(url) = &cluster.redis_url
        && !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("unix://"))
    {
        return Err(ConfigError::invalid(
            "cluster.redis_url",
            // Not echoed: the URL may carry a password.
            "is not a redis://, rediss:// or unix:// URL",
        ));
    }
    if let Some(uri) = &cluster.instance_uri
        && !uri.starts_with("sip:")
    {
        return Err(ConfigError::invalid(
            "cluster.instance_uri",
            format!("`{uri}` is not a sip: URI"),
        ));
    }
    if cluster.location_ttl < std::time::Duration::from_secs(5) {
        return Err(ConfigError::invalid(
            "cluster.location_ttl",
            "must be at least 5s",
        ));
    }
    if !matches!(config.log.format.as_str(), "text" | "json") {
        return Err(ConfigError::invalid(
            "log.format",
            format!("`{}` is not one of text, json", config.log.format),
        ));
    }
    super::validate_ops(config)?;
    super::http::validate_http(config)?;
    super::http::validate_exposure(config)?;
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

/// Splits a trunk `address`: `host:port`, `[v6]:port`, or a host or IP literal
/// without a port (`None`: DNS SRV for a name, RFC 3263 §4.2; the transport's default
/// port for an IP literal).
pub fn split_trunk_address(address: &str) -> Result<(String, Option<u16>), String> {
    let address = address.trim();
    if address.is_empty() {
        return Err(
            "is empty; write host:port (e.g. sip.example.com:5060) or a name with SIP SRV records"
                .into(),
        );
    }
    match address.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_ipv4() => return Ok((ip.to_string(), None)),
        // `2001:db8::1:5080` could be an address or an address and a port.
        Ok(_) => {
            return Err(format!(
                "`{address}`: write an IPv6 address in brackets, e.g. [{address}] or [{address}]:5060"
            ));
        }
        Err(_) => {}
    }
    let (host, port) = match address.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{address}` opens `[` without closing it"))?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(format!("`{address}`: write [IPv6]:port")),
                },
            }
        }
        None => match address.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        },
    };
    if host.is_empty() {
        return Err(format!("`{address}` has no host"));
    }
    if host.contains(':') && !address.starts_with('[') {
        return Err(format!(
            "`{address}`: write an IPv6 address in brackets, e.g. [2001:db8::1]:5060"
        ));
    }
    let port = match port {
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("`{p}` in `{address}` is not a port number"))?,
        ),
        None => None,
    };
    Ok((host.to_string(), port))
}

/// `sip.tls_listen` needs the `[tls]` certificate and its own port.
fn validate_sip_tls(config: &Config) -> Result<(), ConfigError> {
    if let Some(ca) = &config.sip.tls_client_ca {
        if config.sip.tls_listen.is_none() {
            return Err(ConfigError::invalid(
                "sip.tls_client_ca",
                "only applies with sip.tls_listen (the SIP TLS listener)",
            ));
        }
        if !ca.is_file() {
            return Err(ConfigError::invalid(
                "sip.tls_client_ca",
                format!("{} is not a readable file", ca.display()),
            ));
        }
    }
    let Some(addr) = config.sip.tls_listen else {
        return Ok(());
    };
    if config.tls.is_none() {
        return Err(ConfigError::invalid(
            "sip.tls_listen",
            "needs a certificate: configure [tls] cert and key",
        ));
    }
    let listen = config.sip.listen;
    let overlap =
        addr.ip() == listen.ip() || addr.ip().is_unspecified() || listen.ip().is_unspecified();
    if overlap && addr.port() != 0 && addr.port() == listen.port() {
        return Err(ConfigError::invalid(
            "sip.tls_listen",
            format!(
                "port {} is already sip.listen's (TCP); use another port, e.g. 5061",
                addr.port()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "trunk_tests.rs"]
mod trunk_tests;

/// A wildcard `media_ip` needs an address for the SIP side's SDP;
/// `media.host_candidate_ips` only means something on a wildcard `media_ip` without
/// `public_ip`, and must name unicast addresses of `media_ip`'s family.
fn validate_host_candidates(config: &Config) -> Result<(), ConfigError> {
    let media_ip = config.server.media_ip;
    if media_ip.is_unspecified()
        && config.server.public_ip.is_none()
        && config.sip.external_address.is_none()
    {
        return Err(ConfigError::invalid(
            "server.media_ip",
            format!(
                "{media_ip} binds every interface, but SIP peers need one address in the SDP: \
                 set sip.external_address (or server.public_ip) to the address they reach \
                 this host on, or set media_ip to that address"
            ),
        ));
    }
    let ips = &config.media.host_candidate_ips;
    if ips.is_empty() {
        return Ok(());
    }
    if !media_ip.is_unspecified() || config.server.public_ip.is_some() {
        return Err(ConfigError::invalid(
            "media.host_candidate_ips",
            "only used when server.media_ip is 0.0.0.0 or :: and server.public_ip is unset \
             (otherwise that address is the host candidate): remove the key",
        ));
    }
    if let Some(bad) = ips
        .iter()
        .find(|ip| ip.is_ipv4() != media_ip.is_ipv4() || ip.is_unspecified() || ip.is_multicast())
    {
        return Err(ConfigError::invalid(
            "media.host_candidate_ips",
            format!(
                "{bad} is not a unicast address of server.media_ip's family ({media_ip}); \
                 list this host's addresses the browsers can reach"
            ),
        ));
    }
    Ok(())
}
