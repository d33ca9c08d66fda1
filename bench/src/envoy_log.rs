//! Envoy's own timing of each request, from a file access log in [`FORMAT`].
//!
//! No load generator's lag can touch these figures: Envoy stamps the time points itself, on its
//! monotonic clock, as the stream passes them (`%COMMON_DURATION(START:END:ns)%`, Envoy 1.29 and
//! later). Two intervals per request:
//!
//! - **held**: `DS_RX_BEG` -> `DS_TX_END`, from the first byte of the request Envoy parsed to the
//!   last byte of the response it wrote to the socket: everything the proxy did for the request,
//!   the upstream round trip included.
//! - **upstream**: `US_TX_BEG` -> `US_RX_END`, from the first byte Envoy wrote upstream to the
//!   end of the upstream response: the upstream's own time and the loopback hops.
//!
//! **own** = held - upstream is then the proxy's part: request parsing, the filter chain on the
//! request and the response, routing, the connection pool, encoding; per request, so its
//! percentiles isolate what a filter adds from the upstream's noise.
//!
//! What they do not see: time a request waited in the socket before Envoy's worker read it
//! (a busy worker queues requests in the kernel: the client-side figures show that queue),
//! and work done after the response's last byte (access logging, wasm `on_log` / `on_done`,
//! stream teardown), which delays the *next* request on the worker, not this one.

use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;

/// The access-log line this module reads: start time (Unix seconds with microseconds), response
/// code, held and upstream durations in nanoseconds (`-` when a time point never happened).
pub const FORMAT: &str = "%START_TIME(%s.%6f)% %RESPONSE_CODE% \
                          %COMMON_DURATION(DS_RX_BEG:DS_TX_END:ns)% \
                          %COMMON_DURATION(US_TX_BEG:US_RX_END:ns)%\n";

/// Highest duration recorded exactly (60 s, in nanoseconds); larger values are clamped.
const MAX_NS: u64 = 60_000_000_000;

/// Percentiles of one interval, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Highest value.
    pub max_us: f64,
}

impl Percentiles {
    /// The percentiles of `histogram` (nanoseconds); all zero when it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Self {
            p50_us: us(histogram.value_at_quantile(0.50)),
            p90_us: us(histogram.value_at_quantile(0.90)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            p999_us: us(histogram.value_at_quantile(0.999)),
            max_us: us(histogram.max()),
        }
    }
}

/// The Envoy-side figures of one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvoyTimings {
    /// Log lines in the measured window.
    pub requests: u64,
    /// Of those, responses outside 2xx or without an upstream exchange (not in the percentiles).
    pub skipped: u64,
    /// `DS_RX_BEG` -> `DS_TX_END`.
    pub held: Percentiles,
    /// `US_TX_BEG` -> `US_RX_END`.
    pub upstream: Percentiles,
    /// held - upstream, per request.
    pub own: Percentiles,
}

/// One parsed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    /// Envoy's start time of the request, microseconds since the Unix epoch.
    pub start_unix_us: u64,
    /// Response code (0 when Envoy never answered).
    pub status: u16,
    /// Held, nanoseconds; `None` for `-`.
    pub held_ns: Option<u64>,
    /// Upstream, nanoseconds; `None` for `-`.
    pub upstream_ns: Option<u64>,
}

/// Parses one line of [`FORMAT`] (without its newline).
pub fn parse_line(line: &str) -> Result<Line> {
    let mut fields = line.split(' ');
    let mut next = |what: &str| {
        fields
            .next()
            .with_context(|| format!("no {what} in access-log line {line:?}"))
    };
    let start = next("start time")?;
    let status = next("response code")?;
    let held = next("held duration")?;
    let upstream = next("upstream duration")?;
    if fields.next().is_some() {
        bail!("extra fields in access-log line {line:?}");
    }
    let (seconds, micros) = start
        .split_once('.')
        .with_context(|| format!("start time {start:?} is not seconds.micros"))?;
    if micros.len() != 6 {
        bail!("start time {start:?} does not have 6 fractional digits");
    }
    let start_unix_us = seconds
        .parse::<u64>()
        .ok()
        .zip(micros.parse::<u64>().ok())
        .and_then(|(s, us)| s.checked_mul(1_000_000)?.checked_add(us))
        .with_context(|| format!("bad start time {start:?}"))?;
    let duration = |text: &str| -> Result<Option<u64>> {
        if text == "-" {
            return Ok(None);
        }
        // A negative value is possible only with independent half-close on HTTP/2 and /3.
        text.parse::<u64>()
            .map(Some)
            .with_context(|| format!("bad duration {text:?} in {line:?}"))
    };
    Ok(Line {
        start_unix_us,
        status: status
            .parse()
            .with_context(|| format!("bad response code {status:?} in {line:?}"))?,
        held_ns: duration(held)?,
        upstream_ns: duration(upstream)?,
    })
}

