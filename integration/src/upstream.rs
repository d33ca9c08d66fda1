//! In-process test upstreams: HTTP/1.1 and h2c (prior knowledge) on `127.0.0.1:<free port>`.
//!
//! Each answer carries `x-served-by: <name>` and the name as body, so a test sees which
//! upstream Envoy picked. Every request is recorded (headers as bytes) for tests that check what
//! reached the upstream (e.g. that internal headers never leak). The behaviour can change while
//! Envoy runs: fail, fail the next N, delay, hang or reset.
//!
//! Each upstream runs on its own thread with a single-threaded tokio runtime, so tests stay
//! synchronous, and dropping the [`Upstream`] ends every connection it had.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::header::HeaderValue;
use hyper::{HeaderMap, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The response header naming the upstream that answered.
pub const SERVED_BY_HEADER: &str = "x-served-by";

/// How an upstream answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// 200 with the name as body (gRPC requests get `grpc-status: 0` in trailers).
    Ok,
    /// Every request gets this status (with `x-served-by`).
    Status(u16),
    /// The next `count` requests get `status`, then the upstream behaves as [`Behavior::Ok`].
    FailNext {
        /// How many requests fail.
        count: u32,
        /// The status they get.
        status: u16,
    },
    /// Each request independently gets `status` with probability `per_million / 1e6` (drawn
    /// from the upstream's own generator, seeded at random per upstream), else as
    /// [`Behavior::Ok`]: a service that fails at a steady rate.
    FailRandomly {
        /// Failure probability, in millionths.
        per_million: u32,
        /// The status failures get.
        status: u16,
    },
    /// gRPC requests each independently get HTTP 200 with `grpc-status: status` with
    /// probability `per_million / 1e6`, else answer as [`Behavior::Ok`] (`grpc-status: 0`);
    /// other requests always as [`Behavior::Ok`]: a gRPC service failing at a steady rate.
    GrpcFailRandomly {
        /// Failure probability, in millionths.
        per_million: u32,
        /// The gRPC status failures get.
        status: u32,
        /// `true`: a failure is trailers-only (the status in the headers of a response without
        /// body, as gRPC servers answer errors); `false`: a message, then the status in
        /// trailers.
        trailers_only: bool,
    },
    /// Answers as [`Behavior::Ok`] after this delay.
    Delay(Duration),
    /// Never answers (the connection stays open until the peer gives up).
    Hang,
    /// Closes the connection (HTTP/1.1) or resets the stream (h2) without answering.
    Reset,
}

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Method, e.g. `"GET"`.
    pub method: String,
    /// Path with query.
    pub path: String,
    /// `:authority` (h2) or `Host` (HTTP/1.1), if any.
    pub authority: Option<String>,
    /// `"HTTP/1.1"` or `"HTTP/2.0"`.
    pub version: String,
    /// Headers in order, names lower-case, values as bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The request body.
    pub body: Bytes,
}

impl RecordedRequest {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Whether header `name` reached the upstream.
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

#[derive(Debug)]
struct State {
    behavior: Behavior,
    requests: Vec<RecordedRequest>,
    /// splitmix64 state for [`Behavior::FailRandomly`].
    rng: u64,
}

impl State {
    /// The next draw, uniform in `[0, 1_000_000)` (splitmix64; its modulo bias is ~1e-13).
    fn next_per_million(&mut self) -> u32 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % 1_000_000) as u32
    }
}

/// A random seed without a dependency: std's per-process random hasher keys.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x5eed);
    hasher.finish()
}

struct Shared {
    name: String,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide its own failure behind a
        // poisoned-mutex panic in every later request.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running test upstream; dropping it stops the server.
pub struct Upstream {
    shared: Arc<Shared>,
    port: u16,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts an upstream called `name` on `127.0.0.1` at a free port, behaving [`Behavior::Ok`].
    ///
    /// Panics if it cannot bind (a broken machine rather than a test outcome).
    pub fn start(name: &str) -> Self {
        Self::start_at(name, 0)
    }

