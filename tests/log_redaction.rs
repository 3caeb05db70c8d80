//! Tokens and secrets never reach the logs, even at TRACE level (with the gateway's
//! own log filter): every log line of a run with valid, expired and query-string
//! tokens is captured and searched.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::gateway::{SECRET, TestGateway, WsClient, test_config, token};
use serde_json::json;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// current_thread: every task of the gateway runs on this thread, under this subscriber.
#[tokio::test(flavor = "current_thread")]
async fn tokens_and_secrets_are_not_logged() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(callbridge::config::log_filter("trace"))
        .with_ansi(false)
        .with_writer(capture.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let gw = TestGateway::start(test_config(None)).await;
    let good = token("alice", "calls:outbound", 3600);
    let expired = token("alice", "calls:outbound", -60);
    let in_query = token("bob", "calls:outbound", 3600);

    let (mut ws, _) = {
        let mut ws = gw.connect().await;
        ws.send(json!({"type": "auth", "token": good})).await;
        let ready = ws.recv().await;
        (ws, ready)
    };
    ws.send(json!({"type": "ping"})).await;
    ws.recv().await;
    let mut bad = gw.connect().await;
    bad.send(json!({"type": "auth", "token": expired})).await;
    bad.closed().await;
    let mut q = WsClient::connect(&format!("{}?access_token={in_query}", gw.ws_url())).await;
    assert_eq!(q.recv().await["type"], "ready");
    ws.close().await;
    q.close().await;
    gw.stop().await;

    let logs = String::from_utf8(capture.0.lock().expect("lock").clone()).expect("utf8");
    assert!(logs.contains("session ready"), "capture works: {logs}");
    assert!(logs.contains("session refused"), "the refusal is logged");
    for (name, secret) in [
        ("token", &good),
        ("expired token", &expired),
        ("query token", &in_query),
    ] {
        // The signature part alone must not appear either.
        let signature = secret.rsplit('.').next().expect("signature");
        if let Some(line) = logs.lines().find(|l| l.contains(signature)) {
            panic!("{name} leaked into the logs: {line}");
        }
    }
    assert!(!logs.contains(SECRET), "HS256 secret leaked into the logs");
}
