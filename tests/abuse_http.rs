//! Issue 12, item 4: slowloris and connection floods against the HTTP/WebSocket
//! listener of a running gateway. Each test performs the attack with raw sockets
//! and asserts the safe outcome (the attacking connections are closed, counted by
//! reason in `callbridge_http_connections_closed_total`) and that a legitimate
//! client still gets `/healthz` and a WebSocket session (with a call, for the
//! flood) while the attack goes on.
//!
//! Attackers connect from 127.0.0.1, the legitimate client from 127.0.0.2 (another
//! client address on the loopback network) where the per-IP cap matters.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use callbridge::config::TlsConfig;
use common::browser::{Browser, BrowserOptions};
use common::call::TestCall;
use common::gateway::{TestGateway, WAIT, http_get, test_config, token};
use common::tls::{client_config, test_cert};
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

/// The attacker's address.
const ATTACKER: [u8; 4] = [127, 0, 0, 1];
/// Another client on the loopback network.
const OTHER: [u8; 4] = [127, 0, 0, 2];

/// A TCP connection to `server` from the local address `from`.
async fn connect_from(from: [u8; 4], server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::from(from), 0))
        .expect("bind client address");
    tokio::time::timeout(WAIT, socket.connect(server))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// Waits (at most [`WAIT`]) for the server to close `stream`; returns the bytes it
