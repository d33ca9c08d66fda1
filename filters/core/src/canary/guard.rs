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
        if clusters.len() < 2 {
            return Err(format!(
                "{at}: a guard needs a canary and a baseline: list at least two members"
            ));
        }
        let canary = match &guard.canary {
            Some(cluster) => clusters.iter().position(|c| c == cluster).ok_or_else(|| {
                format!(
                    "{at}.canary: {cluster:?} is not a member (members: {})",
                    clusters.join(", ")
                )
            })?,
            None => clusters.len() - 1,
        };
        if guard.failures.is_empty() {
            return Err(format!(
                "{at}.failures is empty: list what counts as a failure (5xx, gateway-error, \
                 connect-failure, reset, timeout)"
            ));
        }
        if guard.min_requests < MIN_MIN_REQUESTS {
            return Err(format!(
                "{at}.minRequests: {} is below {MIN_MIN_REQUESTS}; the test needs some evidence",
                guard.min_requests
            ));
        }
        let window = crate::duration::parse(&guard.window)
            .map_err(|e| format!("{at}.window: {e}"))?
            .as_millis();
        let window_ms = u64::try_from(window).unwrap_or(u64::MAX);
        if !(WINDOW_RANGE_MS.0..=WINDOW_RANGE_MS.1).contains(&window_ms) {
            return Err(format!("{at}.window: {:?} is outside 1s..1h", guard.window));
        }
        if !(0.0..1.0).contains(&guard.margin) {
            return Err(format!(
                "{at}.margin: must be in [0, 1), a fraction (0.02 = 2 points)"
            ));
        }
        if !(guard.false_alarm > 0.0 && guard.false_alarm < 0.5) {
            return Err(format!("{at}.falseAlarm: must be in (0, 0.5), e.g. 1e-6"));
        }
        let mut text = String::new();
        for (cluster, weight) in clusters.iter().zip(weights) {
            text.push_str(cluster);
            text.push('=');
            text.push_str(&weight.to_string());
            text.push('\n');
        }
        text.push_str(&schedule_fingerprint.unwrap_or(0).to_string());
        text.push(if failover { 'f' } else { '-' });
        for part in [
            canary as u64,
            u64::from(
                guard
                    .failures
                    .iter()
                    .copied()
                    .collect::<OutcomeSet>()
                    .bits(),
            ),
            u64::from(guard.min_requests),
            window_ms,
            guard.margin.to_bits(),
            guard.false_alarm.to_bits(),
        ] {
            text.push(' ');
            text.push_str(&part.to_string());
        }
        let fingerprint = (u64::from(sticky_point(name, text.as_bytes())) << 32)
            | u64::from(sticky_point(&text, name.as_bytes()));
        Ok(Self {
            canary,
            failures: guard.failures.iter().copied().collect(),
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

    /// Classifies a finished request from Envoy's `response.flags` and `response.code`.
    /// `code` is asked only when the flags leave it open; `from_upstream` (whether the upstream
    /// sent the response, Envoy's `response.code_details == "via_upstream"`) only for a code
    /// that would count as a failure: a breaker's or a fault's local 503 is no failure of the
    /// member, and counting it would make the breaker and the guard count one failure twice.
    pub fn classify(
        &self,
        flags: u64,
        code: impl FnOnce() -> Option<u32>,
        from_upstream: impl FnOnce() -> bool,
    ) -> Verdict {
        if flags & NOT_THE_UPSTREAMS_FAULT != 0 {
            return Verdict::Ignored;
        }
        if observed(None, flags).intersects(self.failures) {
            return Verdict::Failure;
        }
        let Some(code) = code().filter(|&c| c != 0) else {
            return Verdict::Ignored;
        };
        if !observed(Some(code), 0).intersects(self.failures) {
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
/// where they were); `is_available` is the failover's test. A halted canary that held every
/// positive weight (a schedule's last step) leaves the baseline equal shares.
pub fn choose(
    weights: &[u32],
    point: u32,
    halted: Option<usize>,
    mut is_available: impl FnMut(usize) -> bool,
) -> Choice {
    let Some(canary) = halted else {
        return bucket::choose(weights, point, is_available);
    };
    let choice = bucket::choose(weights, point, |m| m != canary && is_available(m));
    let baseline_weight = weights
        .iter()
        .enumerate()
        .any(|(m, &w)| m != canary && w > 0);
    if choice != Choice::AllUnavailable || baseline_weight {
        return choice;
    }
    let mut equal = [1u32; bucket::MAX_MEMBERS];
    if let Some(slot) = equal.get_mut(canary) {
        *slot = 0;
    }
    let len = weights.len().min(bucket::MAX_MEMBERS);
    bucket::choose(equal.get(..len).unwrap_or(&[]), point, |m| {
        m != canary && is_available(m)
    })
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

/// `z` with `P(Z > z) = alpha` for a standard normal `Z` (`0 < alpha < 0.5`): Acklam's rational
/// approximation (relative error below 1.2e-9), run once per config.
pub fn upper_quantile(alpha: f64) -> f64 {
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    // Not `f64::clamp` (see `statistic`).
    let p = alpha.max(1e-300).min(0.5);
    // Lower-tail quantile of p, negated.
    let lower = if p < 0.024_25 {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    };
    -lower
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
            "at.canary: \"c\" is not a member",
        );
        refuse(
            Guard {
                failures: vec![],
                ..Guard::default()
            },
            "failures is empty",
        );
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
        let sizes = [100, 150, 200, 300, 500, 700, 1_000, 2_000, 5_000, 10_000, 20_000];
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
        let upstream = || true;
        let local = || false;
        assert_eq!(g.classify(0, || Some(200), upstream), Verdict::Success);
        assert_eq!(g.classify(0, || Some(503), upstream), Verdict::Failure);
        // A breaker's or fault's own 503: not the member's failure.
        assert_eq!(g.classify(0, || Some(503), local), Verdict::Ignored);
        assert_eq!(
            g.classify(f::UPSTREAM_REQUEST_TIMEOUT, no_code, local),
            Verdict::Failure
        );
        assert_eq!(
            g.classify(f::UPSTREAM_REMOTE_RESET, no_code, local),
            Verdict::Failure
        );
        assert_eq!(
            g.classify(f::DOWNSTREAM_REMOTE_RESET, no_code, local),
            Verdict::Ignored
        );
        assert_eq!(g.classify(0, || None, local), Verdict::Ignored);
        // Not counted kinds: a 5xx is a success for a guard counting only timeouts.
        let timeouts = CompiledGuard {
            failures: [Outcome::Timeout].into_iter().collect(),
            ..g
        };
        assert_eq!(
            timeouts.classify(0, || Some(500), upstream),
            Verdict::Success
        );
    }

    #[test]
    fn halted_canary_share_goes_to_the_baseline_and_others_stay() {
        let weights = [50, 30, 20];
        let all = |_| true;
        for i in 0..1_000u32 {
            let point = i.wrapping_mul(4_294_967);
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
