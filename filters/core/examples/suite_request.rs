//! A native driver of the suite module's per-request logic, for deterministic cost
//! measurements (issue 7): it runs `N` requests through `sluice_core` the way
//! `filters/suite/src/lib.rs` does on the benchmark's common path, with in-memory stand-ins
//! for the host that count what the module would ask the host for.
//!
//! The configuration is `xtask bench`'s `sluice-suite-module`: a header rule (`end-user:
//! jason`) that requests miss, a 90/10 split with failover, a 0 % abort on the default rule
//! and a consecutive-errors breaker on every cluster. Per request:
//!
//! 1. `on_http_request_headers`: route (reads `end-user`, absent), the rule counter into the
//!    batch, the split point (PCG32), failover (the picked member's breaker state read, the
//!    clock only if it is stored open), the member counter, the fault decision (0 %: no draw),
//!    the two internal-header writes (counted, nothing to compute), breaker admission from the
//!    failover's snapshot, the requests counter;
//! 2. `on_log`: `response.code` (200) and `response.flags` (0), classified, and the outcome
//!    recorded (the breaker state read, written only on a change).
//!
//! Usage: `cargo run --release -p sluice-core --example suite_request -- [N] [lazy|eager]`.
//! `eager` reads the clock as the module did before the lazy clock (whenever a breaker state
//! was read in the failover, then at admission if not yet), to compare host-call counts; the
//! computation is otherwise the same. Printed: host calls per request by kind.
//!
//! Instructions per request: run it under callgrind twice, `N = 0` (configuration only) and a
//! large `N`, and divide the difference of the `Collected` totals by `N`:
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/suite_request 0
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/suite_request 100000
//! ```

use std::cell::{Cell, RefCell};
use std::hint::black_box;

use sluice_core::breaker::{self, SharedStore, Snapshot, StoreError, Verdict};
use sluice_core::canary::{self, Choice};
use sluice_core::fault::Decision;
use sluice_core::host::RequestView;
use sluice_core::metrics::CounterBatch;
use sluice_core::suite::{CompiledSuite, Target};

/// `xtask/src/bench/configs.rs`'s `sluice-suite-module` configuration.
const CONFIG: &str = r#"{
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

/// What the module would ask the host for, by kind.
#[derive(Default, Debug)]
struct HostCalls {
    header_reads: Cell<u64>,
    header_writes: Cell<u64>,
    shared_gets: Cell<u64>,
    shared_sets: Cell<u64>,
    clock_reads: Cell<u64>,
    property_reads: Cell<u64>,
}

impl HostCalls {
    fn bump(cell: &Cell<u64>) {
        cell.set(cell.get() + 1);
    }

    fn total(&self) -> u64 {
        [
            &self.header_reads,
            &self.header_writes,
            &self.shared_gets,
            &self.shared_sets,
            &self.clock_reads,
            &self.property_reads,
        ]
        .iter()
        .map(|c| c.get())
        .sum()
    }
}

/// A request without `end-user` (the benchmark's requests), counting header reads.
struct Request<'a>(&'a HostCalls);

impl RequestView for Request<'_> {
    fn header(&self, _name: &str) -> Option<Vec<u8>> {
        HostCalls::bump(&self.0.header_reads);
        None
    }

    fn header_lines(&self, _name: &str) -> Vec<Vec<u8>> {
        HostCalls::bump(&self.0.header_reads);
        Vec::new()
    }

    fn local_port(&self) -> Option<u32> {
        None
    }
}

/// Shared data in memory, with CAS tokens like Envoy's, counting gets and sets. A get returns
/// a fresh `Vec` as the SDK does (its allocation and free are the module's cost in wasm too);
/// the lookup is a scan of the two keys, so the stand-in adds little of its own.
struct Store<'a> {
    values: RefCell<Vec<(String, Vec<u8>, u32)>>,
    calls: &'a HostCalls,
}

