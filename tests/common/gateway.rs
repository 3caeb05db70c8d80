//! An in-process gateway on ephemeral loopback ports, and a WebSocket client that
//! speaks protocol v1 with a timeout on every wait.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use callbridge::auth::{Audience, Claims, mint_hs256};
use callbridge::config::{Config, RouteConfig, TrunkConfig};
use callbridge::server::{self, RunningServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The HS256 secret of test gateways.
pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
/// Default wait for any expected message.
pub const WAIT: Duration = Duration::from_secs(15);

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A test configuration: loopback everything, one trunk at `trunk` (if any) that
/// every number routes to except those starting with `+999`.
pub fn test_config(trunk: Option<SocketAddr>) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().expect("addr");
    // The operator listener (/v1, /metrics) on its own ephemeral loopback port.
    config.admin.listen = "127.0.0.1:0".parse().expect("addr");
    config.server.auth_timeout = Duration::from_secs(2);
    config.server.resume_grace = Duration::from_secs(2);
    // Call records in memory: tests must not write ./data.
    config.storage.path = ":memory:".into();
    config.sip.listen = "127.0.0.1:0".parse().expect("addr");
    config.sip.rtp_ports = "40000-49999".into();
    config.auth.hs256_secret = SECRET.into();
    // Browsers in tests are on loopback, like the gateway.
    config.media.allow_candidate_networks = vec!["127.0.0.0/8".into()];
    // Two media workers whatever the machine: calls spread over both.
    config.media.workers = 2;
    if let Some(trunk) = trunk {
        config.sip.trunks.push(TrunkConfig {
            name: "sipp".into(),
            address: trunk.to_string(),
            ..TrunkConfig::default()
        });
        config.dialplan.routes.push(RouteConfig::new(
            r"^(\+[1-8][0-9]*|[0-9]+)$",
            vec!["sipp".into()],
        ));
    }
    config
}

/// A gateway running in this process.
pub struct TestGateway {
    /// The running server (taken on stop).
    pub server: Option<RunningServer>,
}

impl TestGateway {
    /// Starts a gateway with `config` (validated first).
    pub async fn start(config: Config) -> TestGateway {
        init_tracing();
        callbridge::config::validate(&config).expect("test config is valid");
        let server = server::start(config).await.expect("gateway starts");
        TestGateway {
            server: Some(server),
        }
    }

    fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("gateway running")
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.running().http_addr
    }

    /// The admin listener's address (`/v1`, `/metrics`, `/healthz` with detail).
    pub fn admin_addr(&self) -> SocketAddr {
        self.running()
            .admin_addr
            .expect("admin listener configured (admin.enabled)")
    }

    /// The `ws://…/ws` URL.
    pub fn ws_url(&self) -> String {
        self.running().ws_url()
    }

    /// Connects a WebSocket without authenticating.
    pub async fn connect(&self) -> WsClient {
        WsClient::connect(&self.ws_url()).await
    }

    /// Connects a WebSocket from the local address `from` (e.g. 127.0.0.2, to be
    /// another client than 127.0.0.1) without authenticating.
    pub async fn connect_from(&self, from: std::net::IpAddr) -> WsClient {
        WsClient::connect_from(&self.ws_url(), from).await
    }

    /// Connects and authenticates as `user` with `scope`; returns the client and `ready`.
    pub async fn connect_as(&self, user: &str, scope: &str) -> (WsClient, Value) {
        let mut ws = self.connect().await;
        ws.send(json!({"type": "auth", "token": token(user, scope, 3600)}))
            .await;
        let ready = ws.recv().await;
        assert_eq!(ready["type"], "ready", "auth failed: {ready}");
        (ws, ready)
    }

    /// Stops the gateway and waits for its calls to end.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_secs(5)).await;
        }
    }
}

