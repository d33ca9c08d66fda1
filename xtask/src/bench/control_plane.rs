//! `cargo xtask bench control-plane` (issue 20): how fast a change on disk reaches a fleet
//! through `sluice serve`, and what serving a large mesh costs.
//!
//! - The mesh: [`synthetic_service`] for each of `services` services (3 subsets, 10 rules, a
//!   90/10 canary split), one file per service, as a GitOps tree holds them.
//! - `sluice serve` (release) on that folder, in a process of its own ([`ServeProcess`]).
//! - The fleet: `streams` ADS streams of the load generator ([`Fleet`]) plus `envoys` real
//!   Envoys (bootstrap from `sluice generate --target envoy-xds`, the first in state of the
//!   world, the second in delta, `--concurrency 1`), all in group `mesh`.
//! - Three changes, `repetitions` times each, one at a time, each once the machine is idle
//!   again ([`wait_for_idle_machine`]): one service's canary weight (only
//!   the filter configs change: ECDS), one service added (a new file), everything (every file
//!   rewritten: endpoints, weights, rule values and every cluster's connect timeout).
//! - Change-to-ACK: from just before the file is renamed into place (the write is atomic) to
//!   the stream's last ACK of what the change caused; a repetition's figure is its LAST
//!   stream's. A repetition ends when serve's `sluice_serve_change_to_ack_seconds` has counted
//!   every proxy (the Envoys included) and the generator's streams have been quiet for
//!   [`QUIET`].
//! - Serve's CPU (`/proc/PID/stat`) over each change's repetitions; its peak RSS (`VmHWM`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use sluice_integration::envoy::{Envoy, EnvoyOptions};

use super::ads_load::{Fleet, StreamLog};
use super::builder_scale::{Variant, release_binary, synthetic_service};
use super::load::{NICE, prioritise};
use super::report::{machine, median, today, upsert_section};
use super::serve_process::{Metrics, ServeProcess};

/// Subsets and rules per service of the benchmark mesh (as the builder-at-scale figure).
pub const SUBSETS: u32 = 3;
/// Rules per service.
pub const RULES: u32 = 10;
/// How long the generator's streams must have received nothing before a change counts as
/// settled (after serve has counted every proxy's ACK).
const QUIET: Duration = Duration::from_millis(300);
/// The longest a change may take before the bench gives up.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(300);
/// How often serve's `/metrics` is read while a change travels (only to see that it has
/// settled: the figures come from the streams' own clocks).
const POLL: Duration = Duration::from_millis(100);

/// What to run.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// Services in the mesh.
    pub services: u32,
    /// ADS streams of the load generator.
    pub streams: usize,
    /// The generator's streams in delta xDS instead of state of the world.
    pub delta: bool,
    /// Real Envoys joining too.
    pub envoys: usize,
    /// Repetitions of each change.
    pub repetitions: usize,
    /// The report to update (its control-plane section).
    pub output: PathBuf,
    /// The command line to print.
    pub command_line: String,
}

/// The mesh folder: one file per service.
pub struct MeshDir {
    dir: tempfile::TempDir,
    /// Services written so far (`svc0` .. `svc<n-1>`).
    pub services: u32,
}

impl MeshDir {
    /// A new folder with `services` services of the default [`Variant`].
    pub fn create(services: u32) -> Result<MeshDir> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-bench-serve-")
            .tempdir()?;
        for i in 0..services {
            std::fs::write(
                dir.path().join(file_name(i)),
                synthetic_service(i, SUBSETS, RULES, &Variant::default()),
            )?;
        }
        Ok(MeshDir { dir, services })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes service `i` with `variant` aside (a name serve does not read) and returns the
    /// rename that puts it in place.
    fn stage(&self, i: u32, variant: &Variant) -> Result<(PathBuf, PathBuf)> {
        let name = file_name(i);
        let aside = self.path().join(format!(".{name}.tmp"));
        std::fs::write(&aside, synthetic_service(i, SUBSETS, RULES, variant))?;
        Ok((aside, self.path().join(name)))
    }

    /// Replaces (or adds) service `i`: written aside, then renamed into place. Returns the
    /// instant just before the rename, where the change-to-ACK clock starts.
    pub fn put(&mut self, i: u32, variant: &Variant) -> Result<Instant> {
        let (aside, path) = self.stage(i, variant)?;
        let at = Instant::now();
        std::fs::rename(aside, path)?;
        self.services = self.services.max(i + 1);
        Ok(at)
    }