    /// [`Upstream::start`] on `127.0.0.1:port` (0: a free port): an upstream brought back on
    /// the port it had, as a restarted server would be. Panics if it cannot bind.
    pub fn start_at(name: &str, port: u16) -> Self {
        Self::start_on(name, [127, 0, 0, 1].into(), port)
    }

    /// [`Upstream::start_at`] on another loopback address (`127.0.0.2`, ...): hosts that a
    /// registry tells apart by address, as VMs are.
    pub fn start_on(name: &str, ip: std::net::IpAddr, port: u16) -> Self {
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            state: Mutex::new(State {
                behavior: Behavior::Ok,
                requests: Vec::new(),
                rng: random_seed(),
            }),
        });
        let std_listener = std::net::TcpListener::bind((ip, port))
            .unwrap_or_else(|e| panic!("upstream {name}: cannot bind {ip}:{port}: {e}"));
        let port = std_listener
            .local_addr()
            .unwrap_or_else(|e| panic!("upstream {name}: no local address: {e}"))
            .port();
        std_listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("upstream {name}: set_nonblocking: {e}"));
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("upstream-{name}"))
            .spawn(move || serve(std_listener, thread_shared, shutdown_rx))
            .unwrap_or_else(|e| panic!("upstream {name}: cannot spawn its thread: {e}"));
        Self {
            shared,
            port,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// The port it listens on (on 127.0.0.1 unless started with [`Upstream::start_on`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its name (the `x-served-by` value and the body of its answers).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Changes how it answers from the next request on.
    pub fn set_behavior(&self, behavior: Behavior) {
        self.shared.lock().behavior = behavior;
    }

    /// Every request it received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// How many requests it received so far.
    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// Forgets the recorded requests (e.g. after a warm-up phase).
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.shared.name)
            .field("port", &self.port)
            .finish()
    }
}

fn serve(
    std_listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("upstream {}: cannot start its runtime: {e}", shared.name);
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::from_std(std_listener) {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("upstream {}: {e}", shared.name);
                return;
            }
        };
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            handle(Arc::clone(&shared), request)
                        });
                        // auto: HTTP/1.1, or HTTP/2 when the connection opens with its preface.
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        }
    });
    // Dropping the runtime here cancels every connection task, hanging ones included.
}

/// Why the upstream refused to answer ([`Behavior::Reset`]); hyper then drops the connection.
#[derive(Debug)]
struct ResetConnection;

impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reset by the test upstream")
    }
}

impl std::error::Error for ResetConnection {}

async fn handle(
    shared: Arc<Shared>,
    request: hyper::Request<Incoming>,
) -> Result<Response<NameBody>, ResetConnection> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(hyper::header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        });
    let is_grpc = parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
    let recorded = RecordedRequest {
        method: parts.method.as_str().to_owned(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        authority,
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        body,
    };

    // Decide under the lock, act after releasing it (delays must not block other requests).
    let mut grpc_failure = None;
    let status = {
        let mut state = shared.lock();
        state.requests.push(recorded);
        match state.behavior.clone() {
            Behavior::Ok => Ok(StatusCode::OK),
            Behavior::Status(code) => Ok(status_code(code)),
            Behavior::FailNext { count: 0, .. } => {
                state.behavior = Behavior::Ok;
                Ok(StatusCode::OK)
            }
            Behavior::FailNext { count, status } => {
                state.behavior = if count > 1 {
                    Behavior::FailNext {
                        count: count - 1,
                        status,
                    }
                } else {
                    Behavior::Ok
                };
                Ok(status_code(status))
            }
            Behavior::FailRandomly {
                per_million,
                status,
            } => {
                if state.next_per_million() < per_million {
                    Ok(status_code(status))
                } else {
                    Ok(StatusCode::OK)
                }
            }
            Behavior::GrpcFailRandomly {
                per_million,
                status,
                trailers_only,
            } => {
                if is_grpc && state.next_per_million() < per_million {
                    grpc_failure = Some((status, trailers_only));
                }
                Ok(StatusCode::OK)
            }
            Behavior::Delay(delay) => Err(Some(delay)),
            Behavior::Hang => Err(None),
            Behavior::Reset => return Err(ResetConnection),
        }
    };
    let status = match status {
        Ok(status) => status,
        Err(Some(delay)) => {
            tokio::time::sleep(delay).await;
            StatusCode::OK
        }
        Err(None) => std::future::pending().await,
    };

    let grpc_status = match grpc_failure {
        Some((code, false)) => Some(code),
        Some((_, true)) => None,
        None => (is_grpc && status.is_success()).then_some(0),
    };
    let mut response = Response::new(NameBody::new(&shared.name, grpc_status));
    *response.status_mut() = status;
    if let Some((code, true)) = grpc_failure {
        // Trailers-only: the status in the headers, no body.
        response
            .headers_mut()
            .insert("grpc-status", HeaderValue::from(code));
        *response.body_mut() = NameBody::empty();
    }
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&shared.name) {
        headers.insert(SERVED_BY_HEADER, value);
    }
    headers.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static(if is_grpc {
            "application/grpc"
        } else {
            "text/plain"
        }),
    );
    Ok(response)
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The response body: the upstream's name, then (for gRPC) the `grpc-status` trailer.
struct NameBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl NameBody {
    /// No body at all.
    fn empty() -> Self {
        Self {
            data: None,
            trailers: None,
        }
    }

