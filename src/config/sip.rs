//! `[sip]` and `[[sip.trunks]]`: the user agent and the carrier trunks.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

/// `[sip]`: the user agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// UDP listen address (TCP on the same port).
    pub listen: SocketAddr,
    /// SIP over TLS listen address (e.g. `0.0.0.0:5061`); uses `[tls]`'s
    /// certificate. Absent: no inbound TLS (outbound TLS to trunks still works).
    pub tls_listen: Option<SocketAddr>,
    /// PEM CA bundle: when set, the TLS listener requires client certificates
    /// signed by it (mutual TLS with the trunks that connect to us).
    pub tls_client_ca: Option<PathBuf>,
    /// RTP port range for the SIP-side media, `"low-high"`.
    pub rtp_ports: String,
    /// Address in Via/Contact/SDP when behind 1:1 NAT (default: `server.public_ip`).
    pub external_address: Option<IpAddr>,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Carrier trunks and PBXs.
    pub trunks: Vec<TrunkConfig>,
    /// Other callbridge instances that may forward inbound INVITEs here (proxy
    /// mode), as CIDR networks or addresses.
    pub trusted_proxies: Vec<String>,
    /// DNS servers (`ip:port`) for trunk SRV lookups; empty: the system's.
    pub dns_servers: Vec<SocketAddr>,
    /// How often trunk names are looked up again for REGISTER/OPTIONS and inbound
    /// admission (calls look them up on every attempt).
    #[serde(with = "humantime_serde")]
    pub dns_refresh: Duration,
    /// CRLF keepalive pings (RFC 5626) on TCP/TLS connections to trunks after this
    /// long without traffic; `0s`: off.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// Inbound TCP/TLS connections from addresses that are no trunk's, in total;
    /// more are closed at accept.
    pub max_connections: usize,
    /// Inbound TCP/TLS connections from one such IPv4 address or IPv6 /64.
    pub max_connections_per_ip: usize,
    /// Inbound TCP/TLS connections from trunk addresses (`inbound_from`, else the
    /// resolved `address`), counted apart: a flood from elsewhere never takes them.
    pub max_trunk_connections: usize,
    /// A TCP/TLS connection from a non-trunk address whose peer sent no complete
    /// SIP message for this long is closed (CRLF keepalives do not count).
    #[serde(with = "humantime_serde")]
    pub tcp_idle_timeout: Duration,
    /// A write to a TCP/TLS peer that does not complete within this closes the
    /// connection (a peer that stops reading).
    #[serde(with = "humantime_serde")]
    pub tcp_write_timeout: Duration,
    /// Longest inbound TLS handshake on `tls_listen`.
    #[serde(with = "humantime_serde")]
    pub tls_handshake_timeout: Duration,
    /// Inbound TLS handshakes in progress from non-trunk addresses.
    pub max_tls_handshakes: usize,
    /// Largest SIP message on TCP/TLS (header section and body); a larger
    /// `Content-Length` is answered 413 and the connection closed.
    pub max_message_bytes: usize,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            tls_listen: None,
            tls_client_ca: None,
            rtp_ports: "20000-29999".into(),
            external_address: None,
            user_agent: concat!("callbridge/", env!("CARGO_PKG_VERSION")).into(),
            trunks: Vec::new(),
            trusted_proxies: Vec::new(),
            dns_servers: Vec::new(),
            dns_refresh: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(60),
            max_connections: 1024,
            max_connections_per_ip: 32,
            max_trunk_connections: 256,
            tcp_idle_timeout: Duration::from_secs(30),
            tcp_write_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(5),
            max_tls_handshakes: 64,
            max_message_bytes: 65_535,
        }
    }
}

impl SipConfig {
    /// The RTP port range as numbers; call after [`validate`].
    pub fn rtp_port_range(&self) -> Result<(u16, u16), ConfigError> {
        super::validate::parse_port_range(&self.rtp_ports)
            .map_err(|m| ConfigError::invalid("sip.rtp_ports", m))
    }

    /// The connection caps and timeouts for the SIP endpoint.
    pub fn connections(&self) -> crate::sip::ConnectionConfig {
        crate::sip::ConnectionConfig {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_trunk_connections: self.max_trunk_connections,
            idle_timeout: self.tcp_idle_timeout,
            write_timeout: self.tcp_write_timeout,
            tls_handshake_timeout: self.tls_handshake_timeout,
            max_tls_handshakes: self.max_tls_handshakes,
            max_message_bytes: self.max_message_bytes,
        }
    }

    /// Looks up a trunk by name.
    pub fn trunk(&self, name: &str) -> Option<&TrunkConfig> {
        self.trunks.iter().find(|t| t.name == name)
    }
}

