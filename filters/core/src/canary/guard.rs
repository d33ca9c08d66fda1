//! The self-guarding canary: counts, per split, the requests and failures of the canary member
//! and of its baseline (every other member) in a sliding window shared by all workers, and halts
//! the canary when it is measurably worse.
//!
//! # Where the counts live
//!
//! Envoy runs one VM per worker thread, so the window cannot be a Rust static. Each worker
//! counts its finished requests in a [`Tally`] (a few integers, no host call, no allocation per
//! request) and merges it, on its tick ([`GUARD_PERIOD`]), into one [`WindowRecord`] in
//! proxy-wasm shared data under [`guard_key`] with a bounded get -> compare-and-set loop
//! ([`flush`]): a conflict re-reads and merges again, so no count is lost across workers.
//!
//! The window is [`BUCKETS`] buckets of `window / BUCKETS`; a merge first clears the buckets
//! that slid out, so the test always sees the last `window` (give or take one bucket).
//!
//! # The halt rule
//!
//! Once both sides hold at least `minRequests`, a one-sided two-proportion z-test of
//! `H0: p_canary <= p_baseline + margin` runs on the window at every merge
//! ([`CompiledGuard::test`]). The proportions are Agresti–Caffo adjusted (one failure and one
//! success added to each side): the plain Wald statistic divides by zero when a side has no
//! failure, and overstates its evidence when failures are few, which at a false-alarm
//! probability of 1e-6 (z about 4.75) would make the stated probability a lie. The unit tests
//! check the real per-evaluation false-alarm probability by exact binomial enumeration.
//!
//! The merge that finds `z` above the critical value sets the record's `halted` flag in the
//! same compare-and-set, so exactly one worker reports the halt (counter, log line) and every
//! worker sees it at its next tick. The flag belongs to the split's config
//! ([`CompiledGuard::fingerprint`]): a worker loading a changed config writes a fresh record
//! ([`arm`]), which re-arms the guard; reloading the same config keeps the halt.

use std::time::Duration;

use super::bucket::{self, Choice, sticky_point};
use super::config::Guard;
use crate::breaker::classify::{NOT_THE_UPSTREAMS_FAULT, observed};
use crate::breaker::{MAX_CAS_ATTEMPTS, OutcomeSet, SharedStore, StoreError, UpdateError};

/// How many buckets the sliding window has.
pub const BUCKETS: usize = 10;

/// How often a worker merges its counts into the shared window and reads the halt flag: the
/// longest a halt waits for its evidence, and the longest another worker keeps sending new
/// requests to a halted canary.
pub const GUARD_PERIOD: Duration = Duration::from_millis(200);

/// Shortest and longest window accepted.
const WINDOW_RANGE_MS: (u64, u64) = (1_000, 3_600_000);

/// Fewest `minRequests` accepted: below, the normal approximation says nothing useful.
const MIN_MIN_REQUESTS: u32 = 10;

/// The refusal of a `failures.grpc` entry that is no gRPC error status (the builder points at
/// the entry).
pub const GRPC_REFUSAL: &str = ".failures.grpc: not a gRPC error status; use names of \
     https://github.com/grpc/grpc/blob/master/doc/statuscodes.md other than OK, e.g. UNAVAILABLE";

/// Shortest and longest latency ceiling accepted (ms): below 1 ms the filter's millisecond
/// clock cannot tell; above an hour no route waits that long.
const LATENCY_RANGE_MS: (u64, u64) = (1, 3_600_000);

/// Requests and failures of the two sides of a guarded split.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Finished requests the canary member served.
    pub canary_requests: u32,
    /// ... of which failed.
    pub canary_failures: u32,
    /// Finished requests the baseline members served.
    pub baseline_requests: u32,
    /// ... of which failed.
    pub baseline_failures: u32,
}

impl Tally {
    /// Counts one finished request of the canary (`canary`) or the baseline.
    pub fn record(&mut self, canary: bool, failed: bool) {
        let (requests, failures) = if canary {
            (&mut self.canary_requests, &mut self.canary_failures)
        } else {
            (&mut self.baseline_requests, &mut self.baseline_failures)
        };
        *requests = requests.saturating_add(1);
        *failures = failures.saturating_add(u32::from(failed));
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Tally) {
        self.canary_requests = self.canary_requests.saturating_add(other.canary_requests);
        self.canary_failures = self.canary_failures.saturating_add(other.canary_failures);
        self.baseline_requests = self
            .baseline_requests
            .saturating_add(other.baseline_requests);
        self.baseline_failures = self
            .baseline_failures
            .saturating_add(other.baseline_failures);
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What one finished request means to the guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The member answered well.
    Success,
    /// A failure of a counted kind.
    Failure,
    /// Says nothing about the member (client gone, a local reply of another filter, ...):
    /// not counted at all.
    Ignored,
}

/// A validated guard.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledGuard {
    /// Index of the canary member in the split; the others are the baseline.
    pub canary: usize,
    /// What counts as a failure.
    pub failures: OutcomeSet,
    /// gRPC statuses that count as failures of a gRPC request, bit `1 << code`; 0: none.
    pub grpc: u32,
    /// The latency ceiling (ms from the request's headers to the response's); 0: none.
    pub latency_ms: u64,
    /// Requests each side needs in the window before the test runs.
    pub min_requests: u32,
    /// The window's length.
    pub window_ms: u64,
    /// Tolerated excess failure rate of the canary.
    pub margin: f64,
    /// The configured false-alarm probability.
    pub false_alarm: f64,
    /// Critical value: the test halts when its statistic exceeds it (`Φ⁻¹(1 - falseAlarm)`).
    pub critical_z: f64,
    /// Identifies the split's config (name, members, weights, schedule, failover, guard): a
    /// change re-arms the guard.
    pub fingerprint: u64,
}

/// The figures that tripped a halt, for the log line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// The window's counts.
    pub window: Tally,
    /// The test statistic.
    pub z: f64,
}

