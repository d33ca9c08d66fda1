//! sluice canary filter: proxy-wasm glue around [`sluice_core::canary`].
//!
//! Per request: find the split (the router's `x-sluice-split`, or the filter's own rules when it
//! runs alone), take a point (the sticky key's fixed hash, else a random number), pick the member
//! whose bucket holds it while skipping members whose breaker is open, write the member's
//! cluster to `x-sluice-cluster` (which Envoy's route reads through `cluster_header`) and count
//! it. When every member is unavailable the filter answers 503 with
//! `x-sluice-canary: all-members-unavailable` instead of sending traffic at an open breaker.
//!
//! Per-request cost: no allocation beyond the header values the host hands over (and the
//! cookie of a freshly pinned client); for a
//! scheduled split one clock read (the step is computed from the shared start, cached per
//! worker and refreshed on a root tick, so all workers switch at the same instant); one
//! shared-data read for the picked member's breaker when `failover` is on (plus a clock read
//! only if that breaker has state, and reads of the other members only if it is open), and a
//! per-worker PCG32 for randomness, seeded once with WASI `random_get`.
//!
//! Host calls go through `proxy_wasm::hostcalls`, whose errors are values: a failed call
//! degrades (a header treated as absent, a counter not bumped), it never traps the VM.
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
use sluice_core::breaker;
use sluice_core::canary::{self, Choice, CompiledCanary, CompiledSplit, ScheduleRecord, schedule};
use sluice_core::wire;
use sluice_glue::{HostRequest, HostStore, log, now_ms, request_header, source_address};

/// Log prefix of this filter.
const FILTER: &str = "sluice-canary";

/// The module's entry point; Envoy calls the exported `_start` once per VM.
#[allow(missing_docs)] // the macro's exported function cannot carry a doc comment
mod entry {
    use super::{CanaryRoot, LogLevel, RootContext};

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(CanaryRoot::default()) });
    }}
}

/// The configured filter, shared by the worker's root context and its HTTP contexts.
struct Runtime {
    canary: CompiledCanary,
    /// Per split, indexed like `canary.splits`.
    splits: Vec<SplitRuntime>,
    /// This worker's random source (one VM per worker thread, so no locking is involved).
    rng: RefCell<Pcg32>,
}

/// What a split needs at run time besides its config.
struct SplitRuntime {
    /// Counter id per member (`None` if the host refused it).
    routed: Vec<Option<u32>>,
    /// Counter of 503s for lack of a healthy member.
    unavailable: Option<u32>,
    /// Shared-data key of each member's breaker, built once.
    breaker_keys: Vec<String>,
    /// Gauge of the current schedule step.
    step_gauge: Option<u32>,
    /// The shared schedule record this worker follows (`None` without a schedule).
    record: Cell<Option<ScheduleRecord>>,
    /// The step last reported in the gauge and log.
    step: Cell<usize>,
}

impl Runtime {
    /// The weights a request to split `index` is picked with now. A scheduled split reads the
    /// clock (one cheap host call) so that every worker switches steps at the same instant;
    /// the shared start itself is cached and only re-read on the tick.
    fn weights<'a>(&'a self, split: &'a CompiledSplit, index: usize) -> &'a [u32] {
        match (
            &split.schedule,
            self.splits.get(index).and_then(|r| r.record.get()),
        ) {
            (Some(schedule), Some(record)) => {
                schedule.weights(schedule.step_at(record.elapsed_ms(now_ms())))
            }
            _ => &split.weights,
        }
    }

    /// Re-reads each scheduled split's shared record (when `refresh`) and reports its step at
    /// `now_ms` in the gauge, logging step changes.
    fn advance_schedules(&self, now_ms: u64, refresh: bool) {
        for (split, run) in self.canary.splits.iter().zip(&self.splits) {
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
                        "sluice-canary: split {:?} moves to step {step} (weights {:?})",
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
}

/// The root context: parses the config, defines metrics, drives schedules.
#[derive(Default)]
struct CanaryRoot {
    runtime: Option<Rc<Runtime>>,
}

impl Context for CanaryRoot {}

impl RootContext for CanaryRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let Some(json) = sluice_glue::plugin_config(FILTER, plugin_configuration_size) else {
            return false;
        };
        let canary = match CompiledCanary::from_json(&json) {
            Ok(canary) => canary,
            Err(reason) => {
                log(LogLevel::Error, &format!("sluice-canary: {reason}"));
                return false;
            }
        };
        let now_ms = now_ms();
        let splits = canary
            .splits
            .iter()
            .map(|split| split_runtime(split, now_ms))
            .collect();
        let runtime = Runtime {
            rng: RefCell::new(Pcg32::seed_from_u64(sluice_glue::random_seed(FILTER))),
            splits,
            canary,
        };
        runtime.advance_schedules(now_ms, false);
        if let Some(period) = tick_period(&runtime.canary) {
            let _ = hostcalls::set_tick_period(period);
        }
        log(
            LogLevel::Info,
            &format!(
                "sluice-canary: configured with {} splits, afterRouter {}",
                runtime.canary.splits.len(),
                runtime.canary.after_router
            ),
        );
        self.runtime = Some(Rc::new(runtime));
        true
    }

