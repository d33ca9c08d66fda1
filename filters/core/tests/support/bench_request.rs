//! The suite module's per-request logic on the benchmark's common path, driven natively
//! through counting stand-ins for the host (issue 25). Shared by the `suite_request` example
//! (the per-request profile: host calls by kind, allocations, and instructions under
//! callgrind) and by `tests/suite_alloc.rs` (no allocation in the logic after configure).
//!
//! The configuration is `xtask bench`'s `sluice-suite-module`: a header rule (`end-user:
//! jason`) that the benchmark's requests miss, a 90/10 split with failover, a 0 % abort on the
//! default rule and a consecutive-errors breaker on every cluster. [`Harness::request`] makes
//! the calls `filters/suite/src/lib.rs` and `filters/glue` make for such a request, in their
//! order, on the same `sluice_core` functions:
//!
//! 1. `on_http_request_headers`: route (reads `end-user`, absent), the rule counter into the
//!    worker's batch, the split point (PCG32), the failover's read of the picked member's
//!    breaker state (the clock only if it is stored open), the member counter, the two
//!    internal-header writes, the fault decision (0 %: no draw), breaker admission from the
//!    failover's snapshot, the breaker's requests counter;
//! 2. `on_log`: `response.flags` (0), then `response.code` (200), classified, and the outcome
//!    recorded (the breaker state read, written only on a change).
//!
//! What the stand-ins cannot see is the proxy-wasm SDK's own work around each host call (the
//! `Vec` it allocates for every value the host returns, the property path it serialises): the
//! stand-ins allocate the returned values too (as the SDK does), counted apart from the logic's
//! own allocations.

#![allow(unsafe_code)] // a GlobalAlloc impl is unsafe by definition; it only forwards to System
#![allow(dead_code)] // each includer uses its part

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sluice_core::breaker::{
    self, Policy, SharedStore, Snapshot, StoreError, Ticket, Transition, Verdict,
};
use sluice_core::canary::{Choice, guard};
use sluice_core::fault::Decision;
use sluice_core::host::RequestView;
use sluice_core::metrics::{Batched, CounterBatch};
use sluice_core::suite::{CompiledSuite, Target};

/// `xtask/src/bench/configs.rs`'s `sluice-suite-module` configuration.
pub const CONFIG: &str = r#"{
  "router": {"virtualHosts": [{"name": "reviews", "domains": ["*"], "rules": [
    {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
     "route": {"cluster": "reviews-v2"}},
    {"name": "default", "route": {"split": "reviews"}}]}]},
  "canary": {"afterRouter": true, "splits": [{"name": "reviews", "members": [
    {"cluster": "reviews-v1", "weight": 90}, {"cluster": "reviews-v2", "weight": 10}]}]},
  "fault": {"afterRouter": true, "faults": [{"rule": "default",
    "abort": {"httpStatus": 503, "percentage": {"value": 0.0}}}]},
  "breaker": {"afterRouter": true,
    "default": {"consecutiveErrors": 5, "interval": "10s", "baseEjectionTime": "30s"}}
}"#;

// ---------------------------------------------------------------------------------------------
// Allocations
// ---------------------------------------------------------------------------------------------

/// Allocations (and reallocations) by the logic, and by the host stand-ins.
static LOGIC_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static HOST_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Set while a host stand-in runs: its allocations are the SDK's in the module, not the logic's.
static IN_HOST: AtomicBool = AtomicBool::new(false);

/// A global allocator that counts, then forwards to the system allocator. Each includer
/// declares it `#[global_allocator]`.
pub struct Counting;

