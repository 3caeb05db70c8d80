//! What every leg of one call shares: the trunk, addresses, identity and the SDP
//! answerer given by the call module.

use std::fmt;

use crate::sip::SdpAnswerer;
use crate::sip::TrunkSettings;
use crate::sip::transaction::TimerConfig;
use crate::sip::transport::Peer;
use crate::sip::trunk_scope::TrunkScope;

/// The settings of one call, shared by its legs (the original and a transfer's).
#[derive(Clone)]
pub(crate) struct CallContext {
    /// The trunk the call goes through.
    pub trunk: TrunkSettings,
    /// The trunk's resolved address and transport.
    pub target: Peer,
    /// Every address of the trunk: where its credentials may go and where in-dialog
    /// requests may come from (besides the dialog's own next hop and remote target).
    pub scope: TrunkScope,
    /// Our advertised address and transport (Via, Contact).
    pub local: Peer,
    /// Host of the Request-URI and To (and of P-Asserted-Identity).
    pub domain: String,
    /// Timer values.
    pub timers: TimerConfig,
    /// `User-Agent` value.
    pub user_agent: String,
    /// Correlation id for logs and `X-Correlation-ID`.
    pub correlation_id: String,
    /// User part of From (and Contact).
    pub from_user: String,
    /// Host of From; `None`: our own address.
    pub from_domain: Option<String>,
    /// From carries the trunk's account rather than the caller: it stays as is when
    /// privacy is asked (the caller's id is then withheld in P-Asserted-Identity).
    pub from_account: bool,
    /// Display name of From.
    pub from_display: Option<String>,
    /// The caller's id in P-Asserted-Identity / Remote-Party-ID (as the trunk's
    /// `caller_id_headers` say).
    pub asserted_identity: Option<String>,
    /// Ask for identity privacy (`Privacy: id`; anonymous From unless it carries the
    /// account).
    pub privacy: bool,
    /// The dialog was set up with a `sips:` Request-URI over TLS: our Contact is a
    /// SIPS URI too (RFC 3261 §12.1.1).
    pub secure: bool,
    /// Builds our SDP answer to an offer from the peer.
    pub answerer: SdpAnswerer,
}

impl fmt::Debug for CallContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallContext")
            .field("trunk", &self.trunk.name)
            .field("target", &self.target)
            .field("local", &self.local)
            .field("correlation_id", &self.correlation_id)
            .finish_non_exhaustive()
    }
}

impl CallContext {
    /// Our Contact value: `<sips:user@host:port>` in a secure dialog, else
    /// `<sip:user@host:port;transport=…>`.
    pub(crate) fn contact(&self) -> String {
        if self.secure {
            format!(
                "<sips:{}@{}>",
                self.from_user,
                crate::sip::message::build::host_port(self.local.addr)
            )
        } else {
            format!(
                "<{}>",
                crate::sip::message::build::contact_uri(&self.from_user, self.local)
            )
        }
    }

    /// A digest client with the trunk's credentials, realm and addresses.
    pub(crate) fn digest_client(&self) -> crate::sip::auth::DigestClient {
        crate::sip::auth::DigestClient::new(
            self.trunk.credentials.clone(),
            self.trunk.realm.clone(),
            self.scope.clone(),
        )
    }

    /// Asks the call module for an SDP answer to `offer`.
    pub(crate) fn answer(&self, offer: &str) -> Result<String, String> {
        (self.answerer)(offer)
    }
}
