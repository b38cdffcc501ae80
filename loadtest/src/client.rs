//! The HTTP client: one bare hyper HTTP/1.1 connection per load connection.
//!
//! A connection is a TCP stream and hyper's `SendRequest` for it, nothing
//! more: no pool lookup, no URL parsing or header map merging per request, no
//! redirect, cookie or proxy layers. The server under test answers in tens of
//! microseconds on a warm path, and client and server share two cores, so
//! every microsecond the client spends is taken from the server it measures.

use std::fmt;
use std::time::Duration;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

/// How long opening a TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where an agentry listens: `http://host:port[/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseUrl {
    host: String,
    port: u16,
    /// Path prefix without a trailing slash ("" for none).
    prefix: String,
}

impl BaseUrl {
    /// Parses `http://host[:port][/prefix]`; https is refused (the load
    /// generator measures the server, not TLS).
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: Uri = text
            .trim()
            .parse()
            .map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(format!(
                    "{text:?}: only http:// base URLs are supported, not {other}://"
                ))
            }
            None => return Err(format!("{text:?} needs a scheme: http://host:port")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{text:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "{text:?}: credentials in the URL are not supported"
            ));
        }
        let host = authority.host().trim_matches(['[', ']']).to_owned();
        if host.is_empty() {
            return Err(format!("{text:?} has no host"));
        }
        if uri.query().is_some() {
            return Err(format!("{text:?}: a base URL takes no query"));
        }
        Ok(Self {
            host,
            port: authority.port_u16().unwrap_or(80),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    pub fn loopback(port: u16) -> Self {
        Self {
            host: "127.0.0.1".into(),
            port,
            prefix: String::new(),
        }
    }

    /// `host:port`, as the Host header carries it.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The request target for `path` (which starts with `/`).
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// The request target for `path`, parsed once so that requests can clone it.
    pub fn uri(&self, path: &str) -> anyhow::Result<Uri> {
        self.path(path)
            .parse()
            .with_context(|| format!("bad request path {path:?}"))
    }

    pub fn host_header(&self) -> HeaderValue {
        HeaderValue::from_str(&self.authority()).unwrap_or(HeaderValue::from_static("localhost"))
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.prefix)
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// The TCP connection could not be opened.
    Connect(String),
    /// The connection broke or the server spoke something other than HTTP/1.1.
    Protocol(hyper::Error),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "connect: {e}"),
            Self::Protocol(e) => write!(f, "protocol: {e}"),
        }
    }
}

/// One keep-alive connection to one base URL, reopened when it breaks.
pub struct Connection {
    base: BaseUrl,
    /// The local address connections are opened from (any loopback address
    /// is this host's: a load balancer in front then sees distinct clients).
    source: Option<std::net::IpAddr>,
    live: Option<Live>,
}

struct Live {
    sender: SendRequest<Full<Bytes>>,
    /// The task driving the connection: aborted when the connection is dropped
    /// with a request still in flight (after a timeout), so it does not linger.
    driver: AbortHandle,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Connection {
    pub fn new(base: BaseUrl) -> Self {
        Self {
            base,
            source: None,
            live: None,
        }
    }

    /// A connection opened from `source`.
    pub fn from_source(base: BaseUrl, source: std::net::IpAddr) -> Self {
        Self {
            source: Some(source),
            ..Self::new(base)
        }
    }

    /// Opens the next connection from `source` (closing this one).
    pub fn set_source(&mut self, source: std::net::IpAddr) {
        self.source = Some(source);
        self.live = None;
    }

    pub fn base(&self) -> &BaseUrl {
        &self.base
    }

    /// Forgets the connection; the next request opens a new one.
    pub fn reset(&mut self) {
        self.live = None;
    }

    async fn open(&self) -> Result<Live, SendError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
            .await
            .map_err(|_| SendError::Connect(format!("{} did not accept in time", self.base)))?
            .map_err(|e| SendError::Connect(format!("{}: {e}", self.base)))?;
        // Requests and replies are small: send them at once, not after Nagle's delay.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Protocol)?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        })
        .abort_handle();
        Ok(Live { sender, driver })
    }

    async fn connect(&self) -> std::io::Result<TcpStream> {
        let Some(source) = self.source else {
            return TcpStream::connect((self.base.host.as_str(), self.base.port)).await;
        };
        let target = tokio::net::lookup_host((self.base.host.as_str(), self.base.port))
            .await?
            .find(|address| address.is_ipv4() == source.is_ipv4())
            .ok_or_else(|| std::io::Error::other("no address of the source's family"))?;
        let socket = if source.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(std::net::SocketAddr::new(source, 0))?;
        socket.connect(target).await
    }

    /// Sends one request, opening the connection first if it is not open.
    pub async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, SendError> {
        if self.live.as_ref().is_none_or(|l| l.sender.is_closed()) {
            self.live = Some(self.open().await?);
        }
        let Some(live) = self.live.as_mut() else {
            unreachable!("opened above");
        };
        let result = match live.sender.ready().await {
            Ok(()) => live.sender.send_request(request).await,
            Err(e) => Err(e),
        };
        result.map_err(|e| {
            self.live = None;
            SendError::Protocol(e)
        })
    }

    /// A request as the setup steps send it: optional JSON body, bearer token
    /// and Origin; returns the status and the whole body.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        origin: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(self.base.path(path))
            .header(HOST, self.base.host_header())
            .header(ACCEPT, "application/json");
        if let Some(token) = bearer {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(origin) = origin {
            builder = builder.header(ORIGIN, origin);
        }
        let body = match body {
            Some(json) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(serde_json::to_vec(json)?))
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder.body(body)?;
        let what = format!("{method} {}{path}", self.base);
        let exchange = async {
            let response = self.send(request).await.map_err(|e| anyhow!("{e}"))?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        };
        match tokio::time::timeout(Duration::from_secs(60), exchange).await {
            Ok(result) => result.with_context(|| what),
            Err(_) => {
                self.reset();
                Err(anyhow!("{what}: no response within 60 s"))
            }
        }
    }
}

/// The body as text for an error message, cut to a readable length.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_parse_host_port_and_prefix() {
        let url = BaseUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(url.authority(), "127.0.0.1:8080");
        assert_eq!(url.path("/readyz"), "/readyz");
        let url = BaseUrl::parse("http://example.test/agentry/").unwrap();
        assert_eq!(url.authority(), "example.test:80");
        assert_eq!(url.path("/readyz"), "/agentry/readyz");
        assert_eq!(url.to_string(), "http://example.test:80/agentry");
        let url = BaseUrl::parse("http://[::1]:9000").unwrap();
        assert_eq!(url.authority(), "[::1]:9000");
    }

    #[test]
    fn unsupported_base_urls_are_refused() {
        assert!(BaseUrl::parse("https://x.test")
            .unwrap_err()
            .contains("only http"));
        assert!(BaseUrl::parse("127.0.0.1:8080").is_err());
        assert!(BaseUrl::parse("http://u:p@x.test").is_err());
        assert!(BaseUrl::parse("http://x.test/?a=1").is_err());
        assert!(BaseUrl::parse("not a url").is_err());
    }

    #[test]
    fn snippets_are_cut() {
        assert_eq!(snippet(b"  short "), "short");
        let long = "x".repeat(400);
        assert_eq!(snippet(long.as_bytes()).chars().count(), 301);
    }
}
