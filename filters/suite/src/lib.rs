//! sluice suite filter: router, canary, fault and breaker in ONE proxy-wasm filter.
//!
//! The four-filter chain pays the proxy-wasm floor (context create, request headers, response
//! headers, log, done, delete: ~3.5 us per filter per request, BENCHMARKS.md) four times, and
//! repeats work across the filters: the canary reads back the split the router wrote, the fault
//! re-reads `x-sluice-rule`, the route cache is cleared twice. This module takes the same
//! configs nested in one ([`sluice_core::suite::SuiteConfig`]), links them at configure time,
//! and per request runs, in one `on_http_request_headers`:
//!
//! 1. the router's decision (no match: 404 `route not found`, `x-sluice-router: no-match`);
//! 2. for a split, the canary's pick (sticky key or the worker's PCG32, skipping members whose
//!    breaker is open when `failover`; none left: 503 `x-sluice-canary:
//!    all-members-unavailable`);
//! 3. the rule's fault (abort: a local reply, no breaker admission; delay: the stream is parked
//!    in the worker's delay queue and steps 4-5 run when its timer fires);
//! 4. breaker admission for the chosen cluster, which is known in-process (no `xds.cluster_name`
//!    read; open or full: 503 with `x-sluice-breaker`);
//! 5. the internal headers written once (`x-sluice-rule` and `x-sluice-cluster` replace every
//!    client copy, `x-sluice-split` removed) and the route cache cleared once.
//!
//! `on_log` records the breaker outcome; `on_done` gives back a fault slot and forgets a
//! pending delay (a client that leaves while delayed was never admitted, so it holds no
//! breaker slot). Counters and gauges have the four filters' names, so dashboards hold.
//!
//! One root context per worker owns one timer, shared by the delay queue (its nearest
//! deadline) and the housekeeping (breaker gauges every second, canary schedule steps): the
//! period armed is the smaller of the two.
//!
//! Host calls go through `proxy_wasm::hostcalls`, whose errors are values: a failed call
//! degrades (a header treated as absent, a counter not bumped), it never traps the VM. Header
//! values are read as bytes.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, GrpcStatusCode, LogLevel, MapType, MetricType};
use rand_core::{Rng, SeedableRng};
use rand_pcg::Pcg32;
use sluice_core::breaker::{self, BreakerState, Policy, SharedStore, Ticket, Transition};
use sluice_core::canary::{self, Choice, CompiledSplit, ScheduleRecord, schedule};
use sluice_core::fault::plan::{ABORT_BODY, DEBUG_HEADER};
use sluice_core::fault::{
    self, DelayQueue, Injection, Origin, Reply, TimerChange, abort_reply, is_grpc_content_type,
    net, stats,
};
use sluice_core::host::RequestView;
use sluice_core::metrics;
use sluice_core::suite::{CompiledSuite, Target};
use sluice_core::unique::FirstSeen;
use sluice_core::wire;
use sluice_glue::{
    HostRequest, HostStore, count, count_by, log, now_ms, now_nanos, property_u64, source_address,
};

/// The module's entry point. Private: Envoy finds the SDK's `_initialize` export through its
/// `#[no_mangle]` symbol, not through Rust visibility.
mod entry {
    use super::{LogLevel, RootContext, SuiteRoot};

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(SuiteRoot::new()) });
    }}
}

/// Log prefix of this filter.
const FILTER: &str = "sluice-suite";
/// Body of the router's 404.
const NO_MATCH_BODY: &[u8] = b"route not found";
/// Response header marking a 404 as the router's (vs. an upstream's).
const NO_MATCH_HEADER: (&str, &str) = ("x-sluice-router", "no-match");
/// Body of the breaker's 503s.
const REJECT_BODY: &[u8] = b"upstream circuit breaker rejected the request\n";
/// How often breaker gauges are refreshed from shared data (as the breaker filter).
const GAUGE_REFRESH: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// Configuration-time state
// ---------------------------------------------------------------------------------------------

/// The breaker of one cluster: its shared-data key, reply headers and metric ids.
struct Guard {
    name: String,
    key: String,
    open_header: String,
    overflow_header: String,
    policy: Policy,
    metrics: Option<GuardMetrics>,
}

/// Metric ids of one guarded cluster (`sluice.breaker.cluster.<cluster>.<what>`).
struct GuardMetrics {
    requests: u32,
    trips: u32,
    rejected_open: u32,
    rejected_overflow: u32,
    state: u32,
    in_flight: u32,
}

