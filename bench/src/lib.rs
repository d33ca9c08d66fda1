//! Open-loop HTTP/1.1 load generation for the sluice benchmarks, and the parser of the Envoy-side
//! timing log ([`envoy_log`]).
//!
//! A closed-loop tool (wrk) sends the next request only when the previous one answered, so a
//! stall delays the requests that should have been sent during it and they never show in the
//! latency figures ("coordinated omission"). [`run`] instead fixes a schedule: request `i` of
//! the whole run is due at `start + i / rate`, and its latency is measured from that *intended*
//! send time to the end of the response. A stall therefore shows up in every request it delayed,
//! as a user would see it. Percentiles come from an HdrHistogram (3 significant digits).
//!
//! One thread drives everything: non-blocking keep-alive connections in one epoll set, and a
//! timerfd in the same set that wakes the loop at the next due time to the nanosecond. A due
//! request takes any idle connection of the pool (one request in flight per connection, as
//! HTTP/1.1 without pipelining allows), so a slow response holds back nothing but itself. Why
//! not one blocking thread per connection (the first version): each connection then had its own
//! fixed slot every `connections / rate` seconds, so one response slower than that slot delayed
//! every later request of its connection (head-of-line blocking inside the generator), and eight
//! threads woke and slept on a CPU shared with the upstream Envoy. Its own send lag (p99 5 to 130
//! ms) then dominated every p99 it reported.

pub mod envoy_log;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use rustix::event::epoll;
use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec};

/// What to send, how fast and for how long.
#[derive(Debug, Clone)]
pub struct OpenLoop {
    /// Target address, e.g. `127.0.0.1:10000`.
    pub target: SocketAddr,
    /// Requests per second, all connections together.
    pub rate: u32,
    /// Measured load.
    pub duration: Duration,
    /// Load sent first and not recorded (connections warm, caches hot).
    pub warmup: Duration,
    /// Keep-alive connections in the pool. A due request waits for an idle one only when all of
    /// them are busy, so the pool should exceed the requests in flight at the rate (rate x
    /// latency) by a wide margin; [`OpenLoopReport::peak_in_flight`] shows whether it did.
    pub connections: u32,
    /// `Host` header.
    pub host: String,
    /// Request path.
    pub path: String,
    /// Extra request headers, `(name, value)`.
    pub headers: Vec<(String, String)>,
}

/// Figures of one open-loop run; latencies in microseconds from the intended send time.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenLoopReport {
    /// The requested rate.
    pub target_rps: u32,
    /// Requests recorded per second of measured time.
    pub achieved_rps: f64,
    /// Requests recorded (after the warm-up).
    pub sent: u64,
    /// Recorded requests that failed or answered outside 2xx.
    pub errors: u64,
    /// Median latency.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Highest latency.
    pub max_us: u64,
    /// 99th percentile of how late the generator wrote a request after its intended send time:
    /// its own wake-up and loop delay, plus any wait for an idle connection. Part of every
    /// latency above.
    pub send_lag_p99_us: u64,
    /// Most requests in flight at once; equal to the pool size means a due request had to wait
    /// for a connection (the proxy fell behind the rate).
    pub peak_in_flight: u32,
    /// Wall-clock time of the first measured request's intended send time, to match other
    /// records of the same run (Envoy's access log) to the measured window.
    pub measured_from: SystemTime,
}

impl OpenLoopReport {
    /// The report as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "target_rps": self.target_rps,
            "achieved_rps": self.achieved_rps,
            "sent": self.sent,
            "errors": self.errors,
            "p50_us": self.p50_us,
            "p90_us": self.p90_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "max_us": self.max_us,
            "send_lag_p99_us": self.send_lag_p99_us,
            "peak_in_flight": self.peak_in_flight,
            "measured_from_unix_us": unix_micros(self.measured_from),
        })
    }
}

