//! Open-loop HTTP/1.1 load generation for the sluice benchmarks.
//!
//! A closed-loop tool (wrk) sends the next request only when the previous one answered, so a
//! stall delays the requests that should have been sent during it and they never show in the
//! latency figures ("coordinated omission"). [`run`] instead fixes a schedule: request `i` of
//! the whole run is due at `start + i / rate`, spread round-robin over keep-alive connections
//! (one thread each), and its latency is measured from that *intended* send time to the end of
//! the response. A stall therefore shows up in every request it delayed, as a user would see
//! it. Percentiles come from an HdrHistogram (3 significant digits).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;

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
    /// Keep-alive connections, each on its own thread: enough that one slow response does not
    /// hold back the schedule of the others.
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
    /// 99th percentile of how late the generator itself sent (its own scheduling jitter, which
    /// is part of every latency above and the same for every configuration).
    pub send_lag_p99_us: u64,
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
        })
    }
}

/// Runs the schedule described by `config` and returns the figures.
pub fn run(config: &OpenLoop) -> Result<OpenLoopReport> {
    if config.rate == 0 || config.connections == 0 {
        bail!("rate and connections must be positive");
    }
    tighten_timer_slack();
    let mut request = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", config.path, config.host);
    for (name, value) in &config.headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let request: Arc<[u8]> = Arc::from(request.into_bytes());

    let rate = f64::from(config.rate);
    let interval = Duration::from_secs_f64(f64::from(config.connections) / rate);
    // Every thread shares one origin, offset by its index, so the merged schedule is exactly
    // one request every 1/rate seconds.
    let origin = Instant::now() + Duration::from_millis(50);
    let mut workers = Vec::new();
    for index in 0..config.connections {
        let request = Arc::clone(&request);
        let target = config.target;
        let first = origin + Duration::from_secs_f64(f64::from(index) / rate);
        let (warmup, measured) = (config.warmup, config.duration);
        workers.push(thread::spawn(move || {
            connection_loop(target, &request, first, interval, warmup, measured)
        }));
    }
    let mut total = Recorded {
        latency: new_histogram()?,
        send_lag: new_histogram()?,
        errors: 0,
    };
    for worker in workers {
        let recorded = worker
            .join()
            .map_err(|_| anyhow::anyhow!("a connection thread panicked"))??;
        total.latency.add(&recorded.latency)?;
        total.send_lag.add(&recorded.send_lag)?;
        total.errors += recorded.errors;
    }
    let sent = total.latency.len();
    let percentile = |q: f64| total.latency.value_at_quantile(q);
    Ok(OpenLoopReport {
        target_rps: config.rate,
        achieved_rps: sent as f64 / config.duration.as_secs_f64(),
        sent,
        errors: total.errors,
        p50_us: percentile(0.50),
        p90_us: percentile(0.90),
        p99_us: percentile(0.99),
        p999_us: percentile(0.999),
        max_us: total.latency.max(),
        send_lag_p99_us: total.send_lag.value_at_quantile(0.99),
    })
}

/// Highest latency recorded exactly (60 s, in microseconds); larger values are clamped.
const MAX_LATENCY_US: u64 = 60_000_000;

struct Recorded {
    latency: Histogram<u64>,
    send_lag: Histogram<u64>,
    errors: u64,
}

fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("histogram bounds")
}

/// Linux wakes a sleeping thread up to its timer slack (50 us by default) late; that lateness
/// would be counted as proxy latency. New threads inherit the slack of their creator, so this
/// runs before any is spawned. Best effort: elsewhere the default slack stays (and shows in
/// `send_lag_p99_us`).
fn tighten_timer_slack() {
    let _ = std::fs::write("/proc/self/timerslack_ns", "1000");
}

fn connect(target: SocketAddr) -> Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&target, Duration::from_secs(5)).context("connect")?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(stream)
}

fn connection_loop(
    target: SocketAddr,
    request: &[u8],
    first: Instant,
    interval: Duration,
    warmup: Duration,
    measured: Duration,
) -> Result<Recorded> {
    let mut recorded = Recorded {
        latency: new_histogram()?,
        send_lag: new_histogram()?,
        errors: 0,
    };
    let measure_from = first + warmup;
    let end = measure_from + measured;
    let mut stream = connect(target)?;
    let mut buffer = vec![0_u8; 64 * 1024];
    let mut intended = first;
    while intended < end {
        let now = Instant::now();
        if intended > now {
            thread::sleep(intended - now);
        }
        let sent_at = Instant::now();
        let outcome = exchange(&mut stream, request, &mut buffer);
        let done = Instant::now();
        if intended >= measure_from {
            let latency = micros(done.saturating_duration_since(intended));
            recorded.latency.saturating_record(latency);
            recorded
                .send_lag
                .saturating_record(micros(sent_at.saturating_duration_since(intended)));
            if !matches!(outcome, Ok(200..=299)) {
                recorded.errors += 1;
            }
        }
        if outcome.is_err() {
            // The connection is in an unknown state: start a fresh one.
            stream = connect(target)?;
        }
        intended += interval;
    }
    Ok(recorded)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(MAX_LATENCY_US)
        .max(1)
}

/// Sends one request and reads the whole response; returns its status code.
fn exchange(stream: &mut TcpStream, request: &[u8], buffer: &mut [u8]) -> Result<u16> {
    stream.write_all(request)?;
    let mut filled = 0;
    let (header_end, status, content_length) = loop {
        let Some(free) = buffer.get_mut(filled..) else {
            bail!("response headers too large");
        };
        let read = stream.read(free)?;
        if read == 0 {
            bail!("connection closed mid-response");
        }
        filled += read;
        if let Some(parsed) = parse_head(buffer.get(..filled).unwrap_or_default())? {
            break parsed;
        }
    };
    let mut body = filled - header_end;
    while body < content_length {
        let read = stream.read(buffer)?;
        if read == 0 {
            bail!("connection closed mid-body");
        }
        body += read;
    }
    Ok(status)
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
}
