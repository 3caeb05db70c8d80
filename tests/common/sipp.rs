//! Runs a real SIPp (Debian `sip-tester`) as a child process on 127.0.0.1 with an
//! ephemeral port. The child is killed when the [`Sipp`] is dropped, so a failing test
//! leaves no process behind. Logs and statistics go to a private temporary directory,
//! kept (and printed) when the call did not succeed.
//!
//! ```ignore
//! let mut sipp = Sipp::uas(Some(&Sipp::scenario("uas_busy.xml")), &[]);
//! // ... send an INVITE to sipp.addr ...
//! let outcome = sipp.wait(Duration::from_secs(20)).await;
//! outcome.assert_success();
//! ```

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;

use callbridge::sip::{InviteRequest, SipCallEvent, SipEndpoint, SipEndpointConfig, TimerConfig};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

/// SIPp's transport (`-t u1` or `-t t1`; this SIPp build has no TLS, see
/// `tests/sip_transport.rs` for the TLS relay in front of a TCP SIPp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SippTransport {
    /// UDP, one socket.
    Udp,
    /// TCP, one connection.
    Tcp,
}

/// A running SIPp.
pub struct Sipp {
    /// Where SIPp listens.
    pub addr: SocketAddr,
    /// Its transport.
    pub transport: SippTransport,
    /// The SIPp process, killed on drop.
    child: Option<Child>,
    /// Private directory with SIPp's logs, statistics and stdout.
    pub dir: PathBuf,
}

/// What SIPp reported when it exited.
#[derive(Debug)]
pub struct SippOutcome {
    /// Exit status (0: every call succeeded, 1: some failed, 99: no call processed).
    pub status: ExitStatus,
    /// `SuccessfulCall(C)` from the `-trace_stat` CSV.
    pub successful: u64,
    /// `FailedCall(C)` from the `-trace_stat` CSV.
    pub failed: u64,
    /// The `-trace_err` log (unexpected messages), if any.
    pub errors: String,
    /// The `-trace_msg` log (every message SIPp sent and received).
    pub messages: String,
}

impl SippOutcome {
    /// Panics with SIPp's logs unless exactly one call succeeded and SIPp exited 0.
    pub fn assert_one_success(&self) {
        assert!(
            self.status.success() && self.successful == 1 && self.failed == 0,
            "SIPp: {:?}, successful {}, failed {}\n--- errors ---\n{}\n--- messages ---\n{}",
            self.status,
            self.successful,
            self.failed,
            self.errors,
            self.messages
        );
    }
}

/// The SIPp binary: `$SIPP` if set, else `sipp` on the PATH, else `/usr/bin/sipp`.
/// Panics when none exists: CI installs `sip-tester`, so a missing SIPp is a failure.
pub fn sipp_binary() -> PathBuf {
    let on_path = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("sipp"))
                .find(|p| p.is_file())
        })
    };
    let bin = std::env::var_os("SIPP")
        .map(PathBuf::from)
        .or_else(on_path)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/sipp"));
    assert!(
        bin.is_file(),
        "SIPp not found at {} (from $SIPP, else `sipp` on PATH, else /usr/bin/sipp): \
         install it with `apt-get install sip-tester`",
        bin.display()
    );
    bin
}

/// A port on 127.0.0.1 for SIPp, reserved by the tests' port allocator.
fn free_port() -> u16 {
    super::ports::port()
}

/// A new private temporary directory.
fn temp_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "callbridge-sipp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create SIPp temp dir");
    dir
}

impl Sipp {
    /// Path of a scenario in `tests/sipp/`.
    pub fn scenario(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/sipp")
            .join(name)
    }

    /// Starts SIPp as a UAS for one call (`-m 1`) with `scenario` (built-in `-sn uas`
    /// when `None`), and waits until its port is bound.
    pub fn uas(scenario: Option<&Path>, extra_args: &[&str]) -> Sipp {
        Self::uas_on(SippTransport::Udp, scenario, extra_args)
    }

    /// Like [`Sipp::uas`] on the given transport.
    pub fn uas_on(transport: SippTransport, scenario: Option<&Path>, extra_args: &[&str]) -> Sipp {
        Self::uas_at(transport, free_port(), scenario, extra_args)
    }

