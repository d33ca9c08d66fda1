//! The demo tour: the `examples/demo` mesh through a real Envoy, step by step.
//!
//! [`run`] starts one in-process backend per ServiceEntry endpoint of the mesh, generates the
//! Envoy bootstrap with the builder library (the model's endpoints pointed at the backends'
//! real ports, the YAML untouched; listeners on `127.0.0.1` port 0), starts Envoy on it and
//! walks through five steps, printing what happens as it goes:
//!
//! 1. routing: `end-user: jason` -> reviews v2, everyone else -> v1;
//! 2. the ratings canary: a 90/10 split, and sticky users staying on their member;
//! 3. faults: a header-matched abort and delay on reviews;
//! 4. the ratings v2 breaker tripping, the canary failing over to v1, then the recovery;
//! 5. the filters' counters from Envoy's `/stats`;
//! 6. live ([`live`]): `sluice serve` on a temporary copy of the mesh feeds an Envoy that has
//!    only its `envoy-xds` bootstrap (the modules come over HTTP); the ratings canary weight is
//!    changed in the copy and the split moves while the same Envoy process keeps serving.
//!
//! Each step checks what it saw against what the mesh says and records the observations in
//! [`Facts`], so `cargo xtask demo` exits non-zero when sluice misbehaves, and
//! `integration/tests/demo.rs` re-checks the same facts. A step whose feature the generated
//! config does not contain (the builder does not wire it yet) is reported as skipped, never
//! faked.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use sluice_core::wire;

use crate::binomial;
use crate::client::{self, Request, Response};
use crate::envoy::{self, Envoy, EnvoyOptions};
use crate::upstream::{Behavior, Upstream};

pub mod live;

/// The mesh's listener (its services' port 9080).
pub const LISTENER: &str = "listener_9080";
/// Requests per user group in step 1.
pub const ROUTING_REQUESTS: usize = 20;
/// Requests of the unsticky split measurement in step 2.
pub const SPLIT_REQUESTS: usize = 1000;
/// The canary's (ratings v2) weight in `examples/demo/routing.yaml`, in percent.
pub const CANARY_PERCENT: u64 = 10;
/// Sticky users in step 2, and requests each of them sends.
pub const STICKY_USERS: usize = 40;
/// Requests per sticky user.
pub const REQUESTS_PER_STICKY_USER: usize = 5;
/// The abort status of `reviews-chaos-abort`.
pub const ABORT_STATUS: u16 = 500;
/// Requests of the abort measurement in step 3.
pub const ABORT_REQUESTS: usize = 20;
/// The delay of `reviews-chaos-delay`.
pub const FAULT_DELAY: Duration = Duration::from_secs(1);
/// Requests of the delay measurement in step 3 (and of its baseline).
pub const DELAY_REQUESTS: usize = 4;
/// `consecutiveErrors` of the ratings breaker (`examples/demo/destination-rules.yaml`).
pub const BREAKER_CONSECUTIVE_ERRORS: u64 = 3;
/// `baseEjectionTime` of the ratings breaker.
pub const BREAKER_EJECTION: Duration = Duration::from_secs(4);
/// Canary requests sent while ratings v2's breaker is open (step 4).
pub const FAILOVER_REQUESTS: usize = 100;
/// Canary requests sent after the recovery (step 4).
pub const RECOVERED_REQUESTS: usize = 500;

/// Where the tour reads the mesh and writes what it generated.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The mesh (Istio YAML files or directories): `examples/demo` of the repository.
    pub mesh: PathBuf,
    /// Directory holding `sluice_<filter>.wasm` (referenced by absolute path).
    pub wasm_dir: PathBuf,
    /// Where the generated config the tour runs is written (`<out_dir>/envoy.yaml`).
    pub out_dir: PathBuf,
}

impl Default for DemoOptions {
    fn default() -> Self {
        let root = crate::repo_root();
        Self {
            mesh: root.join("examples").join("demo"),
            wasm_dir: crate::wasm::module_dir(),
            out_dir: root.join("target").join("demo"),
        }
    }
}

/// How one step went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Everything observed matched the mesh.
    Passed,
    /// What differed, one line each.
    Failed(Vec<String>),
    /// The step could not run; why (e.g. the builder does not wire the feature yet).
    Skipped(String),
}

/// One step of the tour.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// 1-based.
    pub number: usize,
    /// What the step shows.
    pub title: &'static str,
    /// The outcome.
    pub verdict: Verdict,
    /// A few lines for the final report.
    pub summary: Vec<String>,
}

/// Step 1: who served each group.
#[derive(Debug, Clone, Default)]
pub struct RoutingFacts {
    /// `end-user: jason`: served-by name (or `<envoy:STATUS>`) -> count.
    pub jason: BTreeMap<String, u64>,
    /// Other users and no user at all.
    pub others: BTreeMap<String, u64>,
}

/// Step 2: the canary split.
#[derive(Debug, Clone, Default)]
pub struct SplitFacts {
    /// Requests without a sticky key: served-by -> count (out of [`SPLIT_REQUESTS`]).
    pub served: BTreeMap<String, u64>,
    /// Sticky users: user -> served-by -> count; `None` when stickiness was not generated.
    pub sticky: Option<BTreeMap<String, BTreeMap<String, u64>>>,
}

/// Step 3: the injected faults.
#[derive(Debug, Clone, Default)]
pub struct FaultFacts {
    /// `x-chaos: abort`: status -> count.
    pub abort_statuses: BTreeMap<u16, u64>,
    /// Requests of the abort group that reached a backend.
    pub abort_reached_backend: u64,
    /// `x-chaos: delay`: status and latency of each request.
    pub delayed: Vec<(u16, Duration)>,
    /// Latencies of the same request without the header.
    pub baseline: Vec<Duration>,
}

