//! `cargo xtask bench`: the sluice filters against plain proxying and Envoy's native equivalent,
//! side by side in one run, on loopback.
//!
//! Setup (why each choice):
//! - The Envoy under test runs at `--concurrency 1`, pinned to CPU 0 (`taskset`), so its CPU
//!   time per request is the cost of one worker and nothing else shares its core.
//! - The upstream is a second Envoy answering every request itself (`direct_response`, a fixed
//!   2-byte body), pinned to CPU 1 with the load generators. It is the cheapest HTTP server at
//!   hand, identical for every configuration, and its CPU is not counted: the figures measure
//!   the proxy, not the upstream.
//! - Closed-loop throughput comes from wrk (Debian package, installed when missing); open-loop
//!   latency from [`sluice_bench::run`] (fixed rate, latency from the intended send time, so no
//!   coordinated omission; one epoll thread, a pool of keep-alive connections), at half the
//!   plain proxy's peak.
//! - Open-loop latency twice: at the client (above), and inside the Envoy under test, from a
//!   file access log of Envoy's own time points ([`sluice_bench::envoy_log`]: the time Envoy
//!   held each request, and that minus the upstream exchange), in a second open-loop run right
//!   after the client-side one. The log is switched on through the runtime
//!   (`/runtime_modify`) for that run only, so the other runs pay only the log's runtime check,
//!   the same in every configuration.
//! - Every process of the measurement (this one and the load it spawns, both Envoys) runs at
//!   nice [`NICE`]: the machine is shared, and a neighbour's compiler must not preempt a worker
//!   in the middle of a request. With autogroup scheduling (`sched_autogroup_enabled`) the CPU
//!   is first shared between sessions and a thread's nice only counts inside its own, so the
//!   bench sets its session's autogroup nice as well. It does not change the work per request
//!   the figures measure.
//! - During the open-loop runs the worker threads of both Envoys and the generator's thread run
//!   SCHED_FIFO ([`WORKER_RT_PRIORITY`] < [`GENERATOR_RT_PRIORITY`]; the Envoy under test's
//!   worker only during its own run). At normal priority a neighbour's compiler (or the
//!   generator and the upstream, which share CPU 1) could hold a worker off the CPU for a time
//!   slice, milliseconds that showed in every configuration's p99 (measured under load: client
//!   p99 5.0 to 7.8 ms with only the apparatus real-time, 1.2 to 2.6 ms with the Envoy under
//!   test too). The figures are thus those of a worker with its core to itself, as on an
//!   isolated CPU. Only the workers: Envoy's main thread (stats flush, admin) at the same FIFO
//!   priority would block its worker until it yields. All are mostly asleep at the open-loop
//!   rate, under the kernel's 95 % real-time budget; a configuration that cannot keep up with
//!   the rate would hit that budget and stall 50 ms a second (it is then in a queue anyway: see
//!   its p50).
//! - CPU per request: the Envoy process's on-CPU time (sum of `/proc/<pid>/task/*/schedstat`,
//!   nanoseconds) over the closed-loop phase, divided by the requests Envoy counted
//!   (`http.ingress.downstream_rq_total`).
//! - Every configuration runs once per round, rounds interleave configurations, and the
//!   tables show the median over rounds: drift of a shared machine hits every configuration
//!   alike.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sluice_bench::envoy_log::{self, EnvoyTimings};
use sluice_bench::{OpenLoop, OpenLoopReport};
use sluice_integration::bootstrap::{self, Bootstrap, LISTENER_NAME};
use sluice_integration::envoy::{Envoy, EnvoyOptions};
use sluice_integration::wasm;

/// How long and how often to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Seconds of each closed-loop and each open-loop measurement.
    pub duration: f64,
    /// Rounds; every configuration is measured once per round.
    pub runs: u32,
    /// Smoke run: short phases, no builder-scale section.
    pub quick: bool,
    /// Where the Markdown report goes (BENCHMARKS.md of the repository by default).
    pub output: PathBuf,
    /// The command line to print in the report.
    pub command_line: String,
}

/// The configurations, in the order of the tables. `noop-wasm-<n>` chains `n` filters of
/// `bench/noop-filter` (a proxy-wasm filter that returns `Continue` and makes no host call):
/// the floor of what Envoy's wasm host costs per filter, under every sluice figure.
/// `sluice-suite` is the four-filter chain; `sluice-suite-module` the same routes, split, 0 %
/// fault and breakers in the one-filter suite module (`filters/suite`).
pub const CONFIGS: [&str; 11] = [
    "plain",
    "native",
    "noop-wasm-1",
    "noop-wasm-2",
    "noop-wasm-4",
    "sluice-router",
    "sluice-canary",
    "sluice-fault",
    "sluice-breaker",
    "sluice-suite",
    "sluice-suite-module",
];

