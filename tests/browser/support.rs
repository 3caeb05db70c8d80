//! Support for the Chromium end-to-end tests (`tests/browser_demo.rs`): finding
//! Chromium, node and playwright-core, a gateway config that serves the demo, running
//! one `tests/browser/e2e_*.mjs` script with a deadline (its `@@marker` lines reach
//! the test as they come), a SIPp UAC for inbound calls, and a TCP proxy whose
//! connections the test can cut.
//!
//! Every child process is killed when its handle is dropped, so a failing test
//! leaves nothing behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callbridge::config::Config;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};

use crate::common::gateway::test_config;

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What a browser test needs on the machine.
pub struct BrowserTools {
    /// Debian's Chromium (`$CHROMIUM`, default `/usr/bin/chromium`).
    pub chromium: PathBuf,
    /// `node` (20 or later).
    pub node: PathBuf,
}

/// Whether this run is CI (`CI` set to anything but `false`/`0`/empty).
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Finds Chromium, node and playwright-core. When one is missing the test fails in
/// CI (they are installed by `scripts/deps.sh`) and is skipped, with a message,
/// elsewhere.
pub fn require_browser() -> Option<BrowserTools> {
    match find_tools() {
        Ok(tools) => Some(tools),
        Err(missing) if in_ci() => panic!(
            "browser test prerequisites missing under CI: {missing}. \
             scripts/deps.sh installs Debian's chromium and runs `npm ci` in tests/browser"
        ),
        Err(missing) => {
            eprintln!("SKIPPED (not CI): {missing}; run scripts/deps.sh to install them");
            None
        }
    }
}

fn find_tools() -> Result<BrowserTools, String> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.is_file() {
        return Err(format!(
            "no Chromium at {} (apt-get install chromium, or set $CHROMIUM)",
            chromium.display()
        ));
    }
    let node = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("node"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| "no `node` on PATH".to_string())?;
    let playwright = repo().join("tests/browser/node_modules/playwright-core/package.json");
    if !playwright.is_file() {
        return Err(format!(
            "playwright-core is not installed ({} missing; run `npm ci` in tests/browser)",
            playwright.display()
        ));
    }
    Ok(BrowserTools { chromium, node })
}

/// Browser tests run one at a time: each Chromium wants a core of its own.
pub async fn one_browser_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The test gateway config with the demo (and dev tokens) served from `web-demo/`.
pub fn demo_config(trunk: Option<SocketAddr>) -> Config {
    let mut config = test_config(trunk);
    config.demo.enabled = true;
    config.demo.dev_tokens = true;
    config.demo.dir = repo().join("web-demo");
    config
}

/// A fresh `test-output/browser/<name>` folder (screenshots, logs; not committed).
pub fn output_dir(name: &str) -> PathBuf {
    let dir = repo().join("test-output/browser").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test output folder");
    dir
}

/// A UDP port on 127.0.0.1 for a peer to bind (from the tests' port allocator).
pub fn free_udp_port() -> u16 {
    crate::common::ports::port()
}

/// A running `node tests/browser/<script>`.
pub struct NodeScript {
    /// The node process (killed on drop).
    child: Child,
    /// `@@marker` lines, as they are printed.
    markers: mpsc::UnboundedReceiver<String>,
    /// Everything the script printed, for failure messages.
    output: Arc<Mutex<Vec<String>>>,
    /// The readers of stdout and stderr.
    readers: Vec<JoinHandle<()>>,
    /// The script's output folder.
    pub out: PathBuf,
}

