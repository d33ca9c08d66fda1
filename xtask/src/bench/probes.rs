//! `cargo xtask bench probes` (issue 22): what central health checking costs the control
//! plane. The prober of `sluice serve` ([`Prober`], one task per endpoint, spread over the
//! period) probes `endpoints` local upstreams, each a listening socket of its own on
//! 127.0.0.1, once per interval: first with HTTP GET probes, then with TCP connect probes.
//!
//! The prober runs on a tokio runtime of its own whose threads are named `prober`, the
//! upstreams on another (`upstreams`), both in this process: the CPU time of the prober's
//! threads (`/proc/self/task/*/stat`, user + system: the kernel's share of each connect
//! counts) is what the probes cost the control plane, and the upstreams' is reported apart.
//! Probes per second are counted twice: by the prober (its per-endpoint probe counters) and by
//! the upstreams (connections accepted, HTTP requests answered).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice::probe::run::{Prober, Target};
use sluice::probe::spec::{Check, Probe};
use sluice::probe::tracker::Health;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::control_plane::load_average;
use super::load::{NICE, prioritise};
use super::procfs::thread_cpu_seconds;
use super::report::{machine, today, upsert_section};

/// What to run.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Endpoints probed.
    pub endpoints: usize,
    /// The probe period of every endpoint.
    pub interval: Duration,
    /// Seconds measured per kind of check (after one period of warm-up).
    pub seconds: u64,
    /// N, the proxies of the Envoy-side comparison.
    pub proxies: u64,
    /// The report to update (its probes section).
    pub output: PathBuf,
    /// The command line to print.
    pub command_line: String,
}

/// One kind of check, measured.
#[derive(Debug, Clone)]
pub struct ProbeRun {
    /// `HTTP GET` or `TCP connect`.
    pub check: &'static str,
    /// Seconds measured.
    pub window: f64,
    /// Probes the prober ran in the window, per second.
    pub probes_per_second: f64,
    /// Probes the upstreams saw in the window, per second.
    pub answered_per_second: f64,
    /// CPU seconds of the prober's threads in the window.
    pub prober_cpu: f64,
    /// CPU seconds of the upstreams' threads in the window.
    pub upstream_cpu: f64,
    /// Endpoints healthy at the end.
    pub healthy: usize,
}

/// The run's figures.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// The options run.
    pub options: ProbeOptions,
    /// Each kind of check.
    pub runs: Vec<ProbeRun>,
    /// Load average at the start.
    pub load_average: String,
    /// Whether the prober and upstreams ran at nice [`NICE`].
    pub prioritised: bool,
}

/// Counts of what the upstreams saw.
#[derive(Debug, Default)]
struct Seen {
    connections: AtomicU64,
    requests: AtomicU64,
}

/// Runs the probe bench and writes its section of the report.
pub fn probes(options: &ProbeOptions) -> Result<ProbeReport> {
    let load_average = load_average();
    // The runtimes' threads, created below, inherit it.
    let prioritised = prioritise(std::process::id()).is_ok();
    let upstreams = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("upstreams")
        .enable_all()
        .build()?;
    let seen = Arc::new(Seen::default());
    let ports = upstreams.block_on(listen(options.endpoints, seen.clone()))?;
    let prober_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("prober")
        .enable_all()
        .build()?;
    let pid = std::process::id();
    let mut runs = Vec::new();
    for (name, http) in [("HTTP GET", true), ("TCP connect", false)] {
        eprintln!(
            "bench probes: {name} to {} endpoints every {:?}, {} s",
            options.endpoints, options.interval, options.seconds
        );
        let _entered = prober_runtime.enter();
        let prober = Prober::new();
        prober.set_targets(
            ports
                .iter()
                .map(|port| target(*port, http, options.interval))
                .collect(),
        );
        // Every endpoint's first probe falls within the first period.
        std::thread::sleep(options.interval + Duration::from_millis(500));
        let probes_before = probes_run(&prober);
        let seen_before = seen_count(&seen, http);
        let cpu_before = thread_cpu_seconds(pid, "prober");
        let upstream_before = thread_cpu_seconds(pid, "upstreams");
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs(options.seconds));
        let window = started.elapsed().as_secs_f64();
        let run = ProbeRun {
            check: name,
            window,
            probes_per_second: (probes_run(&prober) - probes_before) as f64 / window,
            answered_per_second: (seen_count(&seen, http) - seen_before) as f64 / window,
            prober_cpu: thread_cpu_seconds(pid, "prober") - cpu_before,
            upstream_cpu: thread_cpu_seconds(pid, "upstreams") - upstream_before,
            healthy: prober
                .status()
                .iter()
                .filter(|s| s.health == Health::Healthy)
                .count(),
        };
        drop(prober);
        if run.probes_per_second == 0.0 {
            bail!("{name}: the prober ran no probe");
        }
        runs.push(run);
    }
    prober_runtime.shutdown_timeout(Duration::from_secs(5));
    upstreams.shutdown_timeout(Duration::from_secs(5));
    let report = ProbeReport {
        options: options.clone(),
        runs,
        load_average,
        prioritised,
    };
    let section = render(&report);
    upsert_section(&options.output, "probes", &section)?;
    println!("{section}");
    Ok(report)
}

