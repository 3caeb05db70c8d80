//! The dialog (RFC 3261 §12): what a confirmed call remembers to send requests within it
//! and to recognise the peer's. Sans-IO: pure data built from messages, no clock.
//!
//! UAC side: created from a 2xx (or, early, a 1xx with a To tag) to our INVITE
//! (§12.1.2, §13.2.2.4). UAS side: created from an INVITE we answer 2xx (§12.1.1).
//! The remote target is refreshed by the peer's re-INVITE and UPDATE (§12.2.2,
//! RFC 3311).

use std::net::{IpAddr, SocketAddr};

use rsip::{Header, Method, Request, Response, Uri, Version};

use crate::sip::message::{
    addr_uri, call_id, cseq, from_tag, header_text, header_value, split_elements, to_tag,
};

/// Why a dialog could not be created or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DialogError {
    /// A header needed by the dialog is missing.
    #[error("dialog: missing {0}")]
    Missing(&'static str),
    /// rsip could not parse a URI we must put in a Request-URI.
    #[error("dialog: bad URI {0:?}")]
    BadUri(String),
    /// A request's CSeq is lower than one already seen (§12.2.2: answer 500).
    #[error("dialog: CSeq {got} is lower than {last}")]
    CSeqOutOfOrder {
        /// The CSeq number received.
        got: u32,
        /// The highest one seen before.
        last: u32,
    },
    /// Our CSeq number reached `u32::MAX`: no further request fits the dialog.
    #[error("dialog: CSeq space exhausted")]
    CSeqExhausted,
}

/// A dialog created by a 2xx to our INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dialog {
    /// Call-ID.
    pub call_id: String,
    /// Our tag (in From).
    pub local_tag: String,
    /// The peer's tag (in To); empty if the peer sent none (RFC 2543 peers).
    pub remote_tag: String,
    /// Our `From` value, tag included.
    local_party: String,
    /// The peer's `To` value, tag included.
    remote_party: String,
    /// Remote target: the peer's Contact URI.
    remote_target: String,
    /// Route set: Record-Route entries of the 2xx, reversed (§12.1.2).
    route_set: Vec<String>,
    /// CSeq number of the INVITE (for the ACK).
    invite_cseq: u32,
    /// Our last CSeq number.
    local_cseq: u32,
    /// The peer's last CSeq number, once it sent a request.
    remote_cseq: Option<u32>,
}