impl NodeScript {
    /// Starts `script` on the demo page at `url` (empty: the script serves the page
    /// itself), writing into `out`.
    pub fn start(
        tools: &BrowserTools,
        script: &str,
        url: &str,
        out: &Path,
        extra: &[&str],
    ) -> NodeScript {
        let mut command = Command::new(&tools.node);
        command.arg(script);
        if !url.is_empty() {
            command.arg("--url").arg(url);
        }
        let mut child = command
            .arg("--out")
            .arg(out)
            .arg("--chromium")
            .arg(&tools.chromium)
            .args(["--timeout-ms", "100000"])
            .args(extra)
            .current_dir(repo().join("tests/browser"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tx, markers) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        let readers = vec![
            tokio::spawn(read_lines(stdout, "", output.clone(), Some(tx))),
            tokio::spawn(read_lines(stderr, "stderr: ", output.clone(), None)),
        ];
        NodeScript {
            child,
            markers,
            output,
            readers,
            out: out.to_path_buf(),
        }
    }

    /// Waits for the line `@@name …`; returns what follows the name.
    pub async fn marker(&mut self, name: &str, timeout: Duration) -> String {
        let prefix = format!("@@{name}");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.markers.recv()).await {
                Ok(Some(line)) => {
                    if let Some(rest) = line.strip_prefix(&prefix)
                        && (rest.is_empty() || rest.starts_with(' '))
                    {
                        return rest.trim().to_string();
                    }
                }
                Ok(None) => panic!(
                    "the script ended before printing {prefix}:\n{}",
                    self.printed()
                ),
                Err(_) => panic!("no {prefix} within {timeout:?}:\n{}", self.printed()),
            }
        }
    }

    /// Waits for the script to exit (killing it after `timeout`) and panics, with its
    /// output, unless it exited 0.
    pub async fn assert_passes(mut self, timeout: Duration) {
        let status: Option<ExitStatus> =
            match tokio::time::timeout(timeout, self.child.wait()).await {
                Ok(status) => Some(status.expect("wait for node")),
                Err(_) => {
                    let _ = self.child.kill().await;
                    None
                }
            };
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        let output = self.printed();
        match status {
            Some(s) if s.success() => eprintln!("{output}"),
            Some(s) => panic!(
                "browser script failed ({s}); screenshots and console log in {}\n{output}",
                self.out.display()
            ),
            None => panic!(
                "browser script killed after {timeout:?}; output in {}\n{output}",
                self.out.display()
            ),
        }
    }

    fn printed(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }
}

async fn read_lines(
    stream: impl tokio::io::AsyncRead + Unpin,
    prefix: &'static str,
    output: Arc<Mutex<Vec<String>>>,
    markers: Option<mpsc::UnboundedSender<String>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(tx) = &markers
            && line.starts_with("@@")
        {
            let _ = tx.send(line.clone());
        }
        output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{prefix}{line}"));
    }
}

/// A TCP proxy in front of the gateway whose open connections the test can cut, as
/// a network failure or a restarted load balancer would; new connections still work.
pub struct DropProxy {
    /// Where the browser connects.
    pub addr: SocketAddr,
    /// The accept loop.
    accept: JoinHandle<()>,
    /// The connections being relayed.
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl DropProxy {
    /// Listens on 127.0.0.1 and relays every connection to `target`.
    pub async fn start(target: SocketAddr) -> DropProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let tracked = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tracked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(relay.abort_handle());
            }
        });
        DropProxy {
            addr,
            accept,
            connections,
        }
    }

    /// Cuts every open connection (both sockets close without a WebSocket close
    /// frame); returns how many there were.
    pub fn cut(&self) -> usize {
        let open: Vec<AbortHandle> =
            std::mem::take(&mut *self.connections.lock().unwrap_or_else(|p| p.into_inner()));
        let count = open.iter().filter(|h| !h.is_finished()).count();
        for handle in open {
            handle.abort();
        }
        count
    }
}

impl Drop for DropProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A SIPp UAC (`-sn uac`) that calls `service` at `target` once, holds the call for
/// `hold_ms` and hangs up; killed on drop.
pub struct SippUac {
    /// The SIPp process.
    child: Option<std::process::Child>,
    /// SIPp's logs.
    pub dir: tempfile::TempDir,
}

impl SippUac {
    /// Starts the call.
    pub fn call(target: SocketAddr, service: &str, hold_ms: u32) -> SippUac {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_udp_port();
        let child = std::process::Command::new(crate::common::sipp::sipp_binary())
            .args(["-sn", "uac", "-s", service, "-d", &hold_ms.to_string()])
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-mp", &free_udp_port().to_string(), "-rtp_echo"])
            .args(["-m", "1", "-nostdin", "-timeout", "60s", "-timeout_error"])
            .args(["-trace_err", "-trace_stat", "-trace_msg"])
            .arg("-error_file")
            .arg(dir.path().join("errors.log"))
            .arg("-stf")
            .arg(dir.path().join("stats.csv"))
            .arg("-message_file")
            .arg(dir.path().join("messages.log"))
            .arg(target.to_string())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn SIPp UAC");
        SippUac {
            child: Some(child),
            dir,
        }
    }

    /// Waits for SIPp to exit and panics with its logs unless the call succeeded.
    pub async fn assert_success(mut self, timeout: Duration) {
        let mut child = self.child.take().expect("not waited yet");
        let deadline = tokio::time::Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait SIPp") {
                break Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        assert!(
            status.is_some_and(|s| s.success()),
            "SIPp UAC: {status:?}\n--- errors ---\n{}\n--- messages ---\n{}",
            read("errors.log"),
            read("messages.log")
        );
    }
}

impl Drop for SippUac {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
