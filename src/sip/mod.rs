//! SIP user agent: transactions (RFC 3261 §17, sans-IO), dialogs, digest auth,
//! registration, health checks, inbound calls (admission, UAS, stateless forwarding
//! to another instance), the UDP/TCP/TLS transports, and a built-in echo UAS.
//!
//! ```text
//!  call module ──invite()/hangup()/reinvite()──> SipEndpoint ──mpsc──> driver task
//!              <──take_incoming(): IncomingCall   (endpoint/)   │ owns UDP socket, TCP
//!   SipCallEvent / InboundSipEvent <── per-call mpsc <──────────┤ listener, connections
//!                                                                │ + UserAgent; sleeps
//!                                                                ▼ until poll_timeout()
//!  user_agent (sans-IO core): calls (placed, answered) ─ legs ─ transaction/*
//!                             admission ─ proxy ─ trunk services ─ dialog ─ auth ─ message
//! ```
//!
//! Everything below `endpoint/` is sans-IO: it takes `now: Instant` and messages as
//! input and is drained with `poll_transmit()` / `poll_event()` / `poll_timeout()`.

mod auth;
mod availability;
mod dialog;
mod digest_server;
pub mod dns;
/// A built-in echo UAS (answers every INVITE, echoes RTP back).
pub mod echo;
mod endpoint;
mod framer;
mod incoming;
mod labels;
mod message;
mod timers;
/// RFC 3261 §17 transactions (sans-IO).
pub mod transaction;
mod transport;
mod trunk;
mod trunk_scope;
mod user_agent;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub use auth::Credentials;
pub use availability::{Availability, AvailabilityProbe};
pub use endpoint::{
    CloseReason, ConnectionConfig, ConnectionStats, Direction, MessageCount, Refusal,
    SipCallHandle, SipEndpoint,
};
pub use framer::{FramingError, StreamFramer};
pub use incoming::{InboundSipEvent, IncomingCall, IncomingCallHandle};
pub use labels::{method_label, status_label};
pub use transaction::TimerConfig;
pub use transport::{Peer, Transport};
pub use trunk::{
    CalledNumberSource, CallerIdHeaders, DtmfMode, ReferPolicy, RelPolicy, SessionTimerSettings,
    TrunkSettings, TrunkStatus, parse_net,
};

