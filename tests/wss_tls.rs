//! The signaling listener over TLS (`[tls]` set): a wss:// client that trusts a
//! certificate made in the test authenticates and gets `ready`; a plain ws:// client
//! is refused. With `sip.tls_listen` the same certificate serves SIP over TLS.

mod common;

use callbridge::config::TlsConfig;
use common::gateway::{TestGateway, test_config, token};
use common::tls::{OPTIONS_CALL_ID, client_config, options_over_tls, test_cert};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn wss_handshake_and_auth() {
    let cert = test_cert();
    let mut config = test_config(None);
    config.tls = Some(TlsConfig {
        cert: cert.ca_path.clone(),
        key: cert.key_path.clone(),
    });
    let gw = TestGateway::start(config).await;
    assert!(gw.ws_url().starts_with("wss://"));

    let client = client_config(&cert.ca_path, None);
    let tcp = tokio::net::TcpStream::connect(gw.http_addr())
        .await
        .expect("tcp");
    let tls = tokio_rustls::TlsConnector::from(client)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake with the gateway");
    let url = format!("wss://localhost:{}/ws", gw.http_addr().port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("wss upgrade");
    let auth = json!({"type": "auth", "token": token("tess", "calls:outbound", 60)});
    ws.send(Message::Text(auth.to_string().into()))
        .await
        .expect("send");
    let ready = tokio::time::timeout(common::gateway::WAIT, ws.next())
        .await
        .expect("timeout")
        .expect("frame")
        .expect("ok");
    let ready: serde_json::Value =
        serde_json::from_str(ready.to_text().expect("text")).expect("json");
    assert_eq!(ready["type"], "ready");
    assert_eq!(ready["user"], "tess");

    // Plain HTTP on the TLS port gets no WebSocket.
    let plain = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.http_addr())).await;
    assert!(plain.is_err(), "plain ws must not work on the TLS listener");
    gw.stop().await;
}

#[tokio::test]
async fn sip_tls_listener_uses_the_tls_certificate() {
    let cert = test_cert();
    let port = common::ports::port();
    let sip_tls = std::net::SocketAddr::from(([127, 0, 0, 1], port));

    let mut config = test_config(None);
    config.tls = Some(TlsConfig {
        cert: cert.ca_path.clone(),
        key: cert.key_path.clone(),
    });
    config.sip.tls_listen = Some(sip_tls);
    let gw = TestGateway::start(config).await;

    let answer = options_over_tls(sip_tls, &cert.ca_path, None)
        .await
        .expect("TLS handshake with the SIP listener and an answer");
    assert!(answer.starts_with("SIP/2.0 200 "), "{answer}");
    assert!(
        answer.contains(&format!("Call-ID: {OPTIONS_CALL_ID}")),
        "{answer}"
    );
    gw.stop().await;
}
