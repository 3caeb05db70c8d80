//! Token claims and the identity the rest of the gateway sees.

use serde::{Deserialize, Serialize};

/// A permission carried in the `scope` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Place calls to the phone network.
    CallsOutbound,
    /// Receive calls on the user's DIDs.
    CallsInbound,
    /// Download call recordings.
    RecordingsRead,
    /// Operator API.
    Admin,
}

impl Scope {
    /// The scope's name in the `scope` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::CallsOutbound => "calls:outbound",
            Scope::CallsInbound => "calls:inbound",
            Scope::RecordingsRead => "recordings:read",
            Scope::Admin => "admin",
        }
    }

    /// Parses one scope name; unknown names are `None` (and ignored by callers).
    pub fn parse(name: &str) -> Option<Scope> {
        match name {
            "calls:outbound" => Some(Scope::CallsOutbound),
            "calls:inbound" => Some(Scope::CallsInbound),
            "recordings:read" => Some(Scope::RecordingsRead),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// `aud` may be one string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` names `wanted`.
    pub fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(a) => a == wanted,
            Audience::Many(list) => list.iter().any(|a| a == wanted),
        }
    }
}

/// The JWT claims callbridge reads. Unknown claims are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: String,
    /// Caller id to present on outbound calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_id: Option<String>,
    /// Numbers that ring this user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dids: Vec<String>,
    /// Concurrent call limit for this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_calls: Option<u32>,
    /// Record this user's calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<bool>,
}

/// A verified caller: what the rest of the gateway may rely on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id (`sub`).
    pub user: String,
    /// Known scopes granted by the token.
    pub scopes: Vec<Scope>,
    /// Caller id for outbound calls.
    pub caller_id: Option<String>,
    /// DIDs owned by the user.
    pub dids: Vec<String>,
    /// Per-user concurrent call limit from the token.
    pub max_calls: Option<u32>,
    /// Whether calls are recorded.
    pub record: bool,
    /// Token expiry, Unix seconds.
    pub expires_at: u64,
}

impl Identity {
    /// Whether the token grants `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Fails with [`super::AuthError::MissingScope`] unless the token grants `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), super::AuthError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(super::AuthError::MissingScope(scope.as_str().into()))
        }
    }
}

impl From<Claims> for Identity {
    fn from(c: Claims) -> Identity {
        Identity {
            user: c.sub,
            scopes: c
                .scope
                .split_whitespace()
                .filter_map(Scope::parse)
                .collect(),
            caller_id: c.caller_id,
            dids: c.dids,
            max_calls: c.max_calls,
            record: c.record.unwrap_or(false),
            expires_at: c.exp,
        }
    }
}
