//! `[turn]`: the built-in STUN/TURN server.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
