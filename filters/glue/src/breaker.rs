//! Breaker glue, shared by the breaker filter and the suite: one guarded cluster (its
//! shared-data key, reply headers and metrics), admission, and recording the outcome.
//!
//! Metrics (`sluice.breaker.cluster.<cluster>.<what>`): counters `requests` (admitted),
//! `trips`, `trip_skipped_cap` (trips the host's `maxEjectionPercent` refused), `rejected_open`,
//! `rejected_overflow`; gauges `state` and `in_flight`, *set* from the
//! process-wide shared state after each update that wrote it and on the owner's 1 s refresh.

use std::cell::Cell;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MetricType};
use sluice_core::breaker::{
    self, BreakerState, Decision, Phase, Policy, Rejection, SharedStore, Snapshot, Ticket,
    Transition,
};
use sluice_core::wire::{self, breaker_metric};

use crate::{Counts, HostStore, LazyClock, define, log, path, property_u64};

/// Body of the breaker's 503s.
const REJECT_BODY: &[u8] = b"upstream circuit breaker rejected the request\n";

/// One guarded cluster: everything admission needs, computed once per worker.
pub struct Guard {
    /// The cluster's name.
    pub name: String,
    /// Its shared-data key.
    pub key: String,
    /// `x-sluice-breaker` values of its rejections.
    open_header: String,
    overflow_header: String,
    /// Its breaker's policy.
    pub policy: Policy,
    /// Shared-data keys of the other breakers of its host, which its `maxEjectionPercent`
    /// counts; empty without a cap. Read only when a trip is about to happen.
    siblings: Vec<String>,
    /// When this worker last logged a trip the cap skipped (at most one such line per
    /// `interval`).
    skip_logged_ms: Cell<Option<u64>>,
    metrics: Option<GuardMetrics>,
}

/// Metric ids of one guarded cluster.
struct GuardMetrics {
    requests: u32,
    trips: u32,
    trip_skipped_cap: u32,
    rejected_open: u32,
    rejected_overflow: u32,
    state: u32,
    in_flight: u32,
}

impl GuardMetrics {
    fn define(filter: &str, cluster: &str) -> Option<Self> {
        let metric = |kind, what| define(filter, kind, &breaker::metric_name(cluster, what));
        Some(Self {
            requests: metric(MetricType::Counter, breaker_metric::REQUESTS)?,
            trips: metric(MetricType::Counter, breaker_metric::TRIPS)?,
            trip_skipped_cap: metric(MetricType::Counter, breaker_metric::TRIP_SKIPPED_CAP)?,
            rejected_open: metric(MetricType::Counter, breaker_metric::REJECTED_OPEN)?,
            rejected_overflow: metric(MetricType::Counter, breaker_metric::REJECTED_OVERFLOW)?,
            state: metric(MetricType::Gauge, breaker_metric::STATE)?,
            in_flight: metric(MetricType::Gauge, breaker_metric::IN_FLIGHT)?,
        })
    }
}

impl Guard {
    /// A guard for `cluster`; its metrics are defined only `with_metrics` (a filter that guards
    /// names it does not list bounds how many it defines). Its rejections name the cluster in
    /// `x-sluice-breaker` only when `detailed_replies` (`BreakerConfig::detailed_replies`).
    /// `siblings`: the other clusters of its host under its `maxEjectionPercent`
    /// (`CompiledBreakers::siblings`).
    pub fn new(
        filter: &str,
        cluster: &str,
        policy: Policy,
        with_metrics: bool,
        detailed_replies: bool,
        siblings: &[&str],
    ) -> Self {
        let reply = |why: &str| {
            if detailed_replies {
                format!("{cluster} {why}")
            } else {
                why.to_owned()
            }
        };
        Self {
            name: cluster.to_owned(),
            key: breaker::shared_data_key(cluster),
            open_header: reply("open"),
            overflow_header: reply("overflow"),
            policy,
            siblings: siblings
                .iter()
                .map(|sibling| breaker::shared_data_key(sibling))
                .collect(),
            skip_logged_ms: Cell::new(None),
            metrics: if with_metrics {
                GuardMetrics::define(filter, cluster)
            } else {
                None
            },
        }
    }

