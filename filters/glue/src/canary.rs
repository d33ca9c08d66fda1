//! The canary's run-time glue, shared by the canary filter and the suite: a split's counters
//! and schedule state, its guard (per-worker tally, shared window, halt), the point a request
//! takes, the member chosen (with failover, without a halted canary), and the 503 when no
//! member is left.

use std::cell::{Cell, RefCell};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, LogLevel, MetricType};
use rand_core::Rng;
use sluice_core::breaker::{self, Snapshot};
use sluice_core::canary::guard::{self, Figures, Flush, Tally, Verdict};
use sluice_core::canary::{self, Choice, CompiledGuard, CompiledSplit, ScheduleRecord, schedule};

use crate::{
    HostRequest, HostStore, LazyClock, count, define, log, now_ms, path, property, property_u64,
    source_address,
};

/// What a split needs at run time besides its config.
pub struct SplitState {
    /// Counter id per member (`None` if the host refused it).
    routed: Vec<Option<u32>>,
    /// Counter of 503s for lack of a healthy member.
    pub unavailable: Option<u32>,
    /// Shared-data key of each member's breaker (read for failover), built once.
    pub breaker_keys: Vec<String>,
    /// Gauge of the current schedule step.
    step_gauge: Option<u32>,
    /// The shared schedule record this worker follows (`None` without a schedule).
    record: Cell<Option<ScheduleRecord>>,
    /// The step last reported in the gauge and log.
    step: Cell<usize>,
    /// The split's guard, if it has one.
    guard: Option<GuardState>,
}

/// A guarded split's per-worker state.
struct GuardState {
    /// Shared-data key of the window.
    key: String,
    /// This worker's finished requests since its last merge.
    tally: Cell<Tally>,
    /// Whether the canary is halted, as this worker last saw it (on its tick).
    halted: Cell<bool>,
    /// Counter of halts (bumped by the worker whose merge halted).
    halts: Option<u32>,
    /// Gauge: 0 healthy, 1 halted.
    halted_gauge: Option<u32>,
}

impl SplitState {
    /// Defines the split's metrics and joins (or starts) its shared schedule.
    /// A guard halted under this very config (a reload) keeps its schedule frozen.
    pub fn new(filter: &str, split: &CompiledSplit, now_ms: u64) -> Self {
        let counter = |name: &str| define(filter, MetricType::Counter, name);
        let guard = split.guard.as_ref().map(|g| {
            let key = guard::guard_key(&split.name);
            let halted = guard::arm(&HostStore, &key, g);
            let state = GuardState {
                key,
                tally: Cell::new(Tally::default()),
                halted: Cell::new(halted),
                halts: counter(&canary::guard_halts_metric(&split.name)),
                halted_gauge: define(
                    filter,
                    MetricType::Gauge,
                    &canary::guard_halted_metric(&split.name),
                ),
            };
            state.publish();
            state
        });
        let frozen = guard.as_ref().is_some_and(|g| g.halted.get());
        let record = split.schedule.as_ref().map(|s| {
            schedule::sync(
                &HostStore,
                &split.name,
                s.fingerprint,
                s.paused || frozen,
                now_ms,
            )
        });
        Self {
            routed: split
                .clusters
                .iter()
                .map(|cluster| counter(&canary::routed_metric(&split.name, cluster)))
                .collect(),
            unavailable: counter(&canary::unavailable_metric(&split.name)),
            breaker_keys: split
                .clusters
                .iter()
                .map(|cluster| breaker::shared_data_key(cluster))
                .collect(),
            step_gauge: split
                .schedule
                .as_ref()
                .and_then(|_| define(filter, MetricType::Gauge, &canary::step_metric(&split.name))),
            record: Cell::new(record),
            step: Cell::new(0),
            guard,
        }
    }

