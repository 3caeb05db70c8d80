//! Checks of what the call module asks for before any SIP message is built from it.

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
    let host_ok = !request.target_host.is_empty()
        && request
            .target_host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    if !host_ok {
        return Err(SipError::InvalidRequest(format!(
            "target_host {:?}",
            request.target_host
        )));
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
