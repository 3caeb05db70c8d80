//! The called number of an inbound INVITE, as the trunk's `called_number_from` says.
//!
//! A trunk that we register with (a carrier's registrar) sends its calls to our
//! registered contact, `sip:<account>@<us>`, with the DID in `To`; a trunk that
//! addresses us directly puts the DID in the Request-URI. `Auto` tells them apart
//! by the Request-URI user: our own contact user means `To`.

use rsip::Request;

use super::new_invite::uri_user;
use crate::sip::message::{addr_uri, header_first};
use crate::sip::{CalledNumberSource, TrunkSettings};

/// The user part of the URI in header `name` (first element), if any.
fn header_user(request: &Request, name: &str) -> Option<String> {
    header_first(&request.headers, name).and_then(|v| uri_user(addr_uri(&v)))
}

/// The called number of `request` from `trunk`; empty when the INVITE names none.
pub(super) fn called_number(request: &Request, trunk: &TrunkSettings) -> String {
    let request_uri = uri_user(&request.uri.to_string());
    let auto = || match &request_uri {
        Some(user) if user != trunk.contact_user() => Some(user.clone()),
        _ => header_user(request, "To"),
    };
    let chosen = match trunk.called_number_from {
        CalledNumberSource::Auto => auto(),
        CalledNumberSource::RequestUri => request_uri.clone(),
        CalledNumberSource::To => header_user(request, "To"),
        CalledNumberSource::PCalledPartyId => header_user(request, "P-Called-Party-ID"),
        CalledNumberSource::Diversion => header_user(request, "Diversion"),
    };
    chosen
        .or_else(|| {
            tracing::debug!(trunk = %trunk.name, source = ?trunk.called_number_from, "called number not found there: Request-URI / To");
            auto()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::auth::Credentials;

    fn invite(uri: &str, extra: &str) -> Request {
        let text = format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
             From: <sip:+15552223333@carrier.example>;tag=a\r\n\
             To: \"DID\" <sip:+15550001111@carrier.example:5080>\r\n\
             Call-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Request::try_from(text.as_bytes()).expect("parses")
    }

    fn trunk(source: CalledNumberSource, account: Option<&str>) -> TrunkSettings {
        TrunkSettings {
            called_number_from: source,
            credentials: account.map(|a| Credentials {
                username: a.into(),
                password: "p".into(),
            }),
            ..TrunkSettings::default()
        }
    }

    #[test]
    fn auto_reads_to_when_the_request_uri_is_our_registered_contact() {
        let registered = trunk(CalledNumberSource::Auto, Some("acct"));
        let to_contact = invite("sip:acct@198.51.100.7:5060", "");
        assert_eq!(called_number(&to_contact, &registered), "+15550001111");
        // A trunk without credentials registers nothing, but its contact user is
        // `callbridge`.
        let plain = trunk(CalledNumberSource::Auto, None);
        let to_default_contact = invite("sip:callbridge@198.51.100.7", "");
        assert_eq!(called_number(&to_default_contact, &plain), "+15550001111");
        // `from_user` is the account when set.
        let from_user = TrunkSettings {
            from_user: Some("+15550000000".into()),
            ..registered.clone()
        };
        let to_from_user = invite("sip:+15550000000@198.51.100.7", "");
        assert_eq!(called_number(&to_from_user, &from_user), "+15550001111");
    }

    #[test]
    fn auto_reads_the_request_uri_when_it_names_the_did() {
        let registered = trunk(CalledNumberSource::Auto, Some("acct"));
        let direct = invite("sip:+15557770000@198.51.100.7", "");
        assert_eq!(called_number(&direct, &registered), "+15557770000");
        let no_user = invite("sip:198.51.100.7", "");
        assert_eq!(called_number(&no_user, &registered), "+15550001111");
    }

    #[test]
    fn configured_sources_are_read_and_fall_back_to_auto_when_absent() {
        let uri = "sip:acct@198.51.100.7";
        let headers = "P-Called-Party-ID: <sip:+15551110000@carrier.example>\r\n\
                       Diversion: <sip:+15552220000@carrier.example>;reason=unconditional, \
                       <sip:+15553330000@carrier.example>;reason=user-busy\r\n";
        let with = invite(uri, headers);
        let without = invite(uri, "");
        let source = |s| trunk(s, Some("acct"));
        assert_eq!(
            called_number(&with, &source(CalledNumberSource::RequestUri)),
            "acct"
        );
        assert_eq!(
            called_number(&with, &source(CalledNumberSource::To)),
            "+15550001111"
        );
        assert_eq!(
            called_number(&with, &source(CalledNumberSource::PCalledPartyId)),
            "+15551110000"
        );
        assert_eq!(
            called_number(&with, &source(CalledNumberSource::Diversion)),
            "+15552220000",
            "the most recent diversion"
        );
        for s in [
            CalledNumberSource::PCalledPartyId,
            CalledNumberSource::Diversion,
        ] {
            assert_eq!(called_number(&without, &source(s)), "+15550001111", "{s:?}");
        }
    }
}
