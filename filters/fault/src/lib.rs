//! sluice fault filter: proxy-wasm glue around [`sluice_core::fault`].
//!
//! Per request it picks the rule's fault ([`FaultPlan::decide`]: the router's `x-sluice-rule`
//! when `afterRouter`, else the first matching rule), draws delay and abort independently from
//! a per-worker PCG seeded by `getrandom` (no host call per draw), and then:
//!
//! - **delay**: returns `Pause` and parks the stream in the worker's [`DelayQueue`]; the root
//!   context's single timer follows the nearest deadline (off when nothing is pending) and, on
//!   tick, `set_effective_context(id)` + `resume_http_request()` (or sends the abort, when one
//!   was drawn too: Envoy's fault filter also aborts after the delay). Request body and
//!   trailers are held while delayed. A client that leaves while delayed is removed from the
//!   queue in `on_done`, so nothing is left behind.
//! - **abort**: `send_http_response(status, "fault filter abort")`, or for gRPC requests a
//!   trailers-only reply (HTTP 200, `grpc-status`, `grpc-message`) that gRPC clients read.
//!
//! Faults in progress are capped per worker (`maxActiveFaults`); the gauge
//! `sluice.fault.active_faults` sums the workers' shares. Host calls go through
//! `proxy_wasm::hostcalls` (the trait helpers `unwrap()` host errors) and header values are read
//! as bytes, so no request can trap the VM.
//!
//! Delay accuracy: the proxy-wasm timer has millisecond resolution and deadlines are on the
//! host's wall clock (the only clock the ABI offers), so a delay ends between its deadline and
//! about 1-2 ms later. Measured through Envoy 1.40 on loopback (`cargo test -p
//! sluice-integration --test fault -- --nocapture delay_holds`, 200 ms delay, 30 sequential
//! requests, shared 2-core machine at load ~12): latency above the delay p50 2.6 ms, p90 5-7 ms
//! against an unfaulted p50 of 1.1 ms, i.e. the timer adds ~1.5 ms at the median; rare outliers
//! (up to ~200 ms) come from CPU starvation on that loaded machine. 200 concurrent 500 ms delays
//! complete together in ~0.6 s. A wall-clock step backwards lengthens pending delays by the step.
//!
//! Module size: 169,136 B after `cargo xtask build-wasm` (README.md; history in BENCHMARKS.md).
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
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};
use rand_core::{Rng, SeedableRng};
use rand_pcg::Pcg32;
use sluice_core::fault::plan::DEBUG_HEADER;
use sluice_core::fault::{
    Decision, DelayQueue, FaultConfig, FaultPlan, Injection, TimerChange, abort_reply,
};
use sluice_core::host::RequestView;
use sluice_core::wire;
use sluice_glue::fault::{FaultCounters, PendingAbort, client_ip, is_grpc_request};
use sluice_glue::{HostRequest, count, count_by, log, now_nanos};

/// Log prefix of this filter.
const FILTER: &str = sluice_core::wire::FAULT_FILTER;

sluice_glue::root_context!(FaultRoot);

/// The compiled config and the ids of its metrics, shared by the worker's HTTP contexts.
struct Configured {
    plan: FaultPlan,
    counters: FaultCounters,
}

/// What a parked stream does when its delay ends.
struct Pending {
    /// `None`: resume it. `Some`: answer with this abort instead.
    abort: Option<PendingAbort>,
}

/// State of one worker (one VM per worker thread, one root context per plugin instance):
/// the delayed streams, the count of faults in progress and the PRNG. Shared by `Rc` between
/// the root context (which owns the timer) and its HTTP contexts. Every borrow is short and
/// never held across a host call that can re-enter the module (resume, local reply).
struct Worker {
    queue: RefCell<DelayQueue<Pending>>,
    active: Cell<u32>,
    rng: RefCell<Pcg32>,
}

impl Worker {
    fn new() -> Self {
        Self {
            queue: RefCell::new(DelayQueue::new()),
            active: Cell::new(0),
            rng: RefCell::new(Pcg32::seed_from_u64(sluice_glue::random_seed(FILTER))),
        }
    }
}

/// The root context: parses the config, owns the timer that ends delays.
struct FaultRoot {
    configured: Option<Rc<Configured>>,
    worker: Rc<Worker>,
}

impl Default for FaultRoot {
    fn default() -> Self {
        Self {
            configured: None,
            worker: Rc::new(Worker::new()),
        }
    }
}

impl Context for FaultRoot {}

