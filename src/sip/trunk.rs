//! What the user agent needs to know about a trunk (transport, credentials,
//! extensions, registration and health checks), and the trunk's observed status.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::auth::Credentials;
use super::transport::Transport;
use crate::config::TrunkConfig;

/// How DTMF reaches the trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DtmfMode {
    /// RFC 4733 telephone-events in the RTP stream (the media module's job).
    #[default]
    Rfc4733,
    /// SIP INFO with `application/dtmf-relay` bodies (`SipCallHandle::send_dtmf_info`).
    Info,
}

/// Reliable provisional responses (RFC 3262) towards the trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RelPolicy {
    /// `Supported: 100rel`: PRACK when the trunk sends a reliable 1xx.
    #[default]
    Supported,
    /// `Require: 100rel` in the INVITE.
    Required,
    /// Not advertised (a reliable 1xx is still PRACKed).
    Disabled,
}

/// Where the called number (the DID) of an inbound call is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CalledNumberSource {
    /// The Request-URI user, unless it is our own registered contact user (the
    /// trunk's account: a registrar sending the call to our contact) or absent;
    /// then `To`.
    #[default]
    Auto,
    /// The Request-URI user.
    RequestUri,
    /// The `To` user.
    To,
    /// The `P-Called-Party-ID` user (RFC 3455).
    PCalledPartyId,
    /// The user of the most recent (first) `Diversion` entry (RFC 5806).
    Diversion,
}

impl CalledNumberSource {
    /// The value of a validated `called_number_from` key.
    pub fn parse(text: &str) -> CalledNumberSource {
        match text {
            "request_uri" => CalledNumberSource::RequestUri,
            "to" => CalledNumberSource::To,
            "p_called_party_id" => CalledNumberSource::PCalledPartyId,
            "diversion" => CalledNumberSource::Diversion,
            _ => CalledNumberSource::Auto,
        }
    }
}

/// Headers of our INVITEs that carry the caller's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerIdHeaders {
    /// `P-Asserted-Identity` (RFC 3325).
    pub pai: bool,
    /// `Remote-Party-ID` (draft-ietf-sip-privacy-04), for carriers that want it.
    pub rpid: bool,
}

impl Default for CallerIdHeaders {
    fn default() -> Self {
        Self {
            pai: true,
            rpid: false,
        }
    }
}

impl CallerIdHeaders {
    /// The value of a validated `caller_id_header` key.
    pub fn parse(names: &[String]) -> CallerIdHeaders {
        CallerIdHeaders {
            pai: names.iter().any(|n| n == "pai"),
            rpid: names.iter().any(|n| n == "rpid"),
        }
    }
}

/// What the gateway does with a REFER (call transfer, RFC 3515) from a trunk's far end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReferPolicy {
    /// Answer 603 Decline: the far end cannot make the gateway place a call (default).
    #[default]
    Reject,
    /// Accept (202) and let the call module dial the Refer-To user part like a browser
    /// `call`: dial plan, the user's limits, the route's trunks only.
    Dialplan,
}

/// Session timer settings (RFC 4028).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimerSettings {
    /// `Session-Expires` we ask for, in seconds; 0 disables session timers.
    pub session_expires: u32,
    /// `Min-SE`: the smallest interval we accept from the peer, in seconds.
    pub min_se: u32,
}

impl Default for SessionTimerSettings {
    fn default() -> Self {
        Self {
            session_expires: 1800,
            min_se: 90,
        }
    }
}