impl GuardMetrics {
    fn define(cluster: &str) -> Option<Self> {
        let counter = |what| define(MetricType::Counter, &breaker::metric_name(cluster, what));
        let gauge = |what| define(MetricType::Gauge, &breaker::metric_name(cluster, what));
        Some(Self {
            requests: counter("requests")?,
            trips: counter("trips")?,
            rejected_open: counter("rejected_open")?,
            rejected_overflow: counter("rejected_overflow")?,
            state: gauge("state")?,
            in_flight: gauge("in_flight")?,
        })
    }
}

impl Guard {
    fn new(name: &str, policy: Policy) -> Self {
        Self {
            name: name.to_owned(),
            key: breaker::shared_data_key(name),
            open_header: format!("{name} open"),
            overflow_header: format!("{name} overflow"),
            policy,
            metrics: GuardMetrics::define(name),
        }
    }

    fn count(&self, pick: impl Fn(&GuardMetrics) -> u32) {
        if let Some(m) = &self.metrics {
            let _ = hostcalls::increment_metric(pick(m), 1);
        }
    }

    /// Sets the gauges from the (process-wide) shared state.
    fn publish(&self, state: &BreakerState, now: u64) {
        if let Some(m) = &self.metrics {
            let _ = hostcalls::record_metric(m.state, state.effective_phase(now) as u64);
            let _ = hostcalls::record_metric(m.in_flight, u64::from(state.in_flight));
        }
    }
}

/// What a canary split needs at run time besides its config.
struct SplitRuntime {
    /// Counter id per member.
    routed: Vec<Option<u32>>,
    /// Counter of 503s for lack of a healthy member.
    unavailable: Option<u32>,
    /// Shared-data key of each member's breaker (read for failover).
    breaker_keys: Vec<String>,
    /// Breaker guarding each member's cluster, if any.
    guards: Vec<Option<Rc<Guard>>>,
    /// Gauge of the current schedule step.
    step_gauge: Option<u32>,
    /// The shared schedule record this worker follows (`None` without a schedule).
    record: Cell<Option<ScheduleRecord>>,
    /// The step last reported in the gauge and log.
    step: Cell<usize>,
}

/// Fault metric ids.
struct FaultMetrics {
    rule_delays: Vec<Option<u32>>,
    rule_aborts: Vec<Option<u32>>,
    header_delays: Option<u32>,
    header_aborts: Option<u32>,
    overflow: Option<u32>,
    active_gauge: Option<u32>,
}

impl FaultMetrics {
    fn delay_counter(&self, origin: Origin) -> Option<u32> {
        match origin {
            Origin::Rule(index) => self.rule_delays.get(index).copied().flatten(),
            Origin::Header => self.header_delays,
        }
    }

    fn abort_counter(&self, origin: Origin) -> Option<u32> {
        match origin {
            Origin::Rule(index) => self.rule_aborts.get(index).copied().flatten(),
            Origin::Header => self.header_aborts,
        }
    }
}

/// The configured suite, shared by the worker's root and HTTP contexts.
struct Runtime {
    suite: CompiledSuite,
    /// Router counter per rule, indexed like the router's rules.
    rule_matched: Vec<Option<u32>>,
    no_match: Option<u32>,
    /// Breaker guarding each rule's single cluster (`None` for split rules or unguarded).
    rule_guards: Vec<Option<Rc<Guard>>>,
    /// Every guard once, for the gauge refresh.
    guards: Vec<Rc<Guard>>,
    /// Indexed like the canary's splits.
    splits: Vec<SplitRuntime>,
    fault: FaultMetrics,
    /// Period of the housekeeping (gauges, schedules); `None` when there is none.
    housekeeping: Option<Duration>,
}

impl Runtime {
    /// The weights a request to split `index` is picked with now (a scheduled split reads the
    /// clock, so that every worker switches steps at the same instant).
    fn weights<'a>(&'a self, split: &'a CompiledSplit, run: &SplitRuntime) -> &'a [u32] {
        match (&split.schedule, run.record.get()) {
            (Some(schedule), Some(record)) => {
                schedule.weights(schedule.step_at(record.elapsed_ms(now_ms())))
            }
            _ => &split.weights,
        }
    }

    /// Re-reads each scheduled split's shared record (when `refresh`) and reports its step.
    fn advance_schedules(&self, now_ms: u64, refresh: bool) {
        let Some(canary) = &self.suite.canary else {
            return;
        };
        for (split, run) in canary.splits.iter().zip(&self.splits) {
            let (Some(schedule), Some(mut record)) = (&split.schedule, run.record.get()) else {
                continue;
            };
            if refresh {
                record = schedule::refresh_on_tick(&HostStore, &split.name, record);
                run.record.set(Some(record));
            }
            let step = schedule.step_at(record.elapsed_ms(now_ms));
            if step != run.step.get() {
                log(
                    LogLevel::Info,
                    &format!(
                        "sluice-suite: split {:?} moves to step {step} (weights {:?})",
                        split.name,
                        schedule.weights(step)
                    ),
                );
                run.step.set(step);
            }
            if let Some(id) = run.step_gauge {
                let _ = hostcalls::record_metric(id, step as u64);
            }
        }
    }