/// One request of the breaker step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Status.
    pub status: u16,
    /// `x-served-by`, if a backend answered.
    pub served_by: Option<String>,
    /// `x-sluice-breaker`, if the breaker answered.
    pub breaker: Option<String>,
}

/// Step 4: the breaker and the canary failover.
#[derive(Debug, Clone, Default)]
pub struct BreakerFacts {
    /// Requests pinned to ratings v2 while its backend answers 503, in order, until the breaker
    /// rejected several in a row.
    pub tripping: Vec<Observed>,
    /// Requests the ratings v2 backend received while its breaker was open.
    pub backend_requests_while_open: u64,
    /// Canary requests (no sticky key) while open: served-by -> count.
    pub failover: BTreeMap<String, u64>,
    /// Sticky users who were on v2 in step 2: served-by while open.
    pub failover_sticky_v2_users: BTreeMap<String, u64>,
    /// From sending the last request that reached the failing backend to the first success
    /// from the healed backend (the breaker was open, then half-open, then closed).
    pub recovered_after: Option<Duration>,
    /// Pinned requests rejected while waiting for the recovery.
    pub rejected_while_waiting: u64,
    /// Canary requests after the recovery: served-by -> count (out of [`RECOVERED_REQUESTS`]).
    pub recovered: BTreeMap<String, u64>,
    /// Sticky users who were on v2 in step 2: served-by after the recovery.
    pub recovered_sticky_v2_users: BTreeMap<String, u64>,
}

/// Everything the tour observed, for tests to re-check.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Step 1.
    pub routing: Option<RoutingFacts>,
    /// Step 2.
    pub split: Option<SplitFacts>,
    /// Step 3 (`None`: skipped).
    pub fault: Option<FaultFacts>,
    /// Step 4 (`None`: skipped).
    pub breaker: Option<BreakerFacts>,
    /// Step 5: the non-zero `wasmcustom.sluice.*` counters.
    pub counters: BTreeMap<String, u64>,
    /// Step 6 (`None`: skipped).
    pub live: Option<live::LiveFacts>,
}

/// The outcome of [`run`].
#[derive(Debug, Clone)]
pub struct Report {
    /// Every step, in order.
    pub steps: Vec<StepReport>,
    /// What was observed.
    pub facts: Facts,
    /// The config Envoy ran (written by the tour).
    pub config_path: PathBuf,
    /// The backends: name -> port.
    pub backends: BTreeMap<String, u16>,
    /// Wall time of the tour (after the build).
    pub took: Duration,
}

impl Report {
    /// Whether any step failed (skipped steps are not failures, but [`Report::skipped`] lists
    /// them).
    pub fn failed(&self) -> Vec<&StepReport> {
        self.steps
            .iter()
            .filter(|s| matches!(s.verdict, Verdict::Failed(_)))
            .collect()
    }

    /// The steps that could not run.
    pub fn skipped(&self) -> Vec<&StepReport> {
        self.steps
            .iter()
            .filter(|s| matches!(s.verdict, Verdict::Skipped(_)))
            .collect()
    }

    /// The readable end-of-tour report.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "\n==================== sluice demo report ===================="
        );
        for step in &self.steps {
            let verdict = match &step.verdict {
                Verdict::Passed => "ok     ".to_owned(),
                Verdict::Failed(_) => "FAILED ".to_owned(),
                Verdict::Skipped(_) => "SKIPPED".to_owned(),
            };
            let _ = writeln!(text, "{verdict} {}. {}", step.number, step.title);
            for line in &step.summary {
                let _ = writeln!(text, "          {line}");
            }
            match &step.verdict {
                Verdict::Failed(problems) => {
                    for problem in problems {
                        let _ = writeln!(text, "          differs: {problem}");
                    }
                }
                Verdict::Skipped(why) => {
                    let _ = writeln!(text, "          skipped: {why}");
                }
                Verdict::Passed => {}
            }
        }
        let _ = writeln!(
            text,
            "\nThe config Envoy ran: {}",
            self.config_path.display()
        );
        let _ = writeln!(
            text,
            "The same mesh with fixed ports (checked in): envoy-configs/demo/envoy.yaml"
        );
        let _ = writeln!(
            text,
            "Run it by hand from the repository root (backends expected on 127.0.0.1:9101-9104):\n  \
             {} -c envoy-configs/demo/envoy.yaml --disable-hot-restart\n  \
             curl -H 'Host: reviews' -H 'end-user: jason' localhost:9080/",
            envoy::binary()
                .map(|b| b.display().to_string())
                .unwrap_or_else(|_| "envoy".to_owned())
        );
        let failed = self.failed().len();
        let skipped = self.skipped().len();
        let _ = writeln!(
            text,
            "\n{} steps: {} ok, {failed} failed, {skipped} skipped, in {:.1}s",
            self.steps.len(),
            self.steps.len() - failed - skipped,
            self.took.as_secs_f64()
        );
        text
    }
}