/// Parses one SIP message the way the endpoint does (normalising pass, then rsip,
/// then the mandatory-header checks); `Ok(true)` for a request, `Ok(false)` for a
/// response. For fuzzing and diagnostics.
pub fn parse_message(bytes: &[u8]) -> Result<bool, String> {
    match message::parse(bytes) {
        Ok(message::Incoming::Request(_)) => Ok(true),
        Ok(message::Incoming::Response(..)) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// Feeds `bytes` to a fresh user agent core holding one answered call (with digest
/// credentials and session timers), as a datagram and as a TCP stream: the whole
/// receive path (framing, normalising, rsip, 400/501 answers, transaction and
/// dialog matching, challenges, re-INVITE/REFER handling). For the fuzz target.
#[doc(hidden)]
pub fn fuzz_user_agent(bytes: &[u8]) {
    user_agent::fuzz(bytes);
}

/// Frames `bytes[1..]` as a TCP stream whole and in reads sized from `bytes[0]`,
/// checks that both agree and parses each message; returns how many were framed.
/// For the `sip_stream` fuzz target.
#[doc(hidden)]
pub fn fuzz_stream(bytes: &[u8]) -> usize {
    framer::fuzz_stream(bytes)
}

/// Errors of the SIP user agent.
#[derive(Debug, thiserror::Error)]
pub enum SipError {
    /// A socket error.
    #[error("SIP transport: {0}")]
    Io(#[from] std::io::Error),
    /// The endpoint has shut down.
    #[error("SIP endpoint is shut down")]
    Closed,
    /// The caller asked for something that cannot be put in a SIP request.
    #[error("invalid SIP request: {0}")]
    InvalidRequest(String),
    /// The call's trunk does not use the mechanism asked for (e.g. INFO DTMF on an
    /// RFC 4733 trunk).
    #[error("not available on this trunk: {0}")]
    NotAvailable(&'static str),
    /// The trunk could not be located in DNS.
    #[error(transparent)]
    Dns(#[from] dns::DnsError),
}

/// Settings of the SIP endpoint.
#[derive(Debug, Clone)]
pub struct SipEndpointConfig {
    /// Local address to bind for UDP and TCP (port 0: ephemeral, the same for both).
    pub listen: SocketAddr,
    /// Address put in Via and Contact instead of the bound one (1:1 NAT), if any.
    pub external_ip: Option<IpAddr>,
    /// `User-Agent` header value.
    pub user_agent: String,
    /// RFC 3261 timer values (T1, T2, T4, D).
    pub timers: TimerConfig,
    /// Other instances that may forward inbound INVITEs to us
    /// ([`SipEndpoint::proxy`]): their INVITEs are admitted by the trunk address
    /// their `X-Callbridge-Forwarded` header vouches for when it is signed with
    /// [`forward`](Self::forward); without a valid one, as their own.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Inbound SIP over TLS (RFC 3261 §26.2, usually port 5061), if any.
    pub tls: Option<SipTlsListener>,
    /// Our client certificate for trunks with `tls_client_auth`, if any.
    pub tls_identity: Option<TlsIdentity>,
    /// DNS servers for trunk SRV lookups; empty: the system's (`/etc/resolv.conf`).
    pub dns_servers: Vec<SocketAddr>,
    /// How often trunk names are looked up again for their services and inbound
    /// admission (calls look them up on every attempt).
    pub dns_refresh: std::time::Duration,
    /// CRLF keepalive pings (RFC 5626) on our TCP/TLS connections after this long
    /// without traffic; `None`: no pings.
    pub keepalive: Option<std::time::Duration>,
    /// Caps and timeouts of TCP/TLS connections.
    pub connections: ConnectionConfig,
    /// The cluster's key for INVITEs forwarded between instances (signed when we
    /// forward, checked from `trusted_proxies`); `None`: no forwarding either way.
    pub forward: Option<ForwardAuth>,
}

/// The shared secret with which instances sign the INVITEs they forward to each
/// other (`cluster.forward_secret`), and how old such a signature may be.
#[derive(Clone)]
pub struct ForwardAuth {
    /// The secret (never logged).
    pub secret: Vec<u8>,
    /// The validity window of a signature (`cluster.forward_max_age`).
    pub max_age: std::time::Duration,
}

impl fmt::Debug for ForwardAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForwardAuth")
            .field("secret", &"<redacted>")
            .field("max_age", &self.max_age)
            .finish()
    }
}

/// A certificate chain and private key we present as a TLS client (mutual TLS to
/// trunks that ask for it, e.g. Microsoft Teams Direct Routing).
#[derive(Clone)]
pub struct TlsIdentity {
    /// The chain, leaf first.
    pub certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The private key (never logged).
    pub key: Arc<rustls::pki_types::PrivateKeyDer<'static>>,
}

impl TlsIdentity {
    /// Loads a PEM certificate chain and key (e.g. the `[tls]` files).
    pub fn from_pem_files(
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<TlsIdentity, SipError> {
        endpoint::load_identity(cert, key).map_err(SipError::InvalidRequest)
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("certs", &self.certs.len())
            .finish_non_exhaustive()
    }
}

/// Where and with which certificate the endpoint accepts SIP over TLS.
#[derive(Clone)]
pub struct SipTlsListener {
    /// Local address to bind (port 0: ephemeral).
    pub listen: SocketAddr,
    /// The server certificate and key.
    pub config: Arc<rustls::ServerConfig>,
}

impl SipTlsListener {
    /// A listener on `listen` presenting `identity`; with `client_ca`, peers must
    /// present a certificate signed by one of its CAs (mutual TLS).
    pub fn new(
        listen: SocketAddr,
        identity: &TlsIdentity,
        client_ca: Option<&std::path::Path>,
    ) -> Result<SipTlsListener, SipError> {
        let config =
            endpoint::tls_server_config(identity, client_ca).map_err(SipError::InvalidRequest)?;
        Ok(SipTlsListener { listen, config })
    }
}

impl std::fmt::Debug for SipTlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipTlsListener")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl Default for SipEndpointConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            external_ip: None,
            user_agent: concat!("callbridge/", env!("CARGO_PKG_VERSION")).to_string(),
            timers: TimerConfig::default(),
            trusted_proxies: Vec::new(),
            tls: None,
            tls_identity: None,
            dns_servers: Vec::new(),
            dns_refresh: std::time::Duration::from_secs(300),
            keepalive: Some(std::time::Duration::from_secs(60)),
            connections: ConnectionConfig::default(),
            forward: None,
        }
    }
}

/// Builds our SDP answer to an SDP offer of the far end mid-call (re-INVITE or
/// UPDATE with SDP); `Err` refuses it (488).
pub type SdpAnswerer = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

/// What the call module asks for when placing an outbound call.
#[derive(Clone)]
pub struct InviteRequest {
    /// Where to send the INVITE (the trunk, resolved).
    pub target: SocketAddr,
    /// Host part of the Request-URI and To: the trunk's domain
    /// ([`TrunkSettings::domain`], with the port unless 5060 or SRV).
    pub target_host: String,
    /// User part of the Request-URI and To (the dialed number after the dial plan).
    pub to_user: String,
    /// The caller (its id, else its user): From's user, unless the trunk has an
    /// account (credentials or `from_user`), which From then carries while the
    /// caller goes in P-Asserted-Identity / Remote-Party-ID.
    pub from_user: String,
    /// SDP offer body.
    pub sdp: String,
    /// Correlation id, sent as `X-Correlation-ID`.
    pub correlation_id: String,
    /// The trunk's settings (transport, credentials, extensions).
    pub trunk: TrunkSettings,
    /// The trunk's other addresses besides `target` (further DNS SRV targets): its
    /// credentials may answer challenges from them and in-dialog requests may come
    /// from them, as from `target` and the trunk's `inbound_from` networks.
    pub trunk_addresses: Vec<SocketAddr>,
    /// Display name in From.
    pub from_display: Option<String>,
    /// User of `P-Asserted-Identity` (RFC 3325), e.g. the token's `caller_id`.
    pub asserted_identity: Option<String>,
    /// Ask for privacy: `Privacy: id` and an anonymous From (RFC 3323).
    pub privacy: bool,
    /// Answers the far end's mid-call SDP offers (called synchronously by the UA).
    pub answerer: SdpAnswerer,
}

impl Default for InviteRequest {
    fn default() -> Self {
        Self {
            target: SocketAddr::from(([127, 0, 0, 1], 5060)),
            target_host: "127.0.0.1".into(),
            to_user: String::new(),
            from_user: String::new(),
            sdp: String::new(),
            correlation_id: String::new(),
            trunk: TrunkSettings::default(),
            trunk_addresses: Vec::new(),
            from_display: None,
            asserted_identity: None,
            privacy: false,
            answerer: Arc::new(|_| Err("no SDP answerer configured".into())),
        }
    }
}

impl fmt::Debug for InviteRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InviteRequest")
            .field("target", &self.target)
            .field("target_host", &self.target_host)
            .field("to_user", &self.to_user)
            .field("from_user", &self.from_user)
            .field("correlation_id", &self.correlation_id)
            .field("trunk", &self.trunk)
            .field("trunk_addresses", &self.trunk_addresses)
            .field("from_display", &self.from_display)
            .field("asserted_identity", &self.asserted_identity)
            .field("privacy", &self.privacy)
            .finish_non_exhaustive()
    }
}