    /// Breaker gauges from shared data (every worker, every second, as the breaker filter).
    fn refresh_gauges(&self, now_ms: u64) {
        for guard in &self.guards {
            let (value, _) = HostStore.get(&guard.key);
            if let Some(state) = value.as_deref().and_then(BreakerState::decode) {
                guard.publish(&state, now_ms);
            }
        }
    }
}

/// Builds the run-time state: metrics defined, breaker keys created, every cluster the router
/// or canary can choose linked to its breaker once (no lookup by name per request).
fn runtime(suite: CompiledSuite) -> Runtime {
    let now = now_ms();
    // Every guard once, in creation order, and each cluster's index in it.
    let mut guards: Vec<Rc<Guard>> = Vec::new();
    let mut guard_index = FirstSeen::new();
    let mut guard_of = |cluster: &str| -> Option<Rc<Guard>> {
        let policy = *suite.breaker.as_ref()?.policy_for(cluster)?;
        if let Some(index) = guard_index.get(cluster) {
            return guards.get(index).cloned();
        }
        let guard = Rc::new(Guard::new(cluster, policy));
        // Create the key before traffic, so request-time updates always compare-and-set.
        if breaker::ensure_exists(&HostStore, &guard.key).is_err() {
            log(
                LogLevel::Warn,
                &format!("sluice-suite: cannot create shared breaker state of {cluster}"),
            );
        }
        let (value, _) = HostStore.get(&guard.key);
        let state = value
            .as_deref()
            .and_then(BreakerState::decode)
            .unwrap_or_default();
        guard.publish(&state, now);
        guard_index.insert(cluster, guards.len());
        guards.push(Rc::clone(&guard));
        Some(guard)
    };
    let rules = suite.router.rules();
    let rule_guards = rules
        .iter()
        .map(|rule| match &rule.destination {
            sluice_core::router::Destination::Cluster(cluster) => guard_of(cluster),
            sluice_core::router::Destination::Split(_) => None,
        })
        .collect();
    let splits = suite
        .canary
        .iter()
        .flat_map(|canary| &canary.splits)
        .map(|split| split_runtime(split, now, &mut guard_of))
        .collect();
    // Guards of listed clusters that no rule or split reaches still show up at zero, as in
    // the breaker filter.
    if let Some(breakers) = &suite.breaker {
        for cluster in breakers.by_cluster.keys() {
            guard_of(cluster);
        }
    }
    let (rule_delays, rule_aborts) = match &suite.fault {
        Some(plan) => (
            plan.rules()
                .iter()
                .map(|r| define(MetricType::Counter, &stats::rule_delays_injected(&r.name)))
                .collect(),
            plan.rules()
                .iter()
                .map(|r| define(MetricType::Counter, &stats::rule_aborts_injected(&r.name)))
                .collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let with_fault = suite.fault.is_some();
    let fault_metric = |kind, name: &str| with_fault.then(|| define(kind, name)).flatten();
    let fault = FaultMetrics {
        rule_delays,
        rule_aborts,
        header_delays: fault_metric(MetricType::Counter, stats::HEADER_DELAYS_INJECTED),
        header_aborts: fault_metric(MetricType::Counter, stats::HEADER_ABORTS_INJECTED),
        overflow: fault_metric(MetricType::Counter, stats::FAULTS_OVERFLOW),
        active_gauge: fault_metric(MetricType::Gauge, stats::ACTIVE_FAULTS),
    };
    let housekeeping = [
        suite.breaker.as_ref().map(|_| GAUGE_REFRESH),
        suite.canary.as_ref().and_then(schedule_period),
    ]
    .into_iter()
    .flatten()
    .min();
    Runtime {
        rule_matched: rules
            .iter()
            .map(|rule| define(MetricType::Counter, &rule.metric_name))
            .collect(),
        no_match: define(MetricType::Counter, metrics::ROUTER_NO_MATCH),
        rule_guards,
        guards,
        splits,
        fault,
        housekeeping,
        suite,
    }
}

fn split_runtime(
    split: &CompiledSplit,
    now_ms: u64,
    guard_of: &mut impl FnMut(&str) -> Option<Rc<Guard>>,
) -> SplitRuntime {
    let record = split
        .schedule
        .as_ref()
        .map(|s| schedule::sync_on_configure(&HostStore, &split.name, s, now_ms));
    SplitRuntime {
        routed: split
            .clusters
            .iter()
            .map(|cluster| {
                define(
                    MetricType::Counter,
                    &canary::routed_metric(&split.name, cluster),
                )
            })
            .collect(),
        unavailable: define(
            MetricType::Counter,
            &canary::unavailable_metric(&split.name),
        ),
        breaker_keys: split
            .clusters
            .iter()
            .map(|cluster| breaker::shared_data_key(cluster))
            .collect(),
        guards: split.clusters.iter().map(|c| guard_of(c)).collect(),
        step_gauge: split
            .schedule
            .as_ref()
            .and_then(|_| define(MetricType::Gauge, &canary::step_metric(&split.name))),
        record: Cell::new(record),
        step: Cell::new(0),
    }
}

/// The canary filter's schedule tick: a quarter of the shortest hold, within 50 ms .. 1 s.
fn schedule_period(canary: &canary::CompiledCanary) -> Option<Duration> {
    let shortest = canary
        .splits
        .iter()
        .filter_map(|s| s.schedule.as_ref())
        .map(|s| s.shortest_hold_ms().unwrap_or(4_000))
        .min()?;
    Some(Duration::from_millis((shortest / 4).clamp(50, 1_000)))
}

// ---------------------------------------------------------------------------------------------
// Worker state and the timer
// ---------------------------------------------------------------------------------------------

/// A breaker admission, given back in `on_log`.
type Admission = (Rc<Guard>, Ticket);

/// What a parked stream does when its delay ends.
struct Pending {
    /// `Some`: answer with this abort instead of forwarding.
    abort: Option<PendingAbort>,
    /// The breaker to admit the stream through before resuming it.
    guard: Option<Rc<Guard>>,
    /// Where the admission goes, for the stream's `on_log`.
    admitted: Rc<RefCell<Option<Admission>>>,
}

/// An abort drawn together with a delay, sent when the delay ends.
struct PendingAbort {
    reply: Reply,
    debug: Option<String>,
    counter: Option<u32>,
}

/// State of one worker (one VM per worker thread): the PRNG, the delayed streams, the faults
/// in progress and the timer. Every borrow is short and never held across a host call that
/// can re-enter the module (resume, local reply).
struct Worker {
    rng: RefCell<Pcg32>,
    queue: RefCell<DelayQueue<Pending>>,
    active: Cell<u32>,
    /// The period the delay queue believes is armed.
    queue_period: Cell<Option<Duration>>,
    /// The period actually armed on the host (`min(queue, housekeeping)`).
    armed: Cell<Option<Duration>>,
    /// Housekeeping period and when it is next due (ms).
    housekeeping: Cell<Option<Duration>>,
    next_housekeeping_ms: Cell<u64>,
}

impl Worker {
    fn new() -> Self {
        Self {
            rng: RefCell::new(Pcg32::seed_from_u64(sluice_glue::random_seed(FILTER))),
            queue: RefCell::new(DelayQueue::new()),
            active: Cell::new(0),
            queue_period: Cell::new(None),
            armed: Cell::new(None),
            housekeeping: Cell::new(None),
            next_housekeeping_ms: Cell::new(0),
        }
    }

    fn next_u32(&self) -> u32 {
        self.rng
            .try_borrow_mut()
            .map_or(0, |mut rng| rng.next_u32())
    }

    /// Applies a delay-queue timer decision, keeping the housekeeping cadence.
    fn apply_timer(&self, change: TimerChange) {
        match change {
            TimerChange::Keep => return,
            TimerChange::Set(period) => self.queue_period.set(Some(period)),
            TimerChange::Off => self.queue_period.set(None),
        }
        self.rearm();
    }

    fn rearm(&self) {
        let wanted = match (self.queue_period.get(), self.housekeeping.get()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if wanted != self.armed.get() {
            self.armed.set(wanted);
            let _ = hostcalls::set_tick_period(wanted.unwrap_or(Duration::ZERO));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Root context
// ---------------------------------------------------------------------------------------------

/// The root context: compiles the config, owns the timer.
struct SuiteRoot {
    runtime: Option<Rc<Runtime>>,
    worker: Rc<Worker>,
}

impl SuiteRoot {
    fn new() -> Self {
        Self {
            runtime: None,
            worker: Rc::new(Worker::new()),
        }
    }
}

impl Context for SuiteRoot {}

impl RootContext for SuiteRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let Some(json) = sluice_glue::plugin_config(FILTER, plugin_configuration_size) else {
            return false;
        };
        let suite = match CompiledSuite::from_json(&json) {
            Ok(suite) => suite,
            Err(reason) => {
                log(LogLevel::Error, &format!("sluice-suite: {reason}"));
                return false;
            }
        };
        for warning in suite.warnings() {
            log(LogLevel::Warn, &format!("sluice-suite: {warning}"));
        }
        let runtime = runtime(suite);
        let now = now_ms();
        runtime.advance_schedules(now, false);
        log(
            LogLevel::Info,
            &format!(
                "sluice-suite: configured with {} rules, {} splits, {} faults, {} breakers",
                runtime.suite.router.rules().len(),
                runtime.splits.len(),
                runtime.suite.fault.as_ref().map_or(0, |f| f.rules().len()),
                runtime.guards.len()
            ),
        );
        self.worker.housekeeping.set(runtime.housekeeping);
        self.worker.next_housekeeping_ms.set(now);
        self.worker.rearm();
        self.runtime = Some(Rc::new(runtime));
        true
    }

    fn on_tick(&mut self) {
        let worker = &self.worker;
        let Ok((due, change)) = worker
            .queue
            .try_borrow_mut()
            .map(|mut queue| queue.take_due(now_nanos()))
        else {
            return;
        };
        worker.apply_timer(change);
        // The queue is released: resuming or replying may re-enter this module.
        for (context_id, pending) in due {
            if hostcalls::set_effective_context(context_id).is_err() {
                // The stream is gone (its on_done normally removes it first).
                continue;
            }
            if let Some(abort) = pending.abort {
                count(abort.counter);
                send_abort(abort.reply, abort.debug.as_deref());
                continue;
            }
            if let Some(guard) = pending.guard {
                match admit(guard, None, None) {
                    Ok(admission) => {
                        if let Ok(mut slot) = pending.admitted.try_borrow_mut() {
                            *slot = admission;
                        }
                    }
                    Err(()) => continue,
                }
            }
            let _ = hostcalls::resume_http_request();
        }
        if let (Some(runtime), Some(period)) = (&self.runtime, worker.housekeeping.get()) {
            let now = now_ms();
            if now >= worker.next_housekeeping_ms.get() {
                let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
                worker
                    .next_housekeeping_ms
                    .set(now.saturating_add(period_ms));
                runtime.advance_schedules(now, true);
                runtime.refresh_gauges(now);
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(SuiteHttp {
            context_id,
            runtime: self.runtime.clone(),
            worker: Rc::clone(&self.worker),
            admitted: None,
            delayed: None,
            holds_fault_slot: false,
            set_cookie: None,
            response_debug: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

// ---------------------------------------------------------------------------------------------
// Per-request context
// ---------------------------------------------------------------------------------------------

/// A stream parked by a delay.
struct Delayed {
    /// Deadline (host-clock ns), the queue's key with the context id.
    deadline: u64,
    /// The admission the tick made for this stream, if any.
    admitted: Rc<RefCell<Option<Admission>>>,
}

struct SuiteHttp {
    context_id: u32,
    runtime: Option<Rc<Runtime>>,
    worker: Rc<Worker>,
    /// Set when the breaker admitted the request; taken (exactly once) in `on_log`.
    admitted: Option<Admission>,
    /// Set while (and after) the stream was delayed.
    delayed: Option<Delayed>,
    /// This stream counts in the worker's active faults.
    holds_fault_slot: bool,
    /// `set-cookie` value for the response (a freshly pinned client).
    set_cookie: Option<String>,
    /// `x-sluice-fault` value for the upstream's response (delay-only faults).
    response_debug: Option<String>,
}

impl SuiteHttp {
    /// Whether the stream is still parked (the tick has not taken it yet).
    fn is_delayed(&self) -> bool {
        self.delayed.as_ref().is_some_and(|delayed| {
            self.worker
                .queue
                .try_borrow()
                .is_ok_and(|queue| queue.contains(self.context_id, delayed.deadline))
        })
    }

    /// The canary's pick for split `index`: the member's cluster and breaker, or `None`
    /// after answering 503 because every member is unavailable.
    fn pick<'r>(
        &mut self,
        runtime: &'r Runtime,
        index: usize,
        seen: &mut Seen<'r>,
    ) -> Option<Picked<'r>> {
        let canary = runtime.suite.canary.as_ref()?;
        let (split, run) = (canary.splits.get(index)?, runtime.splits.get(index)?);
        let weights = runtime.weights(split, run);
        let point = match &split.sticky {
            Some(sticky) => match sticky.key(&HostRequest, source_address) {
                Some(key) => canary::sticky_point(&split.name, &key),
                None => match &sticky.pin_cookie {
                    // A made-up key the browser brings back, so it stays in this bucket.
                    Some(pin) => {
                        let token = format!(
                            "{:016x}",
                            self.worker
                                .rng
                                .try_borrow_mut()
                                .map_or(0, |mut r| r.next_u64())
                        );
                        self.set_cookie = Some(pin.header_value(&token));
                        canary::sticky_point(&split.name, token.as_bytes())
                    }
                    None => self.worker.next_u32(),
                },
            },
            None => self.worker.next_u32(),
        };
        let choice = if split.failover {
            canary::choose(weights, point, |member| {
                !breaker_open(run.breaker_keys.get(member), seen)
            })
        } else {
            canary::locate(weights, point).map_or(Choice::AllUnavailable, Choice::Member)
        };
        let Choice::Member(member) = choice else {
            self.set_cookie = None;
            reject_unavailable(run.unavailable);
            return None;
        };
        count(run.routed.get(member).copied().flatten());
        Some(Picked {
            cluster: split.clusters.get(member)?,
            guard: run.guards.get(member).cloned().flatten(),
        })
    }

    /// Draws the rule's fault. `Some(action)` when the request is aborted or parked.
    fn inject(
        &mut self,
        runtime: &Runtime,
        fault_rule: Option<usize>,
        guard: &Option<Rc<Guard>>,
    ) -> Option<Action> {
        let plan = runtime.suite.fault.as_ref()?;
        let decision = plan.decide_for_rule(
            fault_rule,
            &HostRequest,
            client_ip,
            self.worker.active.get(),
            &mut || self.worker.next_u32(),
        );
        let injection: Injection = match decision {
            fault::Decision::Pass => return None,
            fault::Decision::Overflow => {
                count(runtime.fault.overflow);
                return None;
            }
            fault::Decision::Inject(injection) => injection,
        };
        let metrics = &runtime.fault;
        self.holds_fault_slot = true;
        self.worker
            .active
            .set(self.worker.active.get().saturating_add(1));
        count_by(metrics.active_gauge, 1);
        let debug = plan.debug_header.then(|| injection.debug_value());
        let abort = injection.abort.map(|(code, origin)| PendingAbort {
            reply: abort_reply(code, is_grpc_request()),
            debug: debug.clone(),
            counter: metrics.abort_counter(origin),
        });
        match (injection.delay, abort) {
            (Some((delay, origin)), abort) => {
                if abort.is_none() {
                    // A delay-only fault shows on the upstream's response.
                    self.response_debug = debug;
                }
                count(metrics.delay_counter(origin));
                self.park(
                    delay,
                    Pending {
                        abort,
                        guard: guard.clone(),
                        admitted: Rc::new(RefCell::new(None)),
                    },
                );
                Some(Action::Pause)
            }
            (None, Some(abort)) => {
                count(abort.counter);
                send_abort(abort.reply, abort.debug.as_deref());
                Some(Action::Pause)
            }
            (None, None) => None,
        }
    }

    fn park(&mut self, delay: Duration, pending: Pending) {
        let now = now_nanos();
        let deadline = now.saturating_add(u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX));
        let admitted = Rc::clone(&pending.admitted);
        let Ok(change) = self
            .worker
            .queue
            .try_borrow_mut()
            .map(|mut queue| queue.insert(self.context_id, deadline, pending, now))
        else {
            return;
        };
        self.delayed = Some(Delayed { deadline, admitted });
        self.worker.apply_timer(change);
    }

    /// The stream ended: forget a pending delay and give the fault slot back. Idempotent.
    fn release(&mut self) {
        if let Some(delayed) = &self.delayed
            && let Ok(mut queue) = self.worker.queue.try_borrow_mut()
        {
            let (_, change) = queue.remove(self.context_id, delayed.deadline);
            drop(queue);
            self.worker.apply_timer(change);
        }
        if std::mem::take(&mut self.holds_fault_slot) {
            self.worker
                .active
                .set(self.worker.active.get().saturating_sub(1));
            if let Some(runtime) = &self.runtime {
                count_by(runtime.fault.active_gauge, -1);
            }
        }
    }
}

/// The canary's choice.
struct Picked<'r> {
    cluster: &'r str,
    guard: Option<Rc<Guard>>,
}

impl Context for SuiteHttp {
    fn on_done(&mut self) -> bool {
        self.release();
        true
    }
}

impl Drop for SuiteHttp {
    fn drop(&mut self) {
        self.release();
    }
}

impl HttpContext for SuiteHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            // Unreachable in Envoy (a refused configuration creates no contexts): fail closed.
            return respond_no_match(None);
        };
        // Deciding before replacing the client's internal headers is safe: no rule may match
        // on them (the router's compile refuses it).
        let Some(route) = runtime.suite.route(&HostRequest) else {
            return respond_no_match(runtime.no_match);
        };
        count(
            runtime
                .rule_matched
                .get(route.rule_index)
                .copied()
                .flatten(),
        );
        // What the canary's failover read (the clock, the chosen member's breaker), reused by
        // the admission below: the same callback, so as exact as reading again.
        let mut seen = Seen::default();
        let (cluster, guard) = match route.target {
            Target::Cluster(cluster) => (
                cluster,
                runtime.rule_guards.get(route.rule_index).cloned().flatten(),
            ),
            Target::Split(index) => match self.pick(&runtime, index, &mut seen) {
                Some(picked) => (picked.cluster, picked.guard),
                None => return Action::Pause,
            },
        };
        // Written before a delay parks the stream, so resuming only has to continue.
        write_internal_headers(route.rule_name, cluster);
        if let Some(action) = self.inject(&runtime, route.fault_rule, &guard) {
            return action;
        }
        if let Some(guard) = guard {
            let snapshot = seen.breaker.filter(|(key, _)| *key == guard.key);
            match admit(guard, snapshot.map(|(_, read)| read), seen.now_ms) {
                Ok(admission) => self.admitted = admission,
                Err(()) => return Action::Pause,
            }
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        // Continue here would release the paused headers early: buffer until the tick.
        if self.is_delayed() {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.is_delayed() {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(cookie) = self.set_cookie.take() {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &cookie);
        }
        if let Some(value) = self.response_debug.take() {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, DEBUG_HEADER, &value);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let admission = self.admitted.take().or_else(|| {
            self.delayed
                .as_ref()
                .and_then(|d| d.admitted.try_borrow_mut().ok()?.take())
        });
        if let Some((guard, ticket)) = admission {
            record_outcome(&guard, ticket);
        }
    }
}

/// Replaces every client copy of the internal headers with the decision and re-picks the
/// route: three header calls and one foreign call, once per request.
fn write_internal_headers(rule: &str, cluster: &str) {
    const _: () = assert!(
        wire::INTERNAL_HEADERS.len() == 3,
        "strip the new internal header"
    );
    let headers = MapType::HttpRequestHeaders;
    // Envoy's setCopy removes every value of the name first.
    let _ = hostcalls::set_map_value(headers, wire::RULE_HEADER, Some(rule));
    let _ = hostcalls::set_map_value(headers, wire::CLUSTER_HEADER, Some(cluster));
    let _ = hostcalls::remove_map_value(headers, wire::SPLIT_HEADER);
    // ABI 0.2.1 modules (this SDK) already make Envoy re-pick the route when headers change;
    // newer ABIs need this explicit call. Hosts without it answer NotFound: nothing to do.
    let _ = hostcalls::call_foreign_function("clear_route_cache", None);
}

/// Breaker admission on the current (or effective) stream. `Ok(Some)` admitted with a ticket
/// to give back, `Ok(None)` admitted without one (state unreachable: fail open), `Err` the
/// request was answered 503. `snapshot` and `now_ms`: this breaker's state and the clock as
/// this callback already read them, if it did.
fn admit(
    guard: Rc<Guard>,
    snapshot: Option<breaker::Snapshot>,
    now_ms: Option<u64>,
) -> Result<Option<Admission>, ()> {
    let now = now_ms.unwrap_or_else(self::now_ms);
    let policy = guard.policy;
    match breaker::update_from(&HostStore, &guard.key, snapshot, |s| s.admit(&policy, now)) {
        Ok((breaker::Decision::Admit(ticket), state)) => {
            guard.count(|m| m.requests);
            if ticket.probe || ticket.holds_slot {
                guard.publish(&state, now);
            }
            Ok(Some((guard, ticket)))
        }
        Ok((breaker::Decision::Reject(rejection), state)) => {
            let header = match rejection {
                breaker::Rejection::Open => {
                    guard.count(|m| m.rejected_open);
                    &guard.open_header
                }
                breaker::Rejection::Overflow => {
                    guard.count(|m| m.rejected_overflow);
                    &guard.overflow_header
                }
            };
            guard.publish(&state, now);
            let _ = hostcalls::send_http_response(
                503,
                vec![(wire::BREAKER_REJECT_HEADER, header)],
                Some(REJECT_BODY),
            );
            Err(())
        }
        Err(e) => {
            // Fail open: a breaker that cannot reach its state must not take traffic down.
            log(
                LogLevel::Warn,
                &format!(
                    "sluice-suite: {}: admission not recorded: {e:?}",
                    guard.name
                ),
            );
            Ok(None)
        }
    }
}

/// Records an admitted request's outcome in its breaker (the breaker filter's `on_log`).
fn record_outcome(guard: &Guard, ticket: Ticket) {
    let code = property_u64(&["response", "code"]).and_then(|c| u32::try_from(c).ok());
    let flags = property_u64(&["response", "flags"]).unwrap_or(0);
    let verdict = breaker::classify(code, flags, guard.policy.count_as);
    let now = now_ms();
    let policy = guard.policy;
    // Gauges are set after a write only: a healthy closed breaker usually writes nothing.
    let mut wrote = false;
    match breaker::update(&HostStore, &guard.key, |s| {
        let (transition, next) = s.record(&policy, ticket, verdict, now);
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
                            "sluice-suite: {} open for {ejection_ms}ms (trip {})",
                            guard.name, state.trips
                        ),
                    );
                }
                Transition::Closed => {
                    log(
                        LogLevel::Info,
                        &format!("sluice-suite: {} closed", guard.name),
                    );
                }
                Transition::None => {}
            }
            if wrote {
                guard.publish(&state, now);
            }
        }
        Err(e) => log(
            LogLevel::Warn,
            &format!("sluice-suite: {}: outcome not recorded: {e:?}", guard.name),
        ),
    }
}

/// What one request's callback has read from the host so far, for reuse within the callback.
#[derive(Default)]
struct Seen<'r> {
    /// The clock (ms), read at most once.
    now_ms: Option<u64>,
    /// The last breaker state read, under its key.
    breaker: Option<(&'r str, breaker::Snapshot)>,
}

/// Whether the breaker under `key` is open now. The clock is read at most once per request,
/// and only for a member whose breaker has state at all; the state read is kept in `seen`
/// for the admission of the member picked (usually the last one asked).
fn breaker_open<'r>(key: Option<&'r String>, seen: &mut Seen<'r>) -> bool {
    let Some(key) = key else { return false };
    let Ok((Some(value), cas)) = hostcalls::get_shared_data(key) else {
        return false;
    };
    let now_ms = *seen.now_ms.get_or_insert_with(now_ms);
    let open = breaker::is_open(Some(&value), now_ms);
    seen.breaker = Some((key, (Some(value), cas)));
    open
}

