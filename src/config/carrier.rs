//! Validation of the `[[sip.trunks]]` keys that adapt our requests to a carrier's
//! expectations: where the called number is read, the From identity and the
//! caller-id headers.

use super::{ConfigError, TrunkConfig};

/// The values of `called_number_from`.
pub const CALLED_NUMBER_SOURCES: &[&str] = &[
    "auto",
    "request_uri",
    "to",
    "p_called_party_id",
    "diversion",
];

/// The values of `caller_id_header`.
pub const CALLER_ID_HEADERS: &[&str] = &["pai", "rpid", "none"];

/// Whether `user` may be written as the user part of a SIP URI as is (RFC 3261
/// `user`: unreserved characters and the user-unreserved marks, no escapes).
pub fn is_sip_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 128
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/".contains(c))
}

/// Checks `called_number_from`, `from_user`, `from_domain` and `caller_id_header`
/// of the trunk at `key` (`sip.trunks[i]`).
pub(super) fn validate_carrier_keys(key: &str, trunk: &TrunkConfig) -> Result<(), ConfigError> {
    if !CALLED_NUMBER_SOURCES.contains(&trunk.called_number_from.as_str()) {
        return Err(ConfigError::invalid(
            format!("{key}.called_number_from"),
            format!(
                "`{}` is not one of {}",
                trunk.called_number_from,
                CALLED_NUMBER_SOURCES.join(", ")
            ),
        ));
    }
    if let Some(user) = &trunk.from_user
        && !is_sip_user(user)
    {
        return Err(ConfigError::invalid(
            format!("{key}.from_user"),
            format!(
                "`{user}` is not a SIP user part: use 1-128 letters, digits and -_.!~*'()&=+$,;?/ \
                 (e.g. the account name or +15550001111)"
            ),
        ));
    }
    if trunk.from_user.is_none()
        && let Some(username) = &trunk.username
        && !is_sip_user(username)
    {
        return Err(ConfigError::invalid(
            format!("{key}.from_user"),
            format!(
                "the username `{username}` cannot be the From user (From carries the account \
                 by default); set from_user to the account's SIP user (e.g. the part before @)"
            ),
        ));
    }
    if let Some(domain) = &trunk.from_domain {
        let host_ok = |host: &str| {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
        };
        match super::validate::split_trunk_address(domain) {
            Ok((host, _)) if host_ok(&host) => {}
            _ => {
                return Err(ConfigError::invalid(
                    format!("{key}.from_domain"),
                    format!(
                        "`{domain}` is not a host or host:port (e.g. sip.carrier.example or \
                         203.0.113.5:5080)"
                    ),
                ));
            }
        }
    }
    if trunk.caller_id_header.is_empty() {
        return Err(ConfigError::invalid(
            format!("{key}.caller_id_header"),
            "must not be empty; use \"none\" to send no caller id header",
        ));
    }
    for header in &trunk.caller_id_header {
        if !CALLER_ID_HEADERS.contains(&header.as_str()) {
            return Err(ConfigError::invalid(
                format!("{key}.caller_id_header"),
                format!(
                    "`{header}` is not one of {} (a string or a list)",
                    CALLER_ID_HEADERS.join(", ")
                ),
            ));
        }
    }
    if trunk.caller_id_header.len() > 1 && trunk.caller_id_header.iter().any(|h| h == "none") {
        return Err(ConfigError::invalid(
            format!("{key}.caller_id_header"),
            "\"none\" cannot be combined with other headers",
        ));
    }
    Ok(())
}