impl CompiledGuard {
    /// Validates `guard` for a split of `clusters` (`weights` and `schedule_fingerprint` enter
    /// the fingerprint); errors name the field under `at`.
    pub fn compile(
        at: &str,
        guard: &Guard,
        name: &str,
        clusters: &[String],
        weights: &[u32],
        schedule_fingerprint: Option<u64>,
        failover: bool,
    ) -> Result<Self, String> {
        let window = crate::duration::parse(&guard.window)
            .map_err(|e| format!("{at}.window: {e}"))?
            .as_millis();
        let window_ms = u64::try_from(window).unwrap_or(u64::MAX);
        let canary = match &guard.canary {
            Some(cluster) => clusters.iter().position(|c| c == cluster),
            None => clusters.len().checked_sub(1),
        };
        let failures = &guard.failures;
        // Refused below as out of range when it is no duration: no `format!` of its own.
        let latency_ms = failures.latency.as_deref().map_or(0, |text| {
            crate::duration::parse(text).map_or(u64::MAX, |d| {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
            })
        });
        let mut grpc = 0u32;
        let mut bad_grpc = false;
        for name in &failures.grpc {
            match crate::fault::grpc::code_of(name) {
                Some(code) if code != 0 => grpc |= 1 << code,
                _ => bad_grpc = true,
            }
        }
        // One `format!` for every refusal: each call site costs the modules code.
        let refusal = if clusters.len() < 2 {
            Some(": a guard needs a canary and a baseline: list at least two members")
        } else if canary.is_none() {
            Some(".canary: not the cluster of a member of the split")
        } else if failures.outcomes.is_empty() && grpc == 0 && failures.latency.is_none() {
            Some(
                ".failures counts nothing: list `outcomes` (5xx, gateway-error, \
                 connect-failure, reset, timeout), `grpc` statuses or a `latency`",
            )
        } else if failures.latency.is_some()
            && !(LATENCY_RANGE_MS.0..=LATENCY_RANGE_MS.1).contains(&latency_ms)
        {
            Some(".failures.latency: must be a duration from 1ms to 1h, e.g. \"800ms\"")
        } else if bad_grpc {
            Some(GRPC_REFUSAL)
        } else if guard.min_requests < MIN_MIN_REQUESTS {
            Some(".minRequests: must be at least 10; the test needs some evidence")
        } else if !(WINDOW_RANGE_MS.0..=WINDOW_RANGE_MS.1).contains(&window_ms) {
            Some(".window: must be from 1s to 1h")
        } else if !(0.0..1.0).contains(&guard.margin) {
            Some(".margin: must be in [0, 1), a fraction (0.02 = 2 points)")
        } else if !(guard.false_alarm > 0.0 && guard.false_alarm < 0.5) {
            Some(".falseAlarm: must be in (0, 0.5), e.g. 1e-6")
        } else {
            None
        };
        if let Some(why) = refusal {
            return Err(format!("{at}{why}"));
        }
        let canary = canary.unwrap_or(0);
        // The content as bytes (no number formatting: it would cost the modules bytes).
        let outcomes: OutcomeSet = failures.outcomes.iter().copied().collect();
        let mut content = Vec::new();
        for (cluster, weight) in clusters.iter().zip(weights) {
            content.extend_from_slice(cluster.as_bytes());
            content.push(0);
            content.extend_from_slice(&weight.to_le_bytes());
        }
        for part in [
            schedule_fingerprint.unwrap_or(0),
            u64::from(failover),
            canary as u64,
            u64::from(outcomes.bits()),
            u64::from(grpc),
            latency_ms,
            u64::from(guard.min_requests),
            window_ms,
            guard.margin.to_bits(),
            guard.false_alarm.to_bits(),
        ] {
            content.extend_from_slice(&part.to_le_bytes());
        }
        // Two 32-bit hashes of the content, salted differently, make the 64-bit fingerprint.
        let fingerprint = (u64::from(sticky_point(name, &content)) << 32)
            | u64::from(sticky_point("\u{1}", &content));
        Ok(Self {
            canary,
            failures: outcomes,
            grpc,
            latency_ms,
            min_requests: guard.min_requests,
            window_ms,
            margin: guard.margin,
            false_alarm: guard.false_alarm,
            critical_z: upper_quantile(guard.false_alarm),
            fingerprint,
        })
    }

    /// A bucket's length.
    pub fn bucket_ms(&self) -> u64 {
        (self.window_ms / BUCKETS as u64).max(1)
    }

    /// The test statistic of the window (see the module docs): the Agresti–Caffo adjusted
    /// difference over the larger of two standard errors, the adjusted sides' own and the one
    /// the null hypothesis implies (both sides' failures pooled, the canary `margin` above).
    pub fn statistic(&self, window: &Tally) -> f64 {
        let (x1, n1) = (
            f64::from(window.canary_failures) + 1.0,
            f64::from(window.canary_requests) + 2.0,
        );
        let (x0, n0) = (
            f64::from(window.baseline_failures) + 1.0,
            f64::from(window.baseline_requests) + 2.0,
        );
        let (p1, p0) = (x1 / n1, x0 / n0);
        let own = p1 * (1.0 - p1) / n1 + p0 * (1.0 - p0) / n0;
        // Under H0 (p1 = p0 + margin), the pooled estimate of p0 and p1 = p0 + margin: a side
        // whose few failures were low by chance no longer shrinks the error.
        // `max`/`min`, not `f64::clamp`: its assertion formats floats, which costs a wasm
        // module some 40 KB of float printing.
        let q0 = ((x1 + x0 - n1 * self.margin) / (n1 + n0))
            .max(0.0)
            .min(1.0 - self.margin);
        let q1 = q0 + self.margin;
        let null = q1 * (1.0 - q1) / n1 + q0 * (1.0 - q0) / n0;
        (p1 - p0 - self.margin) / own.max(null).sqrt()
    }