/// Everything the user agent needs about one trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkSettings {
    /// Name (for logs and [`TrunkStatus`]).
    pub name: String,
    /// Host name or IP literal of the trunk (Request-URI host of REGISTER/OPTIONS).
    pub host: String,
    /// Port of the trunk (the transport's default, 5060 or 5061, when the address
    /// has none).
    pub port: u16,
    /// Locate the trunk by DNS SRV (RFC 3263 §4.2): the address is a name without a
    /// port. Targets are tried in SRV order, then A/AAAA of `host` on `port`.
    pub srv: bool,
    /// Transport.
    pub transport: Transport,
    /// Digest credentials (the `Debug` output redacts the password).
    pub credentials: Option<Credentials>,
    /// Register with the trunk.
    pub register: bool,
    /// Registration lifetime asked for.
    pub register_expires: Duration,
    /// OPTIONS ping interval; `None`: no health checks.
    pub options_interval: Option<Duration>,
    /// DTMF transport.
    pub dtmf_mode: DtmfMode,
    /// 100rel policy.
    pub reliable_provisional: RelPolicy,
    /// Session timers.
    pub session_timer: SessionTimerSettings,
    /// PEM CA bundle that verifies the trunk's TLS certificate; `None`: webpki roots.
    pub tls_ca: Option<PathBuf>,
    /// Name checked against the trunk's certificate; `None`: `host`.
    pub tls_server_name: Option<String>,
    /// Our INVITEs use `sips:` Request-URIs and Contacts (RFC 3261 §26; TLS only).
    pub sips: bool,
    /// Present our certificate as a TLS client certificate (mutual TLS; TLS only).
    pub tls_client_auth: bool,
    /// Networks inbound INVITEs from this trunk come from; empty: the resolved
    /// address of `host` only.
    pub inbound_from: Vec<IpNet>,
    /// Challenge inbound INVITEs with digest (407) against `credentials`.
    pub inbound_auth: bool,
    /// Where the called number of inbound calls is read.
    pub called_number_from: CalledNumberSource,
    /// From user of our INVITEs; `None`: the account when there are credentials,
    /// else the caller.
    pub from_user: Option<String>,
    /// From host (`host[:port]`); `None`: [`TrunkSettings::domain`] when From carries
    /// the account, else our address.
    pub from_domain: Option<String>,
    /// Which headers carry the caller's id.
    pub caller_id_headers: CallerIdHeaders,
    /// What a REFER from the far end of a call on this trunk does.
    pub refer: ReferPolicy,
    /// The only digest realm `credentials` answer; `None`: the realm of the first
    /// challenge from the trunk's address (per call or registration).
    pub realm: Option<String>,
}

impl Default for TrunkSettings {
    fn default() -> Self {
        Self {
            name: "default".into(),
            host: "127.0.0.1".into(),
            port: 5060,
            srv: false,
            transport: Transport::Udp,
            credentials: None,
            register: false,
            register_expires: Duration::from_secs(3600),
            options_interval: None,
            dtmf_mode: DtmfMode::Rfc4733,
            reliable_provisional: RelPolicy::Supported,
            session_timer: SessionTimerSettings::default(),
            tls_ca: None,
            tls_server_name: None,
            sips: false,
            tls_client_auth: false,
            inbound_from: Vec::new(),
            inbound_auth: false,
            called_number_from: CalledNumberSource::Auto,
            from_user: None,
            from_domain: None,
            caller_id_headers: CallerIdHeaders::default(),
            refer: ReferPolicy::Reject,
            realm: None,
        }
    }
}