    /// The halted canary's member index, if the split's canary is halted (as this worker saw it
    /// on its last tick).
    pub fn halted_canary(&self, split: &CompiledSplit) -> Option<usize> {
        let halted = self.guard.as_ref().is_some_and(|g| g.halted.get());
        split.guard.as_ref().filter(|_| halted).map(|g| g.canary)
    }

    /// A request of split `index` routed to `member`, to follow for the split's guard; `None`
    /// without a guard (or with the canary halted: the window no longer matters). Reads the
    /// clock only under a latency ceiling, and the request's `content-type` only when gRPC
    /// statuses count.
    pub fn guarded(&self, split: &CompiledSplit, index: usize, member: usize) -> Option<Guarded> {
        let guard = split.guard.as_ref()?;
        let state = self.guard.as_ref()?;
        if state.halted.get() {
            return None;
        }
        let deadline_ms = match guard.latency_ms {
            0 => 0,
            ceiling => now_ms().saturating_add(ceiling),
        };
        Some(Guarded {
            index,
            canary: member == guard.canary,
            grpc: guard.grpc != 0 && crate::fault::is_grpc_request(),
            deadline_ms,
            slow: false,
        })
    }

    /// Counts a finished request (in `on_log`) on its side of the window: reads
    /// `response.flags`, then `response.code` if the flags leave it open, the gRPC status
    /// (`response.grpc_status`) only for a gRPC request the code did not fail, and
    /// `response.code_details` only for a response that counts as a failure. No allocation
    /// beyond the host's property values.
    pub fn record_outcome(&self, split: &CompiledSplit, request: &Guarded) {
        let (Some(guard), Some(state)) = (&split.guard, &self.guard) else {
            return;
        };
        let verdict = classify(guard, request);
        if verdict == Verdict::Ignored {
            return;
        }
        let mut tally = state.tally.get();
        tally.record(request.canary, verdict == Verdict::Failure);
        state.tally.set(tally);
    }

    /// The guard's tick: merges this worker's tally into the shared window, applies the halt
    /// rule, and follows a halt (counter and log line by the worker that halted, gauge, and a
    /// frozen schedule on every worker).
    pub fn guard_tick(&self, filter: &str, split: &CompiledSplit, now_ms: u64) {
        let (Some(guard), Some(state)) = (&split.guard, &self.guard) else {
            return;
        };
        let tally = state.tally.replace(Tally::default());
        let halted = match guard::flush(&HostStore, &state.key, guard, &tally, now_ms) {
            Ok(Flush::Running | Flush::Stale) => false,
            Ok(Flush::Halted) => true,
            Ok(Flush::NewlyHalted(figures)) => {
                count(state.halts);
                log_halt(filter, split, guard, &figures);
                true
            }
            Err(e) => {
                // Put the counts back: the next tick merges them.
                let mut back = state.tally.get();
                back.add(&tally);
                state.tally.set(back);
                log(
                    LogLevel::Warn,
                    &format!(
                        "{filter}: split {:?}: guard window not updated: {e:?}",
                        split.name
                    ),
                );
                return;
            }
        };
        if halted && !state.halted.get() {
            state.halted.set(true);
            state.publish();
            // The schedule stops where it is, in shared data, so every worker and a reload
            // of the same config agree; a changed config resumes or restarts it.
            if let Some(schedule) = &split.schedule {
                let record =
                    schedule::sync(&HostStore, &split.name, schedule.fingerprint, true, now_ms);
                self.record.set(Some(record));
            }
        }
    }