    /// Rewrites every service with `variant`: all written aside first, then renamed into place
    /// one after the other (well within serve's debounce). Returns the instant before the
    /// first rename.
    pub fn put_all(&mut self, variant: &Variant) -> Result<Instant> {
        let staged = (0..self.services)
            .map(|i| self.stage(i, variant))
            .collect::<Result<Vec<_>>>()?;
        let at = Instant::now();
        for (aside, path) in staged {
            std::fs::rename(aside, path)?;
        }
        Ok(at)
    }
}

fn file_name(i: u32) -> String {
    format!("svc-{i:05}.yaml")
}

/// The three changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// One service's canary weights.
    Weight,
    /// One new service.
    AddService,
    /// Every service: endpoints, weights, rules, cluster settings.
    Everything,
}

impl Change {
    const ALL: [Change; 3] = [Change::Weight, Change::AddService, Change::Everything];

    fn title(self) -> &'static str {
        match self {
            Change::Weight => "one canary weight",
            Change::AddService => "one service added",
            Change::Everything => "everything",
        }
    }

    /// Makes repetition `k` of the change; returns when the clock starts.
    fn apply(self, mesh: &mut MeshDir, k: usize) -> Result<Instant> {
        let k = k as u32;
        match self {
            // 89/11, 88/12, ...: a new weight each time.
            Change::Weight => mesh.put(
                0,
                &Variant {
                    weight_v0: 89 - k % 80,
                    ..Variant::default()
                },
            ),
            Change::AddService => {
                let next = mesh.services;
                mesh.put(next, &Variant::default())
            }
            Change::Everything => mesh.put_all(&Variant {
                weight_v0: 70 - k % 60,
                address_shift: 1 + k % 30,
                rule_suffix: format!("-{}", k + 1),
                connect_timeout: Some(format!("{}ms", 1001 + k)),
            }),
        }
    }
}

/// One repetition of a change.
#[derive(Debug, Clone, Default)]
pub struct Repetition {
    /// Seconds from the write to the last generator stream's ACK.
    pub last_ack: f64,
    /// Seconds from the write to the median stream's last ACK.
    pub median_ack: f64,
    /// Seconds from the write to the first response any stream received: the debounce, serve
    /// reading and building the whole tree, and the first send.
    pub first_response: f64,
    /// Bytes each generator stream received for this change (mean).
    pub bytes_per_proxy: f64,
    /// Serve's own measure over this change (its histogram's sum / count delta): from the
    /// config's publication (after debounce and build) to each proxy having answered it.
    pub serve_mean: f64,
    /// Configs serve published for this change (1 unless the debounce split a write).
    pub snapshots: f64,
    /// The proxies (serve's `/status` id and mode) whose stream broke and reconnected during
    /// the change: in sync at its end, but not timed by serve.
    pub reconnected: Vec<String>,
}

/// One change's repetitions and what they cost serve.
#[derive(Debug, Clone)]
pub struct ChangeResult {
    /// Which change.
    pub change: Change,
    /// Each repetition.
    pub repetitions: Vec<Repetition>,
    /// Serve's CPU seconds over all repetitions.
    pub serve_cpu: f64,
    /// The load generator's CPU seconds over all repetitions.
    pub generator_cpu: f64,
    /// Responses serve sent per proxy per repetition, by type.
    pub pushes_per_proxy: BTreeMap<&'static str, f64>,
    /// Bytes serve sent per repetition (all proxies), by type.
    pub bytes_per_change: BTreeMap<&'static str, f64>,
    /// NACKs over the change.
    pub nacks: f64,
    /// Serve's resident set after the repetitions, KiB.
    pub rss_kib: u64,
    /// Why the change did not complete, if it did not.
    pub error: Option<String>,
}

