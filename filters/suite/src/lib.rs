//! sluice suite filter: router, canary, fault and breaker in ONE proxy-wasm filter.
//!
//! The four-filter chain pays the proxy-wasm floor (context create, request headers, response
//! headers, log, done, delete: ~3.5 us per filter per request, BENCHMARKS.md) four times, and
//! repeats work across the filters: the canary reads back the split the router wrote, the fault
//! re-reads `x-sluice-rule`. This module takes the same
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
//! 5. the internal headers written once: `x-sluice-rule` and `x-sluice-cluster` replace every
//!    client copy (Envoy then clears the route cache itself, `sluice_glue::router`). A
//!    client-sent `x-sluice-split` is left for the route to strip: nothing in this layout
//!    reads it.
//!
//! `on_log` records the breaker outcome; `on_done` gives back a fault slot and forgets a
//! pending delay (a client that leaves while delayed was never admitted, so it holds no
//! breaker slot). Counters and gauges have the four filters' names, so dashboards hold.
//!
//! The three per-request counters (rule matched, member routed, breaker requests) are batched
//! per worker ([`CounterBatch`]) and published on the worker's tick, at most 1 s late: a host
//! call per changed counter per tick instead of three per request. The rare counters (404s,
//! faults, rejections, trips) and the gauges are published at once.
//!
//! One root context per worker owns one timer, shared by the delay queue (its nearest
//! deadline), the housekeeping (breaker gauges every second, canary schedule steps) and the
//! counter flush (every second while increments are pending): the period armed is the
//! smallest of the three ([`sluice_core::suite::timer::Timer`] decides it).
//!
//! This crate is the host glue: what the suite decides without the host (the linked config,
//! the housekeeping period, the timer) is in `sluice_core::suite`, tested natively there.
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
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};
use rand_core::{Rng, SeedableRng};
use rand_pcg::Pcg32;
use sluice_core::breaker::{self, Ticket};
use sluice_core::canary::{self, Choice};
use sluice_core::fault::plan::DEBUG_HEADER;
use sluice_core::fault::{self, DelayQueue, Injection, TimerChange, abort_reply};
use sluice_core::metrics::{self, Batched, CounterBatch};
use sluice_core::suite::debug::{self, CompiledDebug, EXPLAIN_HEADER, Explanation};
use sluice_core::suite::timer::Timer;
use sluice_core::suite::{CompiledSuite, Target};
use sluice_core::unique::FirstSeen;
use sluice_core::wire;
use sluice_glue::breaker::{self as breaker_glue, Guard, record_outcome};
use sluice_glue::canary::{Guarded, Seen, SplitState, choose_member, reject, split_point};
use sluice_glue::fault::{FaultCounters, PendingAbort, client_ip, is_grpc_request};
use sluice_glue::router::{respond_no_match, write_internal_headers};
use sluice_glue::{Counts, HostRequest, LazyClock, count, count_by, log, now_ms, now_nanos};

sluice_glue::root_context!(SuiteRoot);

/// Log prefix of this filter.
const FILTER: &str = sluice_core::wire::SUITE_FILTER;

// ---------------------------------------------------------------------------------------------
// Configuration-time state
// ---------------------------------------------------------------------------------------------

/// What a canary split needs at run time besides its config.
struct SplitRuntime {
    /// Counters, breaker keys, schedule (as the canary filter).
    state: SplitState,
    /// Breaker guarding each member's cluster, if any.
    guards: Vec<Option<Rc<Guard>>>,
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
    /// The fault plan's counters (none defined without a plan).
    fault: FaultCounters,
    /// Period of the housekeeping (gauges, schedules); `None` when there is none.
    housekeeping: Option<Duration>,
}