impl Dialog {
    /// Creates the dialog from our INVITE and its 2xx (RFC 3261 §12.1.2), or an early
    /// dialog from a tagged 1xx (the 2xx then recreates it, §13.2.2.4).
    pub(crate) fn from_uac_2xx(invite: &Request, response: &Response) -> Result<Self, DialogError> {
        let local_party = header_value(&invite.headers, |h| matches!(h, Header::From(_)))
            .ok_or(DialogError::Missing("From"))?;
        let remote_party = header_value(&response.headers, |h| matches!(h, Header::To(_)))
            .ok_or(DialogError::Missing("To"))?;
        let remote_target = header_value(&response.headers, |h| matches!(h, Header::Contact(_)))
            .map(|c| addr_uri(&c).to_string())
            .unwrap_or_else(|| invite.uri.to_string());
        let mut route_set: Vec<String> = response
            .headers
            .iter()
            .filter(|h| matches!(h, Header::RecordRoute(_)))
            .flat_map(|h| {
                split_elements(&header_text(h))
                    .into_iter()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        route_set.reverse();
        let invite_cseq = cseq(invite).ok_or(DialogError::Missing("CSeq"))?.0;
        Ok(Self {
            call_id: call_id(invite).ok_or(DialogError::Missing("Call-ID"))?,
            local_tag: from_tag(invite).ok_or(DialogError::Missing("From tag"))?,
            remote_tag: to_tag(response).unwrap_or_default(),
            local_party,
            remote_party,
            remote_target,
            route_set,
            invite_cseq,
            local_cseq: invite_cseq,
            remote_cseq: None,
        })
    }

    /// Creates the dialog of an INVITE we answer with a 2xx (RFC 3261 §12.1.1): our
    /// tag goes in To, the route set is the request's Record-Route in order, the
    /// remote target its Contact.
    pub(crate) fn from_uas_invite(invite: &Request, local_tag: &str) -> Result<Self, DialogError> {
        let to = header_value(&invite.headers, |h| matches!(h, Header::To(_)))
            .ok_or(DialogError::Missing("To"))?;
        let remote_party = header_value(&invite.headers, |h| matches!(h, Header::From(_)))
            .ok_or(DialogError::Missing("From"))?;
        let contact = header_value(&invite.headers, |h| matches!(h, Header::Contact(_)))
            .ok_or(DialogError::Missing("Contact"))?;
        let remote_target = addr_uri(&contact).to_string();
        Uri::try_from(remote_target.as_str())
            .map_err(|_| DialogError::BadUri(remote_target.clone()))?;
        let route_set: Vec<String> = invite
            .headers
            .iter()
            .filter(|h| matches!(h, Header::RecordRoute(_)))
            .flat_map(|h| {
                split_elements(&header_text(h))
                    .into_iter()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        let invite_cseq = cseq(invite).ok_or(DialogError::Missing("CSeq"))?.0;
        Ok(Self {
            call_id: call_id(invite).ok_or(DialogError::Missing("Call-ID"))?,
            local_tag: local_tag.to_string(),
            remote_tag: from_tag(invite).unwrap_or_default(),
            local_party: format!("{to};tag={local_tag}"),
            remote_party,
            remote_target,
            route_set,
            invite_cseq,
            local_cseq: 0,
            remote_cseq: Some(invite_cseq),
        })
    }

    /// True if `request` belongs to this dialog (Call-ID and both tags, §12.2.2).
    pub(crate) fn matches(&self, request: &Request) -> bool {
        call_id(request).as_deref() == Some(self.call_id.as_str())
            && to_tag(request).as_deref() == Some(self.local_tag.as_str())
            && from_tag(request).unwrap_or_default() == self.remote_tag
    }

    /// Records the CSeq of a request from the peer; lower than the last one is an error.
    pub(crate) fn check_remote_cseq(&mut self, request: &Request) -> Result<(), DialogError> {
        let got = cseq(request).ok_or(DialogError::Missing("CSeq"))?.0;
        match self.remote_cseq {
            Some(last) if got < last => Err(DialogError::CSeqOutOfOrder { got, last }),
            _ => {
                self.remote_cseq = Some(got);
                Ok(())
            }
        }
    }

    /// The ACK for the 2xx (own branch in `via`, the INVITE's CSeq number, §13.2.2.4).
    pub(crate) fn ack(&self, via: String) -> Result<Request, DialogError> {
        self.build(Method::Ack, self.invite_cseq, via, Vec::new(), None)
    }

    /// The ACK for the 2xx of the INVITE (or re-INVITE) numbered `seq`, with `extra`
    /// headers (the INVITE's credentials, §13.2.2.4).
    pub(crate) fn ack_for(
        &self,
        seq: u32,
        via: String,
        extra: Vec<Header>,
    ) -> Result<Request, DialogError> {
        self.build(Method::Ack, seq, via, extra, None)
    }

    /// A new request in the dialog (BYE, ...): CSeq is incremented.
    pub(crate) fn request(
        &mut self,
        method: Method,
        via: String,
        extra: Vec<Header>,
    ) -> Result<Request, DialogError> {
        let seq = self.next_cseq().ok_or(DialogError::CSeqExhausted)?;
        self.build(method, seq, via, extra, None)
    }

    /// A new request in the dialog with a body (`content_type`, bytes).
    pub(crate) fn request_with_body(
        &mut self,
        method: Method,
        via: String,
        extra: Vec<Header>,
        body: (&str, Vec<u8>),
    ) -> Result<Request, DialogError> {
        let seq = self.next_cseq().ok_or(DialogError::CSeqExhausted)?;
        self.build(method, seq, via, extra, Some(body))
    }

    /// Takes the next local CSeq number (a challenged request is resent with it);
    /// `None` once `u32::MAX` is used (the number is checked, never wrapped).
    pub(crate) fn next_cseq(&mut self) -> Option<u32> {
        self.local_cseq = self.local_cseq.checked_add(1)?;
        Some(self.local_cseq)
    }

    /// Makes sure later requests number above `seq` (CSeq used in the early dialog).
    pub(crate) fn bump_local_cseq(&mut self, seq: u32) {
        self.local_cseq = self.local_cseq.max(seq);
    }

    /// The last local CSeq number used.
    pub(crate) fn local_cseq(&self) -> u32 {
        self.local_cseq
    }

    /// The CSeq number of the dialog-creating INVITE.
    pub(crate) fn invite_cseq(&self) -> u32 {
        self.invite_cseq
    }

    /// A target refresh from the peer (re-INVITE, UPDATE): its Contact becomes the
    /// remote target (§12.2.2).
    pub(crate) fn refresh_target(&mut self, request: &Request) {
        if let Some(contact) = header_value(&request.headers, |h| matches!(h, Header::Contact(_))) {
            let uri = addr_uri(&contact);
            if Uri::try_from(uri).is_ok() {
                self.remote_target = uri.to_string();
            }
        }
    }

    /// The address requests in the dialog go to: the first route, else the remote
    /// target, when its host is an IP literal (no DNS here: `None` otherwise).
    pub(crate) fn next_hop(&self) -> Option<SocketAddr> {
        let uri = match self.route_set.first() {
            Some(route) => addr_uri(route),
            None => self.remote_target.as_str(),
        };
        uri_socket_addr(uri)
    }

    /// The IPs of the dialog's peer as the dialog names them: the first route and the
    /// remote target, where they are IP literals (canonical forms).
    pub(crate) fn peer_ips(&self) -> Vec<IpAddr> {
        let route = self.route_set.first().map(|r| addr_uri(r));
        route
            .into_iter()
            .chain(std::iter::once(self.remote_target.as_str()))
            .filter_map(uri_socket_addr)
            .map(|a| a.ip().to_canonical())
            .collect()
    }

    /// Request-URI and Route headers per §12.2.1.1 (loose or strict first route).
    fn build(
        &self,
        method: Method,
        seq: u32,
        via: String,
        extra: Vec<Header>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Request, DialogError> {
        let loose = self.route_set.first().is_none_or(|r| is_loose_route(r));
        let (uri_text, routes): (String, Vec<String>) = match self.route_set.split_first() {
            Some((first, rest)) if !loose => {
                let mut routes = rest.to_vec();
                routes.push(format!("<{}>", self.remote_target));
                (addr_uri(first).to_string(), routes)
            }
            _ => (self.remote_target.clone(), self.route_set.clone()),
        };
        let uri =
            Uri::try_from(uri_text.as_str()).map_err(|_| DialogError::BadUri(uri_text.clone()))?;
        let mut headers = vec![
            Header::Via(via.into()),
            Header::MaxForwards("70".into()),
            Header::From(self.local_party.clone().into()),
            Header::To(self.remote_party.clone().into()),
            Header::CallId(self.call_id.clone().into()),
            Header::CSeq(format!("{seq} {method}").into()),
        ];
        headers.extend(routes.into_iter().map(|r| Header::Route(r.into())));
        headers.extend(extra);
        let body = match body {
            Some((content_type, bytes)) => {
                headers.push(Header::ContentType(content_type.to_string().into()));
                bytes
            }
            None => Vec::new(),
        };
        headers.push(Header::ContentLength(body.len().to_string().into()));
        Ok(Request {
            method,
            uri,
            version: Version::V2,
            headers: headers.into(),
            body,
        })
    }
}

/// True if a route entry's URI carries `lr` (RFC 3261 §16.12.1.1 loose routing).
fn is_loose_route(route: &str) -> bool {
    addr_uri(route).split(';').skip(1).any(|p| {
        let name = p.split('=').next().unwrap_or_default().trim();
        name.eq_ignore_ascii_case("lr")
    })
}

/// `sip:user@1.2.3.4:5070;x` → `1.2.3.4:5070` (5060 when no port); `None` for names.
pub(crate) fn uri_socket_addr(uri: &str) -> Option<SocketAddr> {
    let rest = uri.split_once(':').map(|(_, r)| r)?;
    let host_port = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    let host_port = host_port.split([';', '?']).next()?;
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    let ip: IpAddr = host.parse().ok()?;
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 5060,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
#[path = "dialog_tests.rs"]
mod tests;