    /// Creates the shared state if absent (before traffic, so that request-time updates always
    /// compare-and-set) and sets the gauges from it, so a listed cluster shows up at zero.
    pub fn prepare(&self, filter: &str, now_ms: u64) {
        if breaker::ensure_exists(&HostStore, &self.key).is_err() {
            log(
                LogLevel::Warn,
                &format!(
                    "{filter}: cannot create shared breaker state of {}",
                    self.name
                ),
            );
        }
        let (value, _) = HostStore.get(&self.key);
        let state = value
            .as_deref()
            .and_then(BreakerState::decode)
            .unwrap_or_default();
        self.publish(&state, now_ms);
    }

    /// Sets the gauges from the shared state as it is now (the periodic refresh).
    pub fn refresh_gauges(&self, now_ms: u64) {
        let (value, _) = HostStore.get(&self.key);
        if let Some(state) = value.as_deref().and_then(BreakerState::decode) {
            self.publish(&state, now_ms);
        }
    }

    /// How many of the other breakers of its host are not closed (open or half-open), read
    /// from shared data: only when a trip is about to happen, never per request.
    fn open_siblings(&self) -> u32 {
        let open = self
            .siblings
            .iter()
            .filter(|key| {
                let (value, _) = HostStore.get(key);
                value
                    .as_deref()
                    .and_then(BreakerState::decode)
                    .is_some_and(|state| state.phase != Phase::Closed)
            })
            .count();
        u32::try_from(open).unwrap_or(u32::MAX)
    }

