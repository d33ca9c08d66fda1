//! The benchmark configurations: what each Envoy under test is given (plain proxying, the
//! sluice filters, the suite, Envoy's native equivalents, no-op filters), and which of them
//! a run measures.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sluice_bench::envoy_log;
use sluice_integration::bootstrap::{self, Bootstrap, LISTENER_NAME};
use sluice_integration::wasm;

use super::load::TIMING_LOG_KEY;
use super::optimize_module;

/// The configurations, in the order of the tables. `noop-wasm-<n>` chains `n` filters of
/// `bench/noop-filter` (a proxy-wasm filter that returns `Continue` and makes no host call):
/// the floor of what Envoy's wasm host costs per filter, under every sluice figure.
/// `sluice-suite` is the four-filter chain; `sluice-suite-module` the same routes, split, 0 %
/// fault and breakers in the one-filter suite module (`filters/suite`). `sluice-canary-guard`
/// is `sluice-canary` with the self-guard on its split, a latency ceiling included (the most
/// a guard does per request: two clock reads, the outcome's properties in `on_log`, the
/// shared window merged on the tick). `sluice-suite-module-debug` is `sluice-suite-module` with
/// the online explanation configured (`debug` section: header, secret, positions) and no
/// request carrying its header: what every other request pays for the feature (issue 30).
/// `native-<filter>` is Envoy's own feature a user could configure by hand instead of that
/// sluice filter (issue 25): a header-match route, `weighted_clusters`, the fault filter at
/// 0 %, outlier detection with circuit breakers; `native` is all of them in one.
pub const CONFIGS: [&str; 17] = [
    "plain",
    "native",
    "native-router",
    "native-canary",
    "native-fault",
    "native-breaker",
    "noop-wasm-1",
    "noop-wasm-2",
    "noop-wasm-4",
    "sluice-router",
    "sluice-canary",
    "sluice-canary-guard",
    "sluice-fault",
    "sluice-breaker",
    "sluice-suite",
    "sluice-suite-module",
    "sluice-suite-module-debug",
];

/// The Envoy-only configuration doing what `config` does, to compare a sluice filter with:
/// `native-<filter>` for one filter, `native` for the suite; `None` for the others.
pub fn native_equivalent(config: &str) -> Option<&'static str> {
    match config {
        "sluice-router" => Some("native-router"),
        "sluice-canary" | "sluice-canary-guard" => Some("native-canary"),
        "sluice-fault" => Some("native-fault"),
        "sluice-breaker" => Some("native-breaker"),
        "sluice-suite" | "sluice-suite-module" | "sluice-suite-module-debug" => Some("native"),
        _ => None,
    }
}

/// The `Host` every request carries.
pub(super) const HOST: &str = "reviews";

/// Environment variable restricting a run to some configurations, comma-separated (e.g.
/// `plain,noop-wasm-1,sluice-router`), for targeted before/after comparisons; `plain` is always
/// measured (the open-loop rate derives from its peak).
pub const ONLY_ENV: &str = "SLUICE_BENCH_ONLY";

pub(super) fn selected_configs() -> Result<Vec<&'static str>> {
    let Ok(only) = std::env::var(ONLY_ENV) else {
        return Ok(CONFIGS.to_vec());
    };
    let wanted: Vec<&str> = only.split(',').map(str::trim).collect();
    if let Some(unknown) = wanted.iter().find(|w| !CONFIGS.contains(w)) {
        bail!("{ONLY_ENV}: unknown configuration {unknown:?}; known: {CONFIGS:?}");
    }
    Ok(CONFIGS
        .into_iter()
        .filter(|name| *name == "plain" || wanted.contains(name))
        .collect())
}

/// `config` (a rendered bootstrap) with the Envoy-side timing log: a file access log in
/// [`envoy_log::FORMAT`] on the listener under test, written only while the runtime key
/// [`TIMING_LOG_KEY`] is 100 (0 by default), and the admin runtime layer that lets the bench set
/// it.
pub(super) fn with_timing_log(config: &str, log: &Path) -> Result<String> {
    let mut bootstrap: Value = serde_json::from_str(config).context("bootstrap is not JSON")?;
    bootstrap["layered_runtime"] = json!({"layers": [{"name": "admin", "admin_layer": {}}]});
    let listener = bootstrap["static_resources"]["listeners"]
        .as_array_mut()
        .and_then(|listeners| {
            listeners
                .iter_mut()
                .find(|l| l["name"] == json!(LISTENER_NAME))
        })
        .with_context(|| format!("no listener {LISTENER_NAME} in the bootstrap"))?;
    let hcm = &mut listener["filter_chains"][0]["filters"][0]["typed_config"];
    if hcm.get("stat_prefix").is_none() {
        bail!("listener {LISTENER_NAME} has no HTTP connection manager first");
    }
    hcm["access_log"] = json!([{
        "name": "envoy.access_loggers.file",
        "filter": {"runtime_filter": {
            "runtime_key": TIMING_LOG_KEY,
            "percent_sampled": {"numerator": 0, "denominator": "HUNDRED"},
        }},
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": log.to_string_lossy(),
            "log_format": {"text_format_source": {"inline_string": envoy_log::FORMAT}},
        },
    }]);
    Ok(bootstrap.to_string())
}

