//! Load generation and measurement: the upstream Envoy, CPU pinning and scheduling priority,
//! wrk for closed-loop throughput, the Envoy-side timing log for the open-loop runs, and the
//! figures read back from `/proc` and Envoy (CPU time, requests, RSS).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use serde_json::json;
use sluice_bench::OpenLoop;
use sluice_bench::envoy_log::{self, EnvoyTimings};
use sluice_integration::bootstrap;
use sluice_integration::envoy::{Envoy, EnvoyOptions};

use super::configs::{HOST, loopback};

/// Wrk connections for the closed-loop phase: enough to keep a single worker busy.
pub(super) const WRK_CONNECTIONS: u32 = 16;

/// Open-loop connection pool: a due request takes any idle one, so it waits for a connection
/// only when all are busy. At half the plain peak about 5 requests are in flight (11,500 req/s x
/// ~0.45 ms); 64 leaves room for a stall of several milliseconds before the pool runs dry (the
/// report's peak in flight shows whether it did).
pub(super) const OPEN_LOOP_CONNECTIONS: u32 = 64;

/// Scheduling priority of the measured processes (see the module documentation).
pub const NICE: i32 = -10;

/// SCHED_FIFO priority of the Envoy workers (under test, upstream) during the open-loop runs.
pub const WORKER_RT_PRIORITY: u8 = 1;

/// SCHED_FIFO priority of the generator's thread during the open-loop runs: above the upstream
/// worker it shares CPU 1 with, so that sending on time never waits for the upstream's work.
pub const GENERATOR_RT_PRIORITY: u8 = 2;

/// Runtime key switching the Envoy-side timing log on (100) and off (0).
pub(super) const TIMING_LOG_KEY: &str = "sluice_bench.timing_log";

/// `wrk` on PATH, else installed from Debian.
pub(super) fn ensure_wrk() -> Result<()> {
    crate::apt::ensure("wrk", &["--version"], "wrk")
}

/// Pins this process (the open-loop generator's threads are spawned later and inherit it) to
/// CPU 1, when the machine has two CPUs or more and `taskset` exists. Returns whether the
/// setup is pinned.
pub(super) fn pin_self_to_cpu1() -> bool {
    online_cpus() >= 2 && pin(std::process::id(), "1").is_ok()
}

pub(super) fn pin(pid: u32, cpu: &str) -> Result<()> {
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
pub(super) fn prioritise(pid: u32) -> Result<()> {
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

pub(super) fn set_timing_log(envoy: &Envoy, on: bool) -> Result<()> {
    let percent = if on { 100 } else { 0 };
    let (status, body) =
        envoy.admin_post(&format!("/runtime_modify?{TIMING_LOG_KEY}={percent}"))?;
    if status != 200 {
        bail!("runtime_modify {TIMING_LOG_KEY}={percent}: {status} {body}");
    }
    Ok(())
}

/// One configuration's timing log file and how much of it earlier runs consumed.
pub(super) struct TimingLog {
    path: PathBuf,
    consumed: usize,
}

impl TimingLog {
    pub(super) fn new(path: PathBuf) -> Self {
        Self { path, consumed: 0 }
    }

    /// The figures of the lines the last run added (from `measured_from` on). Envoy 1.40 writes
    /// its file access log when the buffer fills or on `/reopen_logs`, from a flush thread: the
    /// bench asks for a flush and waits until the file stops growing and ends a line.
    pub(super) fn read_run(
        &mut self,
        envoy: &Envoy,
        measured_from: SystemTime,
    ) -> Result<EnvoyTimings> {
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
pub(super) fn set_realtime(ids: &[String], priority: Option<u8>) -> Result<()> {
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
pub(super) fn envoy_workers(pid: u32) -> Result<Vec<String>> {
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
pub(super) fn current_thread_id() -> Result<String> {
    let link = std::fs::read_link("/proc/thread-self").context("read /proc/thread-self")?;
    link.file_name()
        .map(|tid| tid.to_string_lossy().into_owned())
        .context("/proc/thread-self has no thread id")
}

pub(super) fn start_upstream(pinned: bool, prioritised: bool) -> Result<Envoy> {
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

/// One request through `port` must succeed before the configuration is measured.
pub(super) fn check_serves(port: u16, name: &str) -> Result<()> {
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
pub(super) fn wrk(port: u16, seconds: f64) -> Result<f64> {
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
pub(super) fn cpu_ns(pid: u32) -> Result<u64> {
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

pub(super) use super::procfs::rss_kib;

pub(super) fn requests(envoy: &Envoy) -> Result<u64> {
    let name = format!("http.{}.downstream_rq_total", bootstrap::STAT_PREFIX);
    envoy
        .stat(&name)
        .with_context(|| format!("Envoy has no stat {name}"))
}

/// CPUs of the machine (not of this process, whose affinity the bench narrows to CPU 1).
pub(super) fn online_cpus() -> usize {
    Command::new("nproc")
        .arg("--all")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(1)
}