/// `[[sip.trunks]]`: one carrier trunk or PBX.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// Name used by dial plan routes.
    pub name: String,
    /// `host:port` of the trunk.
    pub address: String,
    /// `udp`, `tcp` or `tls`.
    #[serde(default = "default_transport")]
    pub transport: String,
    /// Digest username, if the trunk challenges or needs registering.
    #[serde(default)]
    pub username: Option<String>,
    /// Digest password (never logged, never serialised).
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    /// Name of an environment variable holding the password, read at load time.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Send REGISTER to the trunk (refreshed before expiry, retried with backoff).
    #[serde(default)]
    pub register: bool,
    /// Registration lifetime asked for, in seconds.
    #[serde(default = "default_register_expires")]
    pub register_expires: u32,
    /// OPTIONS ping interval (e.g. "30s"); absent or "0s": no health checks.
    #[serde(default, with = "humantime_serde::option")]
    pub options_interval: Option<Duration>,
    /// `rfc4733` (telephone-event in RTP) or `info` (SIP INFO, application/dtmf-relay).
    #[serde(default = "default_dtmf_mode")]
    pub dtmf_mode: String,
    /// Reliable provisional responses (RFC 3262): `supported`, `required` or `disabled`.
    #[serde(default = "default_reliable_provisional")]
    pub reliable_provisional: String,
    /// Session-Expires asked for, in seconds (RFC 4028); 0 disables session timers.
    #[serde(default = "default_session_expires")]
    pub session_expires: u32,
    /// Min-SE: the shortest session interval accepted from the trunk, in seconds.
    #[serde(default = "default_min_se")]
    pub min_se: u32,
    /// PEM CA bundle that verifies the trunk's certificate (tls only); default: the
    /// webpki root certificates.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// Name checked against the trunk's certificate (tls only); default: the host
    /// of `address`.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// Address calls with `sips:` URIs (Request-URI, Contact; tls only).
    #[serde(default)]
    pub sips: bool,
    /// Present the `[tls]` certificate as a TLS client certificate (mutual TLS;
    /// tls only).
    #[serde(default)]
    pub tls_client_auth: bool,
    /// Source networks inbound INVITEs from this trunk may come from (CIDR or single
    /// addresses); empty: the resolved address of `address` only.
    #[serde(default)]
    pub inbound_from: Vec<String>,
    /// Challenge inbound INVITEs from this trunk with digest (407), checked against
    /// `username` / `password`.
    #[serde(default)]
    pub inbound_auth: bool,
    /// Where an inbound call's called number (the DID) is read: `auto` (the
    /// Request-URI user, unless it is the trunk's account, as when a registrar sends
    /// the call to our registered contact: then `To`), `request_uri`, `to`,
    /// `p_called_party_id` or `diversion` (both fall back to `auto` when absent).
    #[serde(default = "default_called_number_from")]
    pub called_number_from: String,
    /// User part of From in our INVITEs (and of the REGISTER address of record);
    /// absent: `username` when the trunk has credentials (carriers check that From
    /// is the authenticated account), else the caller's id.
    #[serde(default)]
    pub from_user: Option<String>,
    /// Host (`host` or `host:port`) of From; absent: the trunk's domain (its
    /// address, port included unless 5060) when From carries the account, else
    /// our own address.
    #[serde(default)]
    pub from_domain: Option<String>,
    /// Headers that carry the caller's id to the trunk: `pai`
    /// (P-Asserted-Identity, RFC 3325), `rpid` (Remote-Party-ID), both as a list,
    /// or `none`.
    #[serde(default = "default_caller_id_header", deserialize_with = "one_or_many")]
    pub caller_id_header: Vec<String>,
    /// What a REFER (call transfer) from the far end does: `reject` (603 Decline) or
    /// `dialplan` (the Refer-To user part is dialed through the dial plan and the
    /// user's limits, via the route's trunks only).
    #[serde(default = "default_refer")]
    pub refer: String,
    /// The digest realm this trunk challenges with: `username`/`password` answer no
    /// other. Absent: the realm of the first challenge from the trunk's address.
    #[serde(default)]
    pub realm: Option<String>,
}

impl Default for TrunkConfig {
    fn default() -> Self {
        TrunkConfig {
            name: String::new(),
            address: String::new(),
            transport: default_transport(),
            username: None,
            password: None,
            password_env: None,
            register: false,
            register_expires: default_register_expires(),
            options_interval: None,
            dtmf_mode: default_dtmf_mode(),
            reliable_provisional: default_reliable_provisional(),
            session_expires: default_session_expires(),
            min_se: default_min_se(),
            tls_ca: None,
            tls_server_name: None,
            sips: false,
            tls_client_auth: false,
            inbound_from: Vec::new(),
            inbound_auth: false,
            called_number_from: default_called_number_from(),
            from_user: None,
            from_domain: None,
            caller_id_header: default_caller_id_header(),
            refer: default_refer(),
            realm: None,
        }
    }
}

impl std::fmt::Debug for TrunkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrunkConfig")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_env", &self.password_env)
            .field("register", &self.register)
            .field("register_expires", &self.register_expires)
            .field("options_interval", &self.options_interval)
            .field("dtmf_mode", &self.dtmf_mode)
            .field("reliable_provisional", &self.reliable_provisional)
            .field("session_expires", &self.session_expires)
            .field("min_se", &self.min_se)
            .field("tls_ca", &self.tls_ca)
            .field("tls_server_name", &self.tls_server_name)
            .field("inbound_from", &self.inbound_from)
            .field("inbound_auth", &self.inbound_auth)
            .field("called_number_from", &self.called_number_from)
            .field("from_user", &self.from_user)
            .field("from_domain", &self.from_domain)
            .field("caller_id_header", &self.caller_id_header)
            .field("refer", &self.refer)
            .field("realm", &self.realm)
            .finish()
    }
}