/// Microseconds since the Unix epoch (0 before it).
pub fn unix_micros(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

/// Highest latency recorded exactly (60 s, in microseconds); larger values are clamped.
const MAX_LATENCY_US: u64 = 60_000_000;
/// A response slower than this fails the run: something is stuck, not slow.
const STUCK_AFTER: Duration = Duration::from_secs(30);
/// epoll token of the timer; connections use their index.
const TIMER_TOKEN: u64 = u64::MAX;
/// Per-connection read buffer: the response head must fit (the bench's upstream answers a few
/// hundred bytes); a longer body is read through it.
const READ_BUFFER: usize = 16 * 1024;

/// The schedule: request `index` is due `index / rate` seconds after the origin, computed in
/// integer nanoseconds so that no rounding drifts over a run.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    origin: Instant,
    rate: u64,
}

impl Schedule {
    fn due(self, index: u64) -> Instant {
        let nanos = u128::from(index) * 1_000_000_000 / u128::from(self.rate);
        self.origin + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// How many requests are due strictly before `offset` from the origin.
    fn count_before(self, offset: Duration) -> u64 {
        let scaled = offset.as_nanos() * u128::from(self.rate);
        u64::try_from(scaled.div_ceil(1_000_000_000)).unwrap_or(u64::MAX)
    }
}

/// Runs the schedule described by `config` on the calling thread and returns the figures.
pub fn run(config: &OpenLoop) -> Result<OpenLoopReport> {
    if config.rate == 0 || config.connections == 0 {
        bail!("rate and connections must be positive");
    }
    let request = request_bytes(config);
    let poller = epoll::create(epoll::CreateFlags::CLOEXEC).context("epoll_create")?;
    let timer = rustix::time::timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )
    .context("timerfd_create")?;
    epoll::add(
        &poller,
        &timer,
        epoll::EventData::new_u64(TIMER_TOKEN),
        epoll::EventFlags::IN,
    )
    .context("epoll_ctl timer")?;
    let mut pool = Vec::new();
    for index in 0..config.connections {
        pool.push(Connection::open(config.target, &poller, u64::from(index))?);
    }
    // Last idle first: at a low rate a few warm connections carry the load.
    let mut idle: Vec<usize> = (0..pool.len()).rev().collect();

