//! Synchronous HTTP clients for tests: HTTP/1.1, h2c (HTTP/2 with prior knowledge) and gRPC.
//!
//! Every request opens its own connection to `127.0.0.1:<port>`. That costs a loopback
//! handshake, and buys requests that Envoy spreads over its workers like independent clients
//! do, which matters for state that must hold across workers (breakers, sticky canaries).
//! Header values are bytes: a test may send a non-UTF-8 value to prove a filter survives it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// Pass as the `headers` argument of [`get`] or [`get_many`] to send no extra header (an empty
/// slice literal cannot tell its element type).
pub const NO_HEADERS: &[(&str, &str)] = &[];

/// The authority requests carry unless told otherwise.
pub const DEFAULT_AUTHORITY: &str = "sluice.test";

/// How long a request may take unless told otherwise: above Envoy's default route timeout
/// (15 s), so a test sees Envoy's answer to a hanging upstream rather than its own timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How many requests [`get_many`] keeps in flight at once.
pub const DEFAULT_PARALLELISM: usize = 16;

/// The wire protocol of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 over plain TCP.
    Http1,
    /// HTTP/2 over plain TCP with prior knowledge (what gRPC clients speak without TLS).
    H2c,
}

/// A request to send with [`send`] or [`send_many`]; build it with [`Request::get`] or
/// [`Request::new`] and the chained setters.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method, e.g. `"GET"`, `"POST"`.
    pub method: String,
    /// Port on 127.0.0.1.
    pub port: u16,
    /// `Host` (HTTP/1.1) or `:authority` (h2c).
    pub authority: String,
    /// Path with query, e.g. `"/reviews?x=1"`.
    pub path: String,
    /// Extra headers; values are raw bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Request body.
    pub body: Bytes,
    /// Bound on the whole exchange (connect, send, read the full response).
    pub timeout: Duration,
    /// HTTP/1.1 or h2c.
    pub protocol: Protocol,
}

impl Request {
    /// A request with `method` to `127.0.0.1:port` for `path`.
    pub fn new(method: &str, port: u16, path: &str) -> Self {
        Self {
            method: method.to_owned(),
            port,
            authority: DEFAULT_AUTHORITY.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
            timeout: DEFAULT_TIMEOUT,
            protocol: Protocol::Http1,
        }
    }

    /// A GET to `127.0.0.1:port` for `path`.
    pub fn get(port: u16, path: &str) -> Self {
        Self::new("GET", port, path)
    }

    /// Sets the authority (`Host` header / `:authority`).
    pub fn authority(mut self, authority: &str) -> Self {
        self.authority = authority.to_owned();
        self
    }

    /// Adds a header; the value may be any bytes Envoy accepts, UTF-8 or not.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the bound on the whole exchange.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends the request as h2c (HTTP/2 with prior knowledge) instead of HTTP/1.1.
    pub fn h2c(mut self) -> Self {
        self.protocol = Protocol::H2c;
        self
    }

    fn describe(&self) -> String {
        format!(
            "{} http://127.0.0.1:{}{} (authority {:?}, {:?})",
            self.method, self.port, self.path, self.authority, self.protocol
        )
    }
}

/// A complete response: status, headers, body and trailers.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in the order received, names lower-case, values as bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body.
    pub body: Bytes,
    /// Trailers (h2c; where gRPC puts `grpc-status` unless the response is trailers-only).
    pub trailers: Vec<(String, Vec<u8>)>,
}

impl Response {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find(&self.headers, name)
    }

    /// The first value of header `name` if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// The first value of trailer `name`.
    pub fn trailer(&self, name: &str) -> Option<&[u8]> {
        find(&self.trailers, name)
    }

    /// Which test upstream answered (its `x-served-by` header); `None` when Envoy answered
    /// itself (a fault abort, a breaker rejection, no route, an upstream failure).
    pub fn served_by(&self) -> Option<&str> {
        self.header_str(crate::upstream::SERVED_BY_HEADER)
    }

    /// The body as text (lossy: invalid UTF-8 becomes U+FFFD).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The gRPC status: from the trailers, else from the headers (a trailers-only response).
    pub fn grpc_status(&self) -> Option<u32> {
        self.trailer("grpc-status")
            .or_else(|| self.header("grpc-status"))
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(|text| text.trim().parse().ok())
    }
}

fn find<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// GET `path` from `127.0.0.1:port` with `authority` and extra `headers` over HTTP/1.1.
///
/// ```no_run
/// # use sluice_integration::client;
/// let plain = client::get(8080, "reviews", "/", client::NO_HEADERS)?;
/// let jason = client::get(8080, "reviews", "/", &[("end-user", "jason")])?;
/// let raw = client::get(8080, "reviews", "/", &[("end-user", b"\xff\xfe".as_slice())])?;
/// # anyhow::Ok(())
/// ```
pub fn get<V: AsRef<[u8]>>(
    port: u16,
    authority: &str,
    path: &str,
    headers: &[(&str, V)],
) -> Result<Response> {
    send(&get_request(port, authority, path, headers))
}

fn get_request<V: AsRef<[u8]>>(
    port: u16,
    authority: &str,
    path: &str,
    headers: &[(&str, V)],
) -> Request {
    headers.iter().fold(
        Request::get(port, path).authority(authority),
        |request, (name, value)| request.header(name, value),
    )
}

/// Sends one request and reads the whole response.
pub fn send(request: &Request) -> Result<Response> {
    crate::runtime::block_on(send_async(request.clone()))
}