    /// The halt rule on a window: `Some` with the figures when both sides have `minRequests`
    /// and the statistic exceeds the critical value.
    pub fn test(&self, window: &Tally) -> Option<Figures> {
        if window.canary_requests < self.min_requests
            || window.baseline_requests < self.min_requests
        {
            return None;
        }
        let z = self.statistic(window);
        (z > self.critical_z).then_some(Figures { window: *window, z })
    }

    /// Whether a response whose headers came `elapsed_ms` after the request's is too slow.
    pub fn is_slow(&self, elapsed_ms: u64) -> bool {
        self.latency_ms != 0 && elapsed_ms > self.latency_ms
    }

    /// Classifies a finished request from Envoy's `response.flags`, its latency,
    /// `response.code` and its gRPC status. Each source is asked only when the ones before
    /// leave it open: `slow` (the response headers came after the latency ceiling; whoever
    /// sent them, since the wait was the member's: a route timeout's 504 after the ceiling is
    /// slow too) when the flags say nothing; `code` then; `grpc_status` (the status of a gRPC
    /// request, `None` for any other) when the code does not already fail it; `from_upstream`
    /// (whether the upstream sent the response, Envoy's `response.code_details ==
    /// "via_upstream"`) only for a code or status that would count as a failure.
    ///
    /// A local reply is never the member's failure: a breaker's or a fault's 503 (or, for a
    /// gRPC request, its `grpc-status: 14` in a trailers-only 200) is not counted at all. The
    /// upstream failures that tripped a breaker were counted when they happened; counting its
    /// rejections too would count one failure twice, and halt a canary for its breaker's
    /// protection.
    pub fn classify(
        &self,
        flags: u64,
        code: impl FnOnce() -> Option<u32>,
        slow: bool,
        grpc_status: impl FnOnce() -> Option<u32>,
        from_upstream: impl FnOnce() -> bool,
    ) -> Verdict {
        if flags & NOT_THE_UPSTREAMS_FAULT != 0 {
            return Verdict::Ignored;
        }
        if slow || observed(None, flags).intersects(self.failures) {
            return Verdict::Failure;
        }
        let Some(code) = code().filter(|&c| c != 0) else {
            return Verdict::Ignored;
        };
        let failed = observed(Some(code), 0).intersects(self.failures)
            || (self.grpc != 0
                && grpc_status().is_some_and(|s| s < 32 && self.grpc & (1 << s) != 0));
        if !failed {
            Verdict::Success
        } else if from_upstream() {
            Verdict::Failure
        } else {
            Verdict::Ignored
        }
    }
}

/// The member for `point` of a split whose canary (`halted`) may be halted: the halted canary's
/// share goes to the other members (its sticky users spread over them, the others' users stay
/// where they were); `is_available` is the failover's test (`|_| true` without failover,
/// which then picks as [`bucket::locate`]). A halted canary that held every positive weight
/// (a schedule's last step) leaves the baseline equal shares.
///
/// `is_available` is a trait object so that every caller shares one copy of
/// [`bucket::choose`] (each closure type would instantiate it anew, some 600 bytes a module).
pub fn choose(
    weights: &[u32],
    point: u32,
    halted: Option<usize>,
    is_available: &mut dyn FnMut(usize) -> bool,
) -> Choice {
    let canary = halted.unwrap_or(usize::MAX);
    let mut equal = [1u32; bucket::MAX_MEMBERS];
    let only_canary = halted.is_some()
        && weights
            .iter()
            .enumerate()
            .all(|(m, &w)| m == canary || w == 0);
    let weights = if only_canary {
        if let Some(slot) = equal.get_mut(canary) {
            *slot = 0;
        }
        equal.get(..weights.len()).unwrap_or(weights)
    } else {
        weights
    };
    bucket::choose(weights, point, |m| m != canary && is_available(m))
}

/// The shared-data key of a split's guard window: `sluice.canary.<split>.guard`.
pub fn guard_key(split: &str) -> String {
    use crate::wire::{GUARD_KEY_SUFFIX, SCHEDULE_KEY_PREFIX};
    format!("{SCHEDULE_KEY_PREFIX}{split}{GUARD_KEY_SUFFIX}")
}

/// Encoded length of a [`WindowRecord`].
pub const RECORD_LEN: usize = 2 + 8 + 8 + BUCKETS * 16;

/// Encoding version (first byte).
const RECORD_VERSION: u8 = b'G';

/// A split's shared guard state: the window and the halt flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRecord {
    /// [`CompiledGuard::fingerprint`] of the config the record belongs to.
    pub fingerprint: u64,
    /// Whether the canary is halted.
    pub halted: bool,
    /// Number (time / bucket length) of the newest bucket.
    pub head: u64,
    /// The buckets; bucket number `k` lives at `k % BUCKETS`.
    pub buckets: [Tally; BUCKETS],
}

impl WindowRecord {
    /// An empty, armed record for `fingerprint`.
    pub fn fresh(fingerprint: u64) -> Self {
        Self {
            fingerprint,
            halted: false,
            head: 0,
            buckets: [Tally::default(); BUCKETS],
        }
    }