/// Progress of an outbound call, reported to the call module.
///
/// Exactly one of `Failed`, `RemoteHangup` or `Terminated` ends the stream. After
/// `hangup()` the only event still reported is the final `Terminated`. A `Failed`
/// after `Answered` means the dialog died (481/408 to an in-dialog request, our 2xx
/// never ACKed, session timer expiry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipCallEvent {
    /// 180 Ringing (with SDP if the peer sent one).
    Ringing {
        /// Early-media SDP answer, if any.
        sdp: Option<String>,
    },
    /// 183 Session Progress, or another 1xx except 100 (with SDP for early media, if any).
    Progress {
        /// Early-media SDP answer, if any.
        sdp: Option<String>,
    },
    /// 200 OK to the INVITE (ACK already sent).
    Answered {
        /// The SDP answer (empty if the peer sent none).
        sdp: String,
    },
    /// The INVITE failed with a final response (3xx-6xx), a timeout (408) or a
    /// transport error (503 is reported for those).
    Failed {
        /// SIP status code.
        status: u16,
        /// Reason phrase as received (or describing the local failure).
        reason: String,
    },
    /// The peer sent BYE (already answered with 200).
    RemoteHangup,
    /// The dialog is over after our own hangup (BYE answered, or CANCEL/487 done).
    Terminated,
    /// The far end changed the media: an offer (re-INVITE/UPDATE) we answered with
    /// the answerer, the answer in the ACK of an offerless re-INVITE, or the new
    /// party's SDP after a transfer. Hold/unhold follow from its direction attribute.
    RemoteSdp {
        /// The far end's SDP.
        sdp: String,
    },
    /// Outcome of `SipCallHandle::reinvite`.
    ReinviteResult {
        /// The far end accepted (2xx).
        ok: bool,
        /// Final status; 0 if nothing was sent (no confirmed dialog).
        status: u16,
        /// The far end's SDP answer, on success.
        sdp: Option<String>,
    },
    /// The far end asked to transfer the call (REFER, answered 202, on a trunk with
    /// `refer = "dialplan"`). The call module decides: [`SipEndpoint::transfer`]
    /// through a trunk of its choosing, or [`SipCallHandle::refuse_transfer`]; with
    /// no decision within 64*T1 the transfer fails with 408. Never call `target`
    /// itself: it is whatever the far end wrote.
    TransferRequested {
        /// The Refer-To URI (headers stripped).
        target: String,
        /// Its user part, percent-decoded, if any: the number to dial.
        user: Option<String>,
    },
    /// The transfer the call module allowed failed (the transferor got the status);
    /// the call goes on with the current party.
    TransferFailed {
        /// The new leg's final status.
        status: u16,
        /// Its reason.
        reason: String,
    },
    /// The far end transferred the call (REFER) and the transfer target answered; the
    /// call goes on with the new party in this same handle (a `RemoteSdp` follows).
    Transferred {
        /// The Refer-To URI.
        target: String,
    },
}

impl SipCallEvent {
    /// True for the events that end a call's event stream.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Failed { .. } | Self::RemoteHangup | Self::Terminated
        )
    }
}
