//! Configuration: one TOML file, `CALLBRIDGE_*` environment overrides, embedded
//! defaults for local use, and validation whose messages name the key at fault.
//!
//! I/O contract: [`load`] reads one file (or none) and the environment it is given;
//! nothing else here touches the system. Tests build a [`Config`] in code.

pub mod carrier;
mod dialplan;
mod env;
mod http;
mod media;
mod ops;
mod sip;
mod turn;
pub mod validate;
mod validate_tokens;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

pub use dialplan::{DialplanConfig, RouteConfig};
pub use env::apply_env_overrides;
pub use http::{AdminConfig, HttpConfig, is_catch_all};
pub use media::{MediaConfig, MediaEngineKind};
pub use ops::{
    DrainConfig, RateLimitConfig, StorageConfig, WEBHOOK_EVENT_TYPES, WebhookEndpoint,
    WebhooksConfig, validate_ops,
};
pub use sip::{SipConfig, TrunkConfig};
pub use turn::{DEFAULT_TURN_SOCKET_BUFFER_BYTES, TurnConfig};
pub use validate::validate;

/// Errors from loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file that failed.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not match the schema.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file that failed (or `<env>` for overrides).
        path: String,
        /// What the parser said, including the key and line.
        message: String,
    },
    /// An environment override could not be applied.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable name.
        var: String,
        /// What was wrong.
        message: String,
    },
    /// A value is present but not acceptable.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// Dotted key path, e.g. `sip.trunks[0].address`.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
}

impl ConfigError {
    /// Shorthand for an [`ConfigError::Invalid`] error.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole gateway configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listener, advertised address and capacity.
    pub server: ServerConfig,
    /// TLS for the WebSocket/HTTP listener; absent means plain ws:// (local use only).
    pub tls: Option<TlsConfig>,
    /// JWT verification.
    pub auth: AuthConfig,
    /// Per-session and per-user limits.
    pub limits: LimitsConfig,
    /// Connection caps and timeouts of the HTTP/WebSocket listeners.
    pub http: HttpConfig,
    /// The operator listener (`/v1`, `/metrics`).
    pub admin: AdminConfig,
    /// SIP user agent and trunks.
    pub sip: SipConfig,
    /// Dial plan: dialed number → trunks.
    pub dialplan: DialplanConfig,
    /// Built-in STUN/TURN.
    pub turn: Option<TurnConfig>,
    /// Logging format and level.
    pub log: LogConfig,
    /// Call records and the webhook outbox.
    pub storage: StorageConfig,
    /// Webhook receivers and delivery retries.
    pub webhooks: WebhooksConfig,
    /// Request rate limits.
    pub ratelimit: RateLimitConfig,
    /// Graceful shutdown.
    pub drain: DrainConfig,
    /// Inbound numbers and the users they ring (`[[dids]]`).
    pub dids: Vec<DidConfig>,
    /// Inbound calls from trunks.
    pub inbound: InboundConfig,
    /// Several instances: the shared location store.
    pub cluster: ClusterConfig,
    /// The demo page at `/demo/`.
    pub demo: DemoConfig,
    /// Codecs, transcoding, quality, recording.
    pub media: MediaConfig,
    /// The built-in echo destination (first calls, synthetic probes).
    pub echo: EchoConfig,
}

/// `[echo]`: a SIP UAS inside callbridge on loopback that answers and echoes RTP, so
/// a test call crosses the real SIP and media paths with nothing else installed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EchoConfig {
    /// Start the echo UAS and route `numbers` to it.
    pub enabled: bool,
    /// Dialed numbers/names that reach the echo (matched before every other route).
    pub numbers: Vec<String>,
}

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig {
            enabled: false,
            numbers: vec!["echo".into(), "+1000".into()],
        }
    }
}

/// `[demo]`: the demo page and JavaScript client served at `/demo/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Serve `/demo/`.
    pub enabled: bool,
    /// Directory holding the demo files (`web-demo/` of the repository).
    pub dir: PathBuf,
    /// Offer `GET /demo/dev-token` (a 1-hour token for user `dev`): local use only,
    /// never in production.
    pub dev_tokens: bool,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            enabled: false,
            dir: PathBuf::from("web-demo"),
            dev_tokens: false,
        }
    }
}

/// `[[dids]]`: a number that rings a user.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DidConfig {
    /// The number as trunks send it in the Request-URI / To (normalised like dialed
    /// numbers, e.g. `+15550001111`).
    pub number: String,
    /// The user (`sub`) whose sessions ring.
    pub user: String,
}

/// `[inbound]`: calls from trunks to browsers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundConfig {
    /// An unanswered inbound call is answered 480 after this long.
    #[serde(with = "humantime_serde")]
    pub ring_timeout: Duration,
}

impl Default for InboundConfig {
    fn default() -> Self {
        InboundConfig {
            ring_timeout: Duration::from_secs(45),
        }
    }
}