/// Answers 404 like Istio's "no route" and stops the filter chain.
fn respond_no_match(counter: Option<u32>) -> Action {
    count(counter);
    let _ = hostcalls::send_http_response(
        404,
        vec![NO_MATCH_HEADER, ("content-type", "text/plain")],
        Some(NO_MATCH_BODY),
    );
    Action::Pause
}

/// Answers 503 when no member of a split is available (the canary filter's reply).
fn reject_unavailable(counter: Option<u32>) {
    count(counter);
    let reason = canary::ALL_MEMBERS_UNAVAILABLE;
    let _ = hostcalls::send_http_response(
        503,
        vec![
            (canary::CANARY_HEADER, reason),
            ("content-type", "text/plain"),
        ],
        Some(reason.as_bytes()),
    );
}

/// Sends a fault abort on the current (or effective) stream.
fn send_abort(reply: Reply, debug: Option<&str>) {
    match reply {
        Reply::Http(status) => {
            let mut headers = vec![("content-type", "text/plain")];
            if let Some(value) = debug {
                headers.push((DEBUG_HEADER, value));
            }
            let _ = hostcalls::send_http_response(
                u32::from(status),
                headers,
                Some(ABORT_BODY.as_bytes()),
            );
        }
        Reply::Grpc(code) => {
            let metadata: Vec<(&str, &[u8])> = debug
                .map(|value| (DEBUG_HEADER, value.as_bytes()))
                .into_iter()
                .collect();
            let _ = hostcalls::send_grpc_response(grpc_code(code), Some(ABORT_BODY), metadata);
        }
    }
}