/// One configuration's measurements, one entry per round.
#[derive(Debug, Default, Clone)]
pub struct ConfigResult {
    /// Closed-loop requests per second (wrk).
    pub rps: Vec<f64>,
    /// Envoy CPU microseconds per request during the closed-loop phase.
    pub cpu_us_per_request: Vec<f64>,
    /// Open-loop runs.
    pub latency: Vec<OpenLoopReport>,
    /// Envoy's own timing of open-loop runs (its access log), one per round: a second run
    /// after each of [`ConfigResult::latency`], with the log on.
    pub envoy: Vec<EnvoyTimings>,
    /// The client-side figures of the runs [`ConfigResult::envoy`] timed.
    pub logged_latency: Vec<OpenLoopReport>,
    /// Envoy's resident set after the runs, in KiB.
    pub rss_kib: u64,
}

/// The whole measurement.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Per configuration name (see [`CONFIGS`]).
    pub configs: BTreeMap<String, ConfigResult>,
    /// Open-loop rate used for every configuration.
    pub open_loop_rps: u32,
    /// Module sizes in bytes, per filter.
    pub module_sizes: Vec<(String, u64)>,
    /// Builder at scale, when measured.
    pub builder: Option<BuilderScale>,
}

/// `sluice generate` on a synthetic mesh.
#[derive(Debug, Clone)]
pub struct BuilderScale {
    /// Services, subsets per service, rules per service.
    pub shape: (u32, u32, u32),
    /// Input YAML bytes.
    pub input_bytes: u64,
    /// Median wall time of `sluice generate` (release build).
    pub generate: Duration,
    /// Bytes written (all files).
    pub output_bytes: u64,
    /// Wall time of `envoy --mode validate` on the output.
    pub validate: Duration,
}

/// Everything after this line of the report is kept across runs of the bench.
pub const NOTES_MARKER: &str = "<!-- notes: kept by cargo xtask bench -->";

/// Wrk connections for the closed-loop phase: enough to keep a single worker busy.
const WRK_CONNECTIONS: u32 = 16;
/// Open-loop connection pool: a due request takes any idle one, so it waits for a connection
/// only when all are busy. At half the plain peak about 5 requests are in flight (11,500 req/s x
/// ~0.45 ms); 64 leaves room for a stall of several milliseconds before the pool runs dry (the
/// report's peak in flight shows whether it did).
const OPEN_LOOP_CONNECTIONS: u32 = 64;
/// Scheduling priority of the measured processes (see the module documentation).
pub const NICE: i32 = -10;
/// SCHED_FIFO priority of the Envoy workers (under test, upstream) during the open-loop runs.
pub const WORKER_RT_PRIORITY: u8 = 1;
/// SCHED_FIFO priority of the generator's thread during the open-loop runs: above the upstream
/// worker it shares CPU 1 with, so that sending on time never waits for the upstream's work.
pub const GENERATOR_RT_PRIORITY: u8 = 2;
/// Runtime key switching the Envoy-side timing log on (100) and off (0).
const TIMING_LOG_KEY: &str = "sluice_bench.timing_log";
/// The `Host` every request carries.
const HOST: &str = "reviews";