/// `[cluster]`: where users' sessions live when several instances run.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Redis URL of the shared location store and the fleet's per-user call leases;
    /// absent: in-process (one instance).
    pub redis_url: Option<Secret>,
    /// This instance's SIP URI as other instances redirect to it; default derived
    /// from the SIP listen address (`sip:ADVERTISED_IP:PORT`).
    pub instance_uri: Option<String>,
    /// `redirect` (302 to the instance holding the user) or `proxy`.
    pub inbound_mode: String,
    /// How long a location entry lives without refresh.
    #[serde(with = "humantime_serde")]
    pub location_ttl: Duration,
    /// Shared secret (the same on every instance, at least 32 characters) with
    /// which an instance signs the INVITEs it forwards (proxy mode) and checks
    /// those forwarded to it from `sip.trusted_proxies`. Empty: no forwarding.
    /// Never serialised.
    #[serde(skip_serializing)]
    pub forward_secret: String,
    /// How old a forwarded INVITE's signature may be (clock skew included).
    #[serde(with = "humantime_serde")]
    pub forward_max_age: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: None,
            instance_uri: None,
            inbound_mode: "redirect".into(),
            location_ttl: Duration::from_secs(60),
            forward_secret: String::new(),
            forward_max_age: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = (!self.forward_secret.is_empty()).then_some("<redacted>");
        f.debug_struct("ClusterConfig")
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<redacted>"))
            .field("instance_uri", &self.instance_uri)
            .field("inbound_mode", &self.inbound_mode)
            .field("location_ttl", &self.location_ttl)
            .field("forward_secret", &secret)
            .field("forward_max_age", &self.forward_max_age)
            .finish()
    }
}

impl ClusterConfig {
    /// The forwarding key for the SIP endpoint; `None` when no secret is set.
    pub fn forward_auth(&self) -> Option<crate::sip::ForwardAuth> {
        (!self.forward_secret.is_empty()).then(|| crate::sip::ForwardAuth {
            secret: self.forward_secret.as_bytes().to_vec(),
            max_age: self.forward_max_age,
        })
    }
}

/// `[server]`: the listener and what the gateway advertises.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Public listener: WebSocket `/ws`, `/healthz`, `/readyz`, `/demo`.
    pub listen: SocketAddr,
    /// Address advertised in ICE candidates, SDP and SIP Contact (1:1 NAT); default:
    /// the address media sockets bind to.
    pub public_ip: Option<IpAddr>,
    /// Address media sockets (ICE and RTP) bind to.
    pub media_ip: IpAddr,
    /// Capacity: maximum concurrent calls on this instance.
    pub max_calls: usize,
    /// Time a new WebSocket has to send its `auth` frame.
    #[serde(with = "humantime_serde")]
    pub auth_timeout: Duration,
    /// How long calls survive a dropped WebSocket waiting for `resume`.
    #[serde(with = "humantime_serde")]
    pub resume_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_ip: None,
            media_ip: IpAddr::from([127, 0, 0, 1]),
            max_calls: 500,
            auth_timeout: Duration::from_secs(5),
            resume_grace: Duration::from_secs(30),
        }
    }
}

impl ServerConfig {
    /// The address written into SDP and ICE candidates.
    pub fn advertised_ip(&self) -> IpAddr {
        self.public_ip.unwrap_or(self.media_ip)
    }
}

/// `[tls]`: certificate and key (PEM) for wss:// and https://.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[auth]`: how browser tokens are verified.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Required `aud` claim of browser tokens.
    pub audience: String,
    /// Required `aud` claim of operator tokens (the `/v1` API, `/healthz` detail);
    /// must differ from `audience`, so no browser token can act as an operator.
    pub admin_audience: String,
    /// Required `iss` claim; empty means the claim is not checked.
    pub issuer: String,
    /// HS256 shared secret (at least 32 bytes); empty disables HS256.
    pub hs256_secret: Secret,
    /// PEM public keys (RSA for RS256, EC P-256 for ES256, Ed25519 for EdDSA).
    pub public_keys: Vec<PathBuf>,
    /// Clock skew tolerated on `exp` and `nbf` (at most 5 minutes).
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Longest token accepted, in bytes; longer ones are refused before any
    /// signature work.
    pub max_token_bytes: usize,
    /// Tokens whose `exp` is further than this from now are refused (a session
    /// lives as long as its token).
    #[serde(with = "humantime_serde")]
    pub max_token_lifetime: Duration,
    /// Accepted values of the token header's `typ` (RFC 8725 §3.11), compared
    /// case-insensitively; a token without `typ` is accepted too.
    pub token_types: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            audience: "callbridge".into(),
            admin_audience: "callbridge-admin".into(),
            issuer: String::new(),
            hs256_secret: Secret::default(),
            public_keys: Vec::new(),
            leeway: Duration::from_secs(30),
            max_token_bytes: 8 * 1024,
            max_token_lifetime: Duration::from_secs(24 * 3600),
            token_types: vec!["JWT".into()],
        }
    }
}