pub(super) fn loopback(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

/// The rules every configuration expresses: `end-user: jason` goes to v2, everyone else to a
/// 90/10 split of v1 and v2; a fault rule that never fires (0 %); a breaker on the clusters.
/// Requests of the benchmark carry no `end-user`, so they take the split (the costlier path):
/// every configuration evaluates the header rule, misses it, then picks a member.
pub(super) fn config_for(
    name: &str,
    upstream_port: u16,
    wasm_dir: &Path,
    noop: &Path,
) -> Result<String> {
    let module = |filter: &str| wasm::module_in(wasm_dir, filter);
    let plain_clusters = |b: Bootstrap| {
        b.cluster("reviews-v1", upstream_port)
            .cluster("reviews-v2", upstream_port)
            .without_access_log()
    };
    let router = json!({"virtualHosts": [{"name": "reviews", "domains": ["*"], "rules": [
        {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "route": {"cluster": "reviews-v2"}},
        {"name": "default", "route": {"split": "reviews"}},
    ]}]});
    let router_alone = json!({"virtualHosts": [{"name": "reviews", "domains": ["*"], "rules": [
        {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "route": {"cluster": "reviews-v2"}},
        {"name": "default", "route": {"cluster": "reviews-v1"}},
    ]}]});
    let split = json!({"name": "reviews", "members": [
        {"cluster": "reviews-v1", "weight": 90}, {"cluster": "reviews-v2", "weight": 10}]});
    let fault_rule = json!({"rule": "default",
        "abort": {"httpStatus": 503, "percentage": {"value": 0.0}}});
    let breaker = json!({"consecutiveErrors": 5, "interval": "10s", "baseEjectionTime": "30s"});
    // Envoy's equivalents, shared by `native` and the `native-<filter>` configurations.
    let native_guarded = |name: &str| {
        let mut cluster = bootstrap::static_cluster(name, upstream_port, false);
        cluster["outlier_detection"] = json!({"consecutive_5xx": 5, "interval": "10s",
            "base_ejection_time": "30s", "max_ejection_percent": 100});
        cluster["circuit_breakers"] = json!({"thresholds": [{"max_connections": 1024,
            "max_pending_requests": 1024, "max_requests": 1024, "max_retries": 3}]});
        cluster
    };
    let native_fault = json!({"name": "envoy.filters.http.fault", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "abort": {"http_status": 503, "percentage": {"numerator": 0, "denominator": "HUNDRED"}},
    }});
    let native_jason = json!({"match": {"prefix": "/", "headers": [
        {"name": "end-user", "string_match": {"exact": "jason"}}]},
        "route": {"cluster": "reviews-v2"}});
    let native_split = json!({"match": {"prefix": "/"}, "route": {"weighted_clusters": {
        "clusters": [{"name": "reviews-v1", "weight": 90}, {"name": "reviews-v2", "weight": 10}]}}});
    let native_plain = |b: Bootstrap| plain_clusters(b).forward_internal_headers();

    let bootstrap = match name {
        "plain" => plain_clusters(Bootstrap::new())
            .route_to_cluster("reviews-v1")
            .forward_internal_headers(),
        "native" => Bootstrap::new()
            .cluster_json(native_guarded("reviews-v1"))
            .cluster_json(native_guarded("reviews-v2"))
            .without_access_log()
            .forward_internal_headers()
            .http_filter_json(native_fault)
            .routes_json(vec![native_jason, native_split]),
        // As `sluice-router`: the header rule, everyone else to v1.
        "native-router" => native_plain(Bootstrap::new()).routes_json(vec![
            native_jason,
            json!({"match": {"prefix": "/"}, "route": {"cluster": "reviews-v1"}}),
        ]),
        // As `sluice-canary`: the 90/10 split alone.
        "native-canary" => native_plain(Bootstrap::new()).routes_json(vec![native_split]),
        // As `sluice-fault`: an abort at 0 %, then v1.
        "native-fault" => native_plain(Bootstrap::new())
            .http_filter_json(native_fault)
            .route_to_cluster("reviews-v1"),
        // As `sluice-breaker`: v1 guarded by outlier detection (5 consecutive 5xx) and circuit
        // breakers.
        "native-breaker" => Bootstrap::new()
            .cluster_json(native_guarded("reviews-v1"))
            .cluster("reviews-v2", upstream_port)
            .without_access_log()
            .forward_internal_headers()
            .route_to_cluster("reviews-v1"),
        noop_chain if noop_chain.starts_with("noop-wasm-") => {
            let count: usize = noop_chain
                .trim_start_matches("noop-wasm-")
                .parse()
                .with_context(|| format!("bad configuration name {noop_chain}"))?;
            (0..count)
                .fold(plain_clusters(Bootstrap::new()), |b, i| {
                    b.http_filter_json(noop_filter_json(i, noop))
                })
                .route_to_cluster("reviews-v1")
                .forward_internal_headers()
        }
        "sluice-router" => plain_clusters(Bootstrap::new())
            .wasm_filter_at("router", &module("router")?, &router_alone.to_string())
            .route_cluster_header(),
        "sluice-canary" => plain_clusters(Bootstrap::new())
            .wasm_filter_at(
                "canary",
                &module("canary")?,
                &json!({"splits": [split], "rules": [{"split": "reviews"}]}).to_string(),
            )
            .route_cluster_header(),
        "sluice-canary-guard" => {
            let mut guarded = split.clone();
            guarded["guard"] = json!({"failures": {"latency": "1s"}});
            plain_clusters(Bootstrap::new())
                .wasm_filter_at(
                    "canary",
                    &module("canary")?,
                    &json!({"splits": [guarded], "rules": [{"split": "reviews"}]}).to_string(),
                )
                .route_cluster_header()
        }
        "sluice-fault" => plain_clusters(Bootstrap::new())
            .wasm_filter_at(
                "fault",
                &module("fault")?,
                &json!({"faults": [fault_rule]}).to_string(),
            )
            .route_to_cluster("reviews-v1"),
        "sluice-breaker" => {
            let mut one = breaker.clone();
            one["cluster"] = json!("reviews-v1");
            plain_clusters(Bootstrap::new())
                .wasm_filter_at(
                    "breaker",
                    &module("breaker")?,
                    &json!({"breakers": [one]}).to_string(),
                )
                .route_to_cluster("reviews-v1")
        }
        "sluice-suite" => plain_clusters(Bootstrap::new())
            .wasm_filter_at("router", &module("router")?, &router.to_string())
            .wasm_filter_at(
                "canary",
                &module("canary")?,
                &json!({"afterRouter": true, "splits": [split]}).to_string(),
            )
            .wasm_filter_at(
                "fault",
                &module("fault")?,
                &json!({"afterRouter": true, "faults": [fault_rule]}).to_string(),
            )
            .wasm_filter_at(
                "breaker",
                &module("breaker")?,
                &json!({"afterRouter": true, "default": breaker}).to_string(),
            )
            .route_cluster_header(),
        "sluice-suite-module" | "sluice-suite-module-debug" => {
            let mut config = json!({
                "router": router,
                "canary": {"afterRouter": true, "splits": [split]},
                "fault": {"afterRouter": true, "faults": [fault_rule]},
                "breaker": {"afterRouter": true, "default": breaker},
            });
            if name == "sluice-suite-module-debug" {
                // One position per router rule; the load never sends the header.
                let rules = router["virtualHosts"][0]["rules"]
                    .as_array()
                    .map_or(0, Vec::len);
                config["debug"] = json!({
                    "header": "x-sluice-debug",
                    "secret": "bench-secret-not-sent-0123456789",
                    "positions": vec!["bench.yaml:1:1"; rules],
                });
            }
            plain_clusters(Bootstrap::new())
                .wasm_filter_at("suite", &module("suite")?, &config.to_string())
                .route_cluster_header()
        }
        other => bail!("unknown configuration {other}"),
    };
    Ok(bootstrap.render())
}

