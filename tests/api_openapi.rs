//! `/v1/openapi.json` describes what the router serves: every documented operation
//! answers (401 without a token, so it exists and is protected), every operation
//! documents its success and auth responses, and every `$ref` resolves.

mod common;

use common::gateway::{TestGateway, test_config};
use common::http::request;
use serde_json::Value;

fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    if let Some(s) = v.as_str() {
                        out.push(s);
                    }
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn openapi_document_matches_the_router() {
    let mut config = test_config(None);
    config.storage.path = ":memory:".into();
    config.ratelimit.http_burst = 1000;
    let gw = TestGateway::start(config).await;
    let addr = gw.admin_addr();
    let r = request(addr, "GET", "/v1/openapi.json", &[], b"").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("application/json"));
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().expect("paths");
    for expected in [
        "/v1/calls",
        "/v1/calls/{id}",
        "/v1/cdrs",
        "/v1/cdrs/{id}",
        "/v1/recordings/{id}",
        "/v1/drain",
        "/v1/webhooks/deliveries",
        "/v1/webhooks/test",
        "/v1/openapi.json",
    ] {
        assert!(paths.contains_key(expected), "{expected} is documented");
    }
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            operations += 1;
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|k| k.starts_with('2')),
                "{method} {path} documents a success"
            );
            if path == "/v1/openapi.json" {
                continue;
            }
            for code in ["401", "403", "429"] {
                assert!(
                    responses.contains_key(code),
                    "{method} {path} documents {code}"
                );
            }
            // It is served and protected.
            let concrete = path.replace("{id}", "c-none");
            let r = request(addr, &method.to_uppercase(), &concrete, &[], b"").await;
            assert_eq!(r.status, 401, "{method} {concrete} without a token");
        }
    }
    assert!(operations >= 11, "{operations} operations");
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for reference in all {
        let pointer = reference.trim_start_matches('#');
        assert!(doc.pointer(pointer).is_some(), "{reference} resolves");
    }
    gw.stop().await;
}
