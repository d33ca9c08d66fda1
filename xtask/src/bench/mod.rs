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
//!   nice [`NICE`](load::NICE): the machine is shared, and a neighbour's compiler must not preempt a worker
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
//!
//! Layout: [`configs`] (what each Envoy under test is given, and which configurations a run
//! measures), [`load`] (the upstream, pinning and priorities, wrk, the timing log, the figures
//! read back from the processes), [`report`] (medians and the markdown of BENCHMARKS.md) and
//! [`builder_scale`] (the builder's time on a large mesh); this file runs the rounds.
//!
//! The other benches, each its own `cargo xtask bench <part>` writing its own section of
//! BENCHMARKS.md ([`report::upsert_section`], below the notes marker, so the data-plane run
//! keeps them):
//! - [`control_plane`] (issue 20): change-to-ACK through `sluice serve` ([`serve_process`])
//!   for a fleet of ADS streams ([`ads_load`]) and real Envoys; serve's CPU and RSS
//!   ([`procfs`]);
//! - [`store`] (issue 21): apply-to-ACK through a real etcd cluster and two serve replicas;
//! - [`probes`] (issue 22): the central prober's probes per second and CPU;
//! - [`builder_compare`] (issue 19): the builder's time now against the commit before its
//!   re-layout, and the module sizes re-measured.

mod ads_load;
mod builder_compare;
mod builder_scale;
mod configs;
mod control_plane;
mod load;
mod probes;
mod procfs;
mod report;
mod serve_process;
mod store;

pub use builder_compare::{BuilderOptions, PRE_RELAYOUT, builder};
pub use control_plane::{ControlPlaneOptions, control_plane};
pub use probes::{ProbeOptions, probes};
pub use store::{StoreOptions, store};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sluice_bench::envoy_log::EnvoyTimings;
use sluice_bench::{OpenLoop, OpenLoopReport};
use sluice_integration::bootstrap::LISTENER_NAME;
use sluice_integration::envoy::{Envoy, EnvoyOptions};
use sluice_integration::wasm;

use self::builder_scale::builder_scale;
use self::configs::{HOST, build_noop_filter, config_for, selected_configs, with_timing_log};
use self::load::{
    GENERATOR_RT_PRIORITY, OPEN_LOOP_CONNECTIONS, TimingLog, WORKER_RT_PRIORITY, check_serves,
    cpu_ns, current_thread_id, ensure_wrk, envoy_workers, pin, pin_self_to_cpu1, prioritise,
    requests, rss_kib, set_realtime, set_timing_log, start_upstream, wrk,
};
use self::report::{NOTES_MARKER, median, render};

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
    use super::configs::CONFIGS;
    use super::*;

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