/// Runs the tour, printing progress to `out`. `Err` only when the tour cannot start (the mesh
/// does not generate, Envoy does not start); a misbehaving step is a [`Verdict::Failed`].
pub fn run(options: &DemoOptions, out: &mut dyn Write) -> Result<Report> {
    let started = Instant::now();
    let inputs =
        sluice::Inputs::read(std::slice::from_ref(&options.mesh)).map_err(|e| anyhow!("{e}"))?;
    let (backends, endpoint_ports) = start_backends(&inputs)?;
    let mut ports = BTreeMap::new();
    for backend in &backends {
        ports.insert(backend.name().to_owned(), backend.port());
    }
    say(
        out,
        &format!(
            "==> backends: {}",
            ports
                .iter()
                .map(|(name, port)| format!("{name} on 127.0.0.1:{port}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );

    let wasm_dir = std::path::absolute(&options.wasm_dir)
        .with_context(|| format!("absolute path of {}", options.wasm_dir.display()))?;
    for filter in crate::wasm::FILTERS {
        crate::wasm::module_in(&wasm_dir, filter)?;
    }
    let generate_options = sluice::Options {
        listen_address: "127.0.0.1".into(),
        ephemeral_ports: true,
        wasm: sluice::WasmModules::Reference(wasm_dir.clone()),
        ..sluice::Options::default()
    };
    let output = generate_with_ports(&inputs, &generate_options, &endpoint_ports)?;
    for warning in &output.warnings.0 {
        say(out, &format!("    builder warning: {warning}"));
    }
    forget_unmarked_demo_output(&options.out_dir);
    sluice::write_output(&options.out_dir, &output)
        .with_context(|| format!("write {}", options.out_dir.display()))?;
    let config_path = options.out_dir.join("envoy.yaml");
    let yaml = output
        .files
        .get("envoy.yaml")
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
        .ok_or_else(|| anyhow!("the builder wrote no envoy.yaml"))?;
    say(
        out,
        &format!("==> generated {} (sluice::generate)", config_path.display()),
    );

    say(out, "==> starting Envoy");
    let envoy = Envoy::start_with(EnvoyOptions {
        config_yaml: yaml.clone(),
        ..EnvoyOptions::default()
    })?;
    let tour = Tour {
        port: envoy.listener_port(LISTENER),
        envoy: &envoy,
        backends: &backends,
        wired: Wired::from_config(&yaml),
    };
    say(
        out,
        &format!(
            "    Envoy pid {} ready: {LISTENER} on 127.0.0.1:{}, admin on 127.0.0.1:{}",
            envoy.pid(),
            tour.port,
            envoy.admin_port()
        ),
    );

    let mut facts = Facts::default();
    // In order: each step prints as it goes, and later steps rely on the state earlier ones left.
    let mut steps = vec![
        tour.routing(out, &mut facts),
        tour.split(out, &mut facts),
        tour.fault(out, &mut facts),
        tour.breaker(out, &mut facts),
        tour.counters(out, &mut facts),
    ];
    drop(envoy);
    // The live step runs its own Envoy, fed by `sluice serve` (the tour's is stopped first).
    let (step, live) = live::run(&options.mesh, &wasm_dir, &endpoint_ports, out)?;
    steps.push(step);
    facts.live = live;
    Ok(Report {
        steps,
        facts,
        config_path,
        backends: ports,
        took: started.elapsed(),
    })
}

fn say(out: &mut dyn Write, line: &str) {
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Where each ServiceEntry endpoint of the mesh really listens: (address, port in the YAML)
/// -> the port of the backend started for it.
type EndpointPorts = BTreeMap<(String, u32), u32>;

/// Starts one backend per ServiceEntry endpoint, named `<host>-<version label>`, and returns
/// them with the port each endpoint's backend took.
fn start_backends(inputs: &sluice::Inputs) -> Result<(Vec<Upstream>, EndpointPorts)> {
    let (resources, _) = sluice::parse::parse(inputs);
    let mut backends = Vec::new();
    let mut ports = EndpointPorts::new();
    for resource in &resources {
        let sluice::parse::Spec::ServiceEntry(entry) = &resource.spec else {
            continue;
        };
        let host = entry.hosts.first().cloned().unwrap_or_default();
        for (index, endpoint) in entry.endpoints.iter().enumerate() {
            let name = match endpoint.labels.get("version") {
                Some(version) => format!("{host}-{version}"),
                None => format!("{host}-{index}"),
            };
            if endpoint.ports.is_empty() {
                bail!("{}: endpoint {index} of {host} has no ports", resource.file);
            }
            let backend = Upstream::start(&name);
            for port in endpoint.ports.values() {
                let address = endpoint.address.clone().unwrap_or_default();
                ports.insert((address, *port), u32::from(backend.port()));
            }
            backends.push(backend);
        }
    }
    if backends.is_empty() {
        bail!("the demo mesh has no ServiceEntry endpoints to start backends for");
    }
    Ok((backends, ports))
}

/// The Envoy target's output for `inputs`, with each endpoint sent to its backend's port: the
/// builder's model (typed, after every check) is adjusted, then emitted by the envoy target.
/// The YAML stays as written.
fn generate_with_ports(
    inputs: &sluice::Inputs,
    options: &sluice::Options,
    ports: &EndpointPorts,
) -> Result<sluice::Output> {
    let modelled = sluice::model(inputs, options)
        .map_err(|diags| anyhow!("the demo mesh does not generate:\n{diags}"))?;
    let mut mesh = modelled.mesh;
    remap_endpoints(&mut mesh, ports);
    let emitted = sluice::emit::envoy::emit(&mesh, options).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow!("the demo mesh does not generate:\n{}", lines.join("\n"))
    })?;
    Ok(sluice::Output {
        files: emitted.files,
        warnings: modelled.warnings,
    })
}

/// Points every endpoint listed in `ports` at its backend's port.
fn remap_endpoints(mesh: &mut sluice::model::Mesh, ports: &EndpointPorts) {
    for cluster in mesh.clusters.values_mut() {
        for endpoint in &mut cluster.endpoints {
            if let Some(port) = ports.get(&(endpoint.address.clone(), endpoint.port)) {
                endpoint.port = *port;
            }
        }
    }
}

/// Which sluice features the generated config contains.
#[derive(Debug, Clone, Copy)]
struct Wired {
    fault: bool,
    breaker: bool,
    sticky: bool,
}

impl Wired {
    fn from_config(yaml: &str) -> Self {
        Self {
            fault: yaml.contains("name: sluice-fault"),
            breaker: yaml.contains("name: sluice-breaker"),
            // The canary's plugin config is a JSON string inside the YAML.
            sticky: yaml.contains("\\\"sticky\\\""),
        }
    }
}

struct Tour<'a> {
    envoy: &'a Envoy,
    port: u16,
    backends: &'a [Upstream],
    wired: Wired,
}

/// Collects what differed in one step.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    fn plausible(&mut self, what: &str, observed: u64, n: u64, percent: u64) {
        let (low, high) = binomial::bounds(n, percent as f64 / 100.0);
        self.expect((low..=high).contains(&observed), || {
            format!(
                "{what}: {observed} of {n}, but a {percent}% share puts it in [{low}, {high}] \
                 (missed by a correct split with probability < 1e-6)"
            )
        });
    }

    fn verdict(self) -> Verdict {
        if self.0.is_empty() {
            Verdict::Passed
        } else {
            Verdict::Failed(self.0)
        }
    }
}