impl ChangeResult {
    fn failed(change: Change, error: String) -> ChangeResult {
        ChangeResult {
            change,
            repetitions: Vec::new(),
            serve_cpu: 0.0,
            generator_cpu: 0.0,
            pushes_per_proxy: BTreeMap::new(),
            bytes_per_change: BTreeMap::new(),
            nacks: 0.0,
            rss_kib: 0,
            error: Some(error),
        }
    }
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct ControlPlaneReport {
    /// The options run.
    pub options: ControlPlaneOptions,
    /// Input bytes of the mesh.
    pub input_bytes: u64,
    /// From serve's start to `/readyz` 200 (the first load).
    pub startup: Duration,
    /// Serve's resident set when ready, KiB.
    pub ready_rss_kib: u64,
    /// From the first stream's connect to every stream having ACKed all five types.
    pub connect: Duration,
    /// Bytes per stream for that first full config.
    pub initial_bytes_per_proxy: f64,
    /// Serve's CPU seconds while the fleet connected.
    pub connect_cpu: f64,
    /// Each change.
    pub changes: Vec<ChangeResult>,
    /// Serve's peak resident set over the whole run, KiB.
    pub peak_rss_kib: u64,
    /// Serve's CPU seconds over the whole run.
    pub total_cpu: f64,
    /// The wall time of the whole run.
    pub wall: Duration,
    /// Load average when the run started (1, 5, 15 min).
    pub load_average: String,
    /// Whether every proxy (Envoys included) ended with every type ACKed as sent, no NACK.
    pub in_sync: bool,
    /// Whether the processes ran at nice [`NICE`].
    pub prioritised: bool,
}

/// Runs the control-plane bench and writes its section of the report.
pub fn control_plane(options: &ControlPlaneOptions, wasm_dir: &Path) -> Result<ControlPlaneReport> {
    let started = Instant::now();
    let load_average = load_average();
    let binary = release_binary()?;
    // Serve, the Envoys and the generator inherit it (the build above does not).
    let prioritised = prioritise(std::process::id()).is_ok();
    let mut mesh = MeshDir::create(options.services)?;
    let input_bytes = dir_bytes(mesh.path())?;
    let logs = tempfile::Builder::new()
        .prefix("sluice-bench-serve-logs-")
        .tempdir()?;
    let wasm_dir = std::path::absolute(wasm_dir)?;
    let args: Vec<OsString> = vec![
        "-f".into(),
        mesh.path().into(),
        "--wasm-dir".into(),
        wasm_dir.clone().into(),
        "--listen-address".into(),
        "127.0.0.1".into(),
        "--ephemeral-ports".into(),
    ];
    eprintln!(
        "bench control-plane: serve on {} services ({input_bytes} bytes)",
        options.services
    );
    let serve_started = Instant::now();
    let serve = ServeProcess::start(&binary, &args, logs.path().join("serve.log"))?;
    let startup = serve_started.elapsed();
    let ready_rss_kib = serve.rss_kib()?;

    let mut envoys = Vec::new();
    for n in 0..options.envoys {
        eprintln!("bench control-plane: Envoy {n} joins");
        let bootstrap = xds_bootstrap(&binary, &mesh, &serve, n, &wasm_dir)?;
        let envoy = Envoy::start_with(EnvoyOptions {
            config_yaml: bootstrap,
            concurrency: 1,
            log_level: "warn".to_owned(),
            ..EnvoyOptions::default()
        })
        .with_context(|| format!("start Envoy {n} on serve"))?;
        envoys.push(envoy);
    }
    wait_in_sync(&serve, options.envoys, Duration::from_secs(300))?;

    eprintln!(
        "bench control-plane: {} ADS streams connect",
        options.streams
    );
    let cpu_before_connect = serve.cpu_seconds()?;
    let connect_started = Instant::now();
    let fleet = Fleet::connect(&[serve.xds], options.streams, "mesh", 2, options.delta)?;
    let connect = connect_started.elapsed();
    let connect_cpu = serve.cpu_seconds()? - cpu_before_connect;
    let initial_bytes_per_proxy = mean(fleet.logs().iter().map(|l| l.bytes as f64));
    let proxies = options.streams + options.envoys;

    let mut changes = Vec::new();
    for change in Change::ALL {
        // A change that does not settle is reported as such; the next one still runs.
        match measure_change(change, options, &mut mesh, &serve, &fleet, proxies) {
            Ok(result) => changes.push(result),
            Err(e) => {
                eprintln!("bench control-plane: {} failed: {e:#}", change.title());
                changes.push(ChangeResult::failed(change, format!("{e:#}")));
            }
        }
    }
    let in_sync = wait_in_sync(&serve, proxies, Duration::from_secs(60)).is_ok();
    let report = ControlPlaneReport {
        options: options.clone(),
        input_bytes,
        startup,
        ready_rss_kib,
        connect,
        initial_bytes_per_proxy,
        connect_cpu,
        changes,
        peak_rss_kib: serve.peak_rss_kib()?,
        total_cpu: serve.cpu_seconds()?,
        wall: started.elapsed(),
        load_average,
        in_sync,
        prioritised,
    };
    fleet.close();
    drop(envoys);
    drop(serve);
    let section = render(&report);
    upsert_section(&options.output, "control-plane", &section)?;
    println!("{section}");
    Ok(report)
}

/// Waits until the machine's CPUs are mostly idle (under 20 % busy over half a second), at most
/// 10 s: each change starts once the last one's work is done, the Envoys applying a large
/// config included (serve's freeing of the old one, their warming of 4,000 clusters), not
/// while it still competes for the 2 cores. A machine that stays busy (neighbours) is noted
/// and the change made anyway.
fn wait_for_idle_machine() {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let Ok((busy0, total0)) = super::procfs::machine_ticks() else {
            return;
        };
        std::thread::sleep(Duration::from_millis(500));
        let Ok((busy1, total1)) = super::procfs::machine_ticks() else {
            return;
        };
        let total = total1.saturating_sub(total0).max(1);
        if busy1.saturating_sub(busy0) * 5 < total {
            return;
        }
    }
    eprintln!("bench control-plane: the machine stayed busy for 10 s; changing anyway");
}