/// sent before closing. Panics when the connection is still open after [`WAIT`].
async fn server_closes(mut stream: impl AsyncRead + Unpin, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("{what}: still open after {WAIT:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// `GET path` over an open stream (HTTP/1.1, `Connection: close`); the response.
async fn get_over(mut stream: impl AsyncRead + AsyncWrite + Unpin, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .expect("response timed out")
        .expect("read response");
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of the counter `name{labels}` in the admin listener's `/metrics`.
async fn counter(gw: &TestGateway, series: &str) -> u64 {
    let text = http_get(gw.admin_addr(), "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

/// Connections closed by `reason` on the public listener.
async fn closed_by(gw: &TestGateway, reason: &str) -> u64 {
    counter(
        gw,
        &format!(
            r#"callbridge_http_connections_closed_total{{listener="public",reason="{reason}"}}"#
        ),
    )
    .await
}

/// A legitimate WebSocket client from 127.0.0.2 authenticates.
async fn other_client_gets_a_session(gw: &TestGateway) -> common::gateway::WsClient {
    let mut ws = gw.connect_from(IpAddr::from(OTHER)).await;
    ws.send(json!({"type": "auth", "token": token("legit", "calls:outbound", 600)}))
        .await;
    let ready = ws.recv().await;
    assert_eq!(ready["type"], "ready", "{ready}");
    ws
}

#[tokio::test]
async fn slowloris_connections_are_closed_at_the_header_timeout() {
    let mut config = test_config(None);
    // Short, so the test does not wait long; the assertion is on the close itself.
    config.http.header_read_timeout = Duration::from_secs(1);
    let gw = TestGateway::start(config).await;
    let addr = gw.http_addr();

    // Ten clients trickle an endless request head, one byte every 100 ms (each byte
    // well inside any idle timeout, the whole head never complete); three more open
    // TCP and send nothing at all.
    const TRICKLERS: usize = 10;
    const SILENT: usize = 3;
    let mut attack = JoinSet::new();
    for i in 0..TRICKLERS {
        attack.spawn(async move {
            let mut stream = connect_from(ATTACKER, addr).await;
            let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n".iter();
            let mut bytes = head.chain(b"X-Slow: aaaa\r\n".iter().cycle());
            let deadline = tokio::time::Instant::now() + WAIT;
            let mut sent = 0usize;
            let mut buf = [0u8; 256];
            loop {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "trickler {i}: still open after {WAIT:?} and {sent} bytes"
                );
                let byte = *bytes.next().expect("endless");
                if stream.write_all(&[byte]).await.is_err() {
                    return sent;
                }
                sent += 1;
                // The pause between bytes doubles as the check for the close.
                match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => return sent,
                    Ok(Ok(n)) => panic!(
                        "trickler {i}: answered an incomplete head: {}",
                        String::from_utf8_lossy(&buf[..n])
                    ),
                    Err(_) => {}
                }
            }
        });
    }
    for _ in 0..SILENT {
        attack.spawn(async move {
            let stream = connect_from(ATTACKER, addr).await;
            let answer = server_closes(stream, "silent connection").await;
            assert!(answer.is_empty(), "nothing answered to nothing");
            0
        });
    }

    // Meanwhile a legitimate client gets its answers.
    let health = http_get(addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let mut ws = other_client_gets_a_session(&gw).await;

    let mut closed = 0;
    while let Some(result) = attack.join_next().await {
        result.expect("attack task");
        closed += 1;
    }
    assert_eq!(closed, TRICKLERS + SILENT);
    // Every one of them was closed by the header timeout, not by anything else.
    assert_eq!(
        closed_by(&gw, "header_timeout").await,
        (TRICKLERS + SILENT) as u64
    );
    // The session opened during the attack is unaffected.
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.recv().await["type"], "pong");
    gw.stop().await;
}

#[tokio::test]
async fn an_oversized_request_head_is_refused_431_and_closed() {
    let gw = TestGateway::start(test_config(None)).await;
    let mut stream = connect_from(ATTACKER, gw.http_addr()).await;
    // 70 headers (below the header count limit), 105 KB (above the 64 KiB head limit).
    let filler = "a".repeat(1500);
    let mut head = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..70 {
        head.push_str(&format!("X-Fill-{i}: {filler}\r\n"));
    }
    head.push_str("\r\n");
    // The server may close before it has read everything: a failed write is fine.
    let _ = stream.write_all(head.as_bytes()).await;
    let answer = server_closes(&mut stream, "oversized head").await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    let health = http_get(gw.http_addr(), "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    gw.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let mut config = test_config(None);
    config.http.idle_timeout = Duration::from_secs(1);
    // Longer than the idle timeout: here the idle timer must be what closes.
    config.http.header_read_timeout = Duration::from_secs(30);
    let gw = TestGateway::start(config).await;
    let mut stream = connect_from(ATTACKER, gw.http_addr()).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    // The answer comes; then the client keeps the connection and sends nothing.
    let rest = server_closes(&mut stream, "idle keep-alive connection").await;
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(closed_by(&gw, "idle_timeout").await, 1);
    assert_eq!(closed_by(&gw, "header_timeout").await, 0);
    gw.stop().await;
}

#[tokio::test]
async fn a_flood_from_one_address_is_capped_while_others_still_call() {
    const CAP: usize = 5;
    const EXCESS: usize = 10;
    let mut config = test_config(None);
    config.http.max_connections_per_ip = CAP;
    config.limits.max_sessions_per_ip = 2;
    // Held connections must not be closed by the header timeout during the test.
    config.http.header_read_timeout = Duration::from_secs(120);
    config.http.idle_timeout = Duration::from_secs(120);
    config.echo.enabled = true;
    let gw = TestGateway::start(config).await;
    let addr = gw.http_addr();

    // The attacker fills its share, then keeps opening connections.
    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(connect_from(ATTACKER, addr).await);
    }
    let mut excess = JoinSet::new();
    for i in 0..EXCESS {
        excess.spawn(async move {
            let stream = connect_from(ATTACKER, addr).await;
            let said = server_closes(stream, &format!("excess connection {i}")).await;
            assert!(said.is_empty(), "closed without a byte read or written");
        });
    }
    while let Some(result) = excess.join_next().await {
        result.expect("every excess connection is closed at once");
    }
    assert_eq!(closed_by(&gw, "per_ip_limit").await, EXCESS as u64);

    // Another client: /healthz answers and a session places a call (built-in echo).
    let health = get_over(connect_from(OTHER, addr).await, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let mut ws = other_client_gets_a_session(&gw).await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, Arc::clone(&browser), "c1", "echo").await;
    call.until(&mut ws, &["answered"]).await;
    call.hangup(&mut ws).await;
    call.until(&mut ws, &["ended"]).await;
    browser.close().await;

    // The attacker's admitted connections are ordinary connections.
    let first = held.pop().expect("held");
    let answer = get_over(first, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Closing them frees the address's share again.
    drop(held);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut stream = connect_from(ATTACKER, addr).await;
        let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let mut out = Vec::new();
        let answered = stream.write_all(request).await.is_ok()
            && stream.read_to_end(&mut out).await.is_ok()
            && out.starts_with(b"HTTP/1.1 200");
        if answered {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the address's connections were never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_distributed_flood_fills_the_total_cap_but_not_the_admin_listener() {
    const TOTAL: usize = 10;
    const PER_IP: usize = 5;
    let mut config = test_config(None);
    config.http.max_connections = TOTAL;
    config.http.max_connections_per_ip = PER_IP;
    config.limits.max_sessions_per_ip = 2;
    config.http.header_read_timeout = Duration::from_secs(120);
    config.http.idle_timeout = Duration::from_secs(120);
    let gw = TestGateway::start(config).await;
    let addr = gw.http_addr();

    // Four addresses, each within its per-IP share, together twice the total.
    // Each connection waits for the server to close it; the admitted ones wait on.
    let mut connections = JoinSet::new();
    for host in 10..14u8 {
        for _ in 0..PER_IP {
            let mut stream = connect_from([127, 0, 0, host], addr).await;
            connections.spawn(async move {
                let mut buf = [0u8; 1];
                matches!(stream.read(&mut buf).await, Ok(0) | Err(_))
            });
        }
    }
    let mut closed = 0;
    while closed < 4 * PER_IP - TOTAL {
        let next = tokio::time::timeout(WAIT, connections.join_next())
            .await
            .expect("the connections beyond the total cap are closed");
        assert!(next.expect("task").expect("task"), "closed, not answered");
        closed += 1;
    }
    assert_eq!(
        closed_by(&gw, "total_limit").await,
        (4 * PER_IP - TOTAL) as u64
    );
    assert_eq!(closed_by(&gw, "per_ip_limit").await, 0);
    assert_eq!(connections.len(), TOTAL, "the admitted ones stay open");

    // The admin listener has its own budget: probes and scrapes still answer.
    let health = http_get(gw.admin_addr(), "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("active_calls"), "{health}");
    let gauge = counter(&gw, r#"callbridge_http_connections{listener="public"}"#).await;
    assert_eq!(gauge, TOTAL as u64);

    // When the flood ends the public listener serves again.
    connections.abort_all();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut stream = connect_from(OTHER, addr).await;
        let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let mut out = Vec::new();
        if stream.write_all(request).await.is_ok()
            && stream.read_to_end(&mut out).await.is_ok()
            && out.starts_with(b"HTTP/1.1 200")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop().await;
}

/// A TLS gateway with `max_tls_handshakes`, handshake timeout `timeout`.
async fn tls_gateway(
    cert: &common::tls::TestCert,
    max_tls_handshakes: usize,
    timeout: Duration,
) -> TestGateway {
    let mut config = test_config(None);
    config.tls = Some(TlsConfig {
        cert: cert.ca_path.clone(),
        key: cert.key_path.clone(),
    });
    config.http.max_tls_handshakes = max_tls_handshakes;
    config.http.tls_handshake_timeout = timeout;
    // The per-IP cap is not what is tested here.
    config.http.max_connections_per_ip = 1000;
    config.http.max_connections = 2000;
    TestGateway::start(config).await
}

/// `GET /healthz` over TLS from 127.0.0.2.
async fn healthz_over_tls(cert: &common::tls::TestCert, addr: SocketAddr) -> String {
    let tcp = connect_from(OTHER, addr).await;
    let tls = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(client_config(&cert.ca_path, None))
            .connect(ServerName::try_from("localhost").expect("name"), tcp),
    )
    .await
    .expect("TLS handshake timed out")
    .expect("TLS handshake");
    get_over(tls, "/healthz").await
}

#[tokio::test]
async fn stalled_tls_handshakes_beyond_the_cap_cannot_lock_out_clients() {
    const CAP: usize = 8;
    const EXCESS: usize = 16;
    let cert = test_cert();
    // A handshake timeout far beyond the test: whatever closes the attacker's
    // connections here is the handshake cap.
    let gw = tls_gateway(&cert, CAP, Duration::from_secs(600)).await;
    let addr = gw.http_addr();

    // Clients that open TCP and never send a ClientHello.
    let mut stalled = Vec::new();
    for _ in 0..CAP + EXCESS {
        stalled.push(connect_from(ATTACKER, addr).await);
    }
    let mut closes = JoinSet::new();
    for (i, stream) in stalled.into_iter().enumerate() {
        closes.spawn(async move {
            let mut stream = stream;
            let mut buf = [0u8; 16];
            match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => Some(i),
                Ok(Ok(_)) => panic!("stalled client {i} got bytes without a ClientHello"),
                // Still holding a slot (the newest ones).
                Err(_) => None,
            }
        });
    }
    let mut closed = 0;
    while let Some(result) = closes.join_next().await {
        if result.expect("task").is_some() {
            closed += 1;
        }
        if closed == EXCESS {
            break;
        }
    }
    assert_eq!(closed, EXCESS, "the handshakes beyond the cap are dropped");
    assert_eq!(closed_by(&gw, "tls_handshake_evicted").await, EXCESS as u64);

    // While the slots are full of stalled handshakes, a real client gets in.
    let health = healthz_over_tls(&cert, addr).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with(r#"{"status":"ok"}"#), "{health}");
    closes.abort_all();
    gw.stop().await;
}

#[tokio::test]
async fn a_tls_handshake_that_never_finishes_is_dropped_at_the_timeout() {
    let cert = test_cert();
    let gw = tls_gateway(&cert, 256, Duration::from_secs(1)).await;
    let addr = gw.http_addr();
    let stalled = connect_from(ATTACKER, addr).await;
    let said = server_closes(stalled, "stalled TLS handshake").await;
    assert!(said.is_empty());
    assert_eq!(closed_by(&gw, "tls_handshake_timeout").await, 1);
    assert_eq!(closed_by(&gw, "tls_handshake_evicted").await, 0);
    let health = healthz_over_tls(&cert, addr).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    gw.stop().await;
}
