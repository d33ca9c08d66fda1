//! sluice breaker filter (proxy-wasm glue). The state machine, its shared-data encoding and the
//! outcome classification live in [`sluice_core::breaker`]; this crate only reads the host,
//! calls the core and applies the result.
//!
//! Per request: one shared-data read at admission (plus a CAS write only when the state
//! changes: open -> half-open, a probe or in-flight slot taken), and in `on_log` one read and at
//! most one write to record the outcome. `on_log` runs once per stream whatever ended it
//! (response, reset, timeout, local reply), so the in-flight slot an admitted request took is
//! given back exactly once.
//!
//! Metrics (`sluice.breaker.cluster.<cluster>.<what>`, Envoy shows them under `wasmcustom.`):
//! counters `requests` (admitted), `trips`, `rejected_open`, `rejected_overflow`; gauges `state`
//! (0 closed, 1 open, 2 half-open) and `in_flight`. Envoy keeps one stat per name for the whole
//! process, so counters add up across workers. A gauge is *set*, by every worker, from the
//! shared state after each of its updates and on every tick (1 s): it shows the process-wide
//! value as of the last refresh, and converges within a tick even when two workers' writes race.
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
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use sluice_core::breaker::{BreakerConfig, CompiledBreakers, Ticket};
use sluice_glue::breaker::{Admission, Guard, admit, record_outcome};
use sluice_glue::{Immediate, LazyClock, log, now_ms};

sluice_glue::root_context!(BreakerRoot);

/// Log prefix of this filter.
const FILTER: &str = sluice_core::wire::BREAKER_FILTER;

/// Clusters with cached keys and metrics, per worker. Past this, further clusters (only
/// possible through `default`) are still guarded but get no metrics, so a flood of distinct
/// names cannot grow memory or the stats store without bound.
const MAX_TRACKED_CLUSTERS: usize = 1024;

/// How often each worker refreshes the gauges from shared data.
const GAUGE_REFRESH: Duration = Duration::from_secs(1);

/// The compiled config and this worker's cluster cache, shared by the root and HTTP contexts.
struct Shared {
    config: CompiledBreakers,
    clusters: RefCell<HashMap<String, Rc<Guard>>>,
}

impl Shared {
    /// The entry of `cluster`, or `None` when no breaker guards it.
    fn entry(&self, cluster: &str) -> Option<Rc<Guard>> {
        if let Some(entry) = self.clusters.borrow().get(cluster) {
            return Some(Rc::clone(entry));
        }
        let policy = *self.config.policy_for(cluster)?;
        let mut clusters = self.clusters.borrow_mut();
        let tracked = clusters.len() < MAX_TRACKED_CLUSTERS;
        let entry = Rc::new(Guard::new(
            FILTER,
            cluster,
            policy,
            tracked,
            self.config.detailed_replies,
            &self.config.siblings(cluster),
        ));
        if tracked {
            clusters.insert(cluster.to_owned(), Rc::clone(&entry));
        }
        Some(entry)
    }
}

#[derive(Default)]
struct BreakerRoot {
    shared: Option<Rc<Shared>>,
}

impl Context for BreakerRoot {}

impl RootContext for BreakerRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let Some(bytes) = sluice_glue::plugin_config(FILTER, plugin_configuration_size) else {
            return false;
        };
        let compiled = match BreakerConfig::from_json(&bytes).and_then(|c| c.compile()) {
            Ok(compiled) => compiled,
            Err(e) => {
                log(
                    LogLevel::Error,
                    &format!("sluice-breaker: refusing config: {e}"),
                );
                return false;
            }
        };
        let shared = Rc::new(Shared {
            config: compiled,
            clusters: RefCell::new(HashMap::new()),
        });
        // Create the listed clusters' keys now, before traffic, so that request-time updates
        // always compare-and-set, and define their metrics so they show up at zero.
        let now = now_ms();
        let listed: Vec<String> = shared.config.clusters().map(str::to_owned).collect();
        for cluster in listed {
            if let Some(entry) = shared.entry(&cluster) {
                entry.prepare(FILTER, now);
            }
        }
        self.shared = Some(shared);
        self.set_tick_period(GAUGE_REFRESH);
        true
    }

    fn on_tick(&mut self) {
        let Some(shared) = &self.shared else { return };
        let now = now_ms();
        for entry in shared.clusters.borrow().values() {
            entry.refresh_gauges(now);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(BreakerHttp {
            shared: self.shared.clone(),
            admitted: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct BreakerHttp {
    shared: Option<Rc<Shared>>,
    /// Set when this filter admitted the request; taken (exactly once) in `on_log`.
    admitted: Option<(Rc<Guard>, Ticket)>,
}

impl BreakerHttp {
    /// The cluster the request goes to, per `afterRouter` (see `BreakerConfig::after_router`).
    fn cluster(&self, config: &CompiledBreakers) -> Option<String> {
        let bytes = if config.after_router {
            self.get_http_request_header_bytes(&config.cluster_header)
        } else {
            sluice_glue::property(sluice_glue::path::XDS_CLUSTER_NAME)
        }?;
        // Envoy cluster names are text; a non-UTF-8 value names no cluster we guard.
        String::from_utf8(bytes).ok().filter(|c| !c.is_empty())
    }
}

impl Context for BreakerHttp {}

impl HttpContext for BreakerHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        let Some(cluster) = self.cluster(&shared.config) else {
            return Action::Continue;
        };
        let Some(entry) = shared.entry(&cluster) else {
            return Action::Continue;
        };
        match admit(FILTER, &entry, None, &LazyClock::default(), &Immediate) {
            Admission::Admitted(ticket) => {
                self.admitted = Some((entry, ticket));
                Action::Continue
            }
            Admission::Rejected => Action::Pause,
            Admission::FailedOpen => Action::Continue,
        }
    }

    fn on_log(&mut self) {
        if let Some((entry, ticket)) = self.admitted.take() {
            record_outcome(FILTER, &entry, ticket);
        }
    }
}