/// Unix time now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Claims for `user` valid for `ttl` seconds (negative: already expired).
pub fn claims(user: &str, scope: &str, ttl: i64) -> Claims {
    Claims {
        sub: user.into(),
        exp: (now() as i64 + ttl) as u64,
        nbf: None,
        iat: Some(now()),
        aud: Some(Audience::One("callbridge".into())),
        iss: None,
        scope: scope.into(),
        caller_id: None,
        dids: Vec::new(),
        max_calls: None,
        record: None,
    }
}

/// A token signed with the test secret.
pub fn token(user: &str, scope: &str, ttl: i64) -> String {
    mint_hs256(SECRET, &claims(user, scope, ttl)).expect("mint")
}

/// The audience of operator tokens (`auth.admin_audience` default).
pub const ADMIN_AUDIENCE: &str = "callbridge-admin";

/// An operator token (`aud` = [`ADMIN_AUDIENCE`]) signed with the test secret.
pub fn operator_token(user: &str, scope: &str, ttl: i64) -> String {
    let claims = Claims {
        aud: Some(Audience::One(ADMIN_AUDIENCE.into())),
        ..claims(user, scope, ttl)
    };
    mint_hs256(SECRET, &claims).expect("mint")
}

/// A protocol v1 WebSocket client for tests.
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a socket ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// A close frame with this code.
    Code(u16),
    /// The connection ended without a close frame.
    NoFrame,
}

impl WsClient {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> WsClient {
        let (stream, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect timed out")
            .expect("websocket connects");
        WsClient { stream }
    }

    /// Connects to `url` (a `ws://` URL) from the local address `from`.
    pub async fn connect_from(url: &str, from: std::net::IpAddr) -> WsClient {
        let host = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .expect("host");
        let server: SocketAddr = host.parse().expect("ws:// URL with an IP address");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(from, 0))
            .expect("bind the client address");
        let tcp = tokio::time::timeout(WAIT, socket.connect(server))
            .await
            .expect("connect timed out")
            .expect("connect");
        let (stream, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp)),
        )
        .await
        .expect("upgrade timed out")
        .expect("websocket connects");
        WsClient { stream }
    }

    /// Sends one JSON message.
    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .expect("websocket send");
    }

    /// The next JSON message (panics after [`WAIT`] or on close).
    pub async fn recv(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("timed out waiting for a message")
                .expect("socket closed while waiting for a message")
                .expect("websocket error");
            match frame {
                Message::Text(t) => return serde_json::from_str(&t).expect("server sent JSON"),
                Message::Close(c) => panic!("socket closed while waiting for a message: {c:?}"),
                _ => continue,
            }
        }
    }

    /// The next message of type `kind`, passing every other message to `other`.
    pub async fn recv_type(&mut self, kind: &str, mut other: impl FnMut(&Value)) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = tokio::time::timeout(remaining, self.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for `{kind}`"));
            if message["type"] == kind {
                return message;
            }
            other(&message);
        }
    }

    /// The next JSON message, or how the socket closed.
    pub async fn message_or_close(&mut self) -> Result<Value, Closed> {
        loop {
            let frame = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("timed out waiting for a message or close");
            match frame {
                None | Some(Err(_)) => return Err(Closed::NoFrame),
                Some(Ok(Message::Text(t))) => {
                    return Ok(serde_json::from_str(&t).expect("server sent JSON"));
                }
                Some(Ok(Message::Close(Some(frame)))) => {
                    return Err(Closed::Code(u16::from(frame.code)));
                }
                Some(Ok(Message::Close(None))) => {
                    return Err(Closed::Code(u16::from(CloseCode::Status)));
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Waits for the socket to close; returns the close code.
    pub async fn closed(&mut self) -> Closed {
        loop {
            let frame = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("timed out waiting for close");
            match frame {
                None | Some(Err(_)) => return Closed::NoFrame,
                Some(Ok(Message::Close(Some(frame)))) => {
                    return Closed::Code(u16::from(frame.code));
                }
                Some(Ok(Message::Close(None))) => {
                    return Closed::Code(u16::from(CloseCode::Status));
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Closes the socket from the client side.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// A minimal HTTP/1.1 GET over a raw socket; returns the whole response.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .expect("http timeout")
        .expect("read");
    out
}