fn measure_change(
    change: Change,
    options: &ControlPlaneOptions,
    mesh: &mut MeshDir,
    serve: &ServeProcess,
    fleet: &Fleet,
    proxies: usize,
) -> Result<ChangeResult> {
    let metrics_before = serve.metrics()?;
    let cpu_before = serve.cpu_seconds()?;
    let generator_before = fleet.cpu_seconds();
    let mut repetitions = Vec::new();
    for k in 0..options.repetitions {
        eprintln!(
            "bench control-plane: {} {}/{}",
            change.title(),
            k + 1,
            options.repetitions
        );
        wait_for_idle_machine();
        let repetition = measure_once(&[serve], fleet, proxies, || change.apply(mesh, k))
            .with_context(|| format!("{} (repetition {})", change.title(), k + 1))?;
        repetitions.push(repetition);
    }
    let metrics_after = serve.metrics()?;
    let reps = options.repetitions.max(1) as f64;
    let delta = |counter: &str, per: f64| {
        let before = metrics_before.per_type(counter);
        metrics_after
            .per_type(counter)
            .into_iter()
            .map(|(t, v)| (t, (v - before[t]) / per))
            .collect::<BTreeMap<_, _>>()
    };
    Ok(ChangeResult {
        change,
        repetitions,
        serve_cpu: serve.cpu_seconds()? - cpu_before,
        generator_cpu: fleet.cpu_seconds() - generator_before,
        pushes_per_proxy: delta("pushes", reps * proxies as f64),
        bytes_per_change: delta("push_bytes", reps),
        nacks: metrics_after.per_type("nacks").values().sum::<f64>()
            - metrics_before.per_type("nacks").values().sum::<f64>(),
        rss_kib: serve.rss_kib()?,
        error: None,
    })
}

/// Makes one change and waits until every proxy of `serves` (the replicas the proxies are
/// connected to) has taken it; the figures of that change.
pub(super) fn measure_once(
    serves: &[&ServeProcess],
    fleet: &Fleet,
    proxies: usize,
    change: impl FnOnce() -> Result<Instant>,
) -> Result<Repetition> {
    let metrics = || -> Result<Metrics> {
        let each = serves
            .iter()
            .map(|s| s.metrics())
            .collect::<Result<Vec<_>>>()?;
        Ok(Metrics::sum(&each))
    };
    let before = metrics()?;
    let logs_before = fleet.logs();
    // Whole seconds, as serve's `/status` gives `connected_at`: a proxy connected at this
    // second or later reconnected during the change.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let t0 = change()?;
    let deadline = t0 + CHANGE_TIMEOUT;
    let mut unanswered = 0;
    let (metrics, logs, reconnected) = loop {
        std::thread::sleep(POLL);
        // Serve may be too busy pushing to answer at once: that is not the end of the change.
        let metrics = match metrics() {
            Ok(m) => m,
            Err(e) if Instant::now() < deadline => {
                unanswered += 1;
                eprintln!("bench: serve's /metrics did not answer ({e:#}); polling on");
                continue;
            }
            Err(e) => return Err(e),
        };
        let settled = metrics.settled() - before.settled();
        let logs = fleet.logs();
        let all_reached = logs.iter().all(|l| l.last_ack.is_some_and(|at| at > t0));
        let latest = logs.iter().filter_map(|l| l.last_response).max();
        let quiet = all_reached && latest.is_some_and(|at| at.elapsed() >= QUIET);
        if quiet && settled >= proxies as f64 {
            break (metrics, logs, Vec::new());
        }
        if quiet && settled > 0.0 {
            // A proxy whose stream broke and reconnected during the change is served the
            // whole config on its new stream, which serve does not time (it times changes
            // made while a proxy is connected): count it once it is in sync.
            let reconnected: Vec<String> = serves
                .iter()
                .flat_map(|s| reconnected_since(s, since))
                .collect();
            if !reconnected.is_empty()
                && settled + reconnected.len() as f64 >= proxies as f64
                && serves
                    .iter()
                    .all(|s| lagging(s).is_some_and(|(_, behind)| behind.is_empty()))
            {
                break (metrics, logs, reconnected);
            }
        }
        if Instant::now() > deadline {
            let logs = fleet.logs();
            let reached = logs
                .iter()
                .filter(|l| l.last_ack.is_some_and(|at| at > t0))
                .count();
            let behind: Vec<String> = serves.iter().map(|s| out_of_sync(s)).collect();
            let reconnected: Vec<String> = serves
                .iter()
                .flat_map(|s| reconnected_since(s, since))
                .collect();
            bail!(
                "not settled in {CHANGE_TIMEOUT:?}: serve counted {settled} of {proxies} proxies, \
                 {reached} of {} generator streams received the change ({unanswered} polls of \
                 /metrics unanswered); serve's /status of the proxies not in sync: {}; \
                 reconnected during the change: [{}]; streams serve saw break: [{}]",
                logs.len(),
                behind.join("; "),
                reconnected.join(", "),
                broken_streams(serves).join(" / ")
            );
        }
    };
    let mut repetition = figures(t0, &before, &metrics, &logs_before, &logs);
    if !reconnected.is_empty() {
        eprintln!(
            "bench: reconnected during the change: {}; serve says: {}",
            reconnected.join(", "),
            broken_streams(serves).join(" / ")
        );
    }
    repetition.reconnected = reconnected;
    eprintln!(
        "bench: first response {:.0} ms, last stream {:.0} ms, median stream {:.0} ms, {:.0} \
         bytes per stream, serve publish-to-ACK mean {:.0} ms",
        repetition.first_response * 1000.0,
        repetition.last_ack * 1000.0,
        repetition.median_ack * 1000.0,
        repetition.bytes_per_proxy,
        repetition.serve_mean * 1000.0
    );
    Ok(repetition)
}

