//! Trunks located by DNS SRV (RFC 3263 §4.2) against a real DNS server: dnsmasq
//! (Debian `dnsmasq-base`) started by the test on a loopback port with the records
//! each test needs, and `sip.dns_servers` pointing at it. A browser call to a trunk
//! whose first SRV target answers 503 reaches the second target; a name without SRV
//! falls back to its A record on 5060; a missing name and an SRV "." target give
//! errors that say so; a registration whose first SRV target refuses the connection
//! registers with the second (a SIPp registrar over TCP); inbound admission follows
//! a trunk's address when its DNS record changes.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use callbridge::sip::dns::DnsError;
use callbridge::sip::{
    Credentials, IncomingCall, SipEndpoint, SipEndpointConfig, SipError, Transport, TrunkSettings,
};
use common::browser::{Browser, BrowserOptions};
use common::call::TestCall;
use common::gateway::{TestGateway, test_config};
use common::sipp::{Sipp, SippTransport, eventually};

/// A dnsmasq serving only the records given, on 127.0.0.1; killed on drop.
struct Dnsmasq {
    addr: SocketAddr,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// Starts dnsmasq with extra record options (`--srv-host=…`, `--host-record=…`);
    /// every other name under `.test` is NXDOMAIN, nothing is forwarded.
    fn start(records: &[String]) -> Dnsmasq {
        let port = common::ports::port();
        Self::start_on(port, records)
    }

