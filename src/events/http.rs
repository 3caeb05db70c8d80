//! A minimal HTTP/1.1 client for webhook POSTs: one connection per attempt over
//! TCP or TLS (rustls with the ring provider and the system's root certificates),
//! no redirects, no proxies, no pooling. hyper is already in the build for axum, so
//! this adds no HTTP stack; webhooks are low-rate, so pooling would buy little.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Why a request did not get a response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL cannot be used.
    #[error("bad URL: {0}")]
    Url(String),
    /// TCP connect failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// TLS could not be set up or the handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
}

/// What the receiver answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After` in seconds, if given.
    pub retry_after: Option<Duration>,
}

/// A parsed `http(s)://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// TLS or not.
    pub https: bool,
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
    /// The `Host` header value.
    pub authority: String,
}

impl Target {
    /// Parses a webhook URL.
    pub fn parse(url: &str) -> Result<Target, HttpError> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(HttpError::Url("not http:// or https://".into()));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(HttpError::Url(
                "credentials in the URL are not supported".into(),
            ));
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| HttpError::Url("unclosed [".into()))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| HttpError::Url("bad port".into()))?,
                None => default_port,
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| HttpError::Url("bad port".into()))?,
                ),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(HttpError::Url("no host".into()));
        }
        Ok(Target {
            https,
            host,
            port,
            path,
            authority: authority.to_string(),
        })
    }
}

/// Sends webhook POSTs.
#[derive(Debug, Default, Clone)]
pub struct HttpClient {
    /// TLS settings, built on the first https:// request.
    tls: Arc<OnceLock<Result<Arc<rustls::ClientConfig>, String>>>,
}

impl HttpClient {
    /// POSTs `body` (JSON) with `headers` to `url`; the caller bounds the time.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: String,
    ) -> Result<Answer, HttpError> {
        let target = Target::parse(url)?;
        let addr = format!("{}:{}", target.host, target.port);
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|source| HttpError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        if target.https {
            let config = self.tls_config()?;
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| HttpError::Tls(e.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| HttpError::Tls(e.to_string()))?;
            exchange(tls, &target, headers, body).await
        } else {
            exchange(tcp, &target, headers, body).await
        }
    }

    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, HttpError> {
        self.tls
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore::empty();
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err("no trusted root certificates found on this system".into());
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(HttpError::Tls)
    }
}

async fn exchange<S>(
    stream: S,
    target: &Target,
    headers: &[(&'static str, String)],
    body: String,
) -> Result<Answer, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = Request::post(target.path.as_str())
        .header(HOST, target.authority.as_str())
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_LENGTH, body.len())
        .header(
            USER_AGENT,
            concat!("callbridge/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| HttpError::Url(e.to_string()))?;
    let response = sender.send_request(request).await;
    driver.abort();
    let response = response?;
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Ok(Answer {
        status: response.status().as_u16(),
        retry_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("http://127.0.0.1:8081/hooks?x=1").expect("url");
        assert_eq!(
            (t.https, t.host.as_str(), t.port, t.path.as_str()),
            (false, "127.0.0.1", 8081, "/hooks?x=1")
        );
        let t = Target::parse("https://crm.example").expect("url");
        assert_eq!(
            (t.port, t.path.as_str(), t.authority.as_str()),
            (443, "/", "crm.example")
        );
        let t = Target::parse("http://[::1]:9/h").expect("url");
        assert_eq!((t.host.as_str(), t.port), ("::1", 9));
        let t = Target::parse("http://h?q").expect("url");
        assert_eq!(t.path, "/?q");
        assert!(Target::parse("ftp://x/").is_err());
        assert!(Target::parse("http://u:p@x/").is_err());
        assert!(Target::parse("http://x:notaport/").is_err());
    }
}
