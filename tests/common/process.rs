//! The real `callbridge` binary as a child process, for the tests that need a
//! process boundary (SIGKILL and restart, SIGTERM and the exit code). The child is
//! killed on drop, so a failing test leaves nothing behind.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_callbridge");

/// A running gateway process.
pub struct GatewayProcess {
    /// The child (taken when it has exited).
    child: Option<Child>,
    /// The HTTP/WS listener, from the "listening" line.
    pub http_addr: SocketAddr,
    /// The admin listener (`/v1`, `/metrics`), from the "operator API" line.
    pub admin_addr: Option<SocketAddr>,
    /// Everything it printed on stdout so far.
    pub stdout: Arc<Mutex<Vec<String>>>,
}

/// Writes `toml` to `dir/callbridge.toml` and returns the path.
pub fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("callbridge.toml");
    std::fs::write(&path, toml).expect("write config");
    path
}

impl GatewayProcess {
    /// Starts `callbridge serve --config config` (logs to `dir/log-N.txt`) and waits
    /// for its listening line.
    pub async fn start(config: &Path, dir: &Path) -> GatewayProcess {
        Self::start_with_env(config, dir, &[]).await
    }

    /// Like [`GatewayProcess::start`] with more environment variables.
    pub async fn start_with_env(config: &Path, dir: &Path, env: &[(&str, &str)]) -> GatewayProcess {
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let log = std::fs::File::create(dir.join(format!("log-{n}.txt"))).expect("log file");
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("CALLBRIDGE_LOG", "callbridge=debug,info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn callbridge");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            let mut url = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(u) = line.split_whitespace().find(|w| w.starts_with("ws://")) {
                    url = Some(u.to_string());
                }
                // The line after "listening" names the admin listener (or its absence).
                let admin = if line.starts_with("operator API") {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix("http://"))
                        .and_then(|w| w.split('/').next())
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                        .map(Some)
                } else if line.starts_with("no admin listener") {
                    Some(None)
                } else {
                    None
                };
                if let Some(admin) = admin
                    && let Some(url) = url.take()
                {
                    let _ = tx.send((url, admin));
                }
                sink.lock().expect("lock").push(line);
            }
        });
        let mut process = GatewayProcess {
            child: Some(child),
            http_addr: "127.0.0.1:1".parse().expect("addr"),
            admin_addr: None,
            stdout: lines,
        };
        let url = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
            .await
            .expect("reader");
        let (url, admin) = match url {
            Ok(pair) => pair,
            Err(_) => {
                let status = process
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                let log =
                    std::fs::read_to_string(dir.join(format!("log-{n}.txt"))).unwrap_or_default();
                panic!("callbridge did not start ({status:?}); log:\n{log}");
            }
        };
        let host = url
            .trim_start_matches("ws://")
            .trim_end_matches("/ws")
            .to_string();
        process.http_addr = host.parse().expect("listen address");
        process.admin_addr = admin;
        process
    }

    /// The admin listener's address (panics when it is off).
    pub fn admin(&self) -> SocketAddr {
        self.admin_addr.expect("admin listener (admin.enabled)")
    }

    /// `ws://…/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http_addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("running")
    }

    /// Sends a signal by name (`TERM`, `KILL`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for the exit (panics after `within`).
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            let child = self.child.as_mut().expect("child");
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "callbridge did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL and reap.
    pub async fn kill(&mut self) {
        self.signal("KILL");
        let status = self.wait_exit(Duration::from_secs(10)).await;
        assert!(!status.success(), "SIGKILL ends the process abnormally");
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A gateway process whose one trunk is a SIPp at `trunk` (every `+1`…`+8` number
/// routed there), with an admin listener and loopback ICE candidates allowed.
pub struct TrunkGateway {
    /// `sip.listen` (`127.0.0.1:0` when the test needs not know it).
    pub sip: SocketAddr,
    /// The SIPp trunk.
    pub trunk: SocketAddr,
    /// `drain.timeout`.
    pub drain_timeout: &'static str,
    /// `server.max_calls`, if not the default.
    pub max_calls: Option<usize>,
}

/// The configuration text of `gw`, its database in `dir`.
pub fn trunk_config(dir: &Path, gw: &TrunkGateway) -> String {
    let max_calls = gw
        .max_calls
        .map(|n| format!("max_calls = {n}\n"))
        .unwrap_or_default();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{max_calls}[admin]
listen = "127.0.0.1:0"
[sip]
listen = "{sip}"
rtp_ports = "40000-49999"
[[sip.trunks]]
name = "sipp"
address = "{trunk}"
[[dialplan.routes]]
pattern = '^\+[1-8][0-9]*$'
trunks = ["sipp"]
[auth]
hs256_secret = "{secret}"
[storage]
path = "{db}"
[drain]
timeout = "{drain}"
[media]
allow_candidate_networks = ["127.0.0.0/8"]
"#,
        sip = gw.sip,
        trunk = gw.trunk,
        secret = super::gateway::SECRET,
        drain = gw.drain_timeout,
        db = dir.join("cb.db").display()
    )
}

/// Authenticates as alice on `gw` and places a call with a fresh test browser
/// until `answered`.
pub async fn answered_call(
    gw: &GatewayProcess,
) -> (
    super::gateway::WsClient,
    super::call::TestCall,
    Arc<super::browser::Browser>,
) {
    use super::gateway::{WsClient, token};
    let mut ws = WsClient::connect(&gw.ws_url()).await;
    ws.send(serde_json::json!({"type": "auth", "token": token("alice", "calls:outbound", 3600)}))
        .await;
    assert_eq!(ws.recv().await["type"], "ready");
    let browser = super::browser::Browser::new(super::browser::BrowserOptions::default()).await;
    let mut call =
        super::call::TestCall::place(&mut ws, browser.clone(), "c1", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    (ws, call, browser)
}
