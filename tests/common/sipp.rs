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

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A running SIPp.
pub struct Sipp {
    /// Where SIPp listens (UDP).
    pub addr: SocketAddr,
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

/// A free UDP port on 127.0.0.1 (bound then released; SIPp takes it right after).
fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind probe socket");
    socket.local_addr().expect("probe addr").port()
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
        let bin = sipp_binary();
        let dir = temp_dir();
        let port = free_udp_port();
        let mut cmd = Command::new(bin);
        match scenario {
            Some(path) => cmd.arg("-sf").arg(path),
            None => cmd.args(["-sn", "uas"]),
        };
        cmd.args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            "1",
            "-nostdin",
        ])
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
        let mut sipp = Sipp {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: Some(child),
            dir,
        };
        sipp.wait_bound();
        sipp
    }

    /// Blocks (briefly) until SIPp holds its port, or panics with its stderr.
    fn wait_bound(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if UdpSocket::bind(self.addr).is_err() {
                return; // taken: SIPp is listening
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
