//! A real webhook receiver for the tests: an axum server on 127.0.0.1 that records
//! every POST (headers and raw body) and answers according to a switchable policy
//! (fail the first N attempts of each event, fail everything, accept everything).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use callbridge::events::signature;
use serde_json::Value;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// 500 for the first `n` attempts of each event id, then 204.
    FailFirst(u32),
    /// 503 to everything.
    FailAll,
    /// 204 to everything.
    AcceptAll,
}

/// One POST as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `X-Callbridge-Event-Id`.
    pub event_id: String,
    /// `X-Callbridge-Signature`.
    pub signature: String,
    /// `X-Correlation-ID`.
    pub correlation_id: String,
    /// The raw body.
    pub body: Bytes,
    /// The status answered.
    pub answered: u16,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }

    /// Verifies the signature with `secret` against the raw body, now.
    pub fn verify(&self, secret: &str) -> Result<(), signature::SignatureError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        signature::verify(
            secret.as_bytes(),
            &self.signature,
            &self.body,
            now,
            signature::REPLAY_WINDOW_SECS,
        )
    }
}

#[derive(Default)]
struct Shared {
    policy: Option<Policy>,
    attempts: HashMap<String, u32>,
    log: Vec<Received>,
}

/// A running receiver; stopped on drop.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: tokio_util::sync::CancellationToken,
}

async fn hook(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let get = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let event_id = get("x-callbridge-event-id");
    let mut s = shared.lock().expect("lock");
    let seen = s.attempts.entry(event_id.clone()).or_insert(0);
    *seen += 1;
    let n = *seen;
    let status = match s.policy.unwrap_or(Policy::AcceptAll) {
        Policy::FailFirst(k) if n <= k => StatusCode::INTERNAL_SERVER_ERROR,
        Policy::FailAll => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::NO_CONTENT,
    };
    s.log.push(Received {
        event_id,
        signature: get("x-callbridge-signature"),
        correlation_id: get("x-correlation-id"),
        body,
        answered: status.as_u16(),
    });
    status
}

impl Receiver {
    /// Starts a receiver with `policy` on an ephemeral port.
    pub async fn start(policy: Policy) -> Receiver {
        let shared = Arc::new(Mutex::new(Shared {
            policy: Some(policy),
            ..Shared::default()
        }));
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await;
        });
        Receiver { addr, shared, stop }
    }

    /// The URL to configure.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Changes the policy.
    pub fn set_policy(&self, policy: Policy) {
        self.shared.lock().expect("lock").policy = Some(policy);
    }

    /// Every POST so far.
    pub fn log(&self) -> Vec<Received> {
        self.shared.lock().expect("lock").log.clone()
    }

    /// The accepted (2xx) POSTs so far.
    pub fn accepted(&self) -> Vec<Received> {
        self.log()
            .into_iter()
            .filter(|r| r.answered < 300)
            .collect()
    }

    /// Waits until `done(log)` holds (panics after `within`).
    pub async fn wait_for(&self, within: Duration, what: &str, done: impl Fn(&[Received]) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if done(&self.log()) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let log: Vec<(String, u16)> = self
                    .log()
                    .iter()
                    .map(|r| (r.event_id.clone(), r.answered))
                    .collect();
                panic!("receiver: {what} did not happen within {within:?}; got {log:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
