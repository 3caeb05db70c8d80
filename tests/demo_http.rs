//! `/demo/` static files and the local-only dev token endpoint.

mod common;

use common::gateway::{TestGateway, http_get, test_config};

#[tokio::test]
async fn demo_is_served_with_a_dev_token_when_enabled() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("index.html"), "<h1>callbridge demo</h1>").expect("write");
    let mut config = test_config(None);
    config.demo.enabled = true;
    config.demo.dev_tokens = true;
    config.demo.dir = dir.path().to_path_buf();
    let gw = TestGateway::start(config).await;
    let page = http_get(gw.http_addr(), "/demo/").await;
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("callbridge demo"),
        "{page}"
    );
    let token = http_get(gw.http_addr(), "/demo/dev-token").await;
    let body = token.split("\r\n\r\n").nth(1).expect("body");
    let json: serde_json::Value = serde_json::from_str(body).expect("json");
    let token = json["token"].as_str().expect("token");
    let mut ws = gw.connect().await;
    ws.send(serde_json::json!({"type": "auth", "token": token}))
        .await;
    assert_eq!(ws.recv().await["user"], "dev");
    gw.stop().await;
}

#[tokio::test]
async fn demo_and_dev_tokens_are_off_by_default() {
    let gw = TestGateway::start(test_config(None)).await;
    assert!(
        http_get(gw.http_addr(), "/demo/")
            .await
            .starts_with("HTTP/1.1 404")
    );
    assert!(
        http_get(gw.http_addr(), "/demo/dev-token")
            .await
            .starts_with("HTTP/1.1 404")
    );
    gw.stop().await;
}