impl TrunkSettings {
    /// The host as a SIP URI writes it: IPv6 literals in brackets.
    pub fn uri_host(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// The trunk's domain as our URIs name it (Request-URI, To, the REGISTER address
    /// of record, P-Asserted-Identity): the host with the port, except for 5060 (the
    /// SIP default) and for a trunk located by SRV, whose name alone is the domain
    /// (RFC 3263). A proxy on another port does not take a URI without its port
    /// for its own ("403 Not relaying").
    pub fn domain(&self) -> String {
        if self.port == 5060 || self.srv {
            self.uri_host()
        } else {
            format!("{}:{}", self.uri_host(), self.port)
        }
    }

    /// The account our requests present (From of INVITEs, REGISTER address of
    /// record): `from_user`, else the digest username; `None`: From carries the
    /// caller.
    pub fn account(&self) -> Option<&str> {
        self.from_user
            .as_deref()
            .or(self.credentials.as_ref().map(|c| c.username.as_str()))
    }

    /// The user of our registered contact (and of REGISTER/OPTIONS From/To): the
    /// account, else `callbridge`.
    pub fn contact_user(&self) -> &str {
        self.account().unwrap_or("callbridge")
    }

    /// The host of From when From carries the account: `from_domain`, else
    /// [`TrunkSettings::domain`].
    pub fn account_domain(&self) -> String {
        self.from_domain.clone().unwrap_or_else(|| self.domain())
    }

    /// Settings from a validated `[[sip.trunks]]` entry (the password already read
    /// from `password_env` by the config loader).
    pub fn from_config(trunk: &TrunkConfig) -> TrunkSettings {
        let (host, port) = crate::config::validate::split_trunk_address(&trunk.address)
            .unwrap_or_else(|_| (trunk.address.clone(), None));
        let transport = Transport::parse(&trunk.transport).unwrap_or_default();
        let srv = port.is_none() && host.parse::<std::net::IpAddr>().is_err();
        let port = port.unwrap_or(match transport {
            Transport::Tls => 5061,
            _ => 5060,
        });
        let credentials = match (&trunk.username, &trunk.password) {
            (Some(username), Some(password)) => Some(Credentials {
                username: username.clone(),
                password: password.clone(),
            }),
            _ => None,
        };
        TrunkSettings {
            name: trunk.name.clone(),
            host,
            port,
            srv,
            transport,
            credentials,
            register: trunk.register,
            register_expires: Duration::from_secs(u64::from(trunk.register_expires)),
            options_interval: trunk.options_interval.filter(|d| !d.is_zero()),
            dtmf_mode: match trunk.dtmf_mode.as_str() {
                "info" => DtmfMode::Info,
                _ => DtmfMode::Rfc4733,
            },
            reliable_provisional: match trunk.reliable_provisional.as_str() {
                "required" => RelPolicy::Required,
                "disabled" => RelPolicy::Disabled,
                _ => RelPolicy::Supported,
            },
            session_timer: SessionTimerSettings {
                session_expires: trunk.session_expires,
                min_se: trunk.min_se,
            },
            tls_ca: trunk.tls_ca.clone(),
            tls_server_name: trunk.tls_server_name.clone(),
            sips: trunk.sips && transport == Transport::Tls,
            tls_client_auth: trunk.tls_client_auth && transport == Transport::Tls,
            inbound_from: trunk
                .inbound_from
                .iter()
                .filter_map(|n| parse_net(n))
                .collect(),
            inbound_auth: trunk.inbound_auth,
            called_number_from: CalledNumberSource::parse(&trunk.called_number_from),
            from_user: trunk.from_user.clone(),
            from_domain: trunk.from_domain.clone(),
            caller_id_headers: CallerIdHeaders::parse(&trunk.caller_id_header),
            refer: match trunk.refer.as_str() {
                "dialplan" => ReferPolicy::Dialplan,
                _ => ReferPolicy::Reject,
            },
            realm: trunk.realm.clone(),
        }
    }

    /// The TLS server name to verify.
    pub fn server_name(&self) -> &str {
        self.tls_server_name.as_deref().unwrap_or(&self.host)
    }
}

/// `198.51.100.0/24` or a single address (a /32 or /128); `None` if neither.
pub fn parse_net(text: &str) -> Option<IpNet> {
    text.trim()
        .parse::<IpNet>()
        .ok()
        .or_else(|| text.trim().parse::<IpAddr>().ok().map(IpNet::from))
}

/// What the endpoint knows about a trunk's health, for `/healthz` and gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkStatus {
    /// False after an OPTIONS timeout, transport error or 503 (until it answers
    /// again); true before the first check and when no checks are configured.
    pub reachable: bool,
    /// Registration state; `None` when the trunk does not register.
    pub registered: Option<bool>,
    /// When `reachable` or `registered` last changed.
    pub last_change: Option<Instant>,
    /// The last problem seen (`OPTIONS timeout`, `REGISTER 403 Forbidden`...), if any.
    pub detail: Option<String>,
    /// Addresses of the trunk (several from SRV) whose last ping failed: calls try
    /// them last.
    pub failing: Vec<SocketAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(host: &str, port: u16, srv: bool) -> TrunkSettings {
        TrunkSettings {
            host: host.into(),
            port,
            srv,
            ..TrunkSettings::default()
        }
    }

    #[test]
    fn domain_keeps_a_port_other_than_5060() {
        assert_eq!(at("203.0.113.5", 5080, false).domain(), "203.0.113.5:5080");
        assert_eq!(
            at("carrier.example", 5060, false).domain(),
            "carrier.example"
        );
        assert_eq!(
            at("2001:db8::1", 5080, false).domain(),
            "[2001:db8::1]:5080"
        );
        // Located by SRV: the name is the domain (RFC 3263), whatever port SRV gives.
        assert_eq!(
            at("carrier.example", 5060, true).domain(),
            "carrier.example"
        );
        // TLS on 5061 is not the sip: default port.
        assert_eq!(
            at("carrier.example", 5061, false).domain(),
            "carrier.example:5061"
        );
    }

    #[test]
    fn the_account_is_from_user_else_the_username() {
        let mut t = at("203.0.113.5", 5080, false);
        assert_eq!(t.account(), None);
        assert_eq!(t.contact_user(), "callbridge");
        t.credentials = Some(Credentials {
            username: "acct".into(),
            password: "p".into(),
        });
        assert_eq!(t.account(), Some("acct"));
        assert_eq!(t.account_domain(), "203.0.113.5:5080");
        t.from_user = Some("+15550000000".into());
        t.from_domain = Some("carrier.example".into());
        assert_eq!(t.account(), Some("+15550000000"));
        assert_eq!(t.contact_user(), "+15550000000");
        assert_eq!(t.account_domain(), "carrier.example");
    }

    #[test]
    fn carrier_keys_parse() {
        assert_eq!(
            CalledNumberSource::parse("p_called_party_id"),
            CalledNumberSource::PCalledPartyId
        );
        assert_eq!(CalledNumberSource::parse("auto"), CalledNumberSource::Auto);
        let both = CallerIdHeaders::parse(&["rpid".into(), "pai".into()]);
        assert!(both.pai && both.rpid);
        let none = CallerIdHeaders::parse(&["none".into()]);
        assert!(!none.pai && !none.rpid);
    }
}