fn target(port: u16, http: bool, interval: Duration) -> Target {
    let check = if http {
        Check::Http {
            port,
            path: "/healthz".to_owned(),
            host: None,
            headers: Vec::new(),
        }
    } else {
        Check::Tcp { port }
    };
    Target {
        address: "127.0.0.1".to_owned(),
        probe: Probe {
            check,
            initial_delay: Duration::ZERO,
            timeout: Duration::from_secs(1),
            period: interval,
            success_threshold: 1,
            failure_threshold: 3,
        },
    }
}

fn probes_run(prober: &Prober) -> u64 {
    prober.status().iter().map(|s| s.probes).sum()
}

fn seen_count(seen: &Seen, http: bool) -> u64 {
    if http {
        seen.requests.load(Ordering::Relaxed)
    } else {
        seen.connections.load(Ordering::Relaxed)
    }
}

/// `count` upstreams, each a listener on its own loopback port that answers any HTTP request
/// with `200 ok` and closes; a connection closed without a request (a TCP probe) counts too.
async fn listen(count: usize, seen: Arc<Seen>) -> Result<Vec<u16>> {
    let mut ports = Vec::new();
    for _ in 0..count {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind an upstream")?;
        ports.push(listener.local_addr()?.port());
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                seen.connections.fetch_add(1, Ordering::Relaxed);
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    let mut request = Vec::new();
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buffer[..n]);
                        if request.windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    seen.requests.fetch_add(1, Ordering::Relaxed);
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                    let _ = socket.shutdown().await;
                });
            }
        });
    }
    Ok(ports)
}

fn render(report: &ProbeReport) -> String {
    let o = &report.options;
    let interval = o.interval.as_secs_f64();
    let central = o.endpoints as f64 / interval;
    let envoy_side = o.proxies as f64 * o.endpoints as f64 / interval;
    let mut md = String::new();
    let _ = writeln!(md, "## Central health checks (issue 22)\n");
    let _ = writeln!(
        md,
        "Measured {} on {} (load average {} at the start: a shared machine, other engineers \
         compiling and testing beside it; {}). Command: `{}`.\n",
        today(),
        machine(),
        report.load_average,
        if report.prioritised {
            format!("the prober and the upstreams at nice {NICE} with their session's autogroup")
        } else {
            "default priority (renice refused)".to_owned()
        },
        o.command_line
    );
    let _ = writeln!(
        md,
        "The prober of `sluice serve` (`sluice::probe::run::Prober`: one task per endpoint, the \
         first probes spread over one period) on {} endpoints, each a listening socket of its \
         own on 127.0.0.1 answering `200 ok`, every {interval} s (timeout 1 s), on a tokio \
         runtime of 2 threads of its own; {} s measured per kind of check after one period \
         of warm-up. CPU: user + system time of the prober's threads (the kernel's work for \
         its connects included); the upstreams run on other threads of the same process and \
         their CPU is shown apart.\n",
        o.endpoints, o.seconds
    );
    let _ = writeln!(
        md,
        "| check | probes/s run (prober) | probes/s answered (upstreams) | due: M / interval | prober CPU s per minute | prober CPU per probe (us) | upstreams' CPU s per minute | healthy at the end |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in &report.runs {
        let per_minute = |cpu: f64| cpu / r.window * 60.0;
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} | {central:.0} | {:.2} | {:.0} | {:.2} | {} of {} |",
            r.check,
            r.probes_per_second,
            r.answered_per_second,
            per_minute(r.prober_cpu),
            r.prober_cpu / (r.probes_per_second * r.window).max(1.0) * 1e6,
            per_minute(r.upstream_cpu),
            r.healthy,
            o.endpoints
        );
    }
    let _ = writeln!(
        md,
        "\nEnvoy-side health checking instead (every proxy probes every endpoint): N x M = \
         {} x {} = {:.0} probes per interval, {:.0} probes/s over the fleet, {} per endpoint \
         per interval, against M = {} per interval (one per endpoint) with the control plane \
         probing once and telling every proxy through EDS: {}x fewer probes.",
        o.proxies,
        o.endpoints,
        envoy_side * interval,
        envoy_side,
        o.proxies,
        o.endpoints,
        o.proxies
    );
    md
}