/// The figures of the lines in `log` whose request started at or after `from` (the measured
/// window of a run; earlier lines are its warm-up).
pub fn timings(log: &str, from: SystemTime) -> Result<EnvoyTimings> {
    let from_us = crate::unix_micros(from);
    let histogram = || Histogram::<u64>::new_with_bounds(1, MAX_NS, 3).context("histogram");
    let (mut held, mut upstream, mut own) = (histogram()?, histogram()?, histogram()?);
    let mut figures = EnvoyTimings::default();
    for text in log.lines().filter(|l| !l.is_empty()) {
        let line = parse_line(text)?;
        if line.start_unix_us < from_us {
            continue;
        }
        figures.requests += 1;
        match (line.status, line.held_ns, line.upstream_ns) {
            (200..=299, Some(h), Some(u)) => {
                held.saturating_record(h.max(1));
                upstream.saturating_record(u.max(1));
                own.saturating_record(h.saturating_sub(u).max(1));
            }
            _ => figures.skipped += 1,
        }
    }
    figures.held = Percentiles::of(&held);
    figures.upstream = Percentiles::of(&upstream);
    figures.own = Percentiles::of(&own);
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_line_parses() {
        assert_eq!(
            parse_line("1795340343.888334 200 640501 375000").unwrap(),
            Line {
                start_unix_us: 1_795_340_343_888_334,
                status: 200,
                held_ns: Some(640_501),
                upstream_ns: Some(375_000),
            }
        );
        let direct = parse_line("1795340343.000001 503 12000 -").unwrap();
        assert_eq!((direct.status, direct.upstream_ns), (503, None));
    }

    #[test]
    fn malformed_lines_are_refused() {
        for bad in [
            "",
            "1795340343.888334 200 640501",
            "1795340343.888334 200 640501 375000 9",
            "1795340343 200 640501 375000",
            "1795340343.8883 200 640501 375000",
            "1795340343.888334 OK 640501 375000",
            "1795340343.888334 200 -5 375000",
        ] {
            assert!(parse_line(bad).is_err(), "{bad:?}");
        }
    }

    /// 1,000 requests held 101 us, 102 us, ... 1,100 us, each with a 60 us upstream exchange:
    /// own = held - upstream per request, percentiles within HdrHistogram's 3
    /// significant digits; lines before the window and failed ones are left out.
    #[test]
    fn percentiles_of_the_window() {
        let from = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut log = String::from("1799999999.999999 200 99000000 1000\n");
        for i in 1..=1000_u64 {
            log.push_str(&format!(
                "1800000000.{:06} 200 {} 60000\n",
                i,
                100_000 + i * 1000
            ));
        }
        log.push_str("1800000001.000000 503 5000 -\n");
        let t = timings(&log, from).unwrap();
        assert_eq!((t.requests, t.skipped), (1001, 1));
        let close = |got: f64, want: f64| (got - want).abs() <= want / 1000.0 + 0.001;
        assert!(close(t.held.p50_us, 600.0), "{t:?}");
        assert!(close(t.held.p99_us, 1090.0), "{t:?}");
        assert!(close(t.held.p999_us, 1099.0), "{t:?}");
        assert!(close(t.held.max_us, 1100.0), "{t:?}");
        assert!(close(t.upstream.p99_us, 60.0), "{t:?}");
        assert!(close(t.own.p50_us, 540.0), "{t:?}");
        assert!(close(t.own.p99_us, 1030.0), "{t:?}");
        assert!(close(t.own.p90_us, 940.0), "{t:?}");
    }

    #[test]
    fn an_empty_window_has_zero_figures() {
        let t = timings("1.000000 200 5 1\n", SystemTime::now()).unwrap();
        assert_eq!(t, EnvoyTimings::default());
    }
}