fn figures(
    t0: Instant,
    before: &Metrics,
    after: &Metrics,
    logs_before: &[StreamLog],
    logs: &[StreamLog],
) -> Repetition {
    let mut acks: Vec<f64> = logs
        .iter()
        .filter_map(|l| l.last_ack)
        .map(|at| at.duration_since(t0).as_secs_f64())
        .collect();
    acks.sort_by(f64::total_cmp);
    let per_stream = |f: fn(&StreamLog) -> u64| {
        mean(
            logs.iter()
                .zip(logs_before)
                .map(|(after, before)| (f(after) - f(before)) as f64),
        )
    };
    let count = after.settled() - before.settled();
    let sum = after.get("sluice_serve_change_to_ack_seconds_sum")
        - before.get("sluice_serve_change_to_ack_seconds_sum");
    let first_response = logs
        .iter()
        .flat_map(|l| l.received.iter())
        .filter(|at| **at > t0)
        .min()
        .map_or(0.0, |at| at.duration_since(t0).as_secs_f64());
    Repetition {
        last_ack: acks.last().copied().unwrap_or(0.0),
        median_ack: median(&acks),
        first_response,
        bytes_per_proxy: per_stream(|l| l.bytes),
        serve_mean: if count > 0.0 { sum / count } else { 0.0 },
        snapshots: after.snapshots() - before.snapshots(),
        reconnected: Vec::new(),
    }
}