    /// The weights a request to `split` is picked with now. A scheduled split reads the clock
    /// (one cheap host call) so that every worker switches steps at the same instant; the
    /// shared start itself is cached and only re-read on the tick.
    pub fn weights<'a>(&self, split: &'a CompiledSplit) -> &'a [u32] {
        match (&split.schedule, self.record.get()) {
            (Some(schedule), Some(record)) => {
                schedule.weights(schedule.step_at(record.elapsed_ms(now_ms())))
            }
            _ => &split.weights,
        }
    }

    /// Re-reads the split's shared schedule record (when `refresh`) and reports its step at
    /// `now_ms` in the gauge, logging a step change.
    pub fn advance_schedule(
        &self,
        filter: &str,
        split: &CompiledSplit,
        now_ms: u64,
        refresh: bool,
    ) {
        let (Some(schedule), Some(mut record)) = (&split.schedule, self.record.get()) else {
            return;
        };
        if refresh {
            record = schedule::refresh_on_tick(&HostStore, &split.name, record);
            self.record.set(Some(record));
        }
        let step = schedule.step_at(record.elapsed_ms(now_ms));
        if step != self.step.get() {
            log(
                LogLevel::Info,
                &format!(
                    "{filter}: split {:?} moves to step {step} (weights {:?})",
                    split.name,
                    schedule.weights(step)
                ),
            );
            self.step.set(step);
        }
        if let Some(id) = self.step_gauge {
            let _ = hostcalls::record_metric(id, step as u64);
        }
    }

    /// The counter of requests routed to `member`, if defined.
    pub fn routed_counter(&self, member: usize) -> Option<u32> {
        self.routed.get(member).copied().flatten()
    }

    /// Counts a request routed to `member`.
    pub fn count_routed(&self, member: usize) {
        count(self.routed_counter(member));
    }
}

impl GuardState {
    fn publish(&self) {
        if let Some(id) = self.halted_gauge {
            let _ = hostcalls::record_metric(id, u64::from(self.halted.get()));
        }
    }
}

/// A request of a guarded split, followed from its headers to its log for the guard: 24 bytes
/// in the request's context, no allocation.
#[derive(Debug, Clone, Copy)]
pub struct Guarded {
    /// The split's index.
    pub index: usize,
    /// Routed to the canary member (else the baseline).
    canary: bool,
    /// A gRPC request whose statuses the guard counts.
    grpc: bool,
    /// When (host clock, ms) the response headers become too late; 0: no latency ceiling,
    /// or the response headers came.
    deadline_ms: u64,
    /// The response headers came after the deadline.
    slow: bool,
}

impl Guarded {
    /// On the response headers: one clock read under a latency ceiling.
    pub fn on_response_headers(&mut self) {
        if self.deadline_ms != 0 {
            self.slow = now_ms() > self.deadline_ms;
            self.deadline_ms = 0;
        }
    }
}

/// The guard's verdict on the current stream's response. A stream that ended without response
/// headers under a latency ceiling (a reset, a timeout) is judged by its flags.
fn classify(guard: &CompiledGuard, request: &Guarded) -> Verdict {
    let flags = property_u64(path::RESPONSE_FLAGS).unwrap_or(0);
    guard.classify(
        flags,
        || property_u64(path::RESPONSE_CODE).and_then(|c| u32::try_from(c).ok()),
        request.slow,
        || {
            if request.grpc {
                property_u64(path::RESPONSE_GRPC_STATUS).and_then(|c| u32::try_from(c).ok())
            } else {
                None
            }
        },
        || property(path::RESPONSE_CODE_DETAILS).is_some_and(|details| details == b"via_upstream"),
    )
}

/// The one log line of a halt, with the figures (integers only: float formatting would cost
/// the modules kilobytes):
/// `sluice-canary: split "reviews": canary reviews-v2 halted: 31/305 failed against the
/// baseline's 0/298 in the 30000 ms window (z 4.91 > 4.75); holds until the split's config
/// changes`.
fn log_halt(filter: &str, split: &CompiledSplit, guard: &CompiledGuard, figures: &Figures) {
    let w = &figures.window;
    let (zw, zf) = guard::hundredths(figures.z);
    let (kw, kf) = guard::hundredths(guard.critical_z);
    log(
        LogLevel::Warn,
        &format!(
            "{filter}: split {:?}: canary {} halted: {}/{} failed against the baseline's {}/{} \
             in the {} ms window (z {zw}.{zf:02} > {kw}.{kf:02}); holds until the split's \
             config changes",
            split.name,
            split.clusters.get(guard.canary).map_or("?", String::as_str),
            w.canary_failures,
            w.canary_requests,
            w.baseline_failures,
            w.baseline_requests,
            guard.window_ms,
        ),
    );
}

