//! The browsers' load balancer in front of two instances, all real: HAProxy 2.6
//! running `deploy/haproxy/haproxy.cfg` (TLS, `/readyz` health checks every second,
//! leastconn) in front of two callbridge processes, and the embeddable client
//! (`web-demo/callbridge.js`, in Node) connected through it. The instance holding the
//! client drains with a call up: the client is told to move (`goaway`) and comes
//! back as a new session on the other instance; HAProxy marks the draining one down
//! on its `/readyz` 503, and every new session through the balancer lands on the
//! other one (the draining one would refuse it with 503), while the call on the
//! draining instance goes on.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::gateway::{WsClient, token};
use common::http::{admin_get, admin_post, sample};
use common::process::{GatewayProcess, TrunkGateway, answered_call, trunk_config, write_config};
use common::sipp::Sipp;
use serde_json::json;

async fn instance(trunk: SocketAddr) -> (GatewayProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = TrunkGateway {
        sip: SocketAddr::from(([127, 0, 0, 1], 0)),
        trunk,
        drain_timeout: "60s",
        max_calls: None,
    };
    let config = write_config(dir.path(), &trunk_config(dir.path(), &gw));
    (GatewayProcess::start(&config, dir.path()).await, dir)
}

/// A HAProxy in the foreground, in its own process group (killed on drop), logging
/// to a file.
struct Haproxy {
    child: Child,
    log: PathBuf,
    addr: SocketAddr,
}

impl Haproxy {
    fn start(dir: &Path, env: &[(&str, String)], addr: SocketAddr) -> Haproxy {
        use std::os::unix::process::CommandExt;
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy/haproxy.cfg");
        let log = dir.join("haproxy.log");
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new("/usr/sbin/haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawn haproxy (apt-get install haproxy; scripts/deps.sh does)");
        Haproxy { child, log, addr }
    }

    /// Waits (bounded) until HAProxy accepts connections.
    async fn until_listening(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("HAProxy exited ({status}):\n{}", self.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "HAProxy not listening on {}:\n{}",
                self.addr,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the log has `needle`.
    async fn until_logged(&mut self, needle: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !self.log().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("HAProxy exited ({status}):\n{}", self.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "HAProxy never logged {needle:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// `callbridge_ws_sessions` of an instance.
async fn sessions(admin: SocketAddr) -> i64 {
    let reply = admin_get(admin, "/metrics").await;
    sample(
        &String::from_utf8_lossy(&reply.body),
        "callbridge_ws_sessions",
    )
    .expect("callbridge_ws_sessions") as i64
}

/// `web-demo/callbridge.js` in Node (`tests/browser/goaway_move.mjs`), connected to
/// `url`; its `@@` lines come on the returned channel. Dropping the child kills it.
fn real_client(
    url: &str,
    token: &str,
    ca: &Path,
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    use tokio::io::AsyncBufReadExt;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/goaway_move.mjs");
    let mut child = tokio::process::Command::new("node")
        .arg("--experimental-websocket")
        .arg(script)
        .args([url, token])
        .env("NODE_EXTRA_CA_CERTS", ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node (installed by scripts/deps.sh for the browser tests)");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("@@") {
                let _ = tx.send(line);
            }
        }
    });
    (child, rx)
}

/// The next `@@` line, which must start with `marker` (bounded wait).
async fn expect_marker(
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    marker: &str,
) -> String {
    let line = tokio::time::timeout(Duration::from_secs(60), lines.recv())
        .await
        .unwrap_or_else(|_| panic!("no {marker} from the client within 60 s"))
        .unwrap_or_else(|| panic!("the client exited before {marker}"));
    assert!(line.starts_with(marker), "expected {marker}, got {line}");
    line
}

#[tokio::test]
async fn haproxy_stops_sending_new_sessions_to_a_draining_instance() {
    let mut trunk = Sipp::uas(
        None,
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let (a, _a_dir) = instance(trunk.addr).await;
    let (b, _b_dir) = instance(trunk.addr).await;
    let cert = common::tls::test_cert();
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = dir.path().join("lb.pem");
    let bundle = [
        std::fs::read(&cert.ca_path).expect("cert"),
        std::fs::read(&cert.key_path).expect("key"),
    ]
    .concat();
    std::fs::write(&pem, bundle).expect("pem");
    let lb = SocketAddr::from(([127, 0, 0, 1], common::ports::port()));
    let mut haproxy = Haproxy::start(
        dir.path(),
        &[
            ("CALLBRIDGE_LB_BIND", lb.to_string()),
            ("CALLBRIDGE_LB_CERT", pem.display().to_string()),
            ("CALLBRIDGE_1", a.http_addr.to_string()),
            ("CALLBRIDGE_2", b.http_addr.to_string()),
        ],
        lb,
    );
    haproxy.until_listening().await;

    // The real client, over WSS through the balancer (it trusts the test CA).
    let (mut client, mut markers) = real_client(
        &format!("wss://{lb}/ws"),
        &token("carol", "calls:outbound calls:inbound", 3600),
        &cert.ca_path,
    );
    expect_marker(&mut markers, "@@ready").await;
    let mut gateways = [a, b];
    let admins = [gateways[0].admin(), gateways[1].admin()];
    // Drain the instance that holds it (x); the other (y) should get it back.
    let x = if sessions(admins[0]).await == 1 { 0 } else { 1 };
    let y = 1 - x;
    assert_eq!(
        sessions(admins[x]).await,
        1,
        "the client's session is on one instance"
    );
    assert_eq!(sessions(admins[y]).await, 0);

    // A call on x (directly) keeps it running through its drain.
    let (mut ws, mut call, browser) = answered_call(&gateways[x]).await;
    assert_eq!(admin_post(admins[x], "/v1/drain", None).await.status, 202);

    // The client is told to move and comes back as a new session on y.
    expect_marker(&mut markers, "@@goaway").await;
    expect_marker(&mut markers, "@@moved").await;
    assert_eq!(
        sessions(admins[y]).await,
        1,
        "the client moved to the other instance"
    );
    haproxy
        .until_logged(&format!("callbridge/cb{} is DOWN", x + 1))
        .await;
    assert!(
        haproxy.log().contains("503"),
        "marked down on /readyz 503:\n{}",
        haproxy.log()
    );

    // Every new session through the balancer lands on y (x would refuse it: 503).
    // Browsers speak WSS to HAProxy: a TLS client relay verifying its certificate.
    let wss = common::tls::tls_originator(&cert.ca_path, haproxy.addr).await;
    let lb_url = format!("ws://{wss}/ws");
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut session = WsClient::connect(&lb_url).await;
        session
            .send(json!({"type": "auth", "token": token("bob", "calls:outbound", 3600)}))
            .await;
        let ready = session.recv().await;
        assert_eq!(ready["type"], "ready", "{ready}");
        open.push(session);
    }
    assert_eq!(sessions(admins[y]).await, 5);
    assert!(
        !haproxy
            .log()
            .contains(&format!("callbridge/cb{} is DOWN", y + 1))
    );

    // x's call went on through the drain; x exits 0 once it ends.
    assert!(
        gateways[x].running(),
        "x keeps running while its call is up"
    );
    call.hangup(&mut ws).await;
    call.until(&mut ws, &["ended"]).await;
    let status = gateways[x].wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "x exits 0 after the drain: {status:?}");
    trunk
        .wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
    drop(open);
    drop(client.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), client.wait()).await;
}
