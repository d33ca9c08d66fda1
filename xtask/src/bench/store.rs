//! `cargo xtask bench store` (issue 21): apply-to-ACK through etcd. A real 3-member etcd
//! cluster ([`EtcdCluster`], as the tests start it), two `sluice serve --store` replicas (release,
//! each its own process), the load generator's streams split between them, and `sluice apply`
//! of one canary weight change: from the start of the `sluice apply` process to the last
//! stream's ACK, on the same 1,000-service mesh as the file-source figure of
//! [`super::control_plane`].

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice_integration::etcd::EtcdCluster;

use super::ads_load::Fleet;
use super::builder_scale::{Variant, release_binary};
use super::control_plane::{
    MeshDir, Repetition, dir_bytes, load_average, mean, measure_once, percentile, priority_note,
    wait_in_sync,
};
use super::load::prioritise;
use super::report::{machine, today, upsert_section};
use super::serve_process::ServeProcess;

/// What to run.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Services in the mesh.
    pub services: u32,
    /// ADS streams, split between the replicas.
    pub streams: usize,
    /// Serve replicas.
    pub replicas: usize,
    /// etcd members.
    pub members: usize,
    /// Applies measured.
    pub repetitions: usize,
    /// The report to update (its store section).
    pub output: PathBuf,
    /// The command line to print.
    pub command_line: String,
}

/// The run's figures.
#[derive(Debug, Clone)]
pub struct StoreReport {
    /// The options run.
    pub options: StoreOptions,
    /// Input bytes of the mesh.
    pub input_bytes: u64,
    /// The first apply (every resource written), seconds.
    pub first_apply: f64,
    /// Each measured apply.
    pub repetitions: Vec<Repetition>,
    /// How long each `sluice apply` process ran, seconds.
    pub apply_seconds: Vec<f64>,
    /// CPU seconds of each replica over the measured applies.
    pub replica_cpu: Vec<f64>,
    /// Peak RSS of each replica, KiB.
    pub replica_peak_rss_kib: Vec<u64>,
    /// Load average at the start.
    pub load_average: String,
    /// Wall time of the run.
    pub wall: Duration,
    /// Whether the processes ran at a raised priority.
    pub prioritised: bool,
}