    /// Fixed-size binary form: version, halted, fingerprint, head, then per bucket four u32,
    /// all little endian.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        let mut parts = out.iter_mut();
        // `bytes` first: `zip` asks its first iterator first, and must not take a slot
        // it will not fill.
        let mut put = |bytes: &[u8]| {
            for (&b, slot) in bytes.iter().zip(parts.by_ref()) {
                *slot = b;
            }
        };
        put(&[RECORD_VERSION, u8::from(self.halted)]);
        put(&self.fingerprint.to_le_bytes());
        put(&self.head.to_le_bytes());
        for t in &self.buckets {
            for n in [
                t.canary_requests,
                t.canary_failures,
                t.baseline_requests,
                t.baseline_failures,
            ] {
                put(&n.to_le_bytes());
            }
        }
        out
    }

    /// Parses [`Self::encode`]'s output; `None` for anything else.
    #[inline(never)] // two callers (arm, flush): one copy
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != RECORD_LEN || bytes.first() != Some(&RECORD_VERSION) {
            return None;
        }
        let u64_at = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
        let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
        let mut record = Self {
            fingerprint: u64_at(2)?,
            halted: match bytes.get(1)? {
                0 => false,
                1 => true,
                _ => return None,
            },
            head: u64_at(10)?,
            buckets: [Tally::default(); BUCKETS],
        };
        for (i, t) in record.buckets.iter_mut().enumerate() {
            let at = 18 + i * 16;
            *t = Tally {
                canary_requests: u32_at(at)?,
                canary_failures: u32_at(at + 4)?,
                baseline_requests: u32_at(at + 8)?,
                baseline_failures: u32_at(at + 12)?,
            };
        }
        Some(record)
    }

    /// Adds `tally` to bucket number `now / bucket_ms`, first clearing the buckets that slid
    /// out of the window. A worker whose clock is behind the newest bucket adds to it.
    pub fn add(&mut self, tally: &Tally, now_ms: u64, bucket_ms: u64) {
        let number = now_ms / bucket_ms.max(1);
        if number > self.head {
            let cleared = (number - self.head).min(BUCKETS as u64);
            for k in 0..cleared {
                if let Some(b) = self.buckets.get_mut(slot(number - k)) {
                    *b = Tally::default();
                }
            }
            self.head = number;
        }
        if let Some(b) = self.buckets.get_mut(slot(self.head)) {
            b.add(tally);
        }
    }

    /// The counts of the whole window.
    pub fn total(&self) -> Tally {
        let mut total = Tally::default();
        for b in &self.buckets {
            total.add(b);
        }
        total
    }
}

fn slot(number: u64) -> usize {
    (number % BUCKETS as u64) as usize
}

/// What a [`flush`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Flush {
    /// The canary runs.
    Running,
    /// The canary is halted (by an earlier merge, possibly another worker's).
    Halted,
    /// This merge halted the canary, on these figures.
    NewlyHalted(Figures),
    /// The record belongs to another config of the split (this worker's config is being
    /// replaced): the counts are dropped, nothing written.
    Stale,
}

/// Merges this worker's `tally` into the split's shared window under `key` and applies the
/// halt rule, in one compare-and-set (retried from a fresh read on conflict, at most
/// [`MAX_CAS_ATTEMPTS`] times). An empty tally only reads. A missing or undecodable record is
/// replaced by a fresh one of this config.
pub fn flush(
    store: &impl SharedStore,
    key: &str,
    guard: &CompiledGuard,
    tally: &Tally,
    now_ms: u64,
) -> Result<Flush, UpdateError> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (value, cas) = store.get(key);
        let existing = value.as_deref().and_then(WindowRecord::decode);
        let mut record = match existing {
            Some(r) if r.fingerprint != guard.fingerprint => return Ok(Flush::Stale),
            Some(r) if r.halted => return Ok(Flush::Halted),
            Some(_) if tally.is_empty() => return Ok(Flush::Running),
            Some(r) => r,
            None => WindowRecord::fresh(guard.fingerprint),
        };
        record.add(tally, now_ms, guard.bucket_ms());
        let figures = guard.test(&record.total());
        record.halted = figures.is_some();
        let cas = if value.is_some() { cas } else { None };
        match store.set(key, &record.encode(), cas) {
            Ok(()) => {
                return Ok(figures.map_or(Flush::Running, Flush::NewlyHalted));
            }
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Other) => return Err(UpdateError::Store),
        }
    }
    Err(UpdateError::Contended)
}

/// On config load: keeps the shared record if it belongs to this config (a reload of the same
/// split keeps a halt), else writes a fresh, armed one. Returns whether the canary is halted.
pub fn arm(store: &impl SharedStore, key: &str, guard: &CompiledGuard) -> bool {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (value, cas) = store.get(key);
        match value.as_deref().and_then(WindowRecord::decode) {
            Some(r) if r.fingerprint == guard.fingerprint => return r.halted,
            _ => {}
        }
        let cas = if value.is_some() { cas } else { None };
        let fresh = WindowRecord::fresh(guard.fingerprint).encode();
        match store.set(key, &fresh, cas) {
            Err(StoreError::CasMismatch) => continue,
            Ok(()) | Err(StoreError::Other) => return false,
        }
    }
    false
}

/// `z` with `P(Z > z) = alpha` for a standard normal `Z` (`0 < alpha < 0.5`), by bisection
/// on [`upper_tail`]; run once per config.
///
/// Bisection on a table-free tail rather than a closed-form quantile: the closed forms need
/// `ln`, and the C library's `ln` (and `exp`) bring ~4 KB of lookup tables into every module.
pub fn upper_quantile(alpha: f64) -> f64 {
    let (mut low, mut high) = (0.0f64, 40.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (low + high);
        if upper_tail(mid) > alpha {
            low = mid;
        } else {
            high = mid;
        }
    }
    0.5 * (low + high)
}

/// `P(Z > z)` for a standard normal `Z`, `z >= 0`: `erfc(z / sqrt 2) / 2` by the Chebyshev
/// fit of Numerical Recipes' `erfcc` (fractional error below 1.2e-7 everywhere).
pub fn upper_tail(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x);
    let poly = -x * x - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    0.5 * t * exp(poly)
}

/// `e^x`, without the C library's tables: `x = k ln 2 + r` with `|r| <= ln 2 / 2`, a Taylor
/// series for `e^r` (relative error below 1e-15), and `2^k` put into the exponent bits.
/// Underflows to 0 below -700.
fn exp(x: f64) -> f64 {
    if x < -700.0 {
        return 0.0;
    }
    let k = (x / std::f64::consts::LN_2).round();
    let r = x - k * std::f64::consts::LN_2;
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 1..18 {
        term *= r / f64::from(n);
        sum += term;
    }
    // 2^k for -1022 <= k <= 1023 (x <= 709 keeps k in range).
    let k = (k as i64).clamp(-1022, 1023);
    sum * f64::from_bits(((k + 1023) as u64) << 52)
}