    let schedule = Schedule {
        origin: Instant::now() + Duration::from_millis(20),
        rate: u64::from(config.rate),
    };
    let wall_origin = SystemTime::now() + Duration::from_millis(20);
    let first_measured = schedule.count_before(config.warmup);
    let total = schedule.count_before(config.warmup + config.duration);
    let mut recorded = Recorded {
        latency: new_histogram()?,
        send_lag: new_histogram()?,
        errors: 0,
    };
    let mut events: Vec<epoll::Event> = Vec::with_capacity(pool.len() + 1);
    let mut next = 0_u64;
    let mut in_flight = 0_u32;
    let mut peak_in_flight = 0_u32;
    loop {
        // Send everything due while a connection is idle.
        while next < total {
            let intended = schedule.due(next);
            let sent_at = Instant::now();
            if intended > sent_at {
                break;
            }
            let Some(slot) = idle.pop() else { break };
            let measured = next >= first_measured;
            if measured {
                recorded
                    .send_lag
                    .saturating_record(micros(sent_at.saturating_duration_since(intended)));
            }
            let connection = pool.get_mut(slot).context("pool slot")?;
            if connection.send(&request, intended, measured).is_ok() {
                in_flight += 1;
                peak_in_flight = peak_in_flight.max(in_flight);
            } else {
                recorded.fail(measured, sent_at.saturating_duration_since(intended));
                connection.reopen(config.target, &poller)?;
                idle.push(slot);
            }
            next += 1;
        }
        if next >= total && in_flight == 0 {
            break;
        }
        // Wake at the next due time if a connection can take it; else when a response lands.
        let now = Instant::now();
        if next < total && !idle.is_empty() {
            let wait = schedule.due(next).saturating_duration_since(now);
            if wait.is_zero() {
                continue;
            }
            arm(&timer, wait)?;
        }
        events.clear();
        let timeout = Timespec::try_from(Duration::from_secs(1)).context("timeout")?;
        epoll::wait(
            &poller,
            rustix::buffer::spare_capacity(&mut events),
            Some(&timeout),
        )
        .context("epoll_wait")?;
        let now = Instant::now();
        for event in &events {
            let token = event.data.u64();
            if token == TIMER_TOKEN {
                drain_timer(&timer);
                continue;
            }
            let slot = usize::try_from(token).context("epoll token")?;
            let connection = pool.get_mut(slot).context("epoll token")?;
            let Some(flight) = connection.in_flight else {
                // An idle keep-alive connection the proxy closed (or wrote to): replace it.
                connection.reopen(config.target, &poller)?;
                continue;
            };
            let outcome = connection.receive();
            if matches!(outcome, Ok(None)) {
                continue;
            }
            let latency = now.saturating_duration_since(flight.intended);
            match outcome {
                Ok(Some(status)) => {
                    connection.finish();
                    recorded.complete(flight.measured, latency, status);
                }
                _ => {
                    recorded.fail(flight.measured, latency);
                    connection.reopen(config.target, &poller)?;
                }
            }
            in_flight -= 1;
            idle.push(slot);
        }
        if events.is_empty()
            && let Some(stuck) = pool.iter().find_map(|c| {
                c.in_flight
                    .filter(|f| now.saturating_duration_since(f.intended) > STUCK_AFTER)
            })
        {
            bail!(
                "no response within {STUCK_AFTER:?} for a request due {:?} ago",
                now.saturating_duration_since(stuck.intended)
            );
        }
    }
    let sent = recorded.latency.len();
    let percentile = |q: f64| recorded.latency.value_at_quantile(q);
    Ok(OpenLoopReport {
        target_rps: config.rate,
        achieved_rps: sent as f64 / config.duration.as_secs_f64(),
        sent,
        errors: recorded.errors,
        p50_us: percentile(0.50),
        p90_us: percentile(0.90),
        p99_us: percentile(0.99),
        p999_us: percentile(0.999),
        max_us: recorded.latency.max(),
        send_lag_p99_us: recorded.send_lag.value_at_quantile(0.99),
        peak_in_flight,
        measured_from: wall_origin
            + schedule
                .due(first_measured)
                .saturating_duration_since(schedule.origin),
    })
}

fn request_bytes(config: &OpenLoop) -> Vec<u8> {
    let mut request = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", config.path, config.host);
    for (name, value) in &config.headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// Arms the one-shot timer `wait` from now. A timerfd is an hrtimer without timer slack, so it
/// fires on time; `epoll_wait`'s own timeout counts in milliseconds and would not.
fn arm(timer: &OwnedFd, wait: Duration) -> Result<()> {
    let value = Itimerspec {
        it_interval: Timespec::default(),
        it_value: Timespec::try_from(wait).context("timer value")?,
    };
    rustix::time::timerfd_settime(timer, TimerfdTimerFlags::empty(), &value)
        .context("timerfd_settime")?;
    Ok(())
}

/// Clears the timer's readiness (its expiry count); nothing to read is fine.
fn drain_timer(timer: &OwnedFd) {
    let mut expirations = [0_u8; 8];
    let _ = rustix::io::read(timer, &mut expirations);
}

struct Recorded {
    latency: Histogram<u64>,
    send_lag: Histogram<u64>,
    errors: u64,
}

impl Recorded {
    fn complete(&mut self, measured: bool, latency: Duration, status: u16) {
        if measured {
            self.latency.saturating_record(micros(latency));
            if !(200..=299).contains(&status) {
                self.errors += 1;
            }
        }
    }

    /// A failed exchange still took the user `latency`: it is recorded, and counted an error.
    fn fail(&mut self, measured: bool, latency: Duration) {
        if measured {
            self.latency.saturating_record(micros(latency));
            self.errors += 1;
        }
    }
}

fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("histogram bounds")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(MAX_LATENCY_US)
        .max(1)
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    intended: Instant,
    measured: bool,
}