fn describe(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "nothing".to_owned();
    }
    counts
        .iter()
        .map(|(who, n)| format!("{who} x{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn observe(response: &Response) -> Observed {
    Observed {
        status: response.status,
        served_by: response.served_by().map(str::to_owned),
        breaker: response
            .header_str(wire::BREAKER_REJECT_HEADER)
            .map(str::to_owned),
    }
}

impl Tour<'_> {
    fn request(&self, authority: &str) -> Request {
        Request::get(self.port, "/").authority(authority)
    }

    /// Sends every request (16 in flight); transport errors count as `<error>`.
    fn served(&self, requests: Vec<Request>) -> (BTreeMap<String, u64>, Vec<Response>) {
        let mut counts = BTreeMap::new();
        let mut responses = Vec::new();
        for result in client::send_many(requests, client::DEFAULT_PARALLELISM) {
            match result {
                Ok(response) => responses.push(response),
                Err(_) => *counts.entry("<error>".to_owned()).or_insert(0) += 1,
            }
        }
        for (who, n) in client::served_by_counts(&responses) {
            *counts.entry(who).or_insert(0) += n;
        }
        (counts, responses)
    }

    fn backend(&self, name: &str) -> Option<&Upstream> {
        self.backends.iter().find(|b| b.name() == name)
    }

    fn routing(&self, out: &mut dyn Write, facts: &mut Facts) -> StepReport {
        say(
            out,
            "\n==> 1. routing: end-user: jason -> reviews v2, everyone else -> v1",
        );
        let jason_requests =
            vec![self.request("reviews").header("end-user", "jason"); ROUTING_REQUESTS];
        let (jason, _) = self.served(jason_requests);
        say(
            out,
            &format!(
                "    {ROUTING_REQUESTS} x GET reviews/ with end-user: jason -> {}",
                describe(&jason)
            ),
        );
        let mut other_requests = Vec::new();
        for i in 0..ROUTING_REQUESTS {
            other_requests.push(match i % 2 {
                0 => self
                    .request("reviews")
                    .header("end-user", format!("user-{i}")),
                _ => self.request("reviews"),
            });
        }
        let (others, _) = self.served(other_requests);
        say(
            out,
            &format!(
                "    {ROUTING_REQUESTS} x GET reviews/ as other users or anonymous -> {}",
                describe(&others)
            ),
        );
        let mut checks = Checks::default();
        let n = ROUTING_REQUESTS as u64;
        checks.expect(jason.get("reviews-v2") == Some(&n), || {
            format!(
                "jason should get reviews-v2 every time, got {}",
                describe(&jason)
            )
        });
        checks.expect(others.get("reviews-v1") == Some(&n), || {
            format!(
                "everyone else should get reviews-v1 every time, got {}",
                describe(&others)
            )
        });
        let summary = vec![
            format!("jason: {}", describe(&jason)),
            format!("others: {}", describe(&others)),
        ];
        facts.routing = Some(RoutingFacts { jason, others });
        StepReport {
            number: 1,
            title: "routing by header",
            verdict: checks.verdict(),
            summary,
        }
    }

    fn sticky_users() -> Vec<String> {
        (0..STICKY_USERS).map(|i| format!("user-{i:02}")).collect()
    }

    /// Each sticky user's requests: user -> served-by -> count.
    fn sticky_round(&self, users: &[String]) -> BTreeMap<String, BTreeMap<String, u64>> {
        let mut requests = Vec::new();
        for user in users {
            for _ in 0..REQUESTS_PER_STICKY_USER {
                requests.push(self.request("ratings").header("end-user", user));
            }
        }
        let results = client::send_many(requests, client::DEFAULT_PARALLELISM);
        let mut per_user: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (index, result) in results.iter().enumerate() {
            let Some(user) = users.get(index / REQUESTS_PER_STICKY_USER) else {
                continue;
            };
            let who = match result {
                Ok(response) => response
                    .served_by()
                    .map_or_else(|| format!("<envoy:{}>", response.status), str::to_owned),
                Err(_) => "<error>".to_owned(),
            };
            *per_user
                .entry(user.clone())
                .or_default()
                .entry(who)
                .or_insert(0) += 1;
        }
        per_user
    }

    fn split(&self, out: &mut dyn Write, facts: &mut Facts) -> StepReport {
        say(
            out,
            "\n==> 2. canary: ratings v1 90% / v2 10%, sticky per end-user",
        );
        let (served, _) = self.served(vec![self.request("ratings"); SPLIT_REQUESTS]);
        let n = SPLIT_REQUESTS as u64;
        let v2 = served.get("ratings-v2").copied().unwrap_or(0);
        say(
            out,
            &format!(
                "    {SPLIT_REQUESTS} x GET ratings/ without a user -> {} (v2 share {:.1}%, weight {CANARY_PERCENT}%)",
                describe(&served),
                100.0 * v2 as f64 / n as f64
            ),
        );
        let mut checks = Checks::default();
        let v1 = served.get("ratings-v1").copied().unwrap_or(0);
        checks.expect(v1 + v2 == n, || {
            format!(
                "every request should be served by ratings v1 or v2, got {}",
                describe(&served)
            )
        });
        checks.plausible("requests to ratings-v2", v2, n, CANARY_PERCENT);
        let mut summary = vec![format!(
            "{SPLIT_REQUESTS} requests: {} -> v2 share {:.1}% (weight {CANARY_PERCENT}%, 1e-6 bounds {:?})",
            describe(&served),
            100.0 * v2 as f64 / n as f64,
            binomial::bounds(n, CANARY_PERCENT as f64 / 100.0)
        )];
        let sticky = if self.wired.sticky {
            let users = Self::sticky_users();
            let per_user = self.sticky_round(&users);
            let on_v2: Vec<&String> = per_user
                .iter()
                .filter(|(_, served)| served.contains_key("ratings-v2"))
                .map(|(user, _)| user)
                .collect();
            let moving: Vec<String> = per_user
                .iter()
                .filter(|(_, served)| served.len() != 1)
                .map(|(user, served)| format!("{user}: {}", describe(served)))
                .collect();
            say(
                out,
                &format!(
                    "    {STICKY_USERS} users x {REQUESTS_PER_STICKY_USER} requests with end-user: each stays on one member; {} on v2 ({})",
                    on_v2.len(),
                    on_v2
                        .iter()
                        .map(|u| u.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            checks.expect(moving.is_empty(), || {
                format!("sticky users moved between members: {}", moving.join("; "))
            });
            checks.expect(per_user.len() == STICKY_USERS, || {
                format!("answers for {} of {STICKY_USERS} users", per_user.len())
            });
            summary.push(format!(
                "sticky: {STICKY_USERS} users x {REQUESTS_PER_STICKY_USER} requests, {} moved, {} pinned to v2",
                moving.len(),
                on_v2.len()
            ));
            Some(per_user)
        } else {
            say(
                out,
                "    sticky users: skipped, the generated canary config has no `sticky` (builder support for sluice.dev/canary missing)",
            );
            summary.push(
                "sticky: skipped (builder support for the sluice.dev/canary annotation missing)"
                    .to_owned(),
            );
            None
        };
        facts.split = Some(SplitFacts { served, sticky });
        StepReport {
            number: 2,
            title: "canary split, sticky users",
            verdict: checks.verdict(),
            summary,
        }
    }

    fn fault(&self, out: &mut dyn Write, facts: &mut Facts) -> StepReport {
        say(
            out,
            "\n==> 3. faults: x-chaos: abort -> 500 (100%), x-chaos: delay -> +1s (100%)",
        );
        let title = "fault injection";
        if !self.wired.fault {
            let why = "builder support missing: the generated config has no sluice-fault filter"
                .to_owned();
            say(out, &format!("    skipped: {why}"));
            return StepReport {
                number: 3,
                title,
                verdict: Verdict::Skipped(why),
                summary: Vec::new(),
            };
        }
        let backend_before = self
            .backend("reviews-v1")
            .map_or(0, Upstream::request_count);
        let (_, aborted) = self.served(vec![
            self.request("reviews").header("x-chaos", "abort");
            ABORT_REQUESTS
        ]);
        let backend_after = self
            .backend("reviews-v1")
            .map_or(0, Upstream::request_count);
        let abort_statuses = client::status_counts(&aborted);
        let reached = (backend_after.saturating_sub(backend_before)) as u64;
        say(
            out,
            &format!(
                "    {ABORT_REQUESTS} x GET reviews/ with x-chaos: abort -> statuses {abort_statuses:?}, {reached} reached the backend"
            ),
        );

        let timed = |request: Request| -> (u16, Duration) {
            let started = Instant::now();
            let status = client::send(&request).map_or(0, |r| r.status);
            (status, started.elapsed())
        };
        let baseline: Vec<Duration> = (0..DELAY_REQUESTS)
            .map(|_| timed(self.request("reviews")).1)
            .collect();
        let delayed: Vec<(u16, Duration)> = (0..DELAY_REQUESTS)
            .map(|_| timed(self.request("reviews").header("x-chaos", "delay")))
            .collect();
        let ms = |d: &Duration| format!("{:.0}ms", d.as_secs_f64() * 1000.0);
        say(
            out,
            &format!(
                "    {DELAY_REQUESTS} x GET reviews/ with x-chaos: delay -> {}; without: {}",
                delayed
                    .iter()
                    .map(|(s, d)| format!("{s} in {}", ms(d)))
                    .collect::<Vec<_>>()
                    .join(", "),
                baseline.iter().map(ms).collect::<Vec<_>>().join(", ")
            ),
        );

        let mut checks = Checks::default();
        let n = ABORT_REQUESTS as u64;
        checks.expect(abort_statuses.get(&ABORT_STATUS) == Some(&n), || {
            format!(
                "every x-chaos: abort request should get {ABORT_STATUS}, got {abort_statuses:?}"
            )
        });
        checks.expect(reached == 0, || {
            format!("{reached} aborted requests reached the backend")
        });
        for (status, latency) in &delayed {
            checks.expect(*status == 200, || {
                format!("a delayed request got {status}, not 200")
            });
            // A lower bound only: a slow machine makes requests slower, never faster.
            checks.expect(*latency >= FAULT_DELAY.mul_f64(0.95), || {
                format!(
                    "a delayed request took {}, less than the {FAULT_DELAY:?} delay",
                    ms(latency)
                )
            });
        }
        let summary = vec![
            format!(
                "abort: {ABORT_REQUESTS} requests -> statuses {abort_statuses:?}, {reached} reached the backend"
            ),
            format!(
                "delay: {} (baseline {})",
                delayed
                    .iter()
                    .map(|(_, d)| ms(d))
                    .collect::<Vec<_>>()
                    .join(", "),
                baseline.iter().map(ms).collect::<Vec<_>>().join(", ")
            ),
        ];
        facts.fault = Some(FaultFacts {
            abort_statuses,
            abort_reached_backend: reached,
            delayed,
            baseline,
        });
        StepReport {
            number: 3,
            title,
            verdict: checks.verdict(),
            summary,
        }
    }

    fn breaker(&self, out: &mut dyn Write, facts: &mut Facts) -> StepReport {
        say(
            out,
            "\n==> 4. breaker: ratings v2 fails, its breaker opens, the canary fails over, v2 heals",
        );
        let title = "breaker trips and recovers, canary failover";
        if !self.wired.breaker {
            let why = "builder support missing: the generated config has no sluice-breaker filter"
                .to_owned();
            say(out, &format!("    skipped: {why}"));
            return StepReport {
                number: 4,
                title,
                verdict: Verdict::Skipped(why),
                summary: Vec::new(),
            };
        }
        let Some(v2) = self.backend("ratings-v2") else {
            return StepReport {
                number: 4,
                title,
                verdict: Verdict::Failed(vec!["the mesh has no ratings-v2 backend".to_owned()]),
                summary: Vec::new(),
            };
        };
        let mut checks = Checks::default();
        let mut breaker = BreakerFacts::default();
        let pinned = || self.request("ratings").header("x-pin", "v2");

        say(
            out,
            "    ratings-v2 now answers 503; requests pinned to v2 (x-pin: v2), one at a time:",
        );
        v2.set_behavior(Behavior::Status(503));
        let mut last_error_sent = None;
        let mut rejected_in_a_row = 0;
        for attempt in 1..=20 {
            let sent = Instant::now();
            let observed = match client::send(&pinned()) {
                Ok(response) => observe(&response),
                Err(_) => Observed {
                    status: 0,
                    served_by: None,
                    breaker: None,
                },
            };
            say(
                out,
                &format!(
                    "      #{attempt:<2} {} {}",
                    observed.status,
                    match (&observed.served_by, &observed.breaker) {
                        (_, Some(breaker)) => {
                            format!("{}: {breaker}", wire::BREAKER_REJECT_HEADER)
                        }
                        (Some(who), None) => format!("from {who}"),
                        (None, None) => "from Envoy".to_owned(),
                    }
                ),
            );
            if observed.served_by.is_some() {
                last_error_sent = Some(sent);
                rejected_in_a_row = 0;
            } else if observed.breaker.is_some() {
                rejected_in_a_row += 1;
            }
            breaker.tripping.push(observed);
            if rejected_in_a_row == 3 {
                break;
            }
        }
        let errors_before_open = breaker
            .tripping
            .iter()
            .take_while(|o| o.breaker.is_none())
            .count() as u64;
        let first_rejection = breaker
            .tripping
            .iter()
            .find(|o| o.breaker.is_some())
            .cloned();
        checks.expect(first_rejection.is_some(), || {
            "the breaker never rejected a request".to_owned()
        });
        checks.expect(
            (BREAKER_CONSECUTIVE_ERRORS..=BREAKER_CONSECUTIVE_ERRORS + 2).contains(&errors_before_open),
            || format!("the breaker opened after {errors_before_open} upstream errors, expected {BREAKER_CONSECUTIVE_ERRORS}"),
        );
        if let Some(rejection) = &first_rejection {
            checks.expect(rejection.status == 503, || {
                format!("the breaker answered {}, not 503", rejection.status)
            });
            // The reason only: a client learns no internal cluster name (the demo's
            // generated config has no `--detailed-replies`).
            let expected = "open".to_owned();
            checks.expect(
                rejection.breaker.as_deref() == Some(expected.as_str()),
                || {
                    format!(
                        "{} is {:?}, expected {expected:?}",
                        wire::BREAKER_REJECT_HEADER,
                        rejection.breaker
                    )
                },
            );
        }

        // While open: the canary moves v2's share to v1, and v2's backend sees nothing.
        let before = v2.request_count();
        let (failover, _) = self.served(vec![self.request("ratings"); FAILOVER_REQUESTS]);
        let v2_users: Vec<String> = facts
            .split
            .as_ref()
            .and_then(|split| split.sticky.as_ref())
            .map(|sticky| {
                sticky
                    .iter()
                    .filter(|(_, served)| served.contains_key("ratings-v2"))
                    .map(|(user, _)| user.clone())
                    .collect()
            })
            .unwrap_or_default();
        let failover_users = self.sticky_round(&v2_users);
        breaker.failover_sticky_v2_users = merge(&failover_users);
        let still_open = client::send(&pinned()).map(|r| observe(&r)).ok();
        breaker.backend_requests_while_open = (v2.request_count().saturating_sub(before)) as u64;
        say(
            out,
            &format!(
                "    while open: {FAILOVER_REQUESTS} x GET ratings/ -> {}; v2's sticky users {v2_users:?} -> {}; ratings-v2 received {} requests",
                describe(&failover),
                describe(&breaker.failover_sticky_v2_users),
                breaker.backend_requests_while_open
            ),
        );
        checks.expect(
            failover.get("ratings-v1") == Some(&(FAILOVER_REQUESTS as u64)),
            || {
                format!(
                    "while v2's breaker is open every canary request should go to v1, got {}",
                    describe(&failover)
                )
            },
        );
        checks.expect(
            breaker
                .failover_sticky_v2_users
                .keys()
                .all(|who| who == "ratings-v1"),
            || {
                format!(
                    "v2's sticky users should fail over to v1, got {}",
                    describe(&breaker.failover_sticky_v2_users)
                )
            },
        );
        checks.expect(still_open.as_ref().is_some_and(|o| o.breaker.is_some()), || {
            format!("the breaker should still be open after the failover requests (ejection {BREAKER_EJECTION:?}), got {still_open:?}")
        });
        checks.expect(breaker.backend_requests_while_open == 0, || {
            format!(
                "ratings-v2 received {} requests while its breaker was open",
                breaker.backend_requests_while_open
            )
        });
        breaker.failover = failover;

        say(
            out,
            &format!(
                "    ratings-v2 heals; probing every 250ms until the breaker lets a request through (ejection {BREAKER_EJECTION:?})"
            ),
        );
        v2.set_behavior(Behavior::Ok);
        let deadline = Instant::now() + BREAKER_EJECTION + Duration::from_secs(30);
        while Instant::now() < deadline {
            match client::send(&pinned()).map(|r| observe(&r)) {
                Ok(Observed {
                    status: 200,
                    served_by: Some(_),
                    ..
                }) => {
                    breaker.recovered_after = last_error_sent.map(|sent| sent.elapsed());
                    break;
                }
                Ok(Observed {
                    breaker: Some(_), ..
                }) => breaker.rejected_while_waiting += 1,
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        match breaker.recovered_after {
            Some(after) => {
                say(
                    out,
                    &format!(
                        "    closed: ratings-v2 served again {:.1}s after the last failure ({} probes rejected meanwhile)",
                        after.as_secs_f64(),
                        breaker.rejected_while_waiting
                    ),
                );
                checks.expect(after >= BREAKER_EJECTION, || {
                    format!("the breaker let requests through after {after:?}, before the {BREAKER_EJECTION:?} ejection time")
                });
            }
            None => checks.expect(false, || {
                "the breaker did not close within 30s after the ejection time".to_owned()
            }),
        }

        let (recovered, _) = self.served(vec![self.request("ratings"); RECOVERED_REQUESTS]);
        let recovered_users = self.sticky_round(&v2_users);
        breaker.recovered_sticky_v2_users = merge(&recovered_users);
        let v2_share = recovered.get("ratings-v2").copied().unwrap_or(0);
        say(
            out,
            &format!(
                "    after recovery: {RECOVERED_REQUESTS} x GET ratings/ -> {}; v2's sticky users -> {}",
                describe(&recovered),
                describe(&breaker.recovered_sticky_v2_users)
            ),
        );
        checks.plausible(
            "requests to ratings-v2 after the recovery",
            v2_share,
            RECOVERED_REQUESTS as u64,
            CANARY_PERCENT,
        );
        checks.expect(
            breaker
                .recovered_sticky_v2_users
                .keys()
                .all(|who| who == "ratings-v2"),
            || {
                format!(
                    "v2's sticky users should be back on v2, got {}",
                    describe(&breaker.recovered_sticky_v2_users)
                )
            },
        );
        let summary = vec![
            format!(
                "opened after {errors_before_open} upstream 503s (consecutiveErrors {BREAKER_CONSECUTIVE_ERRORS}): {} x-sluice-breaker: {}",
                first_rejection.as_ref().map_or(0, |o| o.status),
                first_rejection
                    .as_ref()
                    .and_then(|o| o.breaker.clone())
                    .unwrap_or_default()
            ),
            format!(
                "failover while open: {}; v2's sticky users -> {}; ratings-v2 received {}",
                describe(&breaker.failover),
                describe(&breaker.failover_sticky_v2_users),
                breaker.backend_requests_while_open
            ),
            format!(
                "closed {} after the last failure (baseEjectionTime {BREAKER_EJECTION:?}); then {}; \
                 v2's sticky users -> {}",
                breaker
                    .recovered_after
                    .map_or("never".to_owned(), |d| format!("{:.1}s", d.as_secs_f64())),
                describe(&recovered),
                describe(&breaker.recovered_sticky_v2_users)
            ),
        ];
        breaker.recovered = recovered;
        facts.breaker = Some(breaker);
        StepReport {
            number: 4,
            title,
            verdict: checks.verdict(),
            summary,
        }
    }

    fn counters(&self, out: &mut dyn Write, facts: &mut Facts) -> StepReport {
        say(
            out,
            "\n==> 5. the filters' counters (GET /stats on the admin interface)",
        );
        let mut checks = Checks::default();
        let sluice_stats = format!("{}{}", wire::ENVOY_METRIC_PREFIX, wire::METRIC_PREFIX);
        match self.envoy.stats_text() {
            Ok(text) => {
                for line in text.lines() {
                    let Some((name, value)) = line.split_once(": ") else {
                        continue;
                    };
                    if name.starts_with(&sluice_stats)
                        && let Ok(value) = value.trim().parse::<u64>()
                        && value > 0
                    {
                        facts.counters.insert(name.to_owned(), value);
                    }
                }
            }
            Err(e) => checks.expect(false, || format!("cannot read /stats: {e:#}")),
        }
        for (name, value) in &facts.counters {
            say(out, &format!("    {name}: {value}"));
        }
        let jason = format!(
            "{}{}",
            wire::ENVOY_METRIC_PREFIX,
            sluice_core::metrics::router_rule_matched("reviews-jason")
        );
        let jason = jason.as_str();
        checks.expect(
            facts
                .counters
                .get(jason)
                .is_some_and(|n| *n >= ROUTING_REQUESTS as u64),
            || {
                format!(
                    "{jason} should count at least {ROUTING_REQUESTS}, got {:?}",
                    facts.counters.get(jason)
                )
            },
        );
        let routed: u64 = facts
            .counters
            .iter()
            .filter(|(name, _)| {
                name.strip_prefix(wire::ENVOY_METRIC_PREFIX)
                    .is_some_and(|name| name.starts_with(wire::CANARY_SPLIT_PREFIX))
                    && name.ends_with(wire::CANARY_ROUTED_SUFFIX)
            })
            .map(|(_, n)| *n)
            .sum();
        checks.expect(routed >= SPLIT_REQUESTS as u64, || {
            format!("the canary's routed counters add up to {routed}, fewer than the {SPLIT_REQUESTS} split requests")
        });
        let summary = vec![format!(
            "{} non-zero sluice counters; {jason} = {}; canary routed = {routed}",
            facts.counters.len(),
            facts.counters.get(jason).copied().unwrap_or(0)
        )];
        StepReport {
            number: 5,
            title: "filter counters in Envoy's /stats",
            verdict: checks.verdict(),
            summary,
        }
    }
}

/// Sums per-user counts into one served-by -> count map.
fn merge(per_user: &BTreeMap<String, BTreeMap<String, u64>>) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    for served in per_user.values() {
        for (who, n) in served {
            *all.entry(who.clone()).or_insert(0) += n;
        }
    }
    all
}

/// The users of `sticky` that a member served, e.g. the users pinned to `ratings-v2`.
pub fn users_on(
    sticky: &BTreeMap<String, BTreeMap<String, u64>>,
    member: &str,
) -> BTreeSet<String> {
    sticky
        .iter()
        .filter(|(_, served)| served.contains_key(member))
        .map(|(user, _)| user.clone())
        .collect()
}

/// The repository's demo mesh directory (`examples/demo`).
pub fn mesh_dir() -> PathBuf {
    crate::repo_root().join("examples").join("demo")
}

/// Demos before sluice marked its output folders wrote `<out_dir>/envoy.yaml` alone and no
/// manifest; sluice now refuses such a folder as foreign. That file is the demo's own, so an
/// unmarked folder holding exactly it is removed first; anything else is left for the refusal.
fn forget_unmarked_demo_output(dir: &Path) {
    if sluice::output::is_sluice_output(dir) {
        return;
    }
    let entries: Vec<_> = std::fs::read_dir(dir)
        .map(|list| list.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    if entries.len() == 1 && entries[0] == "envoy.yaml" {
        let _ = std::fs::remove_file(dir.join("envoy.yaml"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_endpoint_goes_to_its_backend_and_the_yaml_stays_as_written() {
        let mesh = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: reviews}\n\
            spec:\n  hosts: [reviews]\n  ports: [{number: 9080, name: http, protocol: HTTP}]\n\
            \x20 resolution: STATIC\n  endpoints:\n\
            \x20 - {address: 127.0.0.1, ports: {http: 9101}, labels: {version: v1}}\n\
            \x20 - address: 127.0.0.1\n    ports:\n      http: 9102\n    labels: {version: v2}\n";
        let inputs = sluice::Inputs::from_text("mesh.yaml", mesh);
        let (backends, ports) = start_backends(&inputs).unwrap();
        let names: Vec<&str> = backends.iter().map(Upstream::name).collect();
        assert_eq!(names, ["reviews-v1", "reviews-v2"]);
        let options = sluice::Options {
            wasm: sluice::WasmModules::NotRead,
            ..sluice::Options::default()
        };
        let mut mesh = sluice::model(&inputs, &options).unwrap().mesh;
        remap_endpoints(&mut mesh, &ports);
        let endpoints: Vec<u32> = mesh
            .clusters
            .values()
            .flat_map(|c| c.endpoints.iter().map(|e| e.port))
            .collect();
        assert!(!endpoints.is_empty());
        for port in endpoints {
            assert!(
                backends.iter().any(|b| u32::from(b.port()) == port),
                "endpoint port {port} is a backend's"
            );
        }
        assert!(
            inputs.files[0].text.contains("http: 9101"),
            "the YAML is untouched"
        );
    }

    #[test]
    fn wired_reads_the_features_off_the_config() {
        let none = Wired::from_config("name: sluice-router\nname: sluice-canary\n");
        assert!(!none.fault && !none.breaker && !none.sticky);
        let all = Wired::from_config(
            "name: sluice-fault\nname: sluice-breaker\nvalue: \"{\\\"sticky\\\":{}}\"",
        );
        assert!(all.fault && all.breaker && all.sticky);
    }
}