/// `[limits]`: protections against misuse; every limit has a safe default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest WebSocket text frame accepted, in bytes; a larger one gets `error`
    /// `bad_request` (up to 4 times this, beyond which the socket closes 1009).
    pub max_message_bytes: usize,
    /// Largest first frame (`auth`/`resume`) before authentication, in bytes.
    pub max_auth_message_bytes: usize,
    /// Concurrent WebSocket sessions from one IP address.
    pub max_sessions_per_ip: usize,
    /// Concurrent sessions (open or waiting for `resume`) of one user on this
    /// instance; each incoming call builds one WebRTC leg per session.
    pub max_sessions_per_user: usize,
    /// Concurrent calls per user unless the token's `max_calls` claim says otherwise.
    pub max_calls_per_user: usize,
    /// Calls are hung up this long after the answer.
    #[serde(with = "humantime_serde")]
    pub max_call_duration: Duration,
    /// An outbound INVITE not answered within this is cancelled (`no_answer`).
    #[serde(with = "humantime_serde")]
    pub invite_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_bytes: 64 * 1024,
            max_auth_message_bytes: 16 * 1024,
            max_sessions_per_ip: 50,
            max_sessions_per_user: 10,
            max_calls_per_user: 3,
            max_call_duration: Duration::from_secs(4 * 3600),
            invite_timeout: Duration::from_secs(60),
        }
    }
}

impl LimitsConfig {
    /// The WebSocket's hard frame/message cap: frames up to it are read and refused
    /// in the protocol (`error` `bad_request`); beyond it tungstenite refuses them
    /// from the frame header and the socket closes 1009. Bounds a socket's memory.
    pub fn ws_hard_cap(&self) -> usize {
        self.max_message_bytes
            .max(self.max_auth_message_bytes)
            .saturating_mul(4)
    }
}

/// `[log]`: logging output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A `tracing` filter, e.g. `info` or `callbridge=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// Where a loaded configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The embedded defaults for local use (no file given).
    Embedded,
    /// A TOML file.
    File(PathBuf),
}

impl Config {
    /// The embedded defaults for local development: loopback listeners, one trunk at
    /// 127.0.0.1:5070 (a local SIPp) and a dial plan that sends everything there.
    /// The HS256 secret is generated fresh by the caller ([`Config::with_random_secret`]).
    pub fn embedded() -> Config {
        let mut config = Config::default();
        config.demo.enabled = true;
        config.demo.dev_tokens = true;
        config.echo.enabled = true;
        // Everything listens on loopback: the browser is on this machine.
        config.media.allow_candidate_networks = vec!["127.0.0.0/8".into(), "::1/128".into()];
        config.sip.trunks.push(TrunkConfig {
            name: "local".into(),
            address: "127.0.0.1:5070".into(),
            ..TrunkConfig::default()
        });
        config
            .dialplan
            .routes
            .push(RouteConfig::new(".*", vec!["local".into()]));
        config
    }

    /// Sets a fresh random HS256 secret (64 hex characters).
    pub fn with_random_secret(mut self) -> Config {
        let bytes: [u8; 32] = rand::random();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.auth.hs256_secret = Secret::from(hex);
        self
    }

    /// Parses TOML text (no environment overrides, no validation).
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.into(),
            message: e.to_string().trim_end().replace('\n', " "),
        })
    }
}

/// Loads the configuration: the file (or the embedded defaults when `path` is
/// `None`), then `CALLBRIDGE_*` overrides from `env`, then validation.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(Config, Source), ConfigError> {
    let (mut table, source) = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.display().to_string(),
                message: e.to_string().trim_end().replace('\n', " "),
            })?;
            (table, Source::File(path.to_path_buf()))
        }
        None => {
            let embedded = Config::embedded().with_random_secret();
            let table = toml::Table::try_from(&embedded).map_err(|e| ConfigError::Parse {
                path: "<embedded>".into(),
                message: e.to_string(),
            })?;
            (table, Source::Embedded)
        }
    };
    let env: Vec<(String, String)> = env.into_iter().collect();
    apply_env_overrides(&mut table, env.iter().cloned())?;
    let origin = match &source {
        Source::File(p) => p.display().to_string(),
        Source::Embedded => "<embedded defaults>".into(),
    };
    let mut config: Config = table
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: origin,
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
    sip::resolve_trunk_passwords(&mut config, &env)?;
    validate(&config)?;
    Ok((config, source))
}

#[cfg(test)]
mod tests;

/// Crates whose TRACE/DEBUG output contains WebSocket payloads or request URIs (and
/// so tokens): they are capped at `info`, whatever `log.level` says.
pub const LOG_REDACTING_DIRECTIVES: &[&str] = &[
    "tungstenite=info",
    "tokio_tungstenite=info",
    "hyper=info",
    "hyper_util=info",
    "h2=info",
];

/// The tracing filter for `level` (a `tracing` filter string) with the redacting
/// caps of [`LOG_REDACTING_DIRECTIVES`] appended.
pub fn log_filter(level: &str) -> tracing_subscriber::EnvFilter {
    let mut filter = tracing_subscriber::EnvFilter::new(level);
    for directive in LOG_REDACTING_DIRECTIVES {
        if let Ok(d) = directive.parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}