// Pure: it lives in sluice_core; re-exported so the canary filter and the suite keep one path.
pub use sluice_core::canary::schedule_period;

/// The point of `[0, 2^32)` a request takes in `split`: the sticky key's fixed hash; for a
/// client without one, a fresh token pinned in the split's cookie (its `set-cookie` value
/// goes to `set_cookie`) when the split pins, else the worker's PRNG.
pub fn split_point<R: Rng>(
    split: &CompiledSplit,
    rng: &RefCell<R>,
    set_cookie: &mut Option<String>,
) -> u32 {
    let Some(sticky) = &split.sticky else {
        return next_u32(rng);
    };
    if let Some(key) = sticky.key(&HostRequest, source_address) {
        return canary::sticky_point(&split.name, &key);
    }
    let Some(pin) = &sticky.pin_cookie else {
        return next_u32(rng);
    };
    // A made-up key the browser brings back, so it stays in this bucket.
    let next_u64 = rng.try_borrow_mut().map_or(0, |mut rng| rng.next_u64());
    let token = format!("{next_u64:016x}");
    *set_cookie = Some(pin.header_value(&token));
    canary::sticky_point(&split.name, token.as_bytes())
}

/// The worker PRNG's next draw (0 if it is borrowed, which a single-threaded VM never does).
fn next_u32<R: Rng>(rng: &RefCell<R>) -> u32 {
    rng.try_borrow_mut().map_or(0, |mut rng| rng.next_u32())
}

/// The member of `split` whose bucket holds `point`; with `failover`, members whose breaker is
/// open are skipped (their state read from shared data, kept in `seen`).
pub fn choose_member<'r>(
    split: &CompiledSplit,
    state: &'r SplitState,
    weights: &[u32],
    point: u32,
    seen: &mut Seen<'r>,
) -> Choice {
    let halted = state.halted_canary(split);
    if split.failover {
        guard::choose(weights, point, halted, &mut |member| {
            !breaker_open(state.breaker_keys.get(member), seen)
        })
    } else {
        guard::choose(weights, point, halted, &mut |_| true)
    }
}

/// What one request's callback has read from the host so far, for reuse within the callback.
#[derive(Default)]
pub struct Seen<'r> {
    /// The clock, read at most once, and only if a decision needs it.
    pub clock: LazyClock,
    /// The last breaker state read, under its key.
    pub breaker: Option<(&'r str, Snapshot)>,
}

/// Whether the breaker under `key` takes no new request now: open, or half-open with every
/// probe slot taken ([`breaker::is_unavailable_with_clock`]); its users fail over the same way
/// in both. The clock is read only for a breaker stored open or half-open with every slot
/// taken (whether the ejection or the probe's deadline is over depends on the time), at most
/// once per request; the state read is kept in `seen` for the admission of the member
/// picked (usually the last one asked).
fn breaker_open<'r>(key: Option<&'r String>, seen: &mut Seen<'r>) -> bool {
    let Some(key) = key else { return false };
    let Ok((Some(value), cas)) = hostcalls::get_shared_data(key) else {
        return false;
    };
    let open = breaker::is_unavailable_with_clock(Some(&value), || seen.clock.now_ms());
    seen.breaker = Some((key, (Some(value), cas)));
    open
}

/// Answers 503 at once, naming the reason in `x-sluice-canary` (and as the body), and counts it.
pub fn reject(reason: &str, counter: Option<u32>) -> Action {
    count(counter);
    let _ = hostcalls::send_http_response(
        503,
        vec![
            (canary::CANARY_HEADER, reason),
            ("content-type", "text/plain"),
        ],
        Some(reason.as_bytes()),
    );
    Action::Pause
}