    /// Like [`Dnsmasq::start`] on a given port (to change the records by restarting).
    fn start_on(port: u16, records: &[String]) -> Dnsmasq {
        let binary = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("dnsmasq not found: install Debian's dnsmasq-base (scripts/deps.sh does)");
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("dnsmasq.log");
        let child = Command::new(binary)
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--local=/test/",
                "--pid-file=",
                "--log-queries",
                "--log-facility=-",
                &format!("--port={port}"),
            ])
            .args(records)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn dnsmasq");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut dns = Dnsmasq {
            addr,
            child,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while UdpSocket::bind(addr).is_ok() {
            if let Ok(Some(status)) = dns.child.try_wait() {
                panic!("dnsmasq exited ({status}): {}", dns.log());
            }
            assert!(Instant::now() < deadline, "dnsmasq did not bind {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        dns
    }

    /// `_sip._{proto}.{domain}` with two targets on 127.0.0.1: `a.{domain}` on
    /// port `first` (priority 10, tried first) and `b.{domain}` on `second`.
    fn two_targets(proto: &str, domain: &str, first: u16, second: u16) -> Dnsmasq {
        Self::start(&[
            format!("--srv-host=_sip._{proto}.{domain},a.{domain},{first},10,10"),
            format!("--srv-host=_sip._{proto}.{domain},b.{domain},{second},20,10"),
            format!("--host-record=a.{domain},127.0.0.1"),
            format!("--host-record=b.{domain},127.0.0.1"),
        ])
    }

    /// What dnsmasq logged (queries and answers).
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback TCP port nobody listens on: connections are refused at once.
fn closed_tcp_port() -> u16 {
    common::ports::port()
}

#[tokio::test]
async fn a_503_from_the_first_srv_target_fails_over_to_the_second() {
    let mut down = Sipp::uas(Some(&Sipp::scenario("trunk_503.xml")), &[]);
    let mut up = Sipp::uas(
        None,
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    // Priority 10 (tried first) answers 503; priority 20 answers the call.
    let dns = Dnsmasq::two_targets("udp", "carrier.test", down.addr.port(), up.addr.port());
    let mut config = test_config(Some(down.addr));
    config.sip.trunks[0].address = "carrier.test".into();
    config.sip.dns_servers = vec![dns.addr];
    let gw = TestGateway::start(config).await;
    let (mut ws, _) = gw.connect_as("sara", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "srv1", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    let first = down.wait(Duration::from_secs(20)).await;
    first.assert_one_success();
    // The Request-URI names the domain, not the SRV target (RFC 3263 §4).
    assert!(
        first
            .messages
            .contains("INVITE sip:+15551234567@carrier.test SIP/2.0"),
        "{}",
        first.messages
    );
    assert!(browser.wait_connected(Duration::from_secs(10)).await);
    let _ = browser.start_sending_tone(25).await;
    assert!(
        browser.wait_received(20, Duration::from_secs(10)).await,
        "audio through the second SRV target"
    );
    call.hangup(&mut ws).await;
    assert_eq!(call.until(&mut ws, &["ended"]).await["reason"], "hangup");
    up.wait(Duration::from_secs(20)).await.assert_one_success();
    assert!(
        dns.log().contains("query[SRV] _sip._udp.carrier.test"),
        "{}",
        dns.log()
    );
    browser.close().await;
    gw.stop().await;
}

/// An endpoint resolving through `dns`.
async fn endpoint_using(dns: &Dnsmasq) -> std::sync::Arc<SipEndpoint> {
    SipEndpoint::bind(SipEndpointConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        dns_servers: vec![dns.addr],
        ..SipEndpointConfig::default()
    })
    .await
    .expect("bind")
}

fn srv_trunk(host: &str, transport: Transport) -> TrunkSettings {
    TrunkSettings {
        name: "srv".into(),
        host: host.into(),
        port: if transport == Transport::Tls {
            5061
        } else {
            5060
        },
        srv: true,
        transport,
        ..TrunkSettings::default()
    }
}

#[tokio::test]
async fn srv_per_transport_a_record_fallback_and_clear_errors() {
    let dns = Dnsmasq::start(&[
        "--srv-host=_sips._tcp.secure.test,edge.secure.test,5081,10,0".into(),
        "--host-record=edge.secure.test,127.0.0.2".into(),
        "--host-record=nosrv.test,127.0.0.3".into(),
        "--srv-host=_sip._udp.closed.test".into(),
        // Outside the local domain: SRV queries are REFUSED (no upstream), while
        // this A record is answered.
        "--host-record=web.other,127.0.0.4".into(),
    ]);
    let ep = endpoint_using(&dns).await;

    // TLS asks _sips._tcp and takes the target's address and port.
    let found = ep
        .locate(&srv_trunk("secure.test", Transport::Tls))
        .await
        .expect("SRV for TLS");
    assert_eq!(found, vec![SocketAddr::from(([127, 0, 0, 2], 5081))]);

    // No SRV records: the name's own A record on the default port.
    let found = ep
        .locate(&srv_trunk("nosrv.test", Transport::Udp))
        .await
        .expect("A fallback");
    assert_eq!(found, vec![SocketAddr::from(([127, 0, 0, 3], 5060))]);

    // A name that does not exist: an error naming it.
    match ep.locate(&srv_trunk("missing.test", Transport::Udp)).await {
        Err(SipError::Dns(DnsError::Resolve { name, .. })) => assert_eq!(name, "missing.test"),
        other => panic!("expected a resolve error, got {other:?}"),
    }

    // SRV target ".": the domain offers no SIP here.
    match ep.locate(&srv_trunk("closed.test", Transport::Udp)).await {
        Err(e @ SipError::Dns(DnsError::NotOffered { .. })) => {
            assert!(e.to_string().contains("_sip._udp.closed.test"), "{e}")
        }
        other => panic!("expected NotOffered, got {other:?}"),
    }
    // A failing DNS server is no "no SRV records": no fallback to the A record
    // (often a web server), an error instead.
    match ep.locate(&srv_trunk("web.other", Transport::Udp)).await {
        Err(SipError::Dns(DnsError::Resolve { name, .. })) => {
            assert_eq!(name, "_sip._udp.web.other.")
        }
        other => panic!("expected the SRV query's error, got {other:?}"),
    }
    let log = dns.log();
    assert!(log.contains("query[SRV] _sips._tcp.secure.test"), "{log}");
    ep.shutdown().await;
}

#[tokio::test]
async fn registration_moves_to_the_next_srv_target_when_the_first_refuses() {
    let mut registrar = Sipp::uas_on(
        SippTransport::Tcp,
        Some(&Sipp::scenario("registrar_401.xml")),
        &[],
    );
    // The first target's port: nothing listens (connection refused at once).
    let closed = closed_tcp_port();
    let dns = Dnsmasq::two_targets("tcp", "pbx.test", closed, registrar.addr.port());
    let ep = endpoint_using(&dns).await;
    let trunk = TrunkSettings {
        name: "pbx".into(),
        credentials: Some(Credentials {
            username: "alice".into(),
            password: "s3cret".into(),
        }),
        register: true,
        register_expires: Duration::from_secs(300),
        ..srv_trunk("pbx.test", Transport::Tcp)
    };
    ep.start_trunks(vec![trunk]).await.expect("trunks");
    // Refused, then 5 s of backoff, then the second target (401, 200).
    assert!(
        eventually(Duration::from_secs(20), || ep
            .trunk_status("pbx")
            .is_some_and(|s| s.registered == Some(true)))
        .await,
        "not registered: {:?}",
        ep.trunk_status("pbx")
    );
    let outcome = registrar.wait(Duration::from_secs(20)).await;
    outcome.assert_one_success();
    assert!(
        outcome.messages.contains("REGISTER sip:pbx.test SIP/2.0"),
        "{}",
        outcome.messages
    );
    ep.shutdown().await;
}

#[tokio::test]
async fn inbound_admission_follows_a_changed_dns_record() {
    // The trunk's name first points elsewhere: SIPp's INVITE from 127.0.0.1 is no
    // trunk's (403).
    let dns = Dnsmasq::start(&["--host-record=pbx.test,127.0.0.2".into()]);
    let port = dns.addr.port();
    let ep = SipEndpoint::bind(SipEndpointConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        dns_servers: vec![dns.addr],
        dns_refresh: Duration::from_millis(300),
        ..SipEndpointConfig::default()
    })
    .await
    .expect("bind");
    let mut calls = ep.take_incoming().expect("incoming");
    ep.start_trunks(vec![srv_trunk("pbx.test", Transport::Udp)])
        .await
        .expect("trunks");
    let scenario = Sipp::scenario("uac_refused.xml");
    // The first lookup runs in the background: wait for dnsmasq to have answered it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dns.log().contains("pbx.test is 127.0.0.2") {
        assert!(Instant::now() < deadline, "no lookup: {}", dns.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut sipp = Sipp::uac(&scenario, ep.local_addr(), "+15550001111", &[]);
    let refused = sipp.wait(Duration::from_secs(30)).await;
    assert!(
        refused.messages.contains("SIP/2.0 403"),
        "{}",
        refused.messages
    );

    // The record moves to 127.0.0.1: after a refresh the same caller is admitted.
    drop(dns);
    let dns = Dnsmasq::start_on(port, &["--host-record=pbx.test,127.0.0.1".into()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dns.log().contains("pbx.test is 127.0.0.1") {
        assert!(Instant::now() < deadline, "no refresh: {}", dns.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The new rule reaches the UA just after the lookup: a caller refused (403) in
    // between tries again, a bounded number of times.
    let mut attempts = 0;
    let (call, mut sipp): (IncomingCall, Sipp) = loop {
        attempts += 1;
        let mut sipp = Sipp::uac(&scenario, ep.local_addr(), "+15550001111", &[]);
        match tokio::time::timeout(Duration::from_secs(3), calls.recv()).await {
            Ok(Some(call)) => break (call, sipp),
            Ok(None) => panic!("incoming stream ended"),
            Err(_) => {
                let refused = sipp.wait(Duration::from_secs(30)).await;
                assert!(
                    refused.messages.contains("SIP/2.0 403"),
                    "{}",
                    refused.messages
                );
                assert!(attempts < 10, "still refused after the DNS change");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    assert_eq!(call.trunk.as_deref(), Some("srv"));
    call.handle.reject(603, "Decline").expect("reject");
    let declined = sipp.wait(Duration::from_secs(30)).await;
    assert!(
        declined.messages.contains("SIP/2.0 603"),
        "{}",
        declined.messages
    );
    ep.shutdown().await;
}

#[tokio::test]
async fn calls_try_an_address_that_fails_its_pings_last() {
    let mut pbx = Sipp::uas_on(
        SippTransport::Tcp,
        Some(&Sipp::scenario("uas_options_loop.xml")),
        &[],
    );
    let closed = closed_tcp_port();
    let dns = Dnsmasq::two_targets("tcp", "health.test", closed, pbx.addr.port());
    let ep = endpoint_using(&dns).await;
    let trunk = TrunkSettings {
        name: "health".into(),
        options_interval: Some(Duration::from_millis(300)),
        ..srv_trunk("health.test", Transport::Tcp)
    };
    let dead = SocketAddr::from(([127, 0, 0, 1], closed));
    let alive = SocketAddr::from(([127, 0, 0, 1], pbx.addr.port()));
    // SRV order alone puts the dead address first.
    assert_eq!(ep.locate(&trunk).await.expect("located"), vec![dead, alive]);
    ep.start_trunks(vec![trunk.clone()]).await.expect("trunks");
    // Its ping is refused, the next address answers: the trunk stays usable and
    // the refused address is known.
    assert!(
        eventually(Duration::from_secs(10), || ep
            .trunk_status("health")
            .is_some_and(|s| s.failing == vec![dead] && s.reachable))
        .await,
        "{:?}",
        ep.trunk_status("health")
    );
    assert!(ep.trunk_usable("health"));
    assert_eq!(ep.locate(&trunk).await.expect("located"), vec![alive, dead]);
    ep.shutdown().await;
    pbx.kill();
}