/// Runs the benchmark and writes the report.
pub fn bench(options: &BenchOptions, wasm_dir: &Path) -> Result<Report> {
    ensure_wrk()?;
    let noop = build_noop_filter()?;
    let pinned = pin_self_to_cpu1();
    let prioritised = prioritise(std::process::id()).is_ok();
    let upstream = start_upstream(pinned, prioritised)?;
    let upstream_port = upstream.listener_port("upstream");
    let logs = tempfile::Builder::new()
        .prefix("sluice-bench-timing-")
        .tempdir()?;

    let mut envoys = Vec::new();
    for name in selected_configs()? {
        let log = logs.path().join(format!("{name}.log"));
        let config = with_timing_log(&config_for(name, upstream_port, wasm_dir, &noop)?, &log)?;
        let envoy = Envoy::start_with(EnvoyOptions {
            config_yaml: config,
            concurrency: 1,
            log_level: "warn".to_owned(),
            ..EnvoyOptions::default()
        })
        .with_context(|| format!("start Envoy for {name}"))?;
        if pinned {
            pin(envoy.pid(), "0")?;
        }
        if prioritised {
            prioritise(envoy.pid())?;
        }
        let port = envoy.listener_port(LISTENER_NAME);
        check_serves(port, name)?;
        envoys.push((name, envoy, port, TimingLog::new(log)));
    }

    // Warm-up: V8 compiles wasm with a baseline tier first and optimises hot functions later.
    let warmup = if options.quick { 0.5 } else { 3.0 };
    for (_, _, port, _) in &envoys {
        wrk(*port, warmup)?;
    }

    let mut report = Report::default();
    for round in 0..options.runs {
        for (name, envoy, port, _) in &envoys {
            eprintln!(
                "bench: round {}/{} closed loop {name}",
                round + 1,
                options.runs
            );
            let before_cpu = cpu_ns(envoy.pid())?;
            let before_requests = requests(envoy)?;
            let rps = wrk(*port, options.duration)?;
            let cpu = cpu_ns(envoy.pid())? - before_cpu;
            let served = requests(envoy)? - before_requests;
            if served == 0 {
                bail!("{name}: Envoy counted no request during the closed-loop phase");
            }
            let entry = report.configs.entry((*name).to_owned()).or_default();
            entry.rps.push(rps);
            entry
                .cpu_us_per_request
                .push(cpu as f64 / 1000.0 / served as f64);
        }
    }
    let plain_peak = median(&report.configs["plain"].rps);
    report.open_loop_rps = ((plain_peak / 2.0) as u32).max(100);
    let generator_thread = current_thread_id()?;
    let upstream_workers = envoy_workers(upstream.pid())?;
    let upstream_rt = pinned && set_realtime(&upstream_workers, Some(WORKER_RT_PRIORITY)).is_ok();
    let realtime = upstream_rt
        && set_realtime(
            std::slice::from_ref(&generator_thread),
            Some(GENERATOR_RT_PRIORITY),
        )
        .is_ok();
    for round in 0..options.runs {
        for (name, envoy, port, log) in &mut envoys {
            eprintln!(
                "bench: round {}/{} open loop {name}",
                round + 1,
                options.runs
            );
            let workers = envoy_workers(envoy.pid())?;
            if realtime {
                set_realtime(&workers, Some(WORKER_RT_PRIORITY))?;
            }
            let open_loop = || {
                sluice_bench::run(&OpenLoop {
                    target: SocketAddr::from(([127, 0, 0, 1], *port)),
                    rate: report.open_loop_rps,
                    duration: Duration::from_secs_f64(options.duration),
                    warmup: Duration::from_secs_f64(if options.quick { 0.2 } else { 1.0 }),
                    connections: OPEN_LOOP_CONNECTIONS,
                    host: HOST.to_owned(),
                    path: "/".to_owned(),
                    headers: Vec::new(),
                })
                .with_context(|| format!("open loop against {name}"))
            };
            // The client-side figures come from a run without the timing log, the Envoy-side
            // ones from the next run with it: the log's writes lengthened some configurations'
            // client p99 (the table shows the client p99 of the logged run too).
            let latency = open_loop()?;
            set_timing_log(envoy, true)?;
            let logged = open_loop()?;
            set_timing_log(envoy, false)?;
            if realtime {
                set_realtime(&workers, None)?;
            }
            let timings = log
                .read_run(envoy, logged.measured_from)
                .with_context(|| format!("Envoy-side timing of {name}"))?;
            let entry = report.configs.entry((*name).to_owned()).or_default();
            entry.latency.push(latency);
            entry.logged_latency.push(logged);
            entry.envoy.push(timings);
        }
    }
    if realtime {
        set_realtime(std::slice::from_ref(&generator_thread), None)?;
    }
    if upstream_rt {
        set_realtime(&upstream_workers, None)?;
    }
    for (name, envoy, _, _) in &envoys {
        let rss = rss_kib(envoy.pid())?;
        report
            .configs
            .entry((*name).to_owned())
            .or_default()
            .rss_kib = rss;
    }
    drop(envoys);
    drop(upstream);

    for filter in wasm::MODULES {
        let path = wasm::module_in(wasm_dir, filter)?;
        let size = std::fs::metadata(&path)
            .with_context(|| format!("stat {}", path.display()))?
            .len();
        report.module_sizes.push((filter.to_owned(), size));
    }
    if !options.quick {
        report.builder = Some(builder_scale(wasm_dir)?);
    }
    let mut markdown = render(&report, options, pinned, prioritised, realtime);
    // Analysis written by hand (why a budget is missed, size breakdowns) survives a re-run.
    if let Ok(previous) = std::fs::read_to_string(&options.output)
        && let Some(at) = previous.find(NOTES_MARKER)
    {
        markdown.push('\n');
        markdown.push_str(&previous[at..]);
    }
    std::fs::write(&options.output, &markdown)
        .with_context(|| format!("write {}", options.output.display()))?;
    println!("{markdown}");
    Ok(report)
}

/// Environment variable restricting a run to some configurations, comma-separated (e.g.
/// `plain,noop-wasm-1,sluice-router`), for targeted before/after comparisons; `plain` is always
/// measured (the open-loop rate derives from its peak).
pub const ONLY_ENV: &str = "SLUICE_BENCH_ONLY";

fn selected_configs() -> Result<Vec<&'static str>> {
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

/// `wrk` on PATH, else installed from Debian.
fn ensure_wrk() -> Result<()> {
    crate::apt::ensure("wrk", &["--version"], "wrk")
}

/// Pins this process (the open-loop generator's threads are spawned later and inherit it) to
/// CPU 1, when the machine has two CPUs or more and `taskset` exists. Returns whether the
/// setup is pinned.
fn pin_self_to_cpu1() -> bool {
    online_cpus() >= 2 && pin(std::process::id(), "1").is_ok()
}

