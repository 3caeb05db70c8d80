//! Which remote addresses the browser-facing ICE agent may send to. A browser names
//! the addresses our ICE agent sends connectivity checks (and later media) to — in the
//! offer or answer SDP and in trickled `ice` messages — so an unchecked candidate lets
//! any user point the gateway at its own network (SSRF).
//!
//! Refused (the candidate is ignored, and the leg's socket drops anything sent there):
//! - never: unspecified, multicast, broadcast and their IPv6 forms;
//! - the gateway's own service ports (HTTP, SIP, TURN, echo) on any address that
//!   reaches the gateway (loopback, its own addresses), and its RTP range on its own
//!   non-loopback addresses (on loopback, which only local use allows, a browser on
//!   the same host may hold a port of that range itself);
//! - internal networks (loopback, RFC 1918, `fc00::/7`, link-local, CGNAT, ...) unless
//!   listed in `media.allow_candidate_networks`;
//! - names instead of addresses (mDNS `.local`, FQDN): never resolved.
//!
//! Sans-IO: [`CandidatePolicy::judge`] is a function of the address and the sets built
//! at start.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::IpNet;

use crate::netguard::ice_ports::IcePorts;
use crate::netguard::{self, OwnAddrs, Refusal};

/// What the WebRTC legs of a gateway share: the candidate policy and the registry
/// of their ICE ports.
#[derive(Debug, Clone)]
pub struct LegGuard {
    /// Which browser candidates are used and where the legs' sockets may send.
    pub candidates: Arc<CandidatePolicy>,
    /// Where the legs register their ICE ports (read by the TURN peer policy).
    pub ice_ports: IcePorts,
    /// The media workers that run the legs.
    pub workers: Arc<super::worker::MediaWorkers>,
}

/// The candidate address policy of the WebRTC legs.
#[derive(Debug, Default)]
pub struct CandidatePolicy {
    /// `media.allow_candidate_networks`: internal networks whose candidates are used.
    allow: Vec<IpNet>,
    /// Addresses that reach the gateway itself.
    own: OwnAddrs,
    /// The gateway's listening ports (HTTP, SIP, TURN, echo), refused on its own addresses.
    service_ports: HashSet<u16>,
    /// `sip.rtp_ports`, refused on the gateway's own addresses (other calls' RTP).
    rtp_ports: Option<(u16, u16)>,
    /// Candidates ignored so far.
    refused_candidates: AtomicU64,
    /// Datagrams the legs' sockets dropped so far.
    dropped_sends: AtomicU64,
}

/// Where the gateway listens, for [`CandidatePolicy::new`].
#[derive(Debug, Clone, Default)]
pub struct GatewayPorts {
    /// Every address that reaches the gateway.
    pub own: OwnAddrs,
    /// Ports the gateway listens on.
    pub service_ports: HashSet<u16>,
    /// The SIP-side RTP port range.
    pub rtp_ports: Option<(u16, u16)>,
}

impl CandidatePolicy {
    /// A policy that uses candidates in `allow` networks besides public ones.
    pub fn new(allow: Vec<IpNet>, gateway: GatewayPorts) -> CandidatePolicy {
        CandidatePolicy {
            allow,
            own: gateway.own,
            service_ports: gateway.service_ports,
            rtp_ports: gateway.rtp_ports,
            ..CandidatePolicy::default()
        }
    }

    /// Whether the ICE agent may send to `addr`.
    pub fn judge(&self, addr: SocketAddr) -> Result<(), Refusal> {
        let ip = addr.ip();
        if netguard::is_never(ip) {
            return Err(Refusal::Never);
        }
        if self.own.reaches_gateway(ip) && self.is_gateway_port(ip, addr.port()) {
            return Err(Refusal::Gateway);
        }
        if netguard::is_internal(ip) && !netguard::nets_contain(&self.allow, ip) {
            return Err(Refusal::Internal);
        }
        Ok(())
    }