/// The last lines of serve's log about ADS streams that broke (and why).
fn broken_streams(serves: &[&ServeProcess]) -> Vec<String> {
    let mut lines: Vec<String> = serves
        .iter()
        .flat_map(|s| {
            s.log_text()
                .lines()
                .filter(|l| l.contains("ADS stream of proxy"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    lines.drain(..lines.len().saturating_sub(5));
    lines
}

/// The proxies of serve's `/status` (id and mode) connected at `since` (unix seconds) or later.
fn reconnected_since(serve: &ServeProcess, since: u64) -> Vec<String> {
    let status: Value = serve
        .admin_get("/status")
        .ok()
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or(Value::Null);
    status["proxies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["connected_at"].as_u64().is_some_and(|at| at >= since))
        .map(|p| format!("{} ({})", p["id"], p["mode"]))
        .collect()
}

/// What serve's `/status` says of each proxy not in sync (a type un-ACKed or refused): its
/// id, mode and those types' ACKed and sent versions, for the report of a change that did not
/// settle.
fn out_of_sync(serve: &ServeProcess) -> String {
    match lagging(serve) {
        None => "(/status did not answer)".to_owned(),
        Some((listed, behind)) if behind.is_empty() => {
            format!("{listed} proxies listed, each type ACKed at the version sent")
        }
        Some((_, behind)) => behind.join("; "),
    }
}

/// How many proxies serve's `/status` lists, and a line for each not in sync (see
/// [`out_of_sync`]); `None` if `/status` did not answer.
fn lagging(serve: &ServeProcess) -> Option<(usize, Vec<String>)> {
    let status: Value = serve
        .admin_get("/status")
        .ok()
        .and_then(|(_, body)| serde_json::from_str(&body).ok())?;
    let list = status["proxies"].as_array().cloned().unwrap_or_default();
    let behind: Vec<String> = list
        .iter()
        .filter_map(|p| {
            let types = p["types"].as_object()?;
            let lagging: Vec<String> = types
                .iter()
                .filter(|(_, v)| v["acked"] != v["sent"])
                .map(|(t, v)| format!("{t} acked {} sent {}", v["acked"], v["sent"]))
                .collect();
            (!lagging.is_empty() || !p["last_nack"].is_null()).then(|| {
                format!(
                    "{} ({}, {} types): {}{}",
                    p["id"],
                    p["mode"],
                    types.len(),
                    lagging.join(", "),
                    if p["last_nack"].is_null() {
                        String::new()
                    } else {
                        format!(", last NACK {}", p["last_nack"])
                    }
                )
            })
        })
        .collect();
    Some((list.len(), behind))
}

/// Waits until serve's `/status` lists at least `proxies` proxies, each with every type it
/// subscribed to ACKed at the version it was sent, and none refused.
pub(super) fn wait_in_sync(serve: &ServeProcess, proxies: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let status: Value = serve
            .admin_get("/status")
            .ok()
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or(Value::Null);
        let list = status["proxies"].as_array().cloned().unwrap_or_default();
        let synced = list
            .iter()
            .filter(|p| {
                let types = p["types"].as_object();
                p["last_nack"].is_null()
                    && types.is_some_and(|t| {
                        t.len() == 5
                            && t.values()
                                .all(|v| v["acked"].is_string() && v["acked"] == v["sent"])
                    })
            })
            .count();
        if synced >= proxies {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{synced} of {proxies} proxies in sync with serve after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The bootstrap `sluice generate --target envoy-xds` writes for Envoy `n` (delta for odd `n`).
fn xds_bootstrap(
    binary: &Path,
    mesh: &MeshDir,
    serve: &ServeProcess,
    n: usize,
    wasm_dir: &Path,
) -> Result<String> {
    let out = tempfile::Builder::new()
        .prefix("sluice-bench-xds-")
        .tempdir()?;
    let mut command = std::process::Command::new(binary);
    command
        .args(["generate", "--target", "envoy-xds", "-f"])
        .arg(mesh.path())
        .arg("-o")
        .arg(out.path().join("out"))
        .arg("--force")
        .args(["--xds-server", &serve.xds.to_string()])
        .args(["--node-id", &format!("envoy-{n}"), "--node-cluster", "mesh"])
        .args(["--ephemeral-ports", "--listen-address", "127.0.0.1"])
        .arg("--wasm-dir")
        .arg(wasm_dir);
    if n % 2 == 1 {
        command.arg("--delta");
    }
    let output = command
        .output()
        .context("run sluice generate --target envoy-xds")?;
    if !output.status.success() {
        bail!(
            "sluice generate --target envoy-xds failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let path = out.path().join("out").join("envoy.yaml");
    std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
}

pub(super) fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// The value at `q` (0..=1) of `values` by nearest rank: with 20 values p99 is the largest.
pub(super) fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(super) fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

pub(super) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// How the measured processes were scheduled, for the report.
pub(super) fn priority_note(prioritised: bool) -> String {
    if prioritised {
        format!(
            "serve, etcd, the Envoys and the load generator at nice {NICE} with their session's \
             autogroup, as the data-plane bench runs, so that the neighbours' compilers do not \
             preempt them"
        )
    } else {
        "default priority (renice refused)".to_owned()
    }
}

fn ms(seconds: f64) -> String {
    format!("{:.0}", seconds * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// The `Weight`/`Everything` targets of issue 20 and the RSS budget, in this order.
const WEIGHT_P99_TARGET: f64 = 0.5;
const FULL_P99_TARGET: f64 = 2.0;
const RSS_TARGET_BYTES: f64 = 300e6;

fn render(report: &ControlPlaneReport) -> String {
    let o = &report.options;
    let mut md = String::new();
    let _ = writeln!(md, "## Control plane: change to ACK (issue 20)\n");
    let _ = writeln!(
        md,
        "Measured {} on {} (load average {} at the start: a shared machine, other engineers \
         compiling and testing beside it; {:.0} s in all; {}). Command: `{}`.\n",
        today(),
        machine(),
        report.load_average,
        report.wall.as_secs_f64(),
        priority_note(report.prioritised),
        o.command_line
    );
    let _ = writeln!(
        md,
        "{} services x {SUBSETS} subsets x {RULES} rules, each with a 90/10 canary split, one \
         file per service ({} bytes of YAML); `sluice serve -f DIR` (release build, default \
         100 ms debounce) in its own process; {} ADS streams of the load generator \
         (`xtask/src/bench/ads_load.rs`: envoy-types' ADS client, {}, CDS/LDS \
         wildcard, EDS/RDS/ECDS by name as Envoy asks, every response ACKed) plus {} real \
         Envoy 1.40 (`--concurrency 1`, bootstrap from `sluice generate --target envoy-xds`; \
         the first state of the world, the second delta), all in group `mesh`. Each change is \
         made {} times, one at a time, each once the machine's CPUs are idle again (under 20 % \
         busy over 0.5 s, waited for at most 10 s), by renaming a file into place; \
         change-to-ACK runs from \
         just before the rename to a stream's last ACK of what the change caused, and a \
         repetition's figure is its **last** stream's (of the generator's {}; serve's own \
         histogram counts the Envoys too and the bench waits for them). p99 of {} values is \
         their maximum (nearest rank).\n",
        o.services,
        report.input_bytes,
        o.streams,
        if o.delta {
            "delta (`--delta`)"
        } else {
            "state of the world"
        },
        o.envoys,
        o.repetitions,
        o.streams,
        o.repetitions
    );
    let _ = writeln!(
        md,
        "Serve started (first load of the tree to `/readyz`) in {:.2} s at {} MiB RSS; the {} \
         streams connected and held the whole config ({:.0} bytes each) in {:.2} s, costing \
         serve {:.2} CPU s.\n",
        report.startup.as_secs_f64(),
        mib(report.ready_rss_kib),
        o.streams,
        report.initial_bytes_per_proxy,
        report.connect.as_secs_f64(),
        report.connect_cpu
    );
    let _ = writeln!(
        md,
        "| change | p50 ms | p99 ms | max ms | median stream ms | first response ms (median) | serve publish-to-ACK mean ms | responses per proxy (by type) | bytes per proxy | bytes per push, all proxies | serve CPU s per change | generator CPU s per change | serve RSS after, MiB | NACKs | debounce splits |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for c in &report.changes {
        if let Some(error) = &c.error {
            let _ = writeln!(
                md,
                "| {} | **did not complete**: {} | | | | | | | | | | | | | |",
                c.change.title(),
                error.replace('|', "/").replace('\n', " ")
            );
            continue;
        }
        let last: Vec<f64> = c.repetitions.iter().map(|r| r.last_ack).collect();
        let reps = c.repetitions.len().max(1) as f64;
        let by_type = c
            .pushes_per_proxy
            .iter()
            .filter(|(_, n)| **n > 0.0)
            .map(|(t, n)| format!("{t} {n:.2}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {by_type} | {:.0} | {:.0} | {:.3} | {:.3} | {} | {} | {} |",
            c.change.title(),
            ms(percentile(&last, 0.5)),
            ms(percentile(&last, 0.99)),
            ms(last.iter().copied().fold(0.0, f64::max)),
            ms(median(
                &c.repetitions
                    .iter()
                    .map(|r| r.median_ack)
                    .collect::<Vec<_>>()
            )),
            ms(median(
                &c.repetitions
                    .iter()
                    .map(|r| r.first_response)
                    .collect::<Vec<_>>()
            )),
            ms(mean(c.repetitions.iter().map(|r| r.serve_mean))),
            mean(c.repetitions.iter().map(|r| r.bytes_per_proxy)),
            c.bytes_per_change.values().sum::<f64>(),
            c.serve_cpu / reps,
            c.generator_cpu / reps,
            mib(c.rss_kib),
            c.nacks,
            c.repetitions.iter().filter(|r| r.snapshots > 1.0).count()
        );
    }
    let _ = writeln!(
        md,
        "\n\"first response\": from the write to the first response any stream received (the \
         debounce, serve reading and building the whole tree, the first send); the rest of the \
         change-to-ACK is the fan-out to every proxy. \"bytes per push, all proxies\": what serve sent for one change, all {} proxies \
         together (its `sluice_serve_push_bytes_total`). \"serve publish-to-ACK\": serve's \
         `sluice_serve_change_to_ack_seconds`, which starts when the new config is published \
         (after the debounce and the build), over every proxy. Serve's peak RSS over the run \
         (`VmHWM`): {} MiB; CPU over the whole run {:.1} s. Every proxy ended in sync (each type \
         ACKed at the version sent, no NACK): {}.\n",
        o.streams + o.envoys,
        mib(report.peak_rss_kib),
        report.total_cpu,
        if report.in_sync { "yes" } else { "**no**" }
    );
    let reconnects: Vec<String> = report
        .changes
        .iter()
        .flat_map(|c| {
            c.repetitions
                .iter()
                .enumerate()
                .filter(|(_, r)| !r.reconnected.is_empty())
                .map(move |(k, r)| {
                    format!(
                        "{} (repetition {}): {}",
                        c.change.title(),
                        k + 1,
                        r.reconnected.join(", ")
                    )
                })
        })
        .collect();
    let _ = writeln!(
        md,
        "Proxies whose ADS stream broke and reconnected during a change (in sync at its end, \
         served the whole config on the new stream, not timed by serve): {}.\n",
        if reconnects.is_empty() {
            "none".to_owned()
        } else {
            reconnects.join("; ")
        }
    );
    let p99_of = |change: Change| {
        report
            .changes
            .iter()
            .find(|c| c.change == change && c.error.is_none() && !c.repetitions.is_empty())
            .map(|c| {
                percentile(
                    &c.repetitions.iter().map(|r| r.last_ack).collect::<Vec<_>>(),
                    0.99,
                )
            })
    };
    let verdict = |met: bool| if met { "met" } else { "**missed**" };
    let judged = |p99: Option<f64>, target: f64| match p99 {
        Some(p99) => (format!("{} ms", ms(p99)), verdict(p99 < target)),
        None => ("did not complete".to_owned(), "**missed**"),
    };
    let (weight, weight_verdict) = judged(p99_of(Change::Weight), WEIGHT_P99_TARGET);
    let (full, full_verdict) = judged(p99_of(Change::Everything), FULL_P99_TARGET);
    let rss = report.peak_rss_kib as f64 * 1024.0;
    let _ = writeln!(
        md,
        "| target of issue 20 (2 cores) | measured here | verdict |\n| --- | --- | --- |"
    );
    let _ = writeln!(
        md,
        "| weight change p99 < 500 ms | {weight} | {weight_verdict} |"
    );
    let _ = writeln!(md, "| full change p99 < 2 s | {full} | {full_verdict} |");
    let _ = writeln!(
        md,
        "| serve RSS < 300 MB | peak {:.0} MB ({} MiB) | {} |",
        rss / 1e6,
        mib(report.peak_rss_kib),
        verdict(rss < RSS_TARGET_BYTES)
    );
    let _ = writeln!(
        md,
        "\nWhat istiod documents, for comparison (Istio's \"Performance and scalability\" \
         page and its pilot settings; not measured here): istiod uses 1 vCPU and 1.5 GB of \
         memory for a mesh of 1,000 services and 2,000 sidecars (70,000 mesh-wide requests per \
         second); it debounces changes for 100 ms (`PILOT_DEBOUNCE_AFTER`, at most 10 s: \
         `PILOT_DEBOUNCE_MAX`), the same 100 ms quiet time `sluice serve` waits by default, and \
         every figure above includes it."
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_by_nearest_rank() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 10.0);
        assert_eq!(percentile(&values, 0.99), 20.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    /// Every change of the bench is a mesh the builder accepts.
    #[test]
    fn every_change_generates() {
        let mut mesh = MeshDir::create(3).unwrap();
        for change in Change::ALL {
            change.apply(&mut mesh, 4).unwrap();
        }
        assert_eq!(mesh.services, 4);
        let inputs = sluice::Inputs::read(&[mesh.path().to_path_buf()]).unwrap();
        let options = sluice::Options {
            wasm: sluice::WasmModules::Reference(PathBuf::from("/nonexistent")),
            ..sluice::Options::default()
        };
        let output = sluice::generate(&inputs, &options).unwrap_or_else(|d| panic!("{d}"));
        let envoy = String::from_utf8(output.files["envoy.yaml"].clone()).unwrap();
        assert!(envoy.contains("svc3"), "the added service is served");
        assert!(
            envoy.contains("1.005s"),
            "the connect timeout of repetition 5 of everything"
        );
    }
}
