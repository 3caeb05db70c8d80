//! A small HTTP/1.1 client for the API tests (hyper, one connection per request,
//! a timeout on every exchange) and a response type with helpers.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::gateway::{WAIT, operator_token, token};

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers (names lowercase).
    pub headers: hyper::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// A header as a string ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    /// The body as JSON (panics when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts a problem+json body with this status whose `correlation_id` is the
    /// one echoed in `X-Correlation-ID`; returns the body.
    pub fn problem(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "expected {status}, got {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), "application/problem+json");
        let body = self.json();
        assert_eq!(body["status"], status);
        let echoed = self.header("x-correlation-id");
        assert!(!echoed.is_empty(), "X-Correlation-ID echoed");
        assert_eq!(body["correlation_id"], echoed.as_str(), "{body}");
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
        body
    }
}

/// Sends one request; `headers` are added as given.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::copy_from_slice(body)))
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        driver.abort();
        Reply {
            status,
            headers,
            body,
        }
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no response within {WAIT:?}"))
}

/// A `Bearer` header value for `user` with `scope`, valid for an hour.
pub fn bearer(user: &str, scope: &str) -> String {
    format!("Bearer {}", token(user, scope, 3600))
}

/// A `Bearer` header value of an operator token (`aud` = callbridge-admin) for
/// `user` with `scope`, valid for an hour.
pub fn operator_bearer(user: &str, scope: &str) -> String {
    format!("Bearer {}", operator_token(user, scope, 3600))
}

/// GET with an operator token (scope `admin`); `addr` is the admin listener.
pub async fn admin_get(addr: SocketAddr, path: &str) -> Reply {
    let auth = operator_bearer("ops", "admin");
    request(addr, "GET", path, &[("authorization", &auth)], b"").await
}

/// POST with an operator token (scope `admin`) and an optional JSON body; `addr`
/// is the admin listener.
pub async fn admin_post(addr: SocketAddr, path: &str, body: Option<&str>) -> Reply {
    let auth = operator_bearer("ops", "admin");
    match body {
        Some(b) => {
            request(
                addr,
                "POST",
                path,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                b.as_bytes(),
            )
            .await
        }
        None => request(addr, "POST", path, &[("authorization", &auth)], b"").await,
    }
}

/// The value of one sample (`name{labels}` as rendered) in Prometheus text.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// One sample of the `/metrics` of the admin listener at `admin` (0 when absent).
pub async fn admin_sample(admin: SocketAddr, series: &str) -> f64 {
    let reply = admin_get(admin, "/metrics").await;
    sample(&String::from_utf8_lossy(&reply.body), series).unwrap_or(0.0)
}
