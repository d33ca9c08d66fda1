//! `cargo xtask soak`: a long run of all four filters chained in Envoy `--concurrency 2`, driven
//! by wrk in chunks until the requested number of requests is sent. After the run:
//!
//! - every request Envoy's HTTP connection manager completed was counted by the router (rule
//!   counters), the canary (member counters) and the breaker (per-cluster request counters),
//!   and reached an upstream cluster: the filters lose nothing and count nothing twice;
//! - no VM failed: Envoy's `wasm.*` failure stats are 0 and its log has no trap;
//! - every answer was 2xx (wrk reports no non-2xx and no socket error);
//! - Envoy's resident memory is flat after warm-up: the largest sample after the first fifth
//!   of the run is at most 10% + 16 MiB above the sample taken at the end of warm-up.
//!
//! Not part of `cargo xtask test` (minutes of load); the figures go to RELIABILITY.md.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;
use sluice_core::wire;
use sluice_integration::bootstrap::{Bootstrap, LISTENER_NAME, STAT_PREFIX};
use sluice_integration::envoy::{Envoy, EnvoyOptions};
use sluice_integration::upstream::Upstream;

/// Options of `cargo xtask soak`.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Requests to send in total (at least).
    pub requests: u64,
    /// wrk connections.
    pub connections: u32,
    /// Give up (fail) after this long.
    pub time_limit: Duration,
}

/// Seconds per wrk chunk: one RSS sample per chunk.
const CHUNK_SECONDS: u32 = 10;

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// wrk on `port` for `seconds`; returns the number of requests it completed.
fn wrk_chunk(port: u16, connections: u32, seconds: u32) -> Result<u64> {
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            &format!("http://127.0.0.1:{port}/soak"),
        ])
        .output()
        .context("run wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for bad in ["Non-2xx", "Socket errors"] {
        if let Some(line) = text.lines().find(|l| l.contains(bad)) {
            bail!("wrk saw errors: {}\n{text}", line.trim());
        }
    }
    text.lines()
        .find_map(|l| {
            let l = l.trim();
            l.split_once(" requests in ")
                .and_then(|(n, _)| n.trim().parse().ok())
        })
        .with_context(|| format!("no request count in wrk's output: {text}"))
}

fn ensure_wrk() -> Result<()> {
    crate::apt::ensure("wrk", &["--version"], "wrk")
}