impl Runtime {
    /// Reports each scheduled split's step at `now_ms`, re-reading the shared records first
    /// when `refresh`.
    fn advance_schedules(&self, now_ms: u64, refresh: bool) {
        let Some(canary) = &self.suite.canary else {
            return;
        };
        for (split, run) in canary.splits.iter().zip(&self.splits) {
            // A halt found by this merge freezes the step it happened at.
            if refresh {
                run.state.guard_tick(FILTER, split, now_ms);
            }
            run.state.advance_schedule(FILTER, split, now_ms, refresh);
        }
    }

    /// The per-request counters the worker batches: rule matched, member routed, breaker
    /// requests (the others count rare events and go to the host at once).
    fn batched_counters(&self) -> CounterBatch {
        let rules = self.rule_matched.iter().flatten().copied();
        let members = self.splits.iter().flat_map(|run| {
            (0..run.guards.len()).filter_map(|member| run.state.routed_counter(member))
        });
        let admissions = self
            .guards
            .iter()
            .filter_map(|guard| guard.requests_counter());
        CounterBatch::new(rules.chain(members).chain(admissions))
    }

    /// Breaker gauges from shared data (every worker, every second, as the breaker filter).
    fn refresh_gauges(&self, now_ms: u64) {
        for guard in &self.guards {
            guard.refresh_gauges(now_ms);
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
        let breakers = suite.breaker.as_ref()?;
        let policy = *breakers.policy_for(cluster)?;
        if let Some(index) = guard_index.get(cluster) {
            return guards.get(index).cloned();
        }
        let guard = Rc::new(Guard::new(
            FILTER,
            cluster,
            policy,
            true,
            breakers.detailed_replies,
            &breakers.siblings(cluster),
        ));
        guard.prepare(FILTER, now);
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
        .map(|split| SplitRuntime {
            state: SplitState::new(FILTER, split, now),
            guards: split.clusters.iter().map(|c| guard_of(c)).collect(),
        })
        .collect();
    // Guards of listed clusters that no rule or split reaches still show up at zero, as in
    // the breaker filter.
    if let Some(breakers) = &suite.breaker {
        for cluster in breakers.clusters() {
            guard_of(cluster);
        }
    }
    let fault = suite
        .fault
        .as_ref()
        .map(|plan| FaultCounters::define(FILTER, plan))
        .unwrap_or_default();
    let housekeeping = suite.housekeeping_period();
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

/// State of one worker (one VM per worker thread): the PRNG, the delayed streams, the faults
/// in progress, the batched counters and the timer. Every borrow is short and never held
/// across a host call that can re-enter the module (resume, local reply).
struct Worker {
    rng: RefCell<Pcg32>,
    /// Counter increments not yet published: flushed on every tick, and the tick runs (at
    /// most [`COUNTER_FLUSH`](sluice_core::suite::timer::COUNTER_FLUSH) apart) whenever one
    /// is pending.
    counters: RefCell<CounterBatch>,
    queue: RefCell<DelayQueue<Pending>>,
    active: Cell<u32>,
    /// The one tick period and its three users (delay queue, housekeeping, counter flush).
    timer: Cell<Timer>,
}

impl Worker {
    fn new() -> Self {
        Self {
            rng: RefCell::new(Pcg32::seed_from_u64(sluice_glue::random_seed(FILTER))),
            counters: RefCell::new(CounterBatch::default()),
            queue: RefCell::new(DelayQueue::new()),
            active: Cell::new(0),
            timer: Cell::new(Timer::default()),
        }
    }

    fn next_u32(&self) -> u32 {
        self.rng
            .try_borrow_mut()
            .map_or(0, |mut rng| rng.next_u32())
    }

    /// Adds 1 to a defined counter: batched, or at once if the batch does not hold it. The
    /// first increment after a flush makes sure the tick runs (a host call only when no
    /// shorter period is armed already, e.g. the breakers' 1 s gauge refresh).
    fn count(&self, counter: Option<u32>) {
        if let Some(id) = counter {
            self.add_one(id);
        }
    }

    /// Publishes every pending increment (one `increment_metric` per changed counter).
    fn publish_counters(&self) {
        if let Ok(mut batch) = self.counters.try_borrow_mut() {
            batch.drain(|id, delta| {
                let _ = hostcalls::increment_metric(id, i64::try_from(delta).unwrap_or(i64::MAX));
            });
        }
    }

    /// After a flush: keeps the tick for the counters only while increments are pending.
    fn settle_flush(&self) {
        let pending = self
            .counters
            .try_borrow()
            .is_ok_and(|batch| batch.is_pending());
        self.with_timer(|timer| timer.settle_flush(pending));
    }

    /// Applies a delay-queue timer decision, keeping the housekeeping cadence.
    fn apply_timer(&self, change: TimerChange) {
        self.with_timer(|timer| timer.queue(change));
    }

    /// Changes the timer, and arms the host's tick period when the decision changed it.
    fn with_timer(&self, change: impl FnOnce(&mut Timer) -> Option<Duration>) {
        let mut timer = self.timer.get();
        let rearm = change(&mut timer);
        self.timer.set(timer);
        if let Some(period) = rearm {
            let _ = hostcalls::set_tick_period(period);
        }
    }
}

impl Counts for Worker {
    fn add_one(&self, id: u32) {
        let batched = self
            .counters
            .try_borrow_mut()
            .map_or(Batched::Unknown, |mut batch| batch.add(id));
        match batched {
            Batched::More => {}
            Batched::First => self.with_timer(Timer::start_flush),
            Batched::Unknown => {
                let _ = hostcalls::increment_metric(id, 1);
            }
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

impl Default for SuiteRoot {
    fn default() -> Self {
        Self {
            runtime: None,
            worker: Rc::new(Worker::new()),
        }
    }
}

impl Context for SuiteRoot {
    /// The plugin is going away: what the batch still holds is published, not lost.
    fn on_done(&mut self) -> bool {
        self.worker.publish_counters();
        true
    }
}

impl RootContext for SuiteRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let Some(suite) =
            sluice_glue::parse_config(FILTER, plugin_configuration_size, CompiledSuite::from_json)
        else {
            return false;
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
        // A reconfiguration publishes the previous configuration's increments first.
        self.worker.publish_counters();
        if let Ok(mut batch) = self.worker.counters.try_borrow_mut() {
            *batch = runtime.batched_counters();
        }
        self.worker
            .with_timer(|timer| timer.configure(runtime.housekeeping, now));
        self.runtime = Some(Rc::new(runtime));
        true
    }

    fn on_tick(&mut self) {
        let worker = &self.worker;
        // Every tick publishes the batched counters: they are at most one period late.
        worker.publish_counters();
        worker.settle_flush();
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
                abort.send();
                continue;
            }
            if let Some(guard) = pending.guard {
                match admit(guard, None, &LazyClock::default(), worker) {
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
        if let Some(runtime) = &self.runtime
            && runtime.housekeeping.is_some()
        {
            let now = now_ms();
            let mut timer = worker.timer.get();
            let due = timer.housekeeping_due(now);
            worker.timer.set(timer);
            if due {
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
            guarded: None,
            explain: None,
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
    /// A request of a guarded split, for the guard's count in `on_log`.
    guarded: Option<Guarded>,
    /// What this request's `x-sluice-explain` will say; `Some` only for a request whose debug
    /// header the `debug` section authorizes.
    explain: Option<Explain>,
}

/// One explained request's explanation, completed and sent with its response headers (by
/// then a delayed request has had its breaker admission).
#[derive(Default)]
struct Explain {
    /// The routing decision ([`Explanation::head`]).
    head: String,
    /// The fault injected (`x-sluice-fault`'s value), empty for none.
    fault: String,
    /// `None` without a breaker; else what to say when the request holds no admission:
    /// `not-admitted` (rejected with a 503, or let through because the breaker's state was
    /// unreachable) or `skipped` (a fault aborted it first).
    breaker: Option<&'static str>,
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
        let weights = run.state.weights(split);
        let point = split_point(split, &self.worker.rng, &mut self.set_cookie);
        let choice = choose_member(split, &run.state, weights, point, seen);
        let Choice::Member(member) = choice else {
            self.set_cookie = None;
            reject(canary::ALL_MEMBERS_UNAVAILABLE, run.state.unavailable);
            return None;
        };
        self.worker.count(run.state.routed_counter(member));
        self.guarded = run.state.guarded(split, index, member);
        Some(Picked {
            split: (split.name.as_str(), member, point),
            canary_halted: run.state.halted_canary(split).is_some(),
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
        if let Some(explain) = &mut self.explain {
            explain.fault = injection.debug_value();
            if injection.abort.is_some() {
                explain.breaker = explain.breaker.map(|_| "skipped");
            }
        }
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
                abort.send();
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

impl SuiteHttp {
    /// The `x-sluice-explain` value of `explain`, with the breaker's state as the admission
    /// (here or on the delay's tick) found it.
    fn explanation(&self, explain: Explain) -> String {
        let ticket = self
            .admitted
            .as_ref()
            .map(|(_, ticket)| *ticket)
            .or_else(|| {
                let delayed = self.delayed.as_ref()?;
                let slot = delayed.admitted.try_borrow().ok()?;
                slot.as_ref().map(|(_, ticket)| *ticket)
            });
        let breaker = explain.breaker.map(|otherwise| match ticket {
            Some(ticket) if ticket.probe => "half-open",
            Some(_) => "closed",
            None => otherwise,
        });
        let mut value = explain.head;
        debug::finish(&mut value, &explain.fault, breaker);
        value
    }
}

/// Reads the debug header (absent: one host call, no allocation); when present, removes it
/// from the request whatever its value, so it never reaches the upstream, and says whether it
/// authorizes an explanation (the secret compared in constant time, the client's address read
/// only when trusted networks are set).
fn debug_asked(debug: &CompiledDebug) -> bool {
    let Some(value) = sluice_glue::request_header(debug.header()) else {
        return false;
    };
    // `set` with no value removes every copy (the call `write_internal_headers` links already).
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, debug.header(), None);
    debug.authorizes(&value, client_ip)
}

/// The canary's choice.
struct Picked<'r> {
    /// The split's name, the member's index and the request's point (for an explanation).
    split: (&'r str, usize, u32),
    /// The split's canary is halted by its guard (for an explanation).
    canary_halted: bool,
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
        // The debug header goes first, so an explained request routes exactly as it would
        // without it.
        if let Some(debug) = &runtime.suite.debug
            && debug_asked(debug)
        {
            self.explain = Some(Explain::default());
        }
        // Deciding before replacing the client's internal headers is safe: no rule may match
        // on them (the router's compile refuses it).
        let route = runtime.suite.route(&HostRequest);
        sluice_glue::report_regex_budget(FILTER);
        let Some(route) = route else {
            if let Some(explain) = &mut self.explain {
                explain.head = Explanation {
                    rule: None,
                    position: None,
                    cluster: None,
                    split: None,
                    canary_halted: false,
                }
                .head();
            }
            return respond_no_match(runtime.no_match);
        };
        self.worker.count(
            runtime
                .rule_matched
                .get(route.rule_index)
                .copied()
                .flatten(),
        );
        // What the canary's failover read (the chosen member's breaker, the clock if a breaker
        // was stored open), reused by the admission below: the same callback, so as exact as
        // reading again. A healthy breaker never needs the clock, here or at admission.
        let mut seen = Seen::default();
        // `None`: every member of the split is unavailable (answered 503).
        let picked = match route.target {
            Target::Cluster(cluster) => Some((
                cluster,
                runtime.rule_guards.get(route.rule_index).cloned().flatten(),
                None,
            )),
            Target::Split(index) => self.pick(&runtime, index, &mut seen).map(|picked| {
                let split = (picked.split, picked.canary_halted);
                (picked.cluster, picked.guard, Some(split))
            }),
        };
        if let Some(explain) = &mut self.explain {
            explain.head = Explanation {
                rule: Some(route.rule_name),
                position: runtime
                    .suite
                    .debug
                    .as_ref()
                    .and_then(|debug| debug.position(route.rule_index)),
                cluster: picked.as_ref().map(|(cluster, _, _)| *cluster),
                split: picked
                    .as_ref()
                    .and_then(|(_, _, split)| split.map(|(split, _)| split)),
                canary_halted: picked
                    .as_ref()
                    .and_then(|(_, _, split)| *split)
                    .is_some_and(|(_, halted)| halted),
            }
            .head();
            explain.breaker = picked
                .as_ref()
                .and_then(|(_, guard, _)| guard.as_ref())
                .map(|_| "not-admitted");
        }
        let Some((cluster, guard, _)) = picked else {
            return Action::Pause;
        };
        // Written before a delay parks the stream, so resuming only has to continue. A
        // client-sent `x-sluice-split` stays: no filter after this one reads it (the suite is
        // alone in its layout), Envoy's route reads only `x-sluice-cluster`, and the routes
        // strip every internal header before the upstream (`request_headers_to_remove` in the
        // envoy target, `headers.request.remove` in the istio target). One host call saved.
        write_internal_headers(Some(route.rule_name), (wire::CLUSTER_HEADER, cluster), None);
        if let Some(action) = self.inject(&runtime, route.fault_rule, &guard) {
            return action;
        }
        if let Some(guard) = guard {
            let snapshot = seen.breaker.filter(|(key, _)| *key == guard.key);
            match admit(
                guard,
                snapshot.map(|(_, read)| read),
                &seen.clock,
                &self.worker,
            ) {
                Ok(admission) => self.admitted = admission,
                Err(()) => return Action::Pause,
            }
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        sluice_glue::fault::hold_while_delayed(self.is_delayed())
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        sluice_glue::fault::hold_while_delayed(self.is_delayed())
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(cookie) = self.set_cookie.take() {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &cookie);
        }
        if let Some(value) = self.response_debug.take() {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, DEBUG_HEADER, &value);
        }
        if let Some(guarded) = &mut self.guarded {
            guarded.on_response_headers();
        }
        if let Some(explain) = self.explain.take() {
            let value = self.explanation(explain);
            // Replaces any copy from the upstream: the client reads the proxy's word only.
            let _ = hostcalls::set_map_value(
                MapType::HttpResponseHeaders,
                EXPLAIN_HEADER,
                Some(&value),
            );
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
            record_outcome(FILTER, &guard, ticket);
        }
        if let (Some(guarded), Some(runtime)) = (self.guarded.take(), &self.runtime)
            && let Some(canary_config) = &runtime.suite.canary
            && let (Some(split), Some(run)) = (
                canary_config.splits.get(guarded.index),
                runtime.splits.get(guarded.index),
            )
        {
            run.state.record_outcome(split, &guarded);
        }
    }
}

/// Breaker admission on the current (or effective) stream. `Ok(Some)` admitted with a ticket
/// to give back, `Ok(None)` admitted without one (state unreachable: fail open), `Err` the
/// request was answered 503. `snapshot` and `clock`: this breaker's state as this callback
/// already read it, if it did, and the callback's clock (read only if a decision needs it).
fn admit(
    guard: Rc<Guard>,
    snapshot: Option<breaker::Snapshot>,
    clock: &LazyClock,
    worker: &Worker,
) -> Result<Option<Admission>, ()> {
    match breaker_glue::admit(FILTER, &guard, snapshot, clock, worker) {
        breaker_glue::Admission::Admitted(ticket) => Ok(Some((guard, ticket))),
        breaker_glue::Admission::FailedOpen => Ok(None),
        breaker_glue::Admission::Rejected => Err(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Host access
// ---------------------------------------------------------------------------------------------

/// Defines one of the suite's metrics (a refusal is logged, and the metric skipped).
fn define(kind: MetricType, name: &str) -> Option<u32> {
    sluice_glue::define(FILTER, kind, name)
}