impl Counting {
    fn count() {
        let counter = if IN_HOST.load(Ordering::Relaxed) {
            &HOST_ALLOCATIONS
        } else {
            &LOGIC_ALLOCATIONS
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call forwards to the system allocator with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count();
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count();
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations so far: `(logic, host stand-ins)`.
pub fn allocations() -> (u64, u64) {
    (
        LOGIC_ALLOCATIONS.load(Ordering::SeqCst),
        HOST_ALLOCATIONS.load(Ordering::SeqCst),
    )
}

/// Runs `f` as the host: what it allocates is counted as the host's.
fn as_host<T>(f: impl FnOnce() -> T) -> T {
    IN_HOST.store(true, Ordering::Relaxed);
    let out = f();
    IN_HOST.store(false, Ordering::Relaxed);
    out
}

// ---------------------------------------------------------------------------------------------
// Host calls
// ---------------------------------------------------------------------------------------------

/// What the module asks the host for, by kind.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCalls {
    /// `get_map_value` on the request headers.
    pub header_reads: u64,
    /// `set_map_value` / `remove_map_value` on the request headers.
    pub header_writes: u64,
    /// `get_shared_data`.
    pub shared_gets: u64,
    /// `set_shared_data` (compare-and-set).
    pub shared_sets: u64,
    /// `get_current_time`.
    pub clock_reads: u64,
    /// `get_property`.
    pub property_reads: u64,
    /// `increment_metric` / `record_metric` made during the request (batched increments are
    /// published on the worker's tick instead: [`Harness::flush`]).
    pub metric_calls: u64,
    /// `log`.
    pub log_calls: u64,
}

impl HostCalls {
    /// Every host call.
    pub fn total(&self) -> u64 {
        self.header_reads
            + self.header_writes
            + self.shared_gets
            + self.shared_sets
            + self.clock_reads
            + self.property_reads
            + self.metric_calls
            + self.log_calls
    }
}

/// The counts, shared by the stand-ins.
#[derive(Default)]
struct Calls(Cell<HostCalls>);

impl Calls {
    fn bump(&self, kind: impl FnOnce(&mut HostCalls) -> &mut u64) {
        let mut calls = self.0.get();
        *kind(&mut calls) += 1;
        self.0.set(calls);
    }
}

/// A request without `end-user` (the benchmark's requests): every header is absent, which
/// the SDK reports without allocating.
struct Request<'a>(&'a Calls);

impl RequestView for Request<'_> {
    fn header(&self, _name: &str) -> Option<Vec<u8>> {
        self.0.bump(|c| &mut c.header_reads);
        None
    }

    fn header_lines(&self, _name: &str) -> Vec<Vec<u8>> {
        self.0.bump(|c| &mut c.header_reads);
        Vec::new()
    }

    fn local_port(&self) -> Option<u32> {
        self.0.bump(|c| &mut c.property_reads);
        None
    }
}

/// Shared data in memory, with CAS tokens like Envoy's. A get returns a fresh `Vec`, as the
/// SDK does (counted as the host's allocation); the lookup is a scan of the two keys.
struct Store<'a> {
    values: RefCell<Vec<(String, Vec<u8>, u32)>>,
    calls: &'a Calls,
}

impl SharedStore for Store<'_> {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.calls.bump(|c| &mut c.shared_gets);
        as_host(
            || match self.values.borrow().iter().find(|(k, _, _)| k == key) {
                Some((_, value, cas)) => (Some(value.clone()), Some(*cas)),
                None => (None, None),
            },
        )
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        self.calls.bump(|c| &mut c.shared_sets);
        as_host(|| {
            let mut values = self.values.borrow_mut();
            let Some((_, stored, token)) = values.iter_mut().find(|(k, _, _)| k == key) else {
                values.push((key.to_owned(), value.to_vec(), 1));
                return Ok(());
            };
            if cas.is_some_and(|cas| cas != *token) {
                return Err(StoreError::CasMismatch);
            }
            stored.clear();
            stored.extend_from_slice(value);
            *token = token.wrapping_add(1);
            Ok(())
        })
    }
}

/// PCG32 (XSH RR), the generator the module's workers use (`rand_pcg::Pcg32`).
struct Pcg32 {
    state: u64,
    increment: u64,
}

impl Pcg32 {
    fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(self.increment);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        xorshifted.rotate_right((old >> 59) as u32)
    }
}

/// Adds 1 to a batched counter (`Worker::add_one`): a host call only for a counter the batch
/// does not hold.
fn count(batch: &mut CounterBatch, calls: &Calls, id: u32) {
    if batch.add(id) == Batched::Unknown {
        calls.bump(|c| &mut c.metric_calls);
    }
}