    fn is_gateway_port(&self, ip: IpAddr, port: u16) -> bool {
        self.service_ports.contains(&port)
            || (!netguard::is_loopback(ip)
                && self
                    .rtp_ports
                    .is_some_and(|(low, high)| (low..=high).contains(&port)))
    }

    /// Judges a `candidate:` attribute (with or without `a=`), counting refusals.
    pub fn judge_candidate(&self, line: &str) -> Result<(), Refusal> {
        let verdict = candidate_address(line)
            .ok_or(Refusal::NotAnAddress)
            .and_then(|addr| self.judge(addr));
        if verdict.is_err() {
            self.refused_candidates.fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }

    /// `sdp` without the `a=candidate` lines this policy refuses.
    pub fn filter_sdp(&self, sdp: &str) -> String {
        let mut out = String::with_capacity(sdp.len());
        for line in sdp.split_inclusive('\n') {
            let text = line.trim_end_matches(['\r', '\n']);
            if let Some(candidate) = text.strip_prefix("a=")
                && candidate.starts_with("candidate:")
                && let Err(why) = self.judge_candidate(candidate)
            {
                tracing::debug!(candidate, %why, "browser ICE candidate in SDP ignored");
                continue;
            }
            out.push_str(line);
        }
        out
    }

    /// Counts a datagram a leg's socket dropped.
    pub fn count_dropped_send(&self) {
        self.dropped_sends.fetch_add(1, Ordering::Relaxed);
    }

    /// Candidates ignored so far.
    pub fn refused_candidates(&self) -> u64 {
        self.refused_candidates.load(Ordering::Relaxed)
    }

    /// Datagrams to refused addresses dropped by the legs' sockets so far.
    pub fn dropped_sends(&self) -> u64 {
        self.dropped_sends.load(Ordering::Relaxed)
    }
}

/// The transport address of a `candidate:` attribute, if it is an IP address.
///
/// `candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...`
pub fn candidate_address(line: &str) -> Option<SocketAddr> {
    let (address, port) = candidate_fields(line)?;
    Some(SocketAddr::new(address.parse().ok()?, port))
}

/// The address (an IP or a name) and port of a well-formed `candidate:` attribute.
pub fn candidate_fields(line: &str) -> Option<(&str, u16)> {
    let line = line.trim();
    let line = line.strip_prefix("a=").unwrap_or(line);
    let mut fields = line.strip_prefix("candidate:")?.split_ascii_whitespace();
    let _foundation = fields.next()?;
    let _component = fields.next()?;
    let _transport = fields.next()?;
    let _priority = fields.next()?;
    let address = fields.next()?;
    let port: u16 = fields.next()?.parse().ok()?;
    (fields.next()? == "typ").then_some((address, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> CandidatePolicy {
        let own = OwnAddrs::new(["93.184.216.10".parse::<IpAddr>().expect("ip")]);
        CandidatePolicy::new(
            allow.iter().map(|n| n.parse().expect("net")).collect(),
            GatewayPorts {
                own,
                service_ports: [5060, 8443, 3478].into_iter().collect(),
                rtp_ports: Some((20000, 29999)),
            },
        )
    }

    fn line(addr: &str, port: u16) -> String {
        format!("candidate:1 1 udp 2122260223 {addr} {port} typ host generation 0")
    }

    #[test]
    fn internal_candidates_are_ignored_unless_their_network_is_allowed() {
        let closed = policy(&[]);
        for (addr, why) in [
            ("127.0.0.1", Refusal::Internal),
            ("10.0.0.5", Refusal::Internal),
            ("192.168.1.20", Refusal::Internal),
            ("172.20.0.2", Refusal::Internal),
            ("169.254.169.254", Refusal::Internal),
            ("100.64.1.1", Refusal::Internal),
            ("fd00::5", Refusal::Internal),
            ("fe80::1", Refusal::Internal),
            ("::1", Refusal::Internal),
            ("::ffff:10.0.0.5", Refusal::Internal),
            ("0.0.0.0", Refusal::Never),
            ("::", Refusal::Never),
            ("224.0.0.251", Refusal::Never),
            ("ff02::fb", Refusal::Never),
            (
                "3f1d2a44-1c2e-4a7b-9a7e-1b2c3d4e5f60.local",
                Refusal::NotAnAddress,
            ),
            ("internal.example.com", Refusal::NotAnAddress),
        ] {
            assert_eq!(
                closed.judge_candidate(&line(addr, 50000)),
                Err(why),
                "{addr}"
            );
        }
        assert_eq!(closed.refused_candidates(), 16);
        for addr in ["8.8.8.8", "2a00:1450::1", "93.184.216.34"] {
            assert_eq!(closed.judge_candidate(&line(addr, 50000)), Ok(()), "{addr}");
        }
        let open = policy(&["127.0.0.0/8", "10.0.0.0/8"]);
        assert_eq!(open.judge_candidate(&line("127.0.0.1", 50000)), Ok(()));
        assert_eq!(open.judge_candidate(&line("10.9.8.7", 50000)), Ok(()));
        assert_eq!(
            open.judge_candidate(&line("192.168.1.1", 50000)),
            Err(Refusal::Internal)
        );
        assert_eq!(
            open.judge_candidate(&line("0.0.0.0", 50000)),
            Err(Refusal::Never)
        );
    }

    #[test]
    fn the_gateways_own_ports_are_refused_even_where_allowed() {
        let open = policy(&["127.0.0.0/8"]);
        for (addr, port) in [
            ("127.0.0.1", 5060),
            ("127.0.0.1", 8443),
            ("127.0.0.1", 3478),
            ("93.184.216.10", 5060),
            ("93.184.216.10", 25000),
            ("::ffff:93.184.216.10", 5060),
        ] {
            assert_eq!(
                open.judge(SocketAddr::new(addr.parse().expect("ip"), port)),
                Err(Refusal::Gateway),
                "{addr}:{port}"
            );
        }
        // On loopback the RTP range may be a local browser's own port.
        assert_eq!(open.judge("127.0.0.1:20002".parse().expect("addr")), Ok(()));
        // The TURN relay range on our public address: a relay-only browser.
        assert_eq!(
            open.judge("93.184.216.10:50002".parse().expect("addr")),
            Ok(())
        );
        assert_eq!(open.judge("127.0.0.1:50002".parse().expect("addr")), Ok(()));
    }

    #[test]
    fn sdp_candidates_are_filtered_and_other_lines_kept() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n\
                   a=candidate:1 1 udp 2122260223 10.0.0.5 50000 typ host\r\n\
                   a=candidate:2 1 udp 1686052607 93.184.216.34 50001 typ srflx raddr 10.0.0.5 rport 50000\r\n\
                   a=candidate:3 1 udp 2122260223 abc.local 50002 typ host\r\n\
                   a=end-of-candidates\r\n";
        let out = policy(&[]).filter_sdp(sdp);
        assert_eq!(
            out,
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n\
             a=candidate:2 1 udp 1686052607 93.184.216.34 50001 typ srflx raddr 10.0.0.5 rport 50000\r\n\
             a=end-of-candidates\r\n"
        );
    }

    #[test]
    fn candidate_addresses_parse() {
        assert_eq!(
            candidate_address("a=candidate:1 1 UDP 1 [::1] 5"),
            None,
            "brackets are not SDP syntax"
        );
        assert_eq!(
            candidate_address("candidate:1 1 udp 1 ::1 5 typ host"),
            Some("[::1]:5".parse().expect("addr"))
        );
        assert_eq!(candidate_address("candidate:1 1 udp"), None);
        assert_eq!(
            candidate_address("candidate:1 1 udp 1 1.2.3.4 99999 typ host"),
            None
        );
    }
}