    /// Like [`Sipp::uas_on`] on a given port (e.g. to bring a killed trunk back).
    pub fn uas_at(
        transport: SippTransport,
        port: u16,
        scenario: Option<&Path>,
        extra_args: &[&str],
    ) -> Sipp {
        let mut cmd = Command::new(sipp_binary());
        match scenario {
            Some(path) => cmd.arg("-sf").arg(path),
            None => cmd.args(["-sn", "uas"]),
        };
        let mut sipp = Self::spawn(cmd, transport, port, extra_args);
        sipp.wait_bound();
        sipp
    }

    /// Starts SIPp as a UAC over UDP placing one call with `scenario` to `target`,
    /// `service` being the Request-URI user (`-s`), from 127.0.0.1 on a free port.
    /// It sends at once, so the endpoint must be ready.
    pub fn uac(scenario: &Path, target: SocketAddr, service: &str, extra_args: &[&str]) -> Sipp {
        Self::uac_on(SippTransport::Udp, scenario, target, service, extra_args)
    }

    /// Like [`Sipp::uac`] on the given transport (TCP: one connection to `target`).
    pub fn uac_on(
        transport: SippTransport,
        scenario: &Path,
        target: SocketAddr,
        service: &str,
        extra_args: &[&str],
    ) -> Sipp {
        let local = IpAddr::from([127, 0, 0, 1]);
        Self::uac_from(local, transport, scenario, target, service, extra_args)
    }

    /// Like [`Sipp::uac_on`] from another local address (`127.0.0.0/8` is all
    /// loopback on Linux: a trunk at 127.0.0.2 beside a flood from 127.0.0.1).
    pub fn uac_from(
        local: IpAddr,
        transport: SippTransport,
        scenario: &Path,
        target: SocketAddr,
        service: &str,
        extra_args: &[&str],
    ) -> Sipp {
        let mut cmd = Command::new(sipp_binary());
        cmd.arg("-sf")
            .arg(scenario)
            .args(["-s", service])
            .arg(target.to_string());
        let local = local.to_string();
        let args: Vec<&str> = ["-i", local.as_str()]
            .into_iter()
            .chain(extra_args.iter().copied())
            .collect();
        Self::spawn(cmd, transport, free_port(), &args)
    }