/// A callback's clock (`sluice_glue::LazyClock`): the host is asked on the first read only.
struct LazyClock<'a> {
    calls: &'a Calls,
    now: Cell<Option<u64>>,
}

impl<'a> LazyClock<'a> {
    /// A fixed time: the benchmark's healthy breakers never need it.
    const NOW_MS: u64 = 1_700_000_000_000;

    fn new(calls: &'a Calls) -> Self {
        Self {
            calls,
            now: Cell::new(None),
        }
    }

    fn now_ms(&self) -> u64 {
        if let Some(now) = self.now.get() {
            return now;
        }
        self.calls.bump(|c| &mut c.clock_reads);
        self.now.set(Some(Self::NOW_MS));
        Self::NOW_MS
    }
}

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

/// One worker of the suite module, configured with [`CONFIG`], and its host stand-ins.
pub struct Harness {
    calls: &'static Calls,
    suite: CompiledSuite,
    store: Store<'static>,
    /// Breaker key of each member of split 0, as `SplitState::breaker_keys`.
    keys: Vec<String>,
    /// Policy of each member's breaker, as each `Guard` holds it.
    policies: Vec<Policy>,
    /// The worker's batch: rule, member and breaker-requests counters.
    batch: CounterBatch,
    rules: u32,
    rng: Pcg32,
    /// Requests routed to each member.
    pub routed: [u64; 2],
}

impl Harness {
    /// Compiles the configuration and creates the breaker keys, as `on_configure` does.
    pub fn configure() -> Result<Self, String> {
        // Leaked once per process: the stand-ins borrow it for the harness's life.
        let calls: &'static Calls = Box::leak(Box::default());
        let suite = CompiledSuite::from_json(CONFIG.as_bytes())?;
        let canary = suite.canary.as_ref().ok_or("no canary section")?;
        let breakers = suite.breaker.as_ref().ok_or("no breaker section")?;
        let split = canary.splits.first().ok_or("no split")?;
        let keys: Vec<String> = split
            .clusters
            .iter()
            .map(|c| breaker::shared_data_key(c))
            .collect();
        let policies = split
            .clusters
            .iter()
            .map(|c| breakers.policy_for(c).copied().ok_or("no policy"))
            .collect::<Result<_, _>>()?;
        let store = Store {
            values: RefCell::new(Vec::new()),
            calls,
        };
        // As `Guard::prepare`: every breaker key exists before traffic.
        for key in &keys {
            breaker::ensure_exists(&store, key).map_err(|e| format!("{e:?}"))?;
        }
        // Counter ids as `define_metric` hands them out: rules, members, breaker requests.
        let rules = suite.router.rules().len() as u32;
        let batch = CounterBatch::new(1..=rules + 4);
        calls.0.set(HostCalls::default());
        Ok(Self {
            calls,
            suite,
            store,
            keys,
            policies,
            batch,
            rules,
            rng: Pcg32 {
                state: 0x853c_49e6_748f_ea9b,
                increment: 0xda3e_39cb_94b5_bdb7,
            },
            routed: [0; 2],
        })
    }

    /// The host calls made so far.
    pub fn calls(&self) -> HostCalls {
        self.calls.0.get()
    }

    /// One benchmark request, from its request headers to its log.
    pub fn request(&mut self) -> Result<(), String> {
        let (member, ticket) = self.on_request_headers()?;
        self.on_log(member, ticket)?;
        if let Some(slot) = self.routed.get_mut(member) {
            *slot += 1;
        }
        Ok(())
    }

