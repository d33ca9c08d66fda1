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

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};
use rand_core::SeedableRng;
use rand_pcg::Pcg32;
use sluice_core::canary::{self, Choice, CompiledCanary};
use sluice_core::wire;
use sluice_glue::canary::{
    Guarded, Seen, SplitState, choose_member, reject, schedule_period, split_point,
};
use sluice_glue::router::write_internal_headers;
use sluice_glue::{HostRequest, log, now_ms, request_header};

/// Log prefix of this filter.
const FILTER: &str = sluice_core::wire::CANARY_FILTER;

sluice_glue::root_context!(CanaryRoot);

/// The configured filter, shared by the worker's root context and its HTTP contexts.
struct Runtime {
    canary: CompiledCanary,
    /// Per split, indexed like `canary.splits`.
    splits: Vec<SplitState>,
    /// This worker's random source (one VM per worker thread, so no locking is involved).
    rng: RefCell<Pcg32>,
}

impl Runtime {
    /// Reports each scheduled split's step at `now_ms`, re-reading the shared records first
    /// when `refresh`.
    fn advance_schedules(&self, now_ms: u64, refresh: bool) {
        for (split, state) in self.canary.splits.iter().zip(&self.splits) {
            state.advance_schedule(FILTER, split, now_ms, refresh);
        }
    }

    /// Merges each guarded split's counts into its shared window (and follows a halt) before
    /// the schedules move, so a halt freezes the step it happened at.
    fn tick(&self, now_ms: u64) {
        for (split, state) in self.canary.splits.iter().zip(&self.splits) {
            state.guard_tick(FILTER, split, now_ms);
        }
        self.advance_schedules(now_ms, true);
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
        let Some(canary) =
            sluice_glue::parse_config(FILTER, plugin_configuration_size, CompiledCanary::from_json)
        else {
            return false;
        };
        let now_ms = now_ms();
        let splits = canary
            .splits
            .iter()
            .map(|split| SplitState::new(FILTER, split, now_ms))
            .collect();
        let runtime = Runtime {
            rng: RefCell::new(Pcg32::seed_from_u64(sluice_glue::random_seed(FILTER))),
            splits,
            canary,
        };
        runtime.advance_schedules(now_ms, false);
        if let Some(period) = schedule_period(&runtime.canary) {
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
            runtime.tick(now_ms());
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(CanaryHttp {
            runtime: self.runtime.clone(),
            set_cookie: None,
            guarded: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Per-request context.
struct CanaryHttp {
    runtime: Option<Rc<Runtime>>,
    /// `set-cookie` value to add to the response (a freshly pinned client).
    set_cookie: Option<String>,
    /// A request of a guarded split, for the guard's count in `on_log`.
    guarded: Option<Guarded>,
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
            let matched = canary.rule_split(&HostRequest);
            sluice_glue::report_regex_budget(FILTER);
            match matched {
                Some(index) => index,
                None => return Action::Continue,
            }
        };
        let (Some(split), Some(state)) = (canary.splits.get(index), runtime.splits.get(index))
        else {
            return Action::Continue;
        };
        let weights = state.weights(split);
        let point = split_point(split, &runtime.rng, &mut self.set_cookie);
        let choice = choose_member(split, state, weights, point, &mut Seen::default());
        let Choice::Member(member) = choice else {
            self.set_cookie = None;
            return reject(canary::ALL_MEMBERS_UNAVAILABLE, state.unavailable);
        };
        let Some(cluster) = split.clusters.get(member) else {
            return Action::Continue;
        };
        write_internal_headers(
            None,
            (wire::CLUSTER_HEADER, cluster),
            Some(wire::SPLIT_HEADER),
        );
        state.count_routed(member);
        self.guarded = state.guarded(split, index, member);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(cookie) = self.set_cookie.take() {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &cookie);
        }
        if let Some(guarded) = &mut self.guarded {
            guarded.on_response_headers();
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let (Some(guarded), Some(runtime)) = (self.guarded.take(), &self.runtime) else {
            return;
        };
        let index = guarded.index;
        if let (Some(split), Some(state)) =
            (runtime.canary.splits.get(index), runtime.splits.get(index))
        {
            state.record_outcome(split, &guarded);
        }
    }
}