/// One keep-alive connection of the pool and the response it is reading.
struct Connection {
    stream: TcpStream,
    token: u64,
    in_flight: Option<InFlight>,
    buffer: Box<[u8]>,
    filled: usize,
    /// Body bytes still expected once the head is parsed.
    body_left: Option<usize>,
}

impl Connection {
    fn open(target: SocketAddr, poller: &OwnedFd, token: u64) -> Result<Self> {
        Ok(Self {
            stream: connect(target, poller, token)?,
            token,
            in_flight: None,
            buffer: vec![0_u8; READ_BUFFER].into_boxed_slice(),
            filled: 0,
            body_left: None,
        })
    }

    /// A fresh connection in place of this one (the old one is closed, which also removes it
    /// from the epoll set).
    fn reopen(&mut self, target: SocketAddr, poller: &OwnedFd) -> Result<()> {
        self.stream = connect(target, poller, self.token)?;
        self.finish();
        Ok(())
    }

    /// Writes the request. It is a few dozen bytes on an idle connection whose send buffer is
    /// empty, so a short or blocked write means the connection is broken.
    fn send(&mut self, request: &[u8], intended: Instant, measured: bool) -> Result<()> {
        let written = self.stream.write(request)?;
        if written != request.len() {
            bail!("short write ({written} of {} bytes)", request.len());
        }
        self.in_flight = Some(InFlight { intended, measured });
        Ok(())
    }

    /// Reads what arrived; the status once the whole response is in.
    fn receive(&mut self) -> Result<Option<u16>> {
        loop {
            if let Some(left) = self.body_left {
                if left == 0 {
                    let status = parse_head(self.buffer.get(..self.filled).unwrap_or_default())?
                        .map(|(_, status, _)| status)
                        .context("response head vanished")?;
                    return Ok(Some(status));
                }
                // Body beyond the buffer: read it through the buffer's tail.
                let scratch = self.buffer.get_mut(self.filled..).unwrap_or_default();
                let read = match read_some(&mut self.stream, scratch)? {
                    Some(read) => read,
                    None => return Ok(None),
                };
                if read > left {
                    bail!("more bytes than the response announced");
                }
                self.body_left = Some(left - read);
                continue;
            }
            let Some(free) = self.buffer.get_mut(self.filled..).filter(|f| !f.is_empty()) else {
                bail!("response head larger than {READ_BUFFER} bytes");
            };
            let read = match read_some(&mut self.stream, free)? {
                Some(read) => read,
                None => return Ok(None),
            };
            self.filled += read;
            if let Some((head_end, _, content_length)) =
                parse_head(self.buffer.get(..self.filled).unwrap_or_default())?
            {
                let body_here = self.filled - head_end;
                if body_here > content_length {
                    bail!("more bytes than the response announced");
                }
                // Keep only the head: the body's bytes are counted, not kept.
                self.filled = head_end;
                self.body_left = Some(content_length - body_here);
            }
        }
    }

    /// Ready for the next request.
    fn finish(&mut self) {
        self.in_flight = None;
        self.filled = 0;
        self.body_left = None;
    }
}