fn default_transport() -> String {
    "udp".into()
}

fn default_register_expires() -> u32 {
    3600
}

fn default_dtmf_mode() -> String {
    "rfc4733".into()
}

fn default_reliable_provisional() -> String {
    "supported".into()
}

fn default_session_expires() -> u32 {
    1800
}

fn default_min_se() -> u32 {
    90
}

fn default_called_number_from() -> String {
    "auto".into()
}

fn default_caller_id_header() -> Vec<String> {
    vec!["pai".into()]
}

/// A string or a list of strings (`caller_id_header = "pai"` or `["pai", "rpid"]`).
fn one_or_many<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

fn default_refer() -> String {
    "reject".into()
}

/// Reads each trunk's `password_env` variable from `env` into its `password`.
pub(super) fn resolve_trunk_passwords(
    config: &mut Config,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    for (i, trunk) in config.sip.trunks.iter_mut().enumerate() {
        let Some(var) = &trunk.password_env else {
            continue;
        };
        if trunk.password.is_some() {
            return Err(ConfigError::invalid(
                format!("sip.trunks[{i}].password_env"),
                "set password or password_env, not both",
            ));
        }
        match env.iter().find(|(k, _)| k == var) {
            Some((_, value)) if !value.is_empty() => trunk.password = Some(value.clone()),
            _ => {
                return Err(ConfigError::invalid(
                    format!("sip.trunks[{i}].password_env"),
                    format!("environment variable {var} is not set or empty"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks the TCP/TLS connection caps and timeouts of `[sip]`.
pub(super) fn validate_connections(sip: &SipConfig) -> Result<(), ConfigError> {
    let count = |key: &str, value: usize, max: usize, hint: &str| {
        if (1..=max).contains(&value) {
            Ok(())
        } else {
            Err(ConfigError::invalid(
                format!("sip.{key}"),
                format!("must be between 1 and {max}; {hint}"),
            ))
        }
    };
    count(
        "max_connections",
        sip.max_connections,
        65_536,
        "each connection holds a task and buffers (default 1024)",
    )?;
    count(
        "max_connections_per_ip",
        sip.max_connections_per_ip,
        sip.max_connections.max(1),
        "and at most sip.max_connections (default 32)",
    )?;
    count(
        "max_trunk_connections",
        sip.max_trunk_connections,
        65_536,
        "room kept for trunk addresses (default 256)",
    )?;
    count(
        "max_tls_handshakes",
        sip.max_tls_handshakes,
        4096,
        "handshakes cost CPU (default 64)",
    )?;
    if !(1024..=1_048_576).contains(&sip.max_message_bytes) {
        return Err(ConfigError::invalid(
            "sip.max_message_bytes",
            "must be between 1024 and 1048576 bytes (default 65535)",
        ));
    }
    let secs = |key: &str, value: Duration, min: u64, max: u64| {
        if value >= Duration::from_secs(min) && value <= Duration::from_secs(max) {
            Ok(())
        } else {
            Err(ConfigError::invalid(
                format!("sip.{key}"),
                format!("must be between {min}s and {max}s (e.g. \"30s\")"),
            ))
        }
    };
    secs("tcp_idle_timeout", sip.tcp_idle_timeout, 1, 3600)?;
    secs("tcp_write_timeout", sip.tcp_write_timeout, 1, 300)?;
    secs("tls_handshake_timeout", sip.tls_handshake_timeout, 1, 60)?;
    Ok(())
}

/// Checks `cluster.forward_secret` and `cluster.forward_max_age` against the
/// settings that need them (trusted proxies, proxy mode).
pub(super) fn validate_forwarding(config: &Config) -> Result<(), ConfigError> {
    let cluster = &config.cluster;
    let needed_by = if !config.sip.trusted_proxies.is_empty() {
        Some("sip.trusted_proxies is set")
    } else if cluster.inbound_mode == "proxy" {
        Some("cluster.inbound_mode is \"proxy\"")
    } else {
        None
    };
    let secret = cluster.forward_secret.as_str();
    if let Some(why) = needed_by
        && secret.is_empty()
    {
        return Err(ConfigError::invalid(
            "cluster.forward_secret",
            format!(
                "{why}: forwarded INVITEs must be signed; set the same secret of at least 32 characters on every instance (or CALLBRIDGE_CLUSTER__FORWARD_SECRET)"
            ),
        ));
    }
    if !secret.is_empty() && secret.len() < 32 {
        return Err(ConfigError::invalid(
            "cluster.forward_secret",
            "must be at least 32 characters (e.g. `openssl rand -hex 32`)",
        ));
    }
    if !(1..=300).contains(&cluster.forward_max_age.as_secs()) {
        return Err(ConfigError::invalid(
            "cluster.forward_max_age",
            "must be between 1s and 300s; the instances' clocks must agree within it (default 30s)",
        ));
    }
    Ok(())
}
