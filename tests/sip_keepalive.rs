//! CRLF keepalives on SIP connections (RFC 5626 §3.5.1, §4.4.1). A real TCP SIPp
//! takes our pings in the middle of a call without harm; SIPp neither logs pings
//! nor answers them, so the ping/pong exchange itself is checked against an in-test
//! TCP peer: our connection to it pings when silent, and once the peer has answered
//! a ping, a missing pong closes the connection. Pings sent to our listener get a
//! pong.

mod common;
use common::sipp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use callbridge::sip::{SipCallEvent, SipEndpoint, SipEndpointConfig, Transport, TrunkSettings};
use sipp::{Sipp, SippTransport, init_tracing, invite_request, next_event, next_final_or_answer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(15);

async fn endpoint_pinging_every(interval: Duration) -> Arc<SipEndpoint> {
    init_tracing();
    SipEndpoint::bind(SipEndpointConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        keepalive: Some(interval),
        ..SipEndpointConfig::default()
    })
    .await
    .expect("bind")
}

fn tcp_request(target: SocketAddr) -> callbridge::sip::InviteRequest {
    callbridge::sip::InviteRequest {
        trunk: TrunkSettings {
            name: "tcp".into(),
            transport: Transport::Tcp,
            ..TrunkSettings::default()
        },
        ..invite_request(target)
    }
}

/// Reads until `want` has arrived after what was read so far; false on EOF.
async fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, want: &[u8]) -> bool {
    let start = seen.len();
    let mut buf = [0u8; 4096];
    loop {
        if seen[start..].windows(want.len()).any(|w| w == want) {
            return true;
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("bytes in time")
            .expect("read");
        if n == 0 {
            return false;
        }
        seen.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn sipp_over_tcp_takes_our_pings_during_a_call() {
    let mut sipp = Sipp::uas_on(SippTransport::Tcp, None, &[]);
    let ep = endpoint_pinging_every(Duration::from_millis(100)).await;
    let (call, mut events) = ep.invite(tcp_request(sipp.addr)).await.unwrap();
    assert!(matches!(
        next_final_or_answer(&mut events).await,
        SipCallEvent::Answered { .. }
    ));
    // About ten pings while the call is up.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    call.hangup();
    assert_eq!(next_event(&mut events).await, SipCallEvent::Terminated);
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    ep.shutdown().await;
}

#[tokio::test]
async fn our_connection_pings_and_is_closed_when_pongs_stop() {
    // In-test peer: SIPp cannot answer pings.
    let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ep = endpoint_pinging_every(Duration::from_millis(200)).await;
    let (_call, _events) = ep
        .invite(tcp_request(peer.local_addr().unwrap()))
        .await
        .unwrap();
    let (mut conn, _) = tokio::time::timeout(WAIT, peer.accept())
        .await
        .expect("our connection")
        .unwrap();
    let mut seen = Vec::new();
    // The whole INVITE (its SDP ends the message), then only pings follow.
    assert!(
        read_until(&mut conn, &mut seen, b"a=sendrecv\r\n").await,
        "the INVITE"
    );
    assert!(String::from_utf8_lossy(&seen).starts_with("INVITE sip:"));
    // A ping after 200 ms of silence; answer it, and the next one comes.
    assert!(
        read_until(&mut conn, &mut seen, b"\r\n\r\n").await,
        "first ping"
    );
    conn.write_all(b"\r\n").await.unwrap();
    assert!(
        read_until(&mut conn, &mut seen, b"\r\n\r\n").await,
        "second ping"
    );
    // No pong this time: we answered before, so the silence means a dead flow and
    // the gateway closes the connection (after 10 s).
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue, // further pings
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true), "connection closed after the missing pong");
    ep.shutdown().await;
}

#[tokio::test]
async fn our_listener_answers_pings_with_pongs() {
    let ep = endpoint_pinging_every(Duration::from_secs(60)).await;
    let mut conn = TcpStream::connect(ep.local_addr()).await.unwrap();
    conn.write_all(b"\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(WAIT, conn.read(&mut buf))
        .await
        .expect("a pong in time")
        .unwrap();
    assert_eq!(&buf[..n], b"\r\n");
    // Two pings in one write: two pongs.
    conn.write_all(b"\r\n\r\n\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    while got.len() < 4 {
        let n = tokio::time::timeout(WAIT, conn.read(&mut buf))
            .await
            .expect("pongs in time")
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"\r\n\r\n");
    ep.shutdown().await;
}