impl SharedStore for Store<'_> {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        HostCalls::bump(&self.calls.shared_gets);
        match self.values.borrow().iter().find(|(k, _, _)| k == key) {
            Some((_, value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        HostCalls::bump(&self.calls.shared_sets);
        let mut values = self.values.borrow_mut();
        let Some((_, stored, token)) = values.iter_mut().find(|(k, _, _)| k == key) else {
            values.push((key.to_owned(), value.to_vec(), 1));
            return Ok(());
        };
        if cas.is_some_and(|cas| cas != *token) {
            return Err(StoreError::CasMismatch);
        }
        *stored = value.to_vec();
        *token = token.wrapping_add(1);
        Ok(())
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

/// A callback's clock: the host is asked (counted) on the first read only.
fn read_clock(clock: &Cell<Option<u64>>, calls: &HostCalls, now_ms: u64) -> u64 {
    if let Some(now) = clock.get() {
        return now;
    }
    HostCalls::bump(&calls.clock_reads);
    clock.set(Some(now_ms));
    now_ms
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let requests: u64 = args
        .next()
        .map_or(Ok(100_000), |n| n.parse())
        .map_err(|e| format!("N: {e}"))?;
    let eager = match args.next().as_deref() {
        None | Some("lazy") => false,
        Some("eager") => true,
        Some(other) => return Err(format!("mode {other:?}: lazy or eager")),
    };

    let calls = HostCalls::default();
    let suite = CompiledSuite::from_json(CONFIG.as_bytes())?;
    let canary = suite.canary.as_ref().ok_or("no canary section")?;
    let breakers = suite.breaker.as_ref().ok_or("no breaker section")?;
    let store = Store {
        values: RefCell::new(Vec::new()),
        calls: &calls,
    };
    // As `Guard::prepare` at configure time: every breaker key exists before traffic.
    let keys: Vec<Vec<String>> = canary
        .splits
        .iter()
        .map(|split| {
            split
                .clusters
                .iter()
                .map(|c| breaker::shared_data_key(c))
                .collect()
        })
        .collect();
    for key in keys.iter().flatten() {
        breaker::ensure_exists(&store, key).map_err(|e| format!("{e:?}"))?;
    }
    // Counter ids as `define_metric` would hand them out: rules, members, breaker requests.
    let rules = suite.router.rules().len() as u32;
    let mut batch = CounterBatch::new(1..=rules + 4);
    let mut rng = Pcg32 {
        state: 0x853c_49e6_748f_ea9b,
        increment: 0xda3e_39cb_94b5_bdb7,
    };
    let clock_ms = 1_700_000_000_000_u64;
    // Only configuration-time host calls so far: reset so the counts are per request.
    for counter in [
        &calls.header_reads,
        &calls.shared_gets,
        &calls.shared_sets,
        &calls.clock_reads,
    ] {
        counter.set(0);
    }

    let mut routed = [0_u64; 2];
    for _ in 0..requests {
        // on_http_request_headers
        let request = Request(&calls);
        let route = suite.route(&request).ok_or("no route")?;
        batch.add(route.rule_index as u32 + 1);
        let clock = Cell::new(None);
        let now = || read_clock(&clock, &calls, clock_ms);
        let Target::Split(index) = route.target else {
            return Err("the benchmark's requests take the split".into());
        };
        let split = canary.splits.get(index).ok_or("split")?;
        let split_keys = keys.get(index).ok_or("keys")?;
        let point = rng.next_u32();
        let mut seen: Option<(usize, Snapshot)> = None;
        let choice = canary::choose(&split.weights, point, |member| {
            let Some(key) = split_keys.get(member) else {
                return true;
            };
            let (Some(value), cas) = store.get(key) else {
                return true;
            };
            let open = if eager {
                breaker::is_unavailable(Some(&value), now())
            } else {
                breaker::is_unavailable_with_clock(Some(&value), now)
            };
            seen = Some((member, (Some(value), cas)));
            !open
        });
        let Choice::Member(member) = choice else {
            return Err("all members unavailable".into());
        };
        batch.add(rules + 1 + member as u32);
        let cluster = split.clusters.get(member).ok_or("member")?;
        let key = split_keys.get(member).ok_or("key")?;
        calls
            .header_writes
            .set(calls.header_writes.get() + black_box(2));
        let plan = suite.fault.as_ref().ok_or("no fault section")?;
        let decision = plan.decide_for_rule(route.fault_rule, &request, || None, 0, &mut || {
            rng.next_u32()
        });
        if !matches!(decision, Decision::Pass) {
            return Err("the benchmark's fault never fires".into());
        }
        let policy = *breakers.policy_for(cluster).ok_or("no policy")?;
        let snapshot = seen.filter(|(m, _)| *m == member).map(|(_, s)| s);
        let (admission, _) = breaker::update_from(&store, key, snapshot, |s| {
            if eager {
                s.admit(&policy, now())
            } else {
                s.admit_with_clock(&policy, now)
            }
        })
        .map_err(|e| format!("{e:?}"))?;
        let breaker::Decision::Admit(ticket) = admission else {
            return Err("rejected".into());
        };
        batch.add(rules + 3 + member as u32);
        // on_log: `response.code`, `response.flags`.
        calls
            .property_reads
            .set(calls.property_reads.get() + black_box(2));
        let verdict = breaker::classify(Some(black_box(200)), black_box(0), policy.count_as);
        if verdict != Verdict::Success {
            return Err("the upstream answers 200".into());
        }
        let log_clock = Cell::new(None);
        breaker::update(&store, key, |s| {
            s.record_with_clock(&policy, ticket, verdict, || {
                read_clock(&log_clock, &calls, clock_ms)
            })
        })
        .map_err(|e| format!("{e:?}"))?;
        if let Some(slot) = routed.get_mut(member) {
            *slot += 1;
        }
    }
    let mut published = 0_u64;
    batch.drain(|_, delta| published += delta);

    let per = |c: &Cell<u64>| c.get() as f64 / requests.max(1) as f64;
    println!(
        "{requests} requests ({}), routed {routed:?}, counter increments published {published}",
        if eager { "eager clock" } else { "lazy clock" }
    );
    println!(
        "host calls per request: {:.2} (header reads {:.2}, header writes {:.2}, shared-data gets {:.2}, sets {:.2}, clock {:.2}, properties {:.2})",
        calls.total() as f64 / requests.max(1) as f64,
        per(&calls.header_reads),
        per(&calls.header_writes),
        per(&calls.shared_gets),
        per(&calls.shared_sets),
        per(&calls.clock_reads),
        per(&calls.property_reads),
    );
    Ok(())
}