    fn on_tick(&mut self) {
        if let Some(runtime) = &self.runtime {
            runtime.advance_schedules(now_ms(), true);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(CanaryHttp {
            runtime: self.runtime.clone(),
            set_cookie: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

fn split_runtime(split: &CompiledSplit, now_ms: u64) -> SplitRuntime {
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
        step_gauge: split
            .schedule
            .as_ref()
            .and_then(|_| define(MetricType::Gauge, &canary::step_metric(&split.name))),
        record: Cell::new(record),
        step: Cell::new(0),
    }
}

/// A tick often enough that the step gauge lags at most a quarter of the shortest hold (within
/// 50 ms .. 1 s) and workers that raced on the shared start converge quickly; `None` without
/// schedules.
fn tick_period(canary: &CompiledCanary) -> Option<Duration> {
    let schedules: Vec<_> = canary
        .splits
        .iter()
        .filter_map(|s| s.schedule.as_ref())
        .collect();
    if schedules.is_empty() {
        return None;
    }
    let shortest = schedules
        .iter()
        .filter_map(|s| s.shortest_hold_ms())
        .min()
        .unwrap_or(4_000);
    Some(Duration::from_millis((shortest / 4).clamp(50, 1_000)))
}

/// Per-request context.
struct CanaryHttp {
    runtime: Option<Rc<Runtime>>,
    /// `set-cookie` value to add to the response (a freshly pinned client).
    set_cookie: Option<String>,
}

impl Context for CanaryHttp {}

impl HttpContext for CanaryHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(runtime) = self.runtime.clone() else {
            // Unreachable in Envoy (a refused configuration creates no contexts).
            return Action::Continue;
        };
        let canary = &runtime.canary;
        let index = if canary.after_router {
            let Some(name) = request_header(wire::SPLIT_HEADER) else {
                // The router chose a single cluster: nothing to resolve.
                return Action::Continue;
            };
            match canary.split_index(&name) {
                Some(index) => index,
                None => {
                    log(
                        LogLevel::Warn,
                        &format!(
                            "sluice-canary: x-sluice-split names unknown split {:?}; router and canary configs disagree",
                            String::from_utf8_lossy(&name)
                        ),
                    );
                    return reject(canary::UNKNOWN_SPLIT, None);
                }
            }
        } else {
            // Alone, nothing upstream of us vouches for these: a client must not pick.
            for name in wire::INTERNAL_HEADERS {
                let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name);
            }
            match canary.rule_split(&HostRequest) {
                Some(index) => index,
                None => return Action::Continue,
            }
        };
        let (Some(split), Some(run)) = (canary.splits.get(index), runtime.splits.get(index)) else {
            return Action::Continue;
        };
        let weights = runtime.weights(split, index);

        let point = match &split.sticky {
            Some(sticky) => match sticky.key(&HostRequest, source_address) {
                Some(key) => canary::sticky_point(&split.name, &key),
                None => match &sticky.pin_cookie {
                    // A made-up key the browser brings back, so it stays in this bucket.
                    Some(pin) => {
                        let token = format!("{:016x}", runtime.rng.borrow_mut().next_u64());
                        self.set_cookie = Some(pin.header_value(&token));
                        canary::sticky_point(&split.name, token.as_bytes())
                    }
                    None => runtime.rng.borrow_mut().next_u32(),
                },
            },
            None => runtime.rng.borrow_mut().next_u32(),
        };

        let choice = if split.failover {
            let mut now = None;
            canary::choose(weights, point, |member| {
                !breaker_open(run.breaker_keys.get(member), &mut now)
            })
        } else {
            canary::locate(weights, point).map_or(Choice::AllUnavailable, Choice::Member)
        };
        let Choice::Member(member) = choice else {
            self.set_cookie = None;
            return reject(canary::ALL_MEMBERS_UNAVAILABLE, run.unavailable);
        };
        let Some(cluster) = split.clusters.get(member) else {
            return Action::Continue;
        };
        let _ = hostcalls::set_map_value(
            MapType::HttpRequestHeaders,
            wire::CLUSTER_HEADER,
            Some(cluster),
        );
        let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, wire::SPLIT_HEADER);
        // ABI 0.2.1 modules (this SDK) already make Envoy re-pick the route when headers change;
        // newer ABIs need this explicit call. Hosts without it answer NotFound: nothing to do.
        let _ = hostcalls::call_foreign_function("clear_route_cache", None);
        if let Some(Some(id)) = run.routed.get(member) {
            let _ = hostcalls::increment_metric(*id, 1);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(cookie) = self.set_cookie.take() {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &cookie);
        }
        Action::Continue
    }
}

/// Whether the breaker under `key` is open now. The clock is read at most once per request,
/// and only for a member whose breaker has state at all.
fn breaker_open(key: Option<&String>, now: &mut Option<u64>) -> bool {
    let Some(key) = key else { return false };
    let Ok((Some(value), _)) = hostcalls::get_shared_data(key) else {
        return false;
    };
    let now_ms = *now.get_or_insert_with(now_ms);
    breaker::is_open(Some(&value), now_ms)
}

/// Answers 503 at once, naming the reason in `x-sluice-canary`.
fn reject(reason: &str, counter: Option<u32>) -> Action {
    if let Some(id) = counter {
        let _ = hostcalls::increment_metric(id, 1);
    }
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

/// Defines one of the canary's metrics (a refusal is logged, and the metric skipped).
fn define(kind: MetricType, name: &str) -> Option<u32> {
    sluice_glue::define(FILTER, kind, name)
}
