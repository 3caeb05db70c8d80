//! Validation of the token and session limits: `auth.leeway`, `auth.max_token_bytes`,
//! `auth.max_token_lifetime`, `auth.token_types`, `limits.max_auth_message_bytes`,
//! `limits.max_sessions_per_user`.

use super::{Config, ConfigError};

/// Largest `auth.leeway`: clock skew beyond this is a broken clock, not skew.
pub const MAX_LEEWAY: std::time::Duration = std::time::Duration::from_secs(300);
/// Bounds of `auth.max_token_bytes`.
pub const TOKEN_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1024..=65536;

/// Checks the token and session limits; errors name the key.
pub fn validate_tokens(config: &Config) -> Result<(), ConfigError> {
    let auth = &config.auth;
    let limits = &config.limits;
    if auth.leeway > MAX_LEEWAY {
        return Err(ConfigError::invalid(
            "auth.leeway",
            format!(
                "{}s is too long; at most {}s (\"5m\"): a token must not live much past its exp; fix the clocks instead",
                auth.leeway.as_secs(),
                MAX_LEEWAY.as_secs()
            ),
        ));
    }
    if !TOKEN_BYTES_RANGE.contains(&auth.max_token_bytes) {
        return Err(ConfigError::invalid(
            "auth.max_token_bytes",
            format!(
                "{} is out of range; use {}-{} (tokens are usually under 2 KiB)",
                auth.max_token_bytes,
                TOKEN_BYTES_RANGE.start(),
                TOKEN_BYTES_RANGE.end()
            ),
        ));
    }
    if auth.max_token_lifetime < std::time::Duration::from_secs(60) {
        return Err(ConfigError::invalid(
            "auth.max_token_lifetime",
            "must be at least 1m (e.g. \"24h\"); sessions close when their token expires",
        ));
    }
    for (i, typ) in auth.token_types.iter().enumerate() {
        if typ.trim().is_empty() || typ.eq_ignore_ascii_case("none") {
            return Err(ConfigError::invalid(
                format!("auth.token_types[{i}]"),
                "must name a token type such as \"JWT\" (a token without typ is always accepted)",
            ));
        }
    }
    let auth_frame_floor = auth.max_token_bytes.saturating_add(1024);
    if limits.max_auth_message_bytes < auth_frame_floor {
        return Err(ConfigError::invalid(
            "limits.max_auth_message_bytes",
            format!(
                "{} is too small for a token of auth.max_token_bytes ({}); use at least {auth_frame_floor}",
                limits.max_auth_message_bytes, auth.max_token_bytes
            ),
        ));
    }
    if limits.max_sessions_per_user == 0 {
        return Err(ConfigError::invalid(
            "limits.max_sessions_per_user",
            "must be at least 1",
        ));
    }
    Ok(())
}