/// Runs the soak; `Err` names the first property that did not hold.
pub fn soak(options: &SoakOptions) -> Result<()> {
    ensure_wrk()?;
    let stable = Upstream::start("stable");
    let canary_upstream = Upstream::start("canary");
    let router = json!({"virtualHosts": [{"name": "all", "domains": ["*"], "rules": [
        {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "route": {"cluster": "canary"}},
        {"name": "split", "match": [{"uri": {"prefix": "/soak"}}], "route": {"split": "s"}},
        {"name": "default", "route": {"cluster": "stable"}},
    ]}]});
    let canary_config = json!({"afterRouter": true, "splits": [{"name": "s", "members": [
        {"cluster": "stable", "weight": 80}, {"cluster": "canary", "weight": 20}]}]});
    // A fault that never fires: the filter still selects the rule and draws per request.
    let fault = json!({"afterRouter": true, "faults": [{"rule": "split",
        "abort": {"httpStatus": 503, "percentage": {"value": 0}}}]});
    let breaker_config = json!({"afterRouter": true, "breakers": [
        {"cluster": "stable", "consecutiveErrors": 1000},
        {"cluster": "canary", "consecutiveErrors": 1000}]});
    let config = Bootstrap::new()
        .cluster("stable", stable.port())
        .cluster("canary", canary_upstream.port())
        .wasm_filter("router", &router.to_string())
        .wasm_filter("canary", &canary_config.to_string())
        .wasm_filter("fault", &fault.to_string())
        .wasm_filter("breaker", &breaker_config.to_string())
        .without_access_log()
        .render();
    let envoy = Envoy::start_with(EnvoyOptions {
        config_yaml: config,
        concurrency: 2,
        log_level: "warning".into(),
        ..EnvoyOptions::default()
    })?;
    let port = envoy.listener_port(LISTENER_NAME);
    let pid = envoy.pid();
    println!(
        "soak: Envoy pid {pid} (--concurrency 2), listener 127.0.0.1:{port}, {} requests, {} connections",
        options.requests, options.connections
    );

    let started = Instant::now();
    let warmup = options.requests / 5;
    let mut sent = 0u64;
    let mut after_warmup = None;
    let mut max_after = 0u64;
    let mut last = 0u64;
    while sent < options.requests {
        if started.elapsed() > options.time_limit {
            bail!(
                "time limit {:?} reached after {sent} requests",
                options.time_limit
            );
        }
        sent += wrk_chunk(port, options.connections, CHUNK_SECONDS)?;
        // The test upstreams record every request; forget them so their memory stays flat.
        stable.clear_requests();
        canary_upstream.clear_requests();
        last = rss_kib(pid)?;
        match after_warmup {
            None if sent >= warmup => after_warmup = Some(last),
            Some(_) => max_after = max_after.max(last),
            None => {}
        }
        println!(
            "soak: {sent:>10} requests  {:>6.0}s  Envoy RSS {} KiB",
            started.elapsed().as_secs_f64(),
            last
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let baseline = after_warmup.unwrap_or(last);
    let max_after = max_after.max(last);

    let stat = |name: &str| envoy.stat(name).unwrap_or(0);
    // wrk ends each chunk with requests in flight: those were received and decided, but their
    // connection closed before the answer. The filters count at request time, so they match
    // Envoy's received requests (`downstream_rq_total`), and every completed one was a 2xx.
    let received = stat(&format!("http.{STAT_PREFIX}.downstream_rq_total"));
    let completed = stat(&format!("http.{STAT_PREFIX}.downstream_rq_completed"));
    let rq_2xx = stat(&format!("http.{STAT_PREFIX}.downstream_rq_2xx"));
    // The filters' own metric names, as Envoy shows them.
    let filter_stat = |name: String| stat(&format!("{}{name}", wire::ENVOY_METRIC_PREFIX));
    let router_counted = filter_stat(sluice_core::metrics::router_rule_matched("split"));
    let canary_counted: u64 = ["stable", "canary"]
        .iter()
        .map(|c| filter_stat(sluice_core::canary::routed_metric("s", c)))
        .sum();
    let breaker_counted: u64 = ["stable", "canary"]
        .iter()
        .map(|c| {
            filter_stat(sluice_core::breaker::metric_name(
                c,
                wire::breaker_metric::REQUESTS,
            ))
        })
        .sum();
    let upstream_rq: u64 = ["stable", "canary"]
        .iter()
        .map(|c| stat(&format!("cluster.{c}.upstream_rq_total")))
        .sum();
    println!(
        "soak: Envoy received {received}, completed {completed} ({rq_2xx} 2xx); router {router_counted}, canary {canary_counted}, breaker {breaker_counted}, upstream clusters {upstream_rq}"
    );
    let mut problems = Vec::new();
    if completed < sent {
        problems.push(format!("Envoy completed {completed} < {sent} sent by wrk"));
    }
    if rq_2xx != completed {
        problems.push(format!("{rq_2xx} 2xx of {completed} completed requests"));
    }
    if received.saturating_sub(completed) > u64::from(options.connections) * 100 {
        problems.push(format!("{} requests never completed", received - completed));
    }
    for (what, n) in [
        ("router rule counter", router_counted),
        ("canary member counters", canary_counted),
        ("breaker request counters", breaker_counted),
        ("upstream cluster requests", upstream_rq),
    ] {
        if n != received {
            problems.push(format!(
                "{what} {n} != Envoy's received requests {received}"
            ));
        }
    }
    let stats = envoy.stats_text()?;
    for line in stats.lines() {
        if let Some((name, value)) = line.split_once(": ")
            && name.starts_with("wasm.")
            && name.contains("fail")
            && value.trim() != "0"
        {
            problems.push(format!("VM failure stat {line}"));
        }
    }
    let log = envoy.log();
    for trap in ["panicked", "RuntimeError", "Uncaught"] {
        if log.contains(trap) {
            problems.push(format!("{trap:?} in Envoy's log"));
        }
    }
    let allowed = baseline + baseline / 10 + 16 * 1024;
    println!(
        "soak: RSS after warm-up {baseline} KiB, max after {max_after} KiB, end {last} KiB (allowed {allowed} KiB)"
    );
    if max_after > allowed {
        problems.push(format!(
            "RSS grew from {baseline} KiB after warm-up to {max_after} KiB"
        ));
    }
    if !problems.is_empty() {
        bail!("soak failed:\n  {}", problems.join("\n  "));
    }
    println!(
        "soak: ok: {completed} requests in {seconds:.0}s ({:.0}/s), all counted by every filter, no VM failure, RSS flat",
        completed as f64 / seconds
    );
    Ok(())
}