fn grpc_code(code: u8) -> GrpcStatusCode {
    match code {
        0 => GrpcStatusCode::Ok,
        1 => GrpcStatusCode::Cancelled,
        3 => GrpcStatusCode::InvalidArgument,
        4 => GrpcStatusCode::DeadlineExceeded,
        5 => GrpcStatusCode::NotFound,
        6 => GrpcStatusCode::AlreadyExists,
        7 => GrpcStatusCode::PermissionDenied,
        8 => GrpcStatusCode::ResourceExhausted,
        9 => GrpcStatusCode::FailedPrecondition,
        10 => GrpcStatusCode::Aborted,
        11 => GrpcStatusCode::OutOfRange,
        12 => GrpcStatusCode::Unimplemented,
        13 => GrpcStatusCode::Internal,
        14 => GrpcStatusCode::Unavailable,
        15 => GrpcStatusCode::DataLoss,
        16 => GrpcStatusCode::Unauthenticated,
        _ => GrpcStatusCode::Unknown,
    }
}

// ---------------------------------------------------------------------------------------------
// Host access
// ---------------------------------------------------------------------------------------------

/// Whether the current request is gRPC (read only when an abort fires).
fn is_grpc_request() -> bool {
    HostRequest
        .header("content-type")
        .is_some_and(|value| is_grpc_content_type(&value))
}

/// The downstream client's IP (Envoy's `source.address`), read only for fault headers.
fn client_ip() -> Option<IpAddr> {
    net::parse_socket_ip(&source_address()?)
}

/// Defines one of the suite's metrics (a refusal is logged, and the metric skipped).
fn define(kind: MetricType, name: &str) -> Option<u32> {
    sluice_glue::define(FILTER, kind, name)
}