    /// The name; for a gRPC answer (`grpc_status`) one message holding it, then the status in
    /// trailers.
    fn new(name: &str, grpc_status: Option<u32>) -> Self {
        if let Some(code) = grpc_status {
            // One gRPC message frame holding the name, then the status in trailers.
            let mut framed = vec![0u8];
            let len = u32::try_from(name.len()).unwrap_or(0);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(name.as_bytes());
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from(code));
            Self {
                data: Some(Bytes::from(framed)),
                trailers: Some(trailers),
            }
        } else {
            Self {
                data: Some(Bytes::copy_from_slice(name.as_bytes())),
                trailers: None,
            }
        }
    }
}

impl Body for NameBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

/// An [`Upstream`] in a process of its own (`sluice-test-upstream`), to be killed by PID.
///
/// The binary path comes from the test (`env!("CARGO_BIN_EXE_sluice-test-upstream")`), which
/// Cargo builds for this crate's integration tests.
pub struct UpstreamProcess {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    name: String,
    port: u16,
}

impl UpstreamProcess {
    /// Starts `binary NAME PORT` (PORT 0: a free port) and waits until it listens.
    pub fn start(binary: &str, name: &str, port: u16) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        use std::io::BufRead as _;
        let mut child = std::process::Command::new(binary)
            .args([name, &port.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("start {binary}"))?;
        let stdin = child.stdin.take().context("stdin piped")?;
        let mut stdout = std::io::BufReader::new(child.stdout.take().context("stdout piped")?);
        let mut line = String::new();
        stdout.read_line(&mut line).context("read its first line")?;
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("upstream {name} did not start: {line:?}"))?;
        Ok(Self {
            child,
            stdin,
            stdout,
            name: name.to_owned(),
            port,
        })
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn command(&mut self, command: &str) -> String {
        use std::io::{BufRead as _, Write as _};
        let mut line = String::new();
        writeln!(self.stdin, "{command}")
            .and_then(|()| self.stdin.flush())
            .and_then(|()| self.stdout.read_line(&mut line).map(|_| ()))
            .unwrap_or_else(|e| panic!("upstream {}: {command}: {e}", self.name));
        line.trim().to_owned()
    }

    /// Requests since the last [`clear`](Self::clear): all of them, and the `GET /healthz`
    /// probes among them.
    pub fn counts(&mut self) -> (usize, usize) {
        let answer = self.command("count");
        let mut fields = answer.split(' ').filter_map(|f| f.parse().ok());
        match (fields.next(), fields.next()) {
            (Some(total), Some(probes)) => (total, probes),
            _ => panic!("upstream {}: count answered {answer:?}", self.name),
        }
    }

    /// Forgets the recorded requests.
    pub fn clear(&mut self) {
        let answer = self.command("clear");
        assert_eq!(answer, "ok", "upstream {}: clear", self.name);
    }

    /// Kills it by PID (SIGKILL): its listener and connections vanish as in a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for UpstreamProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