fn pin(pid: u32, cpu: &str) -> Result<()> {
    let output = Command::new("taskset")
        .args(["-a", "-p", "-c", cpu, &pid.to_string()])
        .output()
        .context("run taskset")?;
    if !output.status.success() {
        bail!(
            "taskset -a -p -c {cpu} {pid}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Renices every thread of `pid` to [`NICE`] (threads inherit it from their creator, children
/// from their parent; `renice -p` on a process id changes its main thread only). For this
/// process, also its session's autogroup, which the Envoys it starts share.
fn prioritise(pid: u32) -> Result<()> {
    if pid == std::process::id() && Path::new("/proc/self/autogroup").exists() {
        std::fs::write("/proc/self/autogroup", NICE.to_string())
            .context("set the autogroup nice")?;
    }
    let tasks = format!("/proc/{pid}/task");
    let mut command = Command::new("renice");
    command.args(["-n", &NICE.to_string(), "-p"]);
    for task in std::fs::read_dir(&tasks).with_context(|| format!("read {tasks}"))? {
        command.arg(task?.file_name());
    }
    let output = command.output().context("run renice")?;
    if !output.status.success() {
        bail!(
            "renice -n {NICE} (threads of {pid}): {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// `config` (a rendered bootstrap) with the Envoy-side timing log: a file access log in
/// [`envoy_log::FORMAT`] on the listener under test, written only while the runtime key
/// [`TIMING_LOG_KEY`] is 100 (0 by default), and the admin runtime layer that lets the bench set
/// it.
fn with_timing_log(config: &str, log: &Path) -> Result<String> {
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

fn set_timing_log(envoy: &Envoy, on: bool) -> Result<()> {
    let percent = if on { 100 } else { 0 };
    let (status, body) =
        envoy.admin_post(&format!("/runtime_modify?{TIMING_LOG_KEY}={percent}"))?;
    if status != 200 {
        bail!("runtime_modify {TIMING_LOG_KEY}={percent}: {status} {body}");
    }
    Ok(())
}

/// One configuration's timing log file and how much of it earlier runs consumed.
struct TimingLog {
    path: PathBuf,
    consumed: usize,
}

impl TimingLog {
    fn new(path: PathBuf) -> Self {
        Self { path, consumed: 0 }
    }

    /// The figures of the lines the last run added (from `measured_from` on). Envoy 1.40 writes
    /// its file access log when the buffer fills or on `/reopen_logs`, from a flush thread: the
    /// bench asks for a flush and waits until the file stops growing and ends a line.
    fn read_run(&mut self, envoy: &Envoy, measured_from: SystemTime) -> Result<EnvoyTimings> {
        let (status, body) = envoy.admin_post("/reopen_logs")?;
        if status != 200 {
            bail!("reopen_logs: {status} {body}");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last_len = None;
        let text = loop {
            std::thread::sleep(Duration::from_millis(100));
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            let settled = last_len == Some(text.len()) && text.ends_with('\n');
            if settled || Instant::now() > deadline {
                break text;
            }
            last_len = Some(text.len());
        };
        let run = text.get(self.consumed..).unwrap_or_default();
        self.consumed = text.len();
        envoy_log::timings(run, measured_from)
    }
}

/// Switches the threads `ids` to SCHED_FIFO at `priority`, or back to SCHED_OTHER (their nice
/// unchanged) for `None`.
fn set_realtime(ids: &[String], priority: Option<u8>) -> Result<()> {
    for id in ids {
        let mut command = Command::new("chrt");
        match priority {
            Some(priority) => command.args(["-f", "-p", &priority.to_string(), id]),
            None => command.args(["-o", "-p", "0", id]),
        };
        let output = command.output().context("run chrt")?;
        if !output.status.success() {
            bail!(
                "chrt {id} {priority:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    Ok(())
}

/// The thread ids of an Envoy's workers (named `wrk:worker_<n>`).
fn envoy_workers(pid: u32) -> Result<Vec<String>> {
    let tasks = format!("/proc/{pid}/task");
    let mut workers = Vec::new();
    for task in std::fs::read_dir(&tasks).with_context(|| format!("read {tasks}"))? {
        let task = task?;
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if name.starts_with("wrk:worker") {
            workers.push(task.file_name().to_string_lossy().into_owned());
        }
    }
    if workers.is_empty() {
        bail!("Envoy {pid} has no thread named wrk:worker_*");
    }
    Ok(workers)
}

/// The kernel's id of the calling thread (the generator runs on it).
fn current_thread_id() -> Result<String> {
    let link = std::fs::read_link("/proc/thread-self").context("read /proc/thread-self")?;
    link.file_name()
        .map(|tid| tid.to_string_lossy().into_owned())
        .context("/proc/thread-self has no thread id")
}

fn start_upstream(pinned: bool, prioritised: bool) -> Result<Envoy> {
    let config = json!({
        "admin": {"address": loopback(0)},
        "static_resources": {"listeners": [{
            "name": "upstream",
            "address": loopback(0),
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "upstream",
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"},
                                    "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                },
            }]}],
        }]},
    });
    let envoy = Envoy::start_with(EnvoyOptions {
        config_yaml: config.to_string(),
        concurrency: 1,
        log_level: "warn".to_owned(),
        ..EnvoyOptions::default()
    })
    .context("start the upstream Envoy")?;
    if pinned {
        pin(envoy.pid(), "1")?;
    }
    if prioritised {
        prioritise(envoy.pid())?;
    }
    Ok(envoy)
}

fn loopback(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

/// The rules every configuration expresses: `end-user: jason` goes to v2, everyone else to a
/// 90/10 split of v1 and v2; a fault rule that never fires (0 %); a breaker on the clusters.
/// Requests of the benchmark carry no `end-user`, so they take the split (the costlier path):
/// every configuration evaluates the header rule, misses it, then picks a member.
fn config_for(name: &str, upstream_port: u16, wasm_dir: &Path, noop: &Path) -> Result<String> {
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

    let bootstrap = match name {
        "plain" => plain_clusters(Bootstrap::new())
            .route_to_cluster("reviews-v1")
            .forward_internal_headers(),
        "native" => {
            let cluster = |name: &str| {
                let mut cluster = bootstrap::static_cluster(name, upstream_port, false);
                cluster["outlier_detection"] = json!({"consecutive_5xx": 5, "interval": "10s",
                    "base_ejection_time": "30s", "max_ejection_percent": 100});
                cluster["circuit_breakers"] = json!({"thresholds": [{"max_connections": 1024,
                    "max_pending_requests": 1024, "max_requests": 1024, "max_retries": 3}]});
                cluster
            };
            Bootstrap::new()
                .cluster_json(cluster("reviews-v1"))
                .cluster_json(cluster("reviews-v2"))
                .without_access_log()
                .forward_internal_headers()
                .http_filter_json(json!({"name": "envoy.filters.http.fault", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                    "abort": {"http_status": 503, "percentage": {"numerator": 0, "denominator": "HUNDRED"}},
                }}))
                .routes_json(vec![
                    json!({"match": {"prefix": "/", "headers": [
                        {"name": "end-user", "string_match": {"exact": "jason"}}]},
                        "route": {"cluster": "reviews-v2"}}),
                    json!({"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
                        {"name": "reviews-v1", "weight": 90}, {"name": "reviews-v2", "weight": 10}]}}}),
                ])
        }
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
        "sluice-suite-module" => plain_clusters(Bootstrap::new())
            .wasm_filter_at(
                "suite",
                &module("suite")?,
                &json!({
                    "router": router,
                    "canary": {"afterRouter": true, "splits": [split]},
                    "fault": {"afterRouter": true, "faults": [fault_rule]},
                    "breaker": {"afterRouter": true, "default": breaker},
                })
                .to_string(),
            )
            .route_cluster_header(),
        other => bail!("unknown configuration {other}"),
    };
    Ok(bootstrap.render())
}

/// Package, module file name and wasm `root_id` of the no-op filter.
const NOOP_PACKAGE: &str = "sluice-noop-filter";
const NOOP_MODULE: &str = "sluice_noop_filter.wasm";

/// Builds `bench/noop-filter` exactly as the filters are built (release profile of the
/// workspace, then `wasm-opt -Oz`) and returns the module's path.
fn build_noop_filter() -> Result<PathBuf> {
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
fn noop_filter_json(index: usize, module: &Path) -> Value {
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

/// One request through `port` must succeed before the configuration is measured.
fn check_serves(port: u16, name: &str) -> Result<()> {
    let report = sluice_bench::run(&OpenLoop {
        target: SocketAddr::from(([127, 0, 0, 1], port)),
        rate: 50,
        duration: Duration::from_millis(100),
        warmup: Duration::ZERO,
        connections: 1,
        host: HOST.to_owned(),
        path: "/".to_owned(),
        headers: Vec::new(),
    })?;
    if report.sent == 0 || report.errors > 0 {
        bail!(
            "{name}: {} of {} requests failed before the benchmark",
            report.errors,
            report.sent
        );
    }
    Ok(())
}

/// Closed-loop throughput of `port` over `seconds`, by wrk on CPU 1 when pinned.
fn wrk(port: u16, seconds: f64) -> Result<f64> {
    let duration = format!("{}s", seconds.ceil().max(1.0) as u64);
    let url = format!("http://127.0.0.1:{port}/");
    let connections = WRK_CONNECTIONS.to_string();
    let mut command = Command::new("taskset");
    command.args(["-c", "1", "wrk", "-t1", "-c", &connections, "-d", &duration]);
    command.args(["-H", &format!("Host: {HOST}"), &url]);
    if online_cpus() < 2 {
        command = Command::new("wrk");
        command.args(["-t1", "-c", &connections, "-d", &duration]);
        command.args(["-H", &format!("Host: {HOST}"), &url]);
    }
    let output = command.output().context("run wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    if let Some(line) = text.lines().find(|l| l.contains("Non-2xx")) {
        bail!("wrk saw errors against port {port}: {line}");
    }
    text.lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {text}"))
}

/// Nanoseconds `pid` spent on a CPU, all its threads (`/proc/<pid>/task/*/schedstat`).
fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    let tasks = format!("/proc/{pid}/task");
    for task in std::fs::read_dir(&tasks).with_context(|| format!("read {tasks}"))? {
        let path = task?.path().join("schedstat");
        // A thread may exit between listing and reading.
        if let Ok(text) = std::fs::read_to_string(&path) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

fn requests(envoy: &Envoy) -> Result<u64> {
    let name = format!("http.{}.downstream_rq_total", bootstrap::STAT_PREFIX);
    envoy
        .stat(&name)
        .with_context(|| format!("Envoy has no stat {name}"))
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

/// The median of `values` (the mean of the middle two for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn median_u64(values: impl Iterator<Item = u64>) -> f64 {
    median(&values.map(|v| v as f64).collect::<Vec<_>>())
}

/// A synthetic mesh: `services` ServiceEntries with `subsets` labelled endpoints each, a
/// DestinationRule with the subsets, and a VirtualService with `rules` http routes (header
/// matches on subsets, the last one a default).
pub fn synthetic_mesh(services: u32, subsets: u32, rules: u32) -> String {
    let mut mesh = String::new();
    for i in 0..services {
        let (a, b) = (i / 250, i % 250);
        let _ = write!(
            mesh,
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc{i}}}\n\
             spec:\n  hosts: [svc{i}]\n  ports: [{{number: 8000, name: http, protocol: HTTP}}]\n  \
             resolution: STATIC\n  endpoints:\n"
        );
        for s in 0..subsets {
            let _ = writeln!(
                mesh,
                "  - {{address: 10.{s}.{a}.{b}, labels: {{version: v{s}}}}}"
            );
        }
        let _ = write!(
            mesh,
            "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc{i}}}\n\
             spec:\n  host: svc{i}\n  subsets:\n"
        );
        for s in 0..subsets {
            let _ = writeln!(mesh, "  - {{name: v{s}, labels: {{version: v{s}}}}}");
        }
        let _ = write!(
            mesh,
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc{i}}}\n\
             spec:\n  hosts: [svc{i}]\n  http:\n"
        );
        for r in 0..rules.saturating_sub(1) {
            let s = r % subsets.max(1);
            let _ = writeln!(
                mesh,
                "  - match: [{{headers: {{end-user: {{exact: user{r}}}}}}}]\n    \
                 route: [{{destination: {{host: svc{i}, subset: v{s}}}}}]"
            );
        }
        let _ = writeln!(
            mesh,
            "  - route:\n    - {{destination: {{host: svc{i}, subset: v0}}, weight: 90}}\n    \
             - {{destination: {{host: svc{i}, subset: v1}}, weight: 10}}\n---"
        );
    }
    mesh
}

fn builder_scale(wasm_dir: &Path) -> Result<BuilderScale> {
    let shape = (1000, 3, 10);
    crate::run(crate::cargo(&["build", "--release", "-p", "sluice"]))?;
    let binary = crate::target_dir().join("release").join("sluice");
    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-mesh-")
        .tempdir()?;
    let input = dir.path().join("mesh.yaml");
    let mesh = synthetic_mesh(shape.0, shape.1, shape.2);
    std::fs::write(&input, &mesh)?;
    let out = dir.path().join("out");
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let output = Command::new(&binary)
            .args(["generate", "-f"])
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .arg("--wasm-dir")
            .arg(wasm_dir)
            .output()
            .context("run sluice generate")?;
        times.push(started.elapsed().as_secs_f64());
        if !output.status.success() {
            bail!(
                "sluice generate failed on the synthetic mesh:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    let mut output_bytes = 0;
    for entry in std::fs::read_dir(&out)? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            output_bytes += meta.len();
        }
    }
    let started = Instant::now();
    let validated = Envoy::validate(&out.join("envoy.yaml"))?;
    let validate = started.elapsed();
    if !validated.status.success() {
        bail!(
            "envoy --mode validate refused the generated mesh:\n{}",
            String::from_utf8_lossy(&validated.stderr)
        );
    }
    Ok(BuilderScale {
        shape,
        input_bytes: mesh.len() as u64,
        generate: Duration::from_secs_f64(median(&times)),
        output_bytes,
        validate,
    })
}

/// CPUs of the machine (not of this process, whose affinity the bench narrows to CPU 1).
fn online_cpus() -> usize {
    Command::new("nproc")
        .arg("--all")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(1)
}

fn machine() -> String {
    let cpus = online_cpus();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    format!("{cpus} CPUs ({model}), Linux {kernel}")
}

fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn render(
    report: &Report,
    options: &BenchOptions,
    pinned: bool,
    prioritised: bool,
    realtime: bool,
) -> String {
    let mut md = String::new();
    let get = |name: &str| report.configs.get(name).cloned().unwrap_or_default();
    let plain = get("plain");
    let native = get("native");
    let plain_rps = median(&plain.rps);
    let native_rps = median(&native.rps);
    let native_p99 = median_u64(native.latency.iter().map(|l| l.p99_us));
    let _ = writeln!(md, "# sluice benchmarks\n");
    let _ = writeln!(
        md,
        "Measured {} on {}. Command: `{}` ({} round(s) of {} s per phase{}{}{}).\n",
        today(),
        machine(),
        options.command_line,
        options.runs,
        options.duration,
        if pinned {
            "; Envoy under test pinned to CPU 0, upstream Envoy, wrk and the open-loop generator to CPU 1"
        } else {
            "; NOT pinned (fewer than 2 CPUs or no taskset)"
        },
        if prioritised {
            format!("; all of them at nice {NICE}")
        } else {
            "; default priority (renice refused)".to_owned()
        },
        if realtime {
            "; Envoy workers and the generator SCHED_FIFO during the open-loop runs"
        } else {
            "; Envoy workers and the generator at normal priority during the open-loop runs"
        }
    );
    let _ = writeln!(
        md,
        "Envoy 1.40 at `--concurrency 1`; upstream: a second Envoy answering `200 ok` itself \
         (`direct_response`). Every configuration routes requests without `end-user` through \
         a header rule (missed) and a 90/10 split; fault rules never fire (0 %). Medians over \
         rounds; rounds interleave configurations. See `xtask/src/bench.rs` for the exact \
         configurations.\n"
    );
    let _ = writeln!(
        md,
        "## Closed-loop throughput and CPU (wrk, {WRK_CONNECTIONS} connections)\n"
    );
    let _ = writeln!(
        md,
        "| configuration | req/s | vs plain | vs native | Envoy CPU us/req | CPU over plain | capacity vs plain (CPU) | RSS MiB |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let plain_cpu = median(&plain.cpu_us_per_request);
    for name in CONFIGS.iter().filter(|n| report.configs.contains_key(**n)) {
        let c = get(name);
        let rps = median(&c.rps);
        let cpu = median(&c.cpu_us_per_request);
        let _ = writeln!(
            md,
            "| {name} | {rps:.0} | {:.1} % | {:.1} % | {cpu:.1} | {:+.1} | {:.1} % | {:.1} |",
            100.0 * rps / plain_rps,
            100.0 * rps / native_rps,
            cpu - plain_cpu,
            100.0 * plain_cpu / cpu,
            c.rss_kib as f64 / 1024.0
        );
    }
    let _ = writeln!(
        md,
        "\n## Open-loop latency at {} req/s (half the plain peak; microseconds from the intended send time)\n",
        report.open_loop_rps
    );
    let _ = writeln!(
        md,
        "One generator thread (epoll, a timerfd for the schedule) over a pool of {OPEN_LOOP_CONNECTIONS} \
         keep-alive connections. The send lag is how late the generator wrote requests after \
         their intended time (part of every figure here); a peak in flight equal to the pool \
         means requests also waited for a connection.\n"
    );
    let _ = writeln!(
        md,
        "| configuration | p50 | p90 | p99 | p99.9 | p99 over native | errors | generator send lag p99 | peak in flight |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for name in CONFIGS.iter().filter(|n| report.configs.contains_key(**n)) {
        let c = get(name);
        let pick = |f: fn(&OpenLoopReport) -> u64| median_u64(c.latency.iter().map(f));
        let p99 = pick(|l| l.p99_us);
        let _ = writeln!(
            md,
            "| {name} | {:.0} | {:.0} | {p99:.0} | {:.0} | {:+.0} | {} | {:.0} | {} |",
            pick(|l| l.p50_us),
            pick(|l| l.p90_us),
            pick(|l| l.p999_us),
            p99 - native_p99,
            c.latency.iter().map(|l| l.errors).sum::<u64>(),
            pick(|l| l.send_lag_p99_us),
            c.latency
                .iter()
                .map(|l| l.peak_in_flight)
                .max()
                .unwrap_or(0),
        );
    }
    render_envoy_side(&mut md, report);
    let _ = writeln!(md, "\n## Module sizes\n");
    let _ = writeln!(md, "| module | bytes | budget 250 KB (256,000 B) |");
    let _ = writeln!(md, "| --- | ---: | --- |");
    for (filter, size) in &report.module_sizes {
        let verdict = if *size <= 256_000 { "met" } else { "MISSED" };
        let _ = writeln!(
            md,
            "| {} | {size} | {verdict} |",
            sluice_core::wire::module_file(filter)
        );
    }
    if let Some(b) = &report.builder {
        let _ = writeln!(
            md,
            "\n## Builder at scale\n\n{} services x {} subsets x {} rules ({} bytes of YAML): \
             `sluice generate` (release) {:.3} s (median of 3), output {} bytes; \
             `envoy --mode validate` on it {:.2} s.",
            b.shape.0,
            b.shape.1,
            b.shape.2,
            b.input_bytes,
            b.generate.as_secs_f64(),
            b.output_bytes,
            b.validate.as_secs_f64()
        );
    }
    md
}

/// The Envoy-side latency table: the same open-loop runs, timed by the Envoy under test itself.
fn render_envoy_side(md: &mut String, report: &Report) {
    let get = |name: &str| report.configs.get(name).cloned().unwrap_or_default();
    let pick = |c: &ConfigResult, f: fn(&EnvoyTimings) -> f64| {
        median(&c.envoy.iter().map(f).collect::<Vec<_>>())
    };
    let native = get("native");
    let native_held = pick(&native, |t| t.held.p99_us);
    let native_own = pick(&native, |t| t.own.p99_us);
    let _ = writeln!(
        md,
        "\n## Open-loop latency inside Envoy (its access log; microseconds)\n"
    );
    let _ = writeln!(
        md,
        "Envoy's own time points, so no generator lag is in them. **held**: \
         `%COMMON_DURATION(DS_RX_BEG:DS_TX_END:ns)%`, first request byte parsed to last response \
         byte written, the upstream exchange included. **own**: held minus \
         `US_TX_BEG:US_RX_END` (first byte sent upstream to the upstream response's end), per \
         request: the proxy's part, filters included, without the upstream's noise. Not seen: \
         time a request queued in the socket before the worker read it (a busy worker; the \
         client-side table shows it), and work after the response's last byte (logging, wasm \
         `on_log`/`on_done`), which delays the next request rather than this one. Each round \
         times a second open-loop run right after the client-side one, with the log on (its \
         writes lengthened some client-side tails: last column); lines of the measured window \
         only; medians over rounds.\n"
    );
    let _ = writeln!(
        md,
        "| configuration | held p50 | held p90 | held p99 | held p99.9 | held p99 over native | own p50 | own p99 | own p99.9 | own p99 over native | upstream p99 | requests logged | client p99 of these runs |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for name in CONFIGS.iter().filter(|n| report.configs.contains_key(**n)) {
        let c = get(name);
        let held_p99 = pick(&c, |t| t.held.p99_us);
        let own_p99 = pick(&c, |t| t.own.p99_us);
        let _ = writeln!(
            md,
            "| {name} | {:.1} | {:.1} | {held_p99:.1} | {:.1} | {:+.1} | {:.1} | {own_p99:.1} | {:.1} | {:+.1} | {:.1} | {} | {:.0} |",
            pick(&c, |t| t.held.p50_us),
            pick(&c, |t| t.held.p90_us),
            pick(&c, |t| t.held.p999_us),
            held_p99 - native_held,
            pick(&c, |t| t.own.p50_us),
            pick(&c, |t| t.own.p999_us),
            own_p99 - native_own,
            pick(&c, |t| t.upstream.p99_us),
            c.envoy.iter().map(|t| t.requests).sum::<u64>(),
            median_u64(c.logged_latency.iter().map(|l| l.p99_us)),
        );
    }
}

/// Shrinks every filter module in `dir` in place with binaryen (installed with apt-get when
/// missing): the exports no HTTP filter is called through are dropped (`wasm-metadce`), then
/// `wasm-opt -Oz` (measured figures in BENCHMARKS.md). The harness and the builder read these very files. cargo re-links its
/// unoptimised copy on every build, so this runs after each build (a few seconds).
pub fn optimize_modules(dir: &Path) -> Result<()> {
    crate::apt::ensure("wasm-opt", &["--version"], "binaryen")?;
    for filter in wasm::MODULES {
        optimize_module(&wasm::module_in(dir, filter)?)?;
    }
    Ok(())
}

/// Export trim, then `wasm-opt -Oz`, on one module, in place: the very steps of `sluice build`
/// ([`sluice::build::optimize_module`]).
fn optimize_module(path: &Path) -> Result<()> {
    sluice::build::optimize_module(path, path)
        .map(drop)
        .map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn synthetic_mesh_generates() {
        let mesh = synthetic_mesh(3, 3, 4);
        let inputs = sluice::Inputs::from_text("mesh.yaml", &mesh);
        let options = sluice::Options {
            wasm: sluice::WasmModules::Reference(PathBuf::from("/nonexistent")),
            ..sluice::Options::default()
        };
        let output = sluice::generate(&inputs, &options).unwrap_or_else(|d| panic!("{d}"));
        assert!(output.files.contains_key("envoy.yaml"));
    }

    /// The smoke run of the benchmark: every configuration gets figures through a real Envoy
    /// (no timing assertion: the machine is shared).
    #[test]
    fn quick_bench_measures_every_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let options = BenchOptions {
            duration: 1.0,
            runs: 1,
            quick: true,
            output: dir.path().join("BENCHMARKS.md"),
            command_line: "cargo test -p xtask quick_bench".to_owned(),
        };
        let report = bench(&options, &wasm::module_dir()).unwrap();
        for name in CONFIGS {
            let c = &report.configs[name];
            assert!(c.rps.len() == 1 && c.rps[0] > 0.0, "{name}: {c:?}");
            assert!(c.cpu_us_per_request[0] > 0.0, "{name}: {c:?}");
            assert!(
                c.latency.len() == 1 && c.latency[0].sent > 0,
                "{name}: {c:?}"
            );
            assert_eq!(c.latency[0].errors, 0, "{name}: {c:?}");
            // Envoy logged the measured requests itself (a few at the window's edges may fall
            // either side of it: Envoy stamps their start a little after their intended time).
            let envoy = &c.envoy[0];
            let logged = &c.logged_latency[0];
            assert!(
                envoy.requests + 5 >= logged.sent && envoy.skipped == 0 && logged.errors == 0,
                "{name}: {envoy:?} vs {logged:?}"
            );
            assert!(
                envoy.own.p50_us > 0.0 && envoy.own.p50_us < envoy.held.p50_us,
                "{name}: {envoy:?}"
            );
            assert!(c.rss_kib > 0, "{name}");
        }
        assert_eq!(report.module_sizes.len(), wasm::MODULES.len());
        let markdown = std::fs::read_to_string(&options.output).unwrap();
        for name in CONFIGS {
            assert_eq!(
                markdown.matches(&format!("\n| {name} |")).count(),
                3,
                "{name}: one row in each of the throughput, client and Envoy latency tables\n{markdown}"
            );
        }
    }
}