/// `x` in hundredths, as `(whole, hundredths)` for a log line without float formatting
/// (which would cost the modules kilobytes): `4.918` -> `(4, 92)`.
pub fn hundredths(x: f64) -> (i64, u32) {
    let scaled = (x * 100.0).round();
    let scaled = if scaled.is_finite() { scaled as i64 } else { 0 };
    (scaled / 100, (scaled % 100).unsigned_abs() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::Outcome;
    use crate::breaker::classify::response_flags as f;
    use crate::canary::config::Failures;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    fn guard(min: u32, margin: f64, false_alarm: f64) -> CompiledGuard {
        let config = Guard {
            min_requests: min,
            margin,
            false_alarm,
            ..Guard::default()
        };
        CompiledGuard::compile(
            "g",
            &config,
            "s",
            &["v1".into(), "v2".into()],
            &[50, 50],
            None,
            true,
        )
        .unwrap()
    }

    fn tally(cr: u32, cf: u32, br: u32, bf: u32) -> Tally {
        Tally {
            canary_requests: cr,
            canary_failures: cf,
            baseline_requests: br,
            baseline_failures: bf,
        }
    }

    #[test]
    fn quantiles_match_the_normal_table() {
        for (alpha, z) in [
            (0.05, 1.644_853_6),
            (1e-3, 3.090_232_3),
            (1e-6, 4.753_424_3),
            (1e-9, 5.997_807_0),
            (0.3, 0.524_400_5),
        ] {
            assert!((upper_quantile(alpha) - z).abs() < 1e-6, "{alpha}");
        }
        for x in [-700.0, -50.0, -1.0, -1e-9, 0.0, 0.5, 3.0] {
            let want = f64::exp(x);
            assert!((exp(x) - want).abs() <= 1e-12 * want, "exp({x})");
        }
    }

    #[test]
    fn compile_defaults_and_refusals() {
        let g = guard(100, 0.0, 1e-6);
        assert_eq!(g.canary, 1, "the last member is the canary by default");
        assert!(g.failures.contains(Outcome::Timeout));
        assert_eq!(g.window_ms, 30_000);
        assert_eq!(g.bucket_ms(), 3_000);
        let clusters: Vec<String> = vec!["a".into(), "b".into()];
        let refuse = |g: Guard, needle: &str| {
            let err =
                CompiledGuard::compile("at", &g, "s", &clusters, &[1, 1], None, true).unwrap_err();
            assert!(err.contains(needle), "{err}");
        };
        refuse(
            Guard {
                canary: Some("c".into()),
                ..Guard::default()
            },
            "at.canary: not the cluster of a member",
        );
        let counts_nothing = Failures {
            outcomes: vec![],
            grpc: vec![],
            latency: None,
        };
        refuse(
            Guard {
                failures: counts_nothing.clone(),
                ..Guard::default()
            },
            "at.failures counts nothing",
        );
        // Any one kind is enough.
        for failures in [
            Failures {
                grpc: vec!["UNAVAILABLE".into()],
                ..counts_nothing.clone()
            },
            Failures {
                latency: Some("1s".into()),
                ..counts_nothing.clone()
            },
        ] {
            let g = Guard {
                failures,
                ..Guard::default()
            };
            assert!(CompiledGuard::compile("at", &g, "s", &clusters, &[1, 1], None, true).is_ok());
        }
        let with = |grpc: &[&str], latency: Option<&str>| Guard {
            failures: Failures {
                grpc: grpc.iter().map(|s| (*s).into()).collect(),
                latency: latency.map(Into::into),
                ..Failures::default()
            },
            ..Guard::default()
        };
        refuse(
            with(&["UNAVAILABLE", "UNAVAILBLE"], None),
            "at.failures.grpc: not a gRPC error status",
        );
        refuse(
            with(&["OK"], None),
            "at.failures.grpc: not a gRPC error status",
        );
        for latency in ["fast", "0s", "2h"] {
            refuse(
                with(&[], Some(latency)),
                "at.failures.latency: must be a duration from 1ms to 1h",
            );
        }
        // Canonical names only (as Istio's `grpcStatus`); the set and the ceiling enter the
        // fingerprint.
        refuse(with(&["unavailable"], None), "at.failures.grpc: ");
        let compiled = |grpc: &[&str], latency: Option<&str>| {
            CompiledGuard::compile(
                "at",
                &with(grpc, latency),
                "s",
                &clusters,
                &[1, 1],
                None,
                true,
            )
            .unwrap()
        };
        let g = compiled(&["DEADLINE_EXCEEDED", "INTERNAL"], Some("1.5s"));
        assert_eq!(g.grpc, (1 << 4) | (1 << 13));
        assert_eq!(g.latency_ms, 1_500);
        assert_ne!(
            g.fingerprint,
            compiled(&["INTERNAL"], Some("1.5s")).fingerprint
        );
        assert_ne!(
            g.fingerprint,
            compiled(&["INTERNAL", "DEADLINE_EXCEEDED"], None).fingerprint
        );
        assert_eq!(
            g.fingerprint,
            compiled(&["INTERNAL", "DEADLINE_EXCEEDED"], Some("1500ms")).fingerprint
        );
        // The defaults: the server-side statuses, no ceiling.
        let d = compiled(&crate::canary::config::DEFAULT_GRPC_FAILURES, None);
        assert_eq!(
            d.grpc,
            Guard::default()
                .failures
                .grpc
                .iter()
                .map(|n| 1u32 << crate::fault::grpc::code_of(n).unwrap())
                .sum::<u32>()
        );
        let default_names: Vec<&str> = (0..17)
            .filter(|c| d.grpc & (1 << c) != 0)
            .map(|c| crate::fault::grpc::STATUS_NAMES[c])
            .collect();
        assert_eq!(
            default_names,
            [
                "UNKNOWN",
                "DEADLINE_EXCEEDED",
                "INTERNAL",
                "UNAVAILABLE",
                "DATA_LOSS"
            ]
        );
        assert_eq!(d.latency_ms, 0);
        refuse(
            Guard {
                min_requests: 5,
                ..Guard::default()
            },
            "minRequests",
        );
        refuse(
            Guard {
                window: "100ms".into(),
                ..Guard::default()
            },
            "window",
        );
        refuse(
            Guard {
                margin: 1.0,
                ..Guard::default()
            },
            "margin",
        );
        refuse(
            Guard {
                false_alarm: 0.0,
                ..Guard::default()
            },
            "falseAlarm",
        );
        let one = CompiledGuard::compile(
            "at",
            &Guard::default(),
            "s",
            &["a".into()],
            &[1],
            None,
            true,
        );
        assert!(one.unwrap_err().contains("at least two members"));
        // Explicit canary; the fingerprint follows the config.
        let first = CompiledGuard::compile(
            "at",
            &Guard {
                canary: Some("a".into()),
                ..Guard::default()
            },
            "s",
            &clusters,
            &[1, 1],
            None,
            true,
        )
        .unwrap();
        assert_eq!(first.canary, 0);
        let base =
            CompiledGuard::compile("at", &Guard::default(), "s", &clusters, &[1, 1], None, true)
                .unwrap();
        assert_ne!(first.fingerprint, base.fingerprint);
        let reweighted =
            CompiledGuard::compile("at", &Guard::default(), "s", &clusters, &[2, 1], None, true)
                .unwrap();
        assert_ne!(reweighted.fingerprint, base.fingerprint);
        let same =
            CompiledGuard::compile("at", &Guard::default(), "s", &clusters, &[1, 1], None, true)
                .unwrap();
        assert_eq!(same.fingerprint, base.fingerprint);
    }

    #[test]
    fn the_test_needs_min_requests_on_both_sides() {
        let g = guard(100, 0.0, 1e-6);
        // Everything failing on the canary, but only 99 requests there.
        assert_eq!(g.test(&tally(99, 99, 1_000, 0)), None);
        assert!(g.test(&tally(100, 100, 1_000, 0)).is_some());
        assert_eq!(g.test(&tally(1_000, 1_000, 99, 0)), None);
    }

    #[test]
    fn ten_percent_against_zero_halts_within_a_few_hundred_canary_requests() {
        let g = guard(100, 0.02, 1e-6);
        // Equal sides, canary at exactly 10 %: the first n that halts.
        let first = (100..5_000)
            .find(|&n| g.test(&tally(n, n / 10, n, 0)).is_some())
            .unwrap();
        assert!((250..=450).contains(&first), "halts at {first}");
        // Equal rates never halt, at any size.
        for n in [100, 1_000, 100_000] {
            assert_eq!(g.test(&tally(n, n / 20, n, n / 20)), None);
        }
        // The margin is tolerated: 3 % over 1 % with margin 0.02 never halts.
        assert_eq!(g.test(&tally(100_000, 3_000, 100_000, 1_000)), None);
        // Zero failures anywhere: no division by zero, no halt.
        assert_eq!(g.test(&tally(1_000, 0, 1_000, 0)), None);
    }

    /// `ln P(X = k)` for `k = 0..=n`, `X ~ Binomial(n, p)`.
    fn log_pmf(n: u32, p: f64) -> Vec<f64> {
        let mut out = Vec::with_capacity(n as usize + 1);
        let mut current = f64::from(n) * (1.0 - p).ln();
        let odds = (p / (1.0 - p)).ln();
        for k in 0..=n {
            out.push(current);
            current += f64::from(n - k).ln() - f64::from(k + 1).ln() + odds;
        }
        out
    }

    /// The exact probability that one evaluation halts when both sides fail with probability
    /// `p`, given `n1` canary and `n0` baseline requests: the sum over every outcome pair.
    /// Halting is monotone in the canary's failures, so for each baseline count only the
    /// canary's tail above a threshold is summed.
    fn exact_false_alarm(g: &CompiledGuard, n1: u32, n0: u32, p: f64) -> f64 {
        let (canary, baseline) = (log_pmf(n1, p), log_pmf(n0, p));
        // tail[k] = P(X1 >= k).
        let mut tail = vec![0.0; n1 as usize + 2];
        for k in (0..=n1 as usize).rev() {
            tail[k] = tail[k + 1] + canary[k].exp();
        }
        let mut total = 0.0;
        let mut threshold = n1 + 1;
        for x0 in 0..=n0 {
            // The threshold rises with x0: start from the last one, step back while lower
            // ones still halt.
            let halts = |x1: u32| g.test(&tally(n1, x1, n0, x0)).is_some();
            threshold = threshold.min(n1 + 1);
            while threshold > 0 && halts(threshold - 1) {
                threshold -= 1;
            }
            while threshold <= n1 && !halts(threshold) {
                threshold += 1;
            }
            total += baseline[x0 as usize].exp() * tail[threshold as usize];
        }
        total
    }

    #[test]
    fn the_stated_false_alarm_probability_holds_exactly_at_small_and_large_counts() {
        // The normal approximation is worst with few failures; the adjusted statistic keeps
        // the exact per-evaluation probability at or below the stated one (within 3x at the
        // smallest windows, where no two-proportion test is exact).
        for (p, margin, alpha) in [(0.05, 0.0, 1e-6), (0.01, 0.0, 1e-6), (0.05, 0.0, 1e-3)] {
            let g = guard(100, margin, alpha);
            for (n1, n0) in [
                (100, 100),
                (100, 1_000),
                (1_000, 100),
                (300, 300),
                (2_000, 2_000),
            ] {
                let exact = exact_false_alarm(&g, n1, n0, p);
                assert!(
                    exact <= 3.0 * alpha,
                    "p {p}, n1 {n1}, n0 {n0}: exact {exact:e} vs stated {alpha:e}"
                );
            }
        }
    }

    /// The bound integration/tests/canary.rs's "both sides fail 5 %" test relies on: with its
    /// guard (minRequests 100, margin 0.02, falseAlarm 1e-6), one evaluation of any window of
    /// 100 to 20,000 requests a side halts with probability below 1e-10.
    #[test]
    fn equal_five_percent_sides_almost_never_halt_with_a_margin() {
        let g = guard(100, 0.02, 1e-6);
        let sizes = [
            100, 150, 200, 300, 500, 700, 1_000, 2_000, 5_000, 10_000, 20_000,
        ];
        let mut worst = 0.0f64;
        for n1 in sizes {
            for n0 in sizes {
                worst = worst.max(exact_false_alarm(&g, n1, n0, 0.05));
            }
        }
        assert!(worst < 1e-10, "worst per-evaluation false alarm {worst:e}");
    }

    #[test]
    fn window_slides_and_records_round_trip() {
        let mut r = WindowRecord::fresh(7);
        r.add(&tally(10, 1, 20, 0), 0, 1_000);
        r.add(&tally(5, 0, 5, 0), 1_500, 1_000);
        assert_eq!(r.total(), tally(15, 1, 25, 0));
        // 9 buckets later the first one is still in; 10 later it slid out.
        r.add(&Tally::default(), 9_999, 1_000);
        assert_eq!(r.total(), tally(15, 1, 25, 0));
        r.add(&Tally::default(), 10_000, 1_000);
        assert_eq!(r.total(), tally(5, 0, 5, 0));
        // A late clock adds to the newest bucket.
        r.add(&tally(1, 1, 0, 0), 2_000, 1_000);
        assert_eq!(r.total(), tally(6, 1, 5, 0));
        // Far later: everything slid out.
        r.add(&Tally::default(), 1_000_000, 1_000);
        assert_eq!(r.total(), Tally::default());
        r.halted = true;
        r.buckets[3] = tally(1, 2, 3, u32::MAX);
        assert_eq!(WindowRecord::decode(&r.encode()), Some(r));
        assert_eq!(WindowRecord::decode(&r.encode()[1..]), None);
        let mut bad = r.encode();
        bad[1] = 2;
        assert_eq!(WindowRecord::decode(&bad), None);
    }

    #[test]
    fn classification_ignores_local_replies_and_client_aborts() {
        let g = guard(100, 0.0, 1e-6);
        let no_code = || -> Option<u32> { panic!("code read without need") };
        let no_grpc = || -> Option<u32> { panic!("gRPC status read without need") };
        let not_grpc = || -> Option<u32> { None };
        let upstream = || true;
        let local = || false;
        let http = |flags, code: Option<u32>, from: bool| {
            g.classify(flags, || code, false, not_grpc, || from)
        };
        assert_eq!(http(0, Some(200), true), Verdict::Success);
        assert_eq!(http(0, Some(503), true), Verdict::Failure);
        // A breaker's or fault's own 503: not the member's failure.
        assert_eq!(http(0, Some(503), false), Verdict::Ignored);
        assert_eq!(
            g.classify(f::UPSTREAM_REQUEST_TIMEOUT, no_code, false, no_grpc, local),
            Verdict::Failure
        );
        assert_eq!(
            g.classify(f::UPSTREAM_REMOTE_RESET, no_code, false, no_grpc, local),
            Verdict::Failure
        );
        assert_eq!(
            g.classify(f::DOWNSTREAM_REMOTE_RESET, no_code, true, no_grpc, local),
            Verdict::Ignored
        );
        assert_eq!(http(0, None, false), Verdict::Ignored);
        // Not counted kinds: a 5xx is a success for a guard counting only timeouts.
        let timeouts = CompiledGuard {
            failures: [Outcome::Timeout].into_iter().collect(),
            ..g.clone()
        };
        assert_eq!(
            timeouts.classify(0, || Some(500), false, not_grpc, upstream),
            Verdict::Success
        );
    }

    #[test]
    fn grpc_statuses_count_for_grpc_requests_when_the_upstream_sent_them() {
        let g = guard(100, 0.0, 1e-6);
        let status = |s: u32| move || Some(s);
        let upstream = || true;
        let local = || false;
        // gRPC answers are HTTP 200: the status decides.
        for (code, verdict) in [
            (0, Verdict::Success),
            (2, Verdict::Failure),  // UNKNOWN
            (4, Verdict::Failure),  // DEADLINE_EXCEEDED
            (13, Verdict::Failure), // INTERNAL
            (14, Verdict::Failure), // UNAVAILABLE
            (15, Verdict::Failure), // DATA_LOSS
            (1, Verdict::Success),  // CANCELLED
            (3, Verdict::Success),  // INVALID_ARGUMENT
            (5, Verdict::Success),  // NOT_FOUND
            (8, Verdict::Success),  // RESOURCE_EXHAUSTED
            (12, Verdict::Success), // UNIMPLEMENTED
            (16, Verdict::Success), // UNAUTHENTICATED
            (99, Verdict::Success), // not a status
        ] {
            assert_eq!(
                g.classify(0, || Some(200), false, status(code), upstream),
                verdict,
                "grpc-status {code}"
            );
        }
        // A breaker's local reply to a gRPC request: 200 with `grpc-status: 14`, not the
        // member's failure.
        assert_eq!(
            g.classify(0, || Some(200), false, status(14), local),
            Verdict::Ignored
        );
        // The status is not read when the code already fails the request, nor with no set.
        let unread = || -> Option<u32> { panic!("gRPC status read without need") };
        assert_eq!(
            g.classify(0, || Some(503), false, unread, upstream),
            Verdict::Failure
        );
        let none = CompiledGuard { grpc: 0, ..g };
        assert_eq!(
            none.classify(0, || Some(200), false, unread, upstream),
            Verdict::Success
        );
    }

    #[test]
    fn a_response_slower_than_the_ceiling_fails_whoever_answered() {
        let base = guard(100, 0.0, 1e-6);
        assert!(!base.is_slow(u64::MAX), "no ceiling by default");
        let g = CompiledGuard {
            latency_ms: 500,
            ..base
        };
        assert!(!g.is_slow(500));
        assert!(g.is_slow(501));
        let unread = || -> Option<u32> { panic!("read without need") };
        let unasked = || -> bool { panic!("origin asked without need") };
        assert_eq!(
            g.classify(0, unread, true, unread, unasked),
            Verdict::Failure
        );
        // A route timeout's 504 after the ceiling: slow (and a timeout).
        assert_eq!(
            g.classify(f::UPSTREAM_REQUEST_TIMEOUT, unread, true, unread, unasked),
            Verdict::Failure
        );
        // The client gave up: still not counted.
        assert_eq!(
            g.classify(f::DOWNSTREAM_REMOTE_RESET, unread, true, unread, unasked),
            Verdict::Ignored
        );
        assert_eq!(
            g.classify(0, || Some(200), false, || None, || true),
            Verdict::Success
        );
    }

    #[test]
    fn halted_canary_share_goes_to_the_baseline_and_others_stay() {
        let weights = [50, 30, 20];
        let all = &mut |_| true;
        for i in 0..1_000u32 {
            let point = i.wrapping_mul(4_294_967);
            assert_eq!(
                choose(&weights, point, None, all),
                bucket::locate(&weights, point).map_or(Choice::AllUnavailable, Choice::Member)
            );
            let before = choose(&weights, point, None, all);
            let after = choose(&weights, point, Some(1), all);
            assert_ne!(after, Choice::Member(1));
            if before != Choice::Member(1) {
                assert_eq!(before, after, "a baseline user stays where he was");
            }
        }
        // A canary holding every weight: the baseline shares equally.
        let last_step = [0, 100];
        assert_eq!(choose(&last_step, 7, Some(1), all), Choice::Member(0));
        assert_eq!(choose(&last_step, 7, None, all), Choice::Member(1));
    }

    /// Shared data with Envoy's semantics, and a rival writer that can sneak in.
    #[derive(Default)]
    struct Store {
        map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        next: Cell<u32>,
        rival: RefCell<Option<Tally>>,
    }

    impl SharedStore for Store {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            match self.map.borrow().get(key) {
                Some((v, cas)) => (Some(v.clone()), Some(*cas)),
                None => (None, None),
            }
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            if let Some(rival) = self.rival.borrow_mut().take() {
                // Another worker merges between our get and our set.
                let (v, _) = self.get(key);
                let mut r = WindowRecord::decode(&v.unwrap()).unwrap();
                r.add(&rival, 0, 3_000);
                self.next.set(self.next.get() + 1);
                self.map
                    .borrow_mut()
                    .insert(key.into(), (r.encode().to_vec(), self.next.get()));
            }
            let mut map = self.map.borrow_mut();
            if let (Some(cas), Some((_, current))) = (cas, map.get(key))
                && cas != *current
            {
                return Err(StoreError::CasMismatch);
            }
            self.next.set(self.next.get() + 1);
            map.insert(key.into(), (value.to_vec(), self.next.get()));
            Ok(())
        }
    }

    fn window(store: &Store) -> WindowRecord {
        WindowRecord::decode(&store.get("k").0.unwrap()).unwrap()
    }

    #[test]
    fn concurrent_merges_lose_no_count_and_one_merge_halts() {
        let store = Store::default();
        let g = guard(100, 0.0, 1e-6);
        assert!(!arm(&store, "k", &g));
        assert_eq!(
            flush(&store, "k", &g, &tally(50, 0, 50, 0), 0),
            Ok(Flush::Running)
        );
        *store.rival.borrow_mut() = Some(tally(7, 0, 7, 0));
        assert_eq!(
            flush(&store, "k", &g, &tally(50, 0, 50, 0), 0),
            Ok(Flush::Running)
        );
        assert_eq!(window(&store).total(), tally(107, 0, 107, 0));
        // The canary starts failing everything: the merge that shows it halts, once.
        let Ok(Flush::NewlyHalted(figures)) = flush(&store, "k", &g, &tally(100, 100, 0, 0), 0)
        else {
            panic!("not halted: {:?}", window(&store));
        };
        assert_eq!(figures.window, tally(207, 100, 107, 0));
        assert!(figures.z > g.critical_z);
        assert_eq!(
            flush(&store, "k", &g, &tally(1, 0, 1, 0), 0),
            Ok(Flush::Halted)
        );
        assert_eq!(
            flush(&store, "k", &g, &Tally::default(), 0),
            Ok(Flush::Halted)
        );
        // Reloading the same config keeps the halt; a changed config re-arms.
        assert!(arm(&store, "k", &g));
        let changed = guard(100, 0.01, 1e-6);
        assert_eq!(
            flush(&store, "k", &changed, &tally(1, 0, 1, 0), 0),
            Ok(Flush::Stale)
        );
        assert!(!arm(&store, "k", &changed));
        assert_eq!(
            flush(&store, "k", &changed, &Tally::default(), 0),
            Ok(Flush::Running)
        );
        // The old config, still draining, no longer writes.
        assert_eq!(
            flush(&store, "k", &g, &tally(5, 5, 5, 0), 0),
            Ok(Flush::Stale)
        );
        assert_eq!(window(&store).total(), Tally::default());
    }

    #[test]
    fn hundredths_for_log_lines() {
        assert_eq!(hundredths(4.918), (4, 92));
        assert_eq!(hundredths(0.1), (0, 10));
        assert_eq!(hundredths(f64::NAN), (0, 0));
    }
}
