//! The checks of a caller's [`InviteRequest`] before any header is built from it:
//! every value that ends up in a header must not be able to break out of it.

use rsip::Uri;

use crate::sip::{InviteRequest, SipError};

/// Checks the caller's request before anything is built; returns the sanitised
/// correlation id.
pub(crate) fn validate(request: &InviteRequest) -> Result<String, SipError> {
    let user_ok = |u: &str| {
        !u.is_empty()
            && u.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/%".contains(c))
    };
    for (name, value) in [
        ("to_user", &request.to_user),
        ("from_user", &request.from_user),
    ] {
        if !user_ok(value) {
            return Err(SipError::InvalidRequest(format!("{name} {value:?}")));
        }
    }
    if let Some(pai) = &request.asserted_identity
        && !user_ok(pai)
    {
        return Err(SipError::InvalidRequest(format!(
            "asserted_identity {pai:?}"
        )));
    }
    if let Some(display) = &request.from_display
        && display.chars().any(char::is_control)
    {
        return Err(SipError::InvalidRequest(format!(
            "from_display {display:?}"
        )));
    }
    if let Some(account) = request.trunk.account()
        && !user_ok(account)
    {
        return Err(SipError::InvalidRequest(format!(
            "trunk account (From user) {account:?}"
        )));
    }
    let host_ok = |h: &str| {
        !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
    };
    if !host_ok(&request.target_host) {
        return Err(SipError::InvalidRequest(format!(
            "target_host {:?}",
            request.target_host
        )));
    }
    if let Some(domain) = &request.trunk.from_domain
        && !host_ok(domain)
    {
        return Err(SipError::InvalidRequest(format!("from_domain {domain:?}")));
    }
    let uri_text = format!("sip:{}@{}", request.to_user, request.target_host);
    Uri::try_from(uri_text.as_str())
        .map_err(|e| SipError::InvalidRequest(format!("Request-URI {uri_text}: {e}")))?;
    let correlation: String = request
        .correlation_id
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(128)
        .collect();
    Ok(if correlation.is_empty() {
        "-".into()
    } else {
        correlation
    })
}