    /// Runs `cmd` (SIPp with its mode arguments) on 127.0.0.1:`port` for one call
    /// (another loopback address when `extra_args` has `-i`, e.g. `127.0.0.2` for a
    /// peer that must look like another host).
    fn spawn(mut cmd: Command, transport: SippTransport, port: u16, extra_args: &[&str]) -> Sipp {
        let dir = temp_dir();
        let ip: std::net::IpAddr = match extra_args.iter().position(|a| *a == "-i") {
            Some(i) => extra_args
                .get(i + 1)
                .and_then(|ip| ip.parse().ok())
                .expect("-i takes an IP address"),
            None => {
                cmd.args(["-i", "127.0.0.1"]);
                std::net::IpAddr::from([127, 0, 0, 1])
            }
        };
        if !extra_args.contains(&"-mp") {
            // SIPp binds its media sockets even when no scenario uses them (default
            // 6000, which concurrent SIPps would share): the upper half of its block.
            cmd.args(["-mp", &(port + super::ports::BLOCK / 2).to_string()]);
        }
        cmd.args([
            "-t",
            if transport == SippTransport::Tcp {
                "t1"
            } else {
                "u1"
            },
        ]);
        cmd.args(["-p", &port.to_string(), "-m", "1", "-nostdin"])
            .args(["-timeout", "60s", "-timeout_error"])
            .args(["-trace_err", "-trace_stat", "-trace_msg", "-trace_screen"])
            .arg("-error_file")
            .arg(dir.join("errors.log"))
            .arg("-stf")
            .arg(dir.join("stats.csv"))
            .arg("-message_file")
            .arg(dir.join("messages.log"))
            .arg("-screen_file")
            .arg(dir.join("screen.log"))
            .args(extra_args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout.log")).expect("stdout log"))
            .stderr(std::fs::File::create(dir.join("stderr.log")).expect("stderr log"));
        let child = cmd.spawn().expect("spawn SIPp");
        Sipp {
            addr: SocketAddr::new(ip, port),
            transport,
            child: Some(child),
            dir,
        }
    }

    /// Blocks (briefly) until SIPp holds its port, or panics with its stderr.
    fn wait_bound(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let taken = match self.transport {
                SippTransport::Udp => UdpSocket::bind(self.addr).is_err(),
                SippTransport::Tcp => TcpListener::bind(self.addr).is_err(),
            };
            if taken {
                return; // SIPp is listening
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("SIPp exited early ({status}): {}", self.read("stderr.log"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("SIPp did not bind {} within 10 s", self.addr);
    }

    /// Waits for SIPp to exit (killing it after `timeout`) and reads its statistics.
    pub async fn wait(&mut self, timeout: Duration) -> SippOutcome {
        let deadline = Instant::now() + timeout;
        let mut child = self.child.take().expect("SIPp already waited for");
        let status = loop {
            if let Some(status) = child.try_wait().expect("SIPp try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let status = child.wait().expect("SIPp wait");
                eprintln!(
                    "SIPp killed after {timeout:?}; logs in {}",
                    self.dir.display()
                );
                break status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (successful, failed) = parse_stats(&self.read("stats.csv"));
        SippOutcome {
            status,
            successful,
            failed,
            errors: self.read("errors.log"),
            messages: self.read("messages.log"),
        }
    }

    /// Kills SIPp now (a peer that stops answering).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A file of SIPp's directory, or an empty string.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("SIPp logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Last row's `SuccessfulCall(C)` and `FailedCall(C)` of a SIPp statistics CSV.
fn parse_stats(csv: &str) -> (u64, u64) {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return (0, 0);
    };
    let Some(last) = lines.next_back() else {
        return (0, 0);
    };
    let names: Vec<&str> = header.split(';').collect();
    let values: Vec<&str> = last.split(';').collect();
    let get = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| values.get(i))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (get("SuccessfulCall(C)"), get("FailedCall(C)"))
}

// ---- Helpers for driving a `SipEndpoint` against SIPp ----

/// How long a test waits for one SIP event.
pub const EVENT_WAIT: Duration = Duration::from_secs(15);

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// An endpoint on an ephemeral loopback port with default timers.
pub async fn endpoint() -> Arc<SipEndpoint> {
    endpoint_with(TimerConfig::default()).await
}

/// An endpoint on an ephemeral loopback port with the given timers.
pub async fn endpoint_with(timers: TimerConfig) -> Arc<SipEndpoint> {
    init_tracing();
    SipEndpoint::bind(SipEndpointConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        user_agent: "callbridge-test".into(),
        timers,
        ..SipEndpointConfig::default()
    })
    .await
    .expect("bind endpoint")
}

/// An SDP offer for tests (PCMU on port 40000).
pub const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=sendrecv\r\n";

/// An INVITE request to `target` with [`OFFER`].
pub fn invite_request(target: SocketAddr) -> InviteRequest {
    InviteRequest {
        target,
        target_host: "127.0.0.1".into(),
        to_user: "+15551234567".into(),
        from_user: "alice".into(),
        sdp: OFFER.into(),
        correlation_id: "test-corr-1".into(),
        ..InviteRequest::default()
    }
}

/// The next event, or a panic after [`EVENT_WAIT`].
pub async fn next_event(events: &mut UnboundedReceiver<SipCallEvent>) -> SipCallEvent {
    tokio::time::timeout(EVENT_WAIT, events.recv())
        .await
        .expect("timed out waiting for a SIP event")
        .expect("event stream ended")
}

/// The next event that is not `Ringing`/`Progress`.
pub async fn next_final_or_answer(events: &mut UnboundedReceiver<SipCallEvent>) -> SipCallEvent {
    loop {
        match next_event(events).await {
            SipCallEvent::Ringing { .. } | SipCallEvent::Progress { .. } => continue,
            other => return other,
        }
    }
}

/// Polls `check` every 50 ms until it is true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// How many messages `ep` counted in `direction` for `method` with `status` (a bounded
/// label: `"200"`, `"4xx"`, or `"none"` for requests): the event a test waits for when
/// a peer's answer has no other observable effect (an INFO's 200, say).
pub fn counted(
    ep: &SipEndpoint,
    direction: callbridge::sip::Direction,
    method: &str,
    status: &str,
) -> u64 {
    ep.message_counts()
        .iter()
        .filter(|c| c.direction == direction && c.method == method && c.status == status)
        .map(|c| c.count)
        .sum()
}