/// Runs the store bench and writes its section of the report.
pub fn store(options: &StoreOptions, wasm_dir: &Path) -> Result<StoreReport> {
    let started = Instant::now();
    let load_average = load_average();
    let binary = release_binary()?;
    // etcd, the replicas, `sluice apply` and the generator inherit it (not the build above).
    let prioritised = prioritise(std::process::id()).is_ok();
    let mut mesh = MeshDir::create(options.services)?;
    let input_bytes = dir_bytes(mesh.path())?;
    eprintln!("bench store: {} etcd members", options.members);
    let etcd = EtcdCluster::start(options.members)?;
    let url = etcd.store_url("/sluice-bench");
    let apply = |mesh: &MeshDir| -> Result<f64> {
        let started = Instant::now();
        let output = Command::new(&binary)
            .args(["apply", "-f"])
            .arg(mesh.path())
            .args(["--store", &url])
            .output()
            .context("run sluice apply")?;
        if !output.status.success() {
            bail!(
                "sluice apply failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(started.elapsed().as_secs_f64())
    };
    eprintln!("bench store: first apply of {} services", options.services);
    let first_apply = apply(&mesh)?;

    let logs = tempfile::Builder::new()
        .prefix("sluice-bench-store-logs-")
        .tempdir()?;
    let wasm_dir = std::path::absolute(wasm_dir)?;
    let args: Vec<OsString> = vec![
        "--store".into(),
        url.clone().into(),
        "--wasm-dir".into(),
        wasm_dir.into(),
        "--listen-address".into(),
        "127.0.0.1".into(),
        "--ephemeral-ports".into(),
    ];
    let mut replicas = Vec::new();
    for r in 0..options.replicas {
        eprintln!("bench store: replica {r} starts");
        replicas.push(ServeProcess::start(
            &binary,
            &args,
            logs.path().join(format!("serve-{r}.log")),
        )?);
    }
    let servers: Vec<_> = replicas.iter().map(|r| r.xds).collect();
    eprintln!("bench store: {} ADS streams connect", options.streams);
    let fleet = Fleet::connect(&servers, options.streams, "mesh", 2, false)?;
    let serves: Vec<&ServeProcess> = replicas.iter().collect();
    let cpu_before = replicas
        .iter()
        .map(ServeProcess::cpu_seconds)
        .collect::<Result<Vec<_>>>()?;
    let mut repetitions = Vec::new();
    let mut apply_seconds = Vec::new();
    for k in 0..options.repetitions {
        eprintln!("bench store: apply {}/{}", k + 1, options.repetitions);
        // The folder changes first (not timed): the clock starts with `sluice apply`.
        mesh.put(
            0,
            &Variant {
                weight_v0: 89 - (k as u32) % 80,
                ..Variant::default()
            },
        )?;
        let repetition = measure_once(&serves, &fleet, options.streams, || {
            let at = Instant::now();
            apply_seconds.push(apply(&mesh)?);
            Ok(at)
        })
        .with_context(|| format!("apply {}", k + 1))?;
        repetitions.push(repetition);
    }
    for (r, serve) in replicas.iter().enumerate() {
        wait_in_sync(
            serve,
            options.streams / options.replicas.max(1),
            Duration::from_secs(60),
        )
        .with_context(|| format!("replica {r} in sync"))?;
    }
    let replica_cpu = replicas
        .iter()
        .zip(&cpu_before)
        .map(|(r, before)| Ok(r.cpu_seconds()? - before))
        .collect::<Result<Vec<_>>>()?;
    let replica_peak_rss_kib = replicas
        .iter()
        .map(ServeProcess::peak_rss_kib)
        .collect::<Result<Vec<_>>>()?;
    fleet.close();
    drop(replicas);
    drop(etcd);
    let report = StoreReport {
        options: options.clone(),
        input_bytes,
        first_apply,
        repetitions,
        apply_seconds,
        replica_cpu,
        replica_peak_rss_kib,
        load_average,
        wall: started.elapsed(),
        prioritised,
    };
    let previous = std::fs::read_to_string(&options.output).unwrap_or_default();
    let section = render(&report, file_source_weight(&previous).as_deref());
    upsert_section(&options.output, "store", &section)?;
    println!("{section}");
    Ok(report)
}

/// The p50 and p99 of the file-source weight change, from the control-plane section of the
/// report, when it has one.
fn file_source_weight(report: &str) -> Option<String> {
    let start = report.find("<!-- bench:control-plane -->")?;
    let end = report[start..].find("<!-- /bench:control-plane -->")? + start;
    let section = &report[start..end];
    let row = section
        .lines()
        .find(|l| l.starts_with("| one canary weight |"))?;
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let measured = section
        .lines()
        .find_map(|l| l.strip_prefix("Measured "))
        .and_then(|l| l.split(" on ").next())
        .unwrap_or("an earlier run");
    Some(format!(
        "p50 {} ms, p99 {} ms (the control-plane section, {measured})",
        cells.get(2)?,
        cells.get(3)?
    ))
}

fn render(report: &StoreReport, file_source: Option<&str>) -> String {
    let o = &report.options;
    let last: Vec<f64> = report.repetitions.iter().map(|r| r.last_ack).collect();
    let ms = |s: f64| format!("{:.0}", s * 1000.0);
    let mut md = String::new();
    let _ = writeln!(md, "## Store: apply to ACK through etcd (issue 21)\n");
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
        "A real {}-member etcd cluster (Debian's etcd, loopback, temporary folders, started as \
         the tests start it), {} `sluice serve --store` replicas (release, each its own \
         process), {} ADS streams of the load generator split evenly between them, and the \
         mesh of the control-plane section ({} services, {} bytes of YAML). Each of {} \
         repetitions changes one canary weight in the folder, then times from the start of \
         `sluice apply -f DIR --store ...` (a process: it validates the whole folder and writes \
         one new generation) to the last stream's ACK; p99 of {} values is their maximum. The \
         first apply (every resource written) took {:.2} s.\n",
        o.members,
        o.replicas,
        o.streams,
        o.services,
        report.input_bytes,
        o.repetitions,
        o.repetitions,
        report.first_apply
    );
    let _ = writeln!(
        md,
        "| measure | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: |"
    );
    let row = |md: &mut String, name: &str, values: &[f64]| {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} |",
            ms(percentile(values, 0.5)),
            ms(percentile(values, 0.99)),
            ms(values.iter().copied().fold(0.0, f64::max))
        );
    };
    row(&mut md, "apply to the last stream's ACK", &last);
    row(
        &mut md,
        "apply to the median stream's ACK",
        &report
            .repetitions
            .iter()
            .map(|r| r.median_ack)
            .collect::<Vec<_>>(),
    );
    row(
        &mut md,
        "`sluice apply` process alone",
        &report.apply_seconds,
    );
    row(
        &mut md,
        "replicas' publish-to-ACK (serve's histogram, mean per apply)",
        &report
            .repetitions
            .iter()
            .map(|r| r.serve_mean)
            .collect::<Vec<_>>(),
    );
    let _ = writeln!(
        md,
        "\nBytes per stream per apply: {:.0}. Replicas' CPU over the {} applies: {} s; their \
         peak RSS: {} MiB. Beside it, the file-source weight change (serve watching the \
         folder, 100 ms debounce): {}; through the store, p50 {} ms (the `sluice apply` \
         process, which reads and validates the whole folder before it writes, p50 {} ms).",
        mean(report.repetitions.iter().map(|r| r.bytes_per_proxy)),
        o.repetitions,
        report
            .replica_cpu
            .iter()
            .map(|c| format!("{c:.2}"))
            .collect::<Vec<_>>()
            .join(" and "),
        report
            .replica_peak_rss_kib
            .iter()
            .map(|k| format!("{:.1}", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(" and "),
        file_source.unwrap_or("not measured yet (`cargo xtask bench control-plane`)"),
        ms(percentile(&last, 0.5)),
        ms(percentile(&report.apply_seconds, 0.5))
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_file_source_figure_of_the_control_plane_section() {
        let report = "<!-- bench:control-plane -->\n## Control plane\n\nMeasured 2026-12-07 06:00 UTC on 2 CPUs.\n\n| change | p50 ms | p99 ms |\n| one canary weight | 310 | 420 | 450 |\n<!-- /bench:control-plane -->\n";
        assert_eq!(
            file_source_weight(report).as_deref(),
            Some("p50 310 ms, p99 420 ms (the control-plane section, 2026-12-07 06:00 UTC)")
        );
        assert_eq!(file_source_weight("# nothing"), None);
    }
}