/// Sends `n` identical GETs, at most [`DEFAULT_PARALLELISM`] at a time; fails on the first
/// request that fails (a transport error, not a non-2xx status).
pub fn get_many<V: AsRef<[u8]>>(
    port: u16,
    authority: &str,
    path: &str,
    headers: &[(&str, V)],
    n: usize,
) -> Result<Vec<Response>> {
    let request = get_request(port, authority, path, headers);
    send_many(vec![request; n], DEFAULT_PARALLELISM)
        .into_iter()
        .enumerate()
        .map(|(i, result)| result.with_context(|| format!("request {} of {n}", i + 1)))
        .collect()
}

/// Sends every request, keeping at most `parallelism` in flight; results in request order.
pub fn send_many(requests: Vec<Request>, parallelism: usize) -> Vec<Result<Response>> {
    let permits = Arc::new(tokio::sync::Semaphore::new(parallelism.max(1)));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let permits = Arc::clone(&permits);
            crate::runtime::spawn(async move {
                let _permit = permits
                    .acquire_owned()
                    .await
                    .map_err(|e| anyhow!("request semaphore closed: {e}"))?;
                send_async(request).await
            })
        })
        .collect();
    crate::runtime::block_on(async move {
        let mut results = Vec::with_capacity(tasks.len());
        for task in tasks {
            results.push(
                task.await
                    .unwrap_or_else(|e| Err(anyhow!("request task failed: {e}"))),
            );
        }
        results
    })
}

/// How many responses each upstream served (by `x-served-by`); responses Envoy answered
/// itself count under `"<envoy:STATUS>"`, e.g. `"<envoy:503>"`.
pub fn served_by_counts(responses: &[Response]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for response in responses {
        let key = match response.served_by() {
            Some(name) => name.to_owned(),
            None => format!("<envoy:{}>", response.status),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// How many responses carry each status code.
pub fn status_counts(responses: &[Response]) -> BTreeMap<u16, u64> {
    let mut counts = BTreeMap::new();
    for response in responses {
        *counts.entry(response.status).or_insert(0) += 1;
    }
    counts
}

/// A unary gRPC call over h2c: POST `path` (`/package.Service/Method`) with `message` framed as
/// one uncompressed gRPC message, `content-type: application/grpc` and `te: trailers`.
/// Read the outcome with [`Response::grpc_status`].
pub fn grpc<V: AsRef<[u8]>>(
    port: u16,
    authority: &str,
    path: &str,
    message: &[u8],
    headers: &[(&str, V)],
) -> Result<Response> {
    send(&grpc_request(port, authority, path, message, headers)?)
}

/// The request [`grpc`] sends, e.g. for [`send_many`].
pub fn grpc_request<V: AsRef<[u8]>>(
    port: u16,
    authority: &str,
    path: &str,
    message: &[u8],
    headers: &[(&str, V)],
) -> Result<Request> {
    let length = u32::try_from(message.len()).context("gRPC message over 4 GiB")?;
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0); // not compressed
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(message);
    Ok(headers.iter().fold(
        Request::new("POST", port, path)
            .authority(authority)
            .h2c()
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(framed),
        |request, (name, value)| request.header(name, value),
    ))
}

pub(crate) async fn send_async(request: Request) -> Result<Response> {
    let description = request.describe();
    match tokio::time::timeout(request.timeout, exchange(&request)).await {
        Ok(result) => result.with_context(|| description),
        Err(_) => bail!(
            "{description}: no complete response within {:?}",
            request.timeout
        ),
    }
}

async fn exchange(request: &Request) -> Result<Response> {
    let stream = TcpStream::connect(("127.0.0.1", request.port))
        .await
        .context("connect")?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let io = TokioIo::new(stream);

    let method = Method::from_bytes(request.method.as_bytes())
        .with_context(|| format!("invalid method {:?}", request.method))?;
    let uri: Uri = match request.protocol {
        // HTTP/1.1: origin-form request line, the authority goes into Host.
        Protocol::Http1 => request.path.parse(),
        // HTTP/2: hyper takes :scheme and :authority from an absolute URI.
        Protocol::H2c => format!("http://{}{}", request.authority, request.path).parse(),
    }
    .with_context(|| {
        format!(
            "invalid path {:?} or authority {:?}",
            request.path, request.authority
        )
    })?;
    let mut builder = hyper::Request::builder().method(method).uri(uri);
    if request.protocol == Protocol::Http1 {
        builder = builder.header(
            hyper::header::HOST,
            HeaderValue::from_str(&request.authority).context("invalid authority")?,
        );
    }
    for (name, value) in &request.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .with_context(|| format!("invalid header name {name:?}"))?;
        let value = HeaderValue::from_bytes(value)
            .with_context(|| format!("invalid value for header {name}: {value:?}"))?;
        builder = builder.header(name, value);
    }
    let http_request = builder
        .body(Full::new(request.body.clone()))
        .context("build request")?;

    let response = match request.protocol {
        Protocol::Http1 => {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .context("HTTP/1.1 handshake")?;
            tokio::spawn(connection);
            sender.send_request(http_request).await.context("send")?
        }
        Protocol::H2c => {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .context("h2c handshake")?;
            tokio::spawn(connection);
            sender.send_request(http_request).await.context("send")?
        }
    };
    let status = response.status().as_u16();
    let headers = fields(response.headers());
    let collected = response
        .into_body()
        .collect()
        .await
        .context("read the response body")?;
    let trailers = collected.trailers().map(fields).unwrap_or_default();
    Ok(Response {
        status,
        headers,
        body: collected.to_bytes(),
        trailers,
    })
}

fn fields(map: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    map.iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect()
}