impl RootContext for FaultRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let Some(json) = sluice_glue::plugin_config(FILTER, plugin_configuration_size) else {
            return false;
        };
        // An empty configuration means defaults (no faults), as for Envoy's own filters.
        let config: FaultConfig = if json.iter().all(u8::is_ascii_whitespace) {
            FaultConfig::default()
        } else {
            match sluice_core::fault::config::parse(&json) {
                Ok(config) => config,
                Err(reason) => {
                    log(LogLevel::Error, &format!("sluice-fault: {reason}"));
                    return false;
                }
            }
        };
        let plan = match FaultPlan::compile(&config) {
            Ok(plan) => plan,
            Err(reason) => {
                log(
                    LogLevel::Error,
                    &format!("sluice-fault: invalid configuration: {reason}"),
                );
                return false;
            }
        };
        for warning in config.warnings() {
            log(LogLevel::Warn, &format!("sluice-fault: {warning}"));
        }
        // Metrics are defined once per configuration, never on the request path.
        let configured = Configured {
            counters: FaultCounters::define(FILTER, &plan),
            plan,
        };
        log(
            LogLevel::Info,
            &format!(
                "sluice-fault: configured with {} faults (afterRouter: {}, maxActiveFaults per worker: {})",
                configured.plan.rules().len(),
                configured.plan.after_router,
                configured.plan.max_active_faults
            ),
        );
        self.configured = Some(Rc::new(configured));
        true
    }

    fn on_tick(&mut self) {
        let now = now_nanos();
        let Ok((due, change)) = self
            .worker
            .queue
            .try_borrow_mut()
            .map(|mut queue| queue.take_due(now))
        else {
            return;
        };
        apply_timer(change);
        // The queue is released: resuming or replying may re-enter this module (a stream that
        // ends at once runs its on_done, which looks at the queue).
        for (context_id, pending) in due {
            if hostcalls::set_effective_context(context_id).is_err() {
                // The stream is gone (its on_done normally removes it first): nothing to do.
                continue;
            }
            match pending.abort {
                None => {
                    let _ = hostcalls::resume_http_request();
                }
                Some(abort) => abort.send(),
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(FaultHttp {
            context_id,
            configured: self.configured.clone(),
            worker: Rc::clone(&self.worker),
            holds_slot: false,
            delayed_until: None,
            response_debug: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Per-request context.
struct FaultHttp {
    context_id: u32,
    configured: Option<Rc<Configured>>,
    worker: Rc<Worker>,
    /// This stream counts in the worker's active faults (released when the stream ends).
    holds_slot: bool,
    /// The deadline (host-clock ns) this stream is parked until, if delayed.
    delayed_until: Option<u64>,
    /// `x-sluice-fault` value to add to the upstream's response (delay-only faults; aborts
    /// carry it in the local reply).
    response_debug: Option<String>,
}

impl FaultHttp {
    /// Whether the stream is still parked (the tick has not taken it yet).
    fn is_delayed(&self) -> bool {
        self.delayed_until.is_some_and(|deadline| {
            self.worker
                .queue
                .try_borrow()
                .is_ok_and(|queue| queue.contains(self.context_id, deadline))
        })
    }

    fn inject(&mut self, configured: &Configured, injection: Injection) -> Action {
        self.holds_slot = true;
        self.worker
            .active
            .set(self.worker.active.get().saturating_add(1));
        count_by(configured.counters.active_gauge, 1);
        let debug = configured
            .plan
            .debug_header
            .then(|| injection.debug_value());
        let abort = injection.abort.map(|(code, origin)| PendingAbort {
            reply: abort_reply(code, is_grpc_request()),
            debug: debug.clone(),
            counter: configured.counters.abort_counter(origin),
        });
        if injection.delay.is_some() && abort.is_none() {
            // A delay-only fault shows on the upstream's response; an abort carries the header
            // in its own reply.
            self.response_debug = debug;
        }
        match (injection.delay, abort) {
            (Some((delay, origin)), abort) => {
                count(configured.counters.delay_counter(origin));
                self.park(delay, Pending { abort });
                Action::Pause
            }
            (None, Some(abort)) => {
                abort.send();
                Action::Pause
            }
            (None, None) => Action::Continue,
        }
    }

    fn park(&mut self, delay: Duration, pending: Pending) {
        let now = now_nanos();
        let deadline = now.saturating_add(u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX));
        let Ok(change) = self
            .worker
            .queue
            .try_borrow_mut()
            .map(|mut queue| queue.insert(self.context_id, deadline, pending, now))
        else {
            return;
        };
        self.delayed_until = Some(deadline);
        apply_timer(change);
    }

    /// The stream ended: forget a pending delay and give the fault slot back. Idempotent.
    fn release(&mut self) {
        if let Some(deadline) = self.delayed_until.take()
            && let Ok(mut queue) = self.worker.queue.try_borrow_mut()
        {
            let (_, change) = queue.remove(self.context_id, deadline);
            drop(queue);
            apply_timer(change);
        }
        if std::mem::take(&mut self.holds_slot) {
            self.worker
                .active
                .set(self.worker.active.get().saturating_sub(1));
            if let Some(configured) = &self.configured {
                count_by(configured.counters.active_gauge, -1);
            }
        }
    }
}

impl Context for FaultHttp {
    fn on_done(&mut self) -> bool {
        self.release();
        true
    }
}

impl Drop for FaultHttp {
    fn drop(&mut self) {
        self.release();
    }
}

impl HttpContext for FaultHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(configured) = self.configured.clone() else {
            return Action::Continue;
        };
        if !configured.plan.after_router {
            // Alone, the rule header is nobody's decision: never let a client pick its fault
            // (or route). Read first: removing a header makes Envoy recompute the route.
            if HostRequest.header(wire::RULE_HEADER).is_some() {
                let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, wire::RULE_HEADER);
            }
        }
        let decision = match self.worker.rng.try_borrow_mut() {
            Ok(mut rng) => configured.plan.decide(
                &HostRequest,
                client_ip,
                self.worker.active.get(),
                &mut || rng.next_u32(),
            ),
            Err(_) => Decision::Pass,
        };
        sluice_glue::report_regex_budget(FILTER);
        match decision {
            Decision::Pass => Action::Continue,
            Decision::Overflow => {
                count(configured.counters.overflow);
                Action::Continue
            }
            Decision::Inject(injection) => self.inject(&configured, injection),
        }
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        sluice_glue::fault::hold_while_delayed(self.is_delayed())
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        sluice_glue::fault::hold_while_delayed(self.is_delayed())
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(value) = self.response_debug.take() {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, DEBUG_HEADER, &value);
        }
        Action::Continue
    }
}

/// Applies a timer decision of the delay queue to this root context's tick period.
fn apply_timer(change: TimerChange) {
    let period = match change {
        TimerChange::Keep => return,
        TimerChange::Set(period) => period,
        TimerChange::Off => Duration::ZERO,
    };
    let _ = hostcalls::set_tick_period(period);
}