/// Package, module file name and wasm `root_id` of the no-op filter.
pub(super) const NOOP_PACKAGE: &str = "sluice-noop-filter";

pub(super) const NOOP_MODULE: &str = "sluice_noop_filter.wasm";

/// Builds `bench/noop-filter` exactly as the filters are built (release profile of the
/// workspace, then `wasm-opt -Oz`) and returns the module's path.
pub(super) fn build_noop_filter() -> Result<PathBuf> {
    crate::run(crate::cargo(&[
        "build",
        "--release",
        "--target",
        "wasm32-wasip1",
        "-p",
        NOOP_PACKAGE,
    ]))?;
    let path = crate::target_dir()
        .join("wasm32-wasip1")
        .join("release")
        .join(NOOP_MODULE);
    optimize_module(&path)?;
    Ok(path)
}

/// The `index`-th no-op filter of a chain: its own filter name, one VM (`vm_id` "noop") shared
/// by the chain as the sluice filters share theirs, FAIL_CLOSED like them.
pub(super) fn noop_filter_json(index: usize, module: &Path) -> Value {
    json!({
        "name": format!("noop-{index}"),
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": format!("noop-{index}"),
                "root_id": "",
                "vm_config": {
                    "vm_id": "noop",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": module.to_string_lossy()}},
                },
                "failure_policy": "FAIL_CLOSED",
            },
        },
    })
}