    /// The clusters of its host `maxEjectionPercent` counts: itself and its siblings.
    fn members(&self) -> u32 {
        u32::try_from(self.siblings.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// Logs a trip the cap skipped, at most once per `interval` on this worker.
    fn log_skipped(&self, filter: &str, open: u32, now_ms: u64) {
        let due = self
            .skip_logged_ms
            .get()
            .is_none_or(|last| now_ms.saturating_sub(last) >= self.policy.interval_ms);
        if !due {
            return;
        }
        self.skip_logged_ms.set(Some(now_ms));
        log(
            LogLevel::Info,
            &format!(
                "{filter}: {} kept closed: {open} of the {} breakers of its host are open or \
                 half-open, and maxEjectionPercent is {} (trips skipped are counted in \
                 trip_skipped_cap; this line at most once per interval)",
                self.name,
                self.members(),
                self.policy.max_ejection_percent
            ),
        );
    }

    /// The `requests` counter (admissions), if the metrics are defined.
    pub fn requests_counter(&self) -> Option<u32> {
        self.metrics.as_ref().map(|m| m.requests)
    }

    fn count(&self, pick: impl Fn(&GuardMetrics) -> u32) {
        if let Some(m) = &self.metrics {
            let _ = hostcalls::increment_metric(pick(m), 1);
        }
    }

    /// Sets the gauges from the (process-wide) shared state.
    fn publish(&self, state: &BreakerState, now_ms: u64) {
        if let Some(m) = &self.metrics {
            let _ = hostcalls::record_metric(m.state, state.effective_phase(now_ms) as u64);
            let _ = hostcalls::record_metric(m.in_flight, u64::from(state.in_flight));
        }
    }
}

/// The outcome of [`admit`].
pub enum Admission {
    /// Admitted: give the ticket back through [`record_outcome`] when the stream ends.
    Admitted(Ticket),
    /// Rejected: the 503 with `x-sluice-breaker` was sent on the current stream.
    Rejected,
    /// Admitted without a ticket: the state was unreachable (logged), and a breaker that cannot
    /// reach its state must not take traffic down.
    FailedOpen,
}

/// Breaker admission on the current (or effective) stream. `snapshot`: this breaker's state as
/// the callback already read it, if it did (saves the read; a write is still CAS-checked).
/// `clock` is read only when the decision or the gauges need the time: an open breaker's
/// ejection end, a probe or slot taken, a rejection; a closed breaker without a concurrency
/// limit admits without it. `counts` takes the `requests` increment of an admission (the rare
/// rejections and trips are always counted at once).
pub fn admit(
    filter: &str,
    guard: &Guard,
    snapshot: Option<Snapshot>,
    clock: &LazyClock,
    counts: &impl Counts,
) -> Admission {
    let policy = guard.policy;
    match breaker::update_from(&HostStore, &guard.key, snapshot, |s| {
        s.admit_with_clock(&policy, || clock.now_ms())
    }) {
        Ok((Decision::Admit(ticket), state)) => {
            if let Some(id) = guard.requests_counter() {
                counts.add_one(id);
            }
            if ticket.probe || ticket.holds_slot {
                guard.publish(&state, clock.now_ms());
            }
            Admission::Admitted(ticket)
        }
        Ok((Decision::Reject(rejection), state)) => {
            let header = match rejection {
                Rejection::Open => {
                    guard.count(|m| m.rejected_open);
                    &guard.open_header
                }
                Rejection::ProbeOverrun { ejection_ms } => {
                    guard.count(|m| m.trips);
                    guard.count(|m| m.rejected_open);
                    log(
                        LogLevel::Info,
                        &format!(
                            "{filter}: {} open for {ejection_ms}ms (trip {}): a probe overran \
                             probeTimeout",
                            guard.name, state.trips
                        ),
                    );
                    &guard.open_header
                }
                Rejection::Overflow => {
                    guard.count(|m| m.rejected_overflow);
                    &guard.overflow_header
                }
            };
            guard.publish(&state, clock.now_ms());
            let _ = hostcalls::send_http_response(
                503,
                vec![(wire::BREAKER_REJECT_HEADER, header)],
                Some(REJECT_BODY),
            );
            Admission::Rejected
        }
        Err(e) => {
            log(
                LogLevel::Warn,
                &format!("{filter}: {}: admission not recorded: {e:?}", guard.name),
            );
            Admission::FailedOpen
        }
    }
}

/// Records an admitted request's outcome (`response.code`, `response.flags`) in its breaker and
/// gives its ticket back; logs trips and closings. The clock is read only when the outcome or
/// the gauges need it ([`BreakerState::record_with_clock`]). Runs in `on_log`, once per stream
/// whatever ended it.
///
/// An outcome the flags already make ignored (client gone, Envoy's overflow, ...) needs no
/// `response.code`, and when its request holds no slot and is no probe it changes no state,
/// so nothing more is read ([`breaker::classify_with_code`], [`Ticket::records_anything`]).
pub fn record_outcome(filter: &str, guard: &Guard, ticket: Ticket) {
    let flags = property_u64(path::RESPONSE_FLAGS).unwrap_or(0);
    let code = || property_u64(path::RESPONSE_CODE).and_then(|c| u32::try_from(c).ok());
    let verdict = breaker::classify_with_code(flags, code, guard.policy.count_as);
    if !ticket.records_anything(verdict) {
        return;
    }
    // The clock is read only if the outcome uses it (a window, a trip, a closing) or the
    // gauges are published; a success on a clean closed breaker never does, one host call
    // saved per healthy request. Read once at most, even across CAS retries.
    let clock = LazyClock::default();
    let now = || clock.now_ms();
    let policy = guard.policy;
    // Whether the final (successful) attempt wrote a new state: a healthy closed breaker
    // records most outcomes without any change, and then the gauges, set after every write
    // and on the 1 s refresh, are already right (two host calls saved per request).
    let mut wrote = false;
    // The host's breakers already not closed, as counted by the last cap check.
    let open_siblings = Cell::new(0u32);
    match breaker::update(&HostStore, &guard.key, |s| {
        let may_trip = || {
            let open = guard.open_siblings();
            open_siblings.set(open);
            breaker::ejection_allowed(open, guard.members(), policy.max_ejection_percent)
        };
        let (transition, next) = s.record_capped(&policy, ticket, verdict, now, may_trip);
        wrote = next.is_some();
        (transition, next)
    }) {
        Ok((transition, state)) => {
            match transition {
                Transition::Tripped { ejection_ms } => {
                    guard.count(|m| m.trips);
                    log(
                        LogLevel::Info,
                        &format!(
                            "{filter}: {} open for {ejection_ms}ms (trip {})",
                            guard.name, state.trips
                        ),
                    );
                }
                Transition::Closed => {
                    log(LogLevel::Info, &format!("{filter}: {} closed", guard.name));
                }
                Transition::TripSkipped => {
                    guard.count(|m| m.trip_skipped_cap);
                    guard.log_skipped(filter, open_siblings.get(), now());
                }
                Transition::None => {}
            }
            if wrote {
                guard.publish(&state, now());
            }
        }
        Err(e) => log(
            LogLevel::Warn,
            &format!("{filter}: {}: outcome not recorded: {e:?}", guard.name),
        ),
    }
}
