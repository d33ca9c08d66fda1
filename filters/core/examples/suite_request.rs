//! The suite module's per-request profile on the benchmark's common path (issues 7 and 25): it
//! runs `N` requests through `sluice_core` the way `filters/suite/src/lib.rs` does for
//! `xtask bench`'s `sluice-suite-module` configuration, with counting stand-ins for the host
//! (`tests/support/bench_request.rs` says what each request does), and prints per request the
//! host calls by kind and the heap allocations, the logic's apart from the host stand-ins'
//! (the SDK's `Vec` per value the host returns).
//!
//! Usage: `cargo run --release -p sluice-core --example suite_request -- [N]`.
//!
//! Instructions per request: run it under callgrind twice, `N = 0` (configuration only) and a
//! large `N`, and divide the difference of the `Collected` totals by `N` (the figures of
//! BENCHMARKS.md, "Issue 25"):
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/suite_request 0
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/suite_request 100000
//! ```

#[path = "../tests/support/bench_request.rs"]
mod bench_request;

use bench_request::{Counting, Harness, allocations};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() -> Result<(), String> {
    let requests: u64 = std::env::args()
        .nth(1)
        .map_or(Ok(100_000), |n| n.parse())
        .map_err(|e| format!("N: {e}"))?;
    let mut harness = Harness::configure()?;
    let (logic_before, host_before) = allocations();
    for _ in 0..requests {
        harness.request()?;
    }
    let (logic_after, host_after) = allocations();
    let calls = harness.calls();
    let published = harness.flush();
    let per = |n: u64| n as f64 / requests.max(1) as f64;
    println!(
        "{requests} requests, routed {:?}; on the worker's tick: {published} batched counter \
         increments in {} increment_metric calls",
        harness.routed,
        harness.calls().metric_calls - calls.metric_calls,
    );
    println!(
        "host calls per request: {:.2} (header reads {:.2}, header writes {:.2}, shared-data \
         gets {:.2}, CAS sets {:.2}, clock {:.2}, properties {:.2}, metrics {:.2}, logs {:.2})",
        per(calls.total()),
        per(calls.header_reads),
        per(calls.header_writes),
        per(calls.shared_gets),
        per(calls.shared_sets),
        per(calls.clock_reads),
        per(calls.property_reads),
        per(calls.metric_calls),
        per(calls.log_calls),
    );
    println!(
        "heap allocations per request: logic {:.2}, host stand-ins (the SDK's Vec per value \
         returned) {:.2}",
        per(logic_after - logic_before),
        per(host_after - host_before),
    );
    Ok(())
}