/// `Some(n)` bytes read, `None` when nothing is there yet; end of stream is an error (a
/// response was expected).
fn read_some(stream: &mut TcpStream, into: &mut [u8]) -> Result<Option<usize>> {
    match stream.read(into) {
        Ok(0) => bail!("connection closed mid-response"),
        Ok(read) => Ok(Some(read)),
        Err(error) if error.kind() == ErrorKind::WouldBlock => Ok(None),
        Err(error) if error.kind() == ErrorKind::Interrupted => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// A connected, non-blocking stream, registered for readability under `token`.
fn connect(target: SocketAddr, poller: &OwnedFd, token: u64) -> Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&target, Duration::from_secs(5)).context("connect")?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    epoll::add(
        poller,
        &stream,
        epoll::EventData::new_u64(token),
        epoll::EventFlags::IN,
    )
    .context("epoll_ctl connection")?;
    Ok(stream)
}

/// `(end of the header block, status, content-length)` once the head is complete.
fn parse_head(bytes: &[u8]) -> Result<Option<(usize, u16, usize)>> {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(bytes.get(..end).unwrap_or_default())
        .context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .context("malformed status line")?;
    let mut content_length = 0;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().context("bad content-length")?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                bail!("chunked responses are not supported (use a fixed-size upstream body)");
            }
        }
    }
    Ok(Some((end + 4, status, content_length)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_is_parsed_once_complete() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le").unwrap(), None);
        let head = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 12\r\n\r\nbody";
        assert_eq!(parse_head(head).unwrap(), Some((head.len() - 4, 503, 12)));
    }

    #[test]
    fn chunked_bodies_are_refused() {
        let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(parse_head(head).is_err());
    }

    #[test]
    fn schedule_is_exact_in_integer_nanoseconds() {
        let origin = Instant::now();
        let schedule = Schedule { origin, rate: 3 };
        assert_eq!(schedule.due(0), origin);
        assert_eq!(schedule.due(1), origin + Duration::from_nanos(333_333_333));
        assert_eq!(schedule.due(3), origin + Duration::from_secs(1));
        // Due strictly before 1 s: 0, 1/3 and 2/3 s; before 1.000000001 s also the one at 1 s.
        assert_eq!(schedule.count_before(Duration::from_secs(1)), 3);
        assert_eq!(
            schedule.count_before(Duration::from_nanos(1_000_000_001)),
            4
        );
        assert_eq!(schedule.count_before(Duration::ZERO), 0);
    }

    /// A loopback server on one keep-alive connection, answering every fifth request 503 and
    /// writing each response's head and body separately: the generator reads responses split
    /// across reads, records only the measured window and counts the non-2xx answers in it.
    #[test]
    fn runs_against_a_loopback_server() {
        use std::io::BufRead;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // Without it the body's write would wait for the client's delayed ACK (Nagle).
            stream.set_nodelay(true).unwrap();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut answered = 0_u32;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return answered;
                }
                if line == "\r\n" {
                    let code = if answered % 5 == 4 { 503 } else { 200 };
                    let head = format!("HTTP/1.1 {code} X\r\ncontent-length: 2\r\n\r\n");
                    stream.write_all(head.as_bytes()).unwrap();
                    stream.flush().unwrap();
                    stream.write_all(b"ok").unwrap();
                    answered += 1;
                }
            }
        });
        let report = run(&OpenLoop {
            target,
            rate: 200,
            duration: Duration::from_millis(250),
            warmup: Duration::from_millis(50),
            connections: 1,
            host: "test".to_owned(),
            path: "/".to_owned(),
            headers: vec![("x-a".to_owned(), "b".to_owned())],
        })
        .unwrap();
        // 60 requests due in 300 ms on one connection, in order; the first 10 are the warm-up.
        // The measured ones are 10..60, of which 14, 19, ..., 59 were answered 503.
        assert_eq!(report.sent, 50, "{report:?}");
        assert_eq!(report.errors, 10, "{report:?}");
        assert_eq!(report.peak_in_flight, 1);
        assert!(report.p50_us <= report.p99_us && report.p99_us <= report.max_us);
        assert!(report.measured_from > SystemTime::UNIX_EPOCH);
        // The generator closes its connection when it returns; the server saw all 60.
        assert_eq!(server.join().unwrap(), 60);
    }
}