    /// `SuiteHttp::on_http_request_headers`: the member picked and its breaker's ticket.
    fn on_request_headers(&mut self) -> Result<(usize, Ticket), String> {
        let calls = self.calls;
        let request = Request(calls);
        let route = self.suite.route(&request).ok_or("no route")?;
        count(&mut self.batch, calls, route.rule_index as u32 + 1);
        let Target::Split(index) = route.target else {
            return Err("the benchmark's requests take the split".into());
        };
        let canary = self.suite.canary.as_ref().ok_or("no canary")?;
        let split = canary.splits.get(index).ok_or("split")?;
        // `Seen`: the clock and the breaker state the failover read, for the admission.
        let clock = LazyClock::new(calls);
        let mut seen: Option<(usize, Snapshot)> = None;
        let point = self.rng.next_u32();
        let (keys, store) = (&self.keys, &self.store);
        let choice = guard::choose(&split.weights, point, None, &mut |member| {
            let Some(key) = keys.get(member) else {
                return true;
            };
            let (Some(value), cas) = store.get(key) else {
                return true;
            };
            let open = breaker::is_unavailable_with_clock(Some(&value), || clock.now_ms());
            seen = Some((member, (Some(value), cas)));
            !open
        });
        let Choice::Member(member) = choice else {
            return Err("all members unavailable".into());
        };
        count(&mut self.batch, calls, self.rules + 1 + member as u32);
        // `write_internal_headers`: `x-sluice-rule` and `x-sluice-cluster`.
        let cluster = split.clusters.get(member).ok_or("member")?;
        for _ in [route.rule_name, cluster.as_str()] {
            calls.bump(|c| &mut c.header_writes);
        }
        let plan = self.suite.fault.as_ref().ok_or("no fault section")?;
        let rng = &mut self.rng;
        let decision = plan.decide_for_rule(route.fault_rule, &request, || None, 0, &mut || {
            rng.next_u32()
        });
        if !matches!(decision, Decision::Pass) {
            return Err("the benchmark's fault never fires".into());
        }
        // `breaker_glue::admit`, from the failover's snapshot of the member's breaker.
        let policy = *self.policies.get(member).ok_or("policy")?;
        let key = self.keys.get(member).ok_or("key")?;
        let snapshot = seen.filter(|(m, _)| *m == member).map(|(_, s)| s);
        let (admission, _) = breaker::update_from(&self.store, key, snapshot, |s| {
            s.admit_with_clock(&policy, || clock.now_ms())
        })
        .map_err(|e| format!("{e:?}"))?;
        let breaker::Decision::Admit(ticket) = admission else {
            return Err("rejected".into());
        };
        count(&mut self.batch, calls, self.rules + 3 + member as u32);
        if ticket.probe || ticket.holds_slot {
            // `Guard::publish`: the two gauges.
            calls.bump(|c| &mut c.metric_calls);
            calls.bump(|c| &mut c.metric_calls);
        }
        Ok((member, ticket))
    }

    /// `breaker_glue::record_outcome` for an upstream answering 200 without flags.
    fn on_log(&mut self, member: usize, ticket: Ticket) -> Result<(), String> {
        let calls = self.calls;
        let policy = *self.policies.get(member).ok_or("policy")?;
        let key = self.keys.get(member).ok_or("key")?;
        calls.bump(|c| &mut c.property_reads);
        let flags = black_box(0_u64);
        let code = || {
            calls.bump(|c| &mut c.property_reads);
            Some(black_box(200_u32))
        };
        let verdict = breaker::classify_with_code(flags, code, policy.count_as);
        if verdict != Verdict::Success {
            return Err("the upstream answers 200".into());
        }
        if !ticket.records_anything(verdict) {
            return Ok(());
        }
        let clock = LazyClock::new(calls);
        let mut wrote = false;
        let (transition, _) = breaker::update(&self.store, key, |s| {
            let (transition, next) =
                s.record_capped(&policy, ticket, verdict, || clock.now_ms(), || true);
            wrote = next.is_some();
            (transition, next)
        })
        .map_err(|e| format!("{e:?}"))?;
        if transition != Transition::None {
            calls.bump(|c| &mut c.log_calls);
        }
        if wrote {
            calls.bump(|c| &mut c.metric_calls);
            calls.bump(|c| &mut c.metric_calls);
        }
        Ok(())
    }

    /// The worker's tick: publishes the batch (one `increment_metric` per changed counter);
    /// returns the increments published.
    pub fn flush(&mut self) -> u64 {
        let mut published = 0;
        let calls = self.calls;
        self.batch.drain(|_, delta| {
            calls.bump(|c| &mut c.metric_calls);
            published += delta;
        });
        published
    }
}
