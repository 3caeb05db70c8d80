//! The browsers' load balancer in front of two instances, all real: HAProxy 2.6
//! running `deploy/haproxy/haproxy.cfg` (TLS, `/readyz` health checks every second,
//! leastconn) in front of two callbridge processes. One instance drains with a call
//! up: HAProxy marks it down on its `/readyz` 503, and every new session through the
//! balancer lands on the other instance (the draining one would refuse it with 503),
//! while the call on the draining instance goes on.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::browser::{Browser, BrowserOptions};
use common::call::TestCall;
use common::gateway::{SECRET, WsClient, token};
use common::http::{admin_get, admin_post};
use common::process::{GatewayProcess, write_config};
use common::sipp::Sipp;
use serde_json::json;

fn config_text(dir: &Path, trunk: SocketAddr) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[sip]
listen = "127.0.0.1:0"
rtp_ports = "40000-49999"
[[sip.trunks]]
name = "sipp"
address = "{trunk}"
[[dialplan.routes]]
pattern = '^\+[1-8][0-9]*$'
trunks = ["sipp"]
[auth]
hs256_secret = "{SECRET}"
[storage]
path = "{db}"
[drain]
timeout = "60s"
[media]
allow_candidate_networks = ["127.0.0.0/8"]
"#,
        db = dir.join("cb.db").display()
    )
}

async fn instance(trunk: SocketAddr) -> (GatewayProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &config_text(dir.path(), trunk));
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
    String::from_utf8_lossy(&reply.body)
        .lines()
        .find_map(|l| l.strip_prefix("callbridge_ws_sessions "))
        .and_then(|v| v.trim().parse().ok())
        .expect("callbridge_ws_sessions")
}

#[tokio::test]
async fn haproxy_stops_sending_new_sessions_to_a_draining_instance() {
    let mut trunk = Sipp::uas(
        None,
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let (mut a, _a_dir) = instance(trunk.addr).await;
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
    // Browsers speak WSS to HAProxy: a TLS client relay verifying its certificate.
    let wss = common::tls::tls_originator(&cert.ca_path, haproxy.addr).await;
    let lb_url = format!("ws://{wss}/ws");
    let connect = || async {
        let mut ws = WsClient::connect(&lb_url).await;
        ws.send(json!({"type": "auth", "token": token("bob", "calls:outbound", 3600)}))
            .await;
        let ready = ws.recv().await;
        assert_eq!(ready["type"], "ready", "{ready}");
        ws
    };
    // Through the balancer before the drain: a session reaches an instance.
    let first = connect().await;
    drop(first);

    // A call on instance A (directly), then A drains.
    let mut ws = WsClient::connect(&a.ws_url()).await;
    ws.send(json!({"type": "auth", "token": token("alice", "calls:outbound", 3600)}))
        .await;
    assert_eq!(ws.recv().await["type"], "ready");
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "c1", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    assert_eq!(admin_post(a.admin(), "/v1/drain", None).await.status, 202);
    haproxy.until_logged("callbridge/cb1 is DOWN").await;
    assert!(
        haproxy.log().contains("503"),
        "marked down on /readyz 503:\n{}",
        haproxy.log()
    );

    // Every new session through the balancer lands on B (A would refuse it: 503).
    let before = sessions(b.admin()).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(connect().await);
    }
    assert_eq!(sessions(b.admin()).await, before + 4);
    assert!(!haproxy.log().contains("callbridge/cb2 is DOWN"));

    // A's call went on through the drain; A exits 0 once it ends.
    assert!(a.running(), "A keeps running while its call is up");
    call.hangup(&mut ws).await;
    call.until(&mut ws, &["ended"]).await;
    let status = a.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "A exits 0 after the drain: {status:?}");
    trunk
        .wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
    drop(open);
}
