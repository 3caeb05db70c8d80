//! `[turn]`: the built-in STUN/TURN server.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};
use crate::secret::Secret;

/// `[turn]`: built-in STUN/TURN and the credentials handed to browsers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnConfig {
    /// UDP and TCP listen address.
    pub listen: SocketAddr,
    /// TURN over TLS listen address (e.g. `0.0.0.0:5349` or `:443`); uses `[tls]`'s
    /// certificate. Absent: no TLS listener.
    #[serde(default)]
    pub tls_listen: Option<SocketAddr>,
    /// TURN REST API shared secret (never logged).
    #[serde(skip_serializing)]
    pub secret: Secret,
    /// Lifetime of issued credentials.
    #[serde(default = "default_turn_ttl", with = "humantime_serde")]
    pub credential_ttl: Duration,
    /// Realm of the long-term credentials.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Port range of relayed addresses, `"low-high"`.
    #[serde(default = "default_relay_ports")]
    pub relay_ports: String,
    /// Internal peer networks (CIDR) the relay may reach, e.g. a PBX network. Never
    /// re-opens unspecified, loopback or multicast addresses or the gateway's own
    /// ports (validation refuses entries that cover them); `deny_peers` wins.
    #[serde(default)]
    pub allow_peers: Vec<String>,
    /// Peer networks (CIDR) always refused, on top of the built-in internal ranges;
    /// wins over `allow_peers`.
    #[serde(default)]
    pub deny_peers: Vec<String>,
    /// Allocations at once, all users together.
    #[serde(default = "default_max_allocations")]
    pub max_allocations: usize,
    /// Allocations at once per user.
    #[serde(default = "default_max_allocations_per_user")]
    pub max_allocations_per_user: usize,
    /// Receive and send buffer of the UDP listener, in bytes: room for the bursts of
    /// many allocations refreshing at once (the kernel caps it at
    /// `net.core.rmem_max`/`wmem_max`).
    #[serde(default = "default_socket_buffer_bytes")]
    pub socket_buffer_bytes: usize,
}

fn default_turn_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_realm() -> String {
    "callbridge".into()
}

fn default_relay_ports() -> String {
    "50000-59999".into()
}

fn default_max_allocations() -> usize {
    2000
}

fn default_max_allocations_per_user() -> usize {
    10
}

/// Default UDP listener buffer: 4 MiB, about 20,000 small TURN messages.
pub const DEFAULT_TURN_SOCKET_BUFFER_BYTES: usize = 4 << 20;

fn default_socket_buffer_bytes() -> usize {
    DEFAULT_TURN_SOCKET_BUFFER_BYTES
}

/// Checks `[turn]` (its secret, listeners, relay range and peer lists).
pub(super) fn validate(config: &Config, turn: &TurnConfig) -> Result<(), ConfigError> {
    if turn.secret.len() < 16 {
        return Err(ConfigError::invalid(
            "turn.secret",
            "must be at least 16 characters of random data",
        ));
    }
    super::validate::parse_port_range(&turn.relay_ports)
        .map_err(|m| ConfigError::invalid("turn.relay_ports", m))?;
    for (key, list) in [
        ("turn.allow_peers", &turn.allow_peers),
        ("turn.deny_peers", &turn.deny_peers),
    ] {
        for (i, net) in list.iter().enumerate() {
            let parsed = crate::netguard::parse_net(net).map_err(|_| {
                ConfigError::invalid(
                    format!("{key}[{i}]"),
                    format!("`{net}` is not an address or CIDR network like 10.0.0.0/8"),
                )
            })?;
            if key == "turn.allow_peers"
                && let Some(never) = crate::netguard::overlaps_never(&parsed)
            {
                return Err(ConfigError::invalid(
                    format!("{key}[{i}]"),
                    format!(
                        "`{net}` covers {never}, which TURN never relays to (unspecified, loopback \
                         and multicast addresses, and the gateway's own ports, stay refused); \
                         list only the internal networks your peers are on, e.g. 10.0.0.0/8"
                    ),
                ));
            }
        }
    }
    if turn.max_allocations == 0 || turn.max_allocations_per_user == 0 {
        return Err(ConfigError::invalid(
            "turn.max_allocations",
            "quotas must be at least 1",
        ));
    }
    if !(64 << 10..=256 << 20).contains(&turn.socket_buffer_bytes) {
        return Err(ConfigError::invalid(
            "turn.socket_buffer_bytes",
            format!(
                "must be between 65536 (64 KiB) and 268435456 (256 MiB); the default is \
                 {DEFAULT_TURN_SOCKET_BUFFER_BYTES}"
            ),
        ));
    }
    if turn.realm.is_empty() {
        return Err(ConfigError::invalid("turn.realm", "must not be empty"));
    }
    if turn.tls_listen.is_some() && config.tls.is_none() {
        return Err(ConfigError::invalid(
            "turn.tls_listen",
            "needs a certificate: configure [tls] cert and key",
        ));
    }
    Ok(())
}
