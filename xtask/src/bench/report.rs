//! The report: medians over rounds, the machine it ran on, and the markdown of
//! BENCHMARKS.md (the notes after [`NOTES_MARKER`] are kept across runs).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use sluice_bench::OpenLoopReport;
use sluice_bench::envoy_log::EnvoyTimings;

use super::configs::{CONFIGS, native_equivalent};
use super::load::{NICE, OPEN_LOOP_CONNECTIONS, WRK_CONNECTIONS, online_cpus};
use super::{BenchOptions, ConfigResult, Report};

/// Everything after this line of the report is kept across runs of the bench.
pub const NOTES_MARKER: &str = "<!-- notes: kept by cargo xtask bench -->";

/// Puts `body` into the report at `path` as section `id`: between `<!-- bench:ID -->` and
/// `<!-- /bench:ID -->`, replacing what was there, or, the first time, right after
/// [`NOTES_MARKER`] (so the data-plane bench, which rewrites everything above the marker,
/// keeps it). Creates the report if missing. The sections of `cargo xtask bench control-plane`,
/// `store`, `probes` and `builder` live there, each rewritten only by its own run.
pub fn upsert_section(path: &Path, id: &str, body: &str) -> Result<()> {
    let previous = std::fs::read_to_string(path).unwrap_or_default();
    let updated = with_section(&previous, id, body);
    std::fs::write(path, updated).with_context(|| format!("write {}", path.display()))
}

fn with_section(report: &str, id: &str, body: &str) -> String {
    let open = format!("<!-- bench:{id} -->");
    let close = format!("<!-- /bench:{id} -->");
    let section = format!("{open}\n{}\n{close}", body.trim_end());
    if let Some(start) = report.find(&open)
        && let Some(end) = report[start..].find(&close)
    {
        let end = start + end + close.len();
        return format!("{}{section}{}", &report[..start], &report[end..]);
    }
    match report.find(NOTES_MARKER) {
        Some(at) => {
            // After the marker, or after the last section already there: sections keep the
            // order in which they were first written.
            let mut after = at + NOTES_MARKER.len();
            if let Some(last) = report[after..].rfind("<!-- /bench:")
                && let Some(end) = report[after + last..].find("-->")
            {
                after += last + end + "-->".len();
            }
            format!("{}\n\n{section}{}", &report[..after], &report[after..])
        }
        None => format!("{}\n{NOTES_MARKER}\n\n{section}\n", report.trim_end()),
    }
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

pub(super) fn median_u64(values: impl Iterator<Item = u64>) -> f64 {
    median(&values.map(|v| v as f64).collect::<Vec<_>>())
}

pub(super) fn machine() -> String {
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

pub(super) fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub(super) fn render(
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
         rounds; rounds interleave configurations. See `xtask/src/bench/configs.rs` for the \
         exact configurations.\n"
    );
    let _ = writeln!(
        md,
        "## Closed-loop throughput and CPU (wrk, {WRK_CONNECTIONS} connections)\n"
    );
    let _ = writeln!(
        md,
        "| configuration | req/s | vs plain | vs native | vs its native equivalent | Envoy CPU us/req | CPU over plain | CPU over its native equivalent | capacity vs plain (CPU) | RSS MiB |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let plain_cpu = median(&plain.cpu_us_per_request);
    for name in CONFIGS.iter().filter(|n| report.configs.contains_key(**n)) {
        let c = get(name);
        let rps = median(&c.rps);
        let cpu = median(&c.cpu_us_per_request);
        // Against the Envoy-only configuration doing the same, when it was measured too.
        let equivalent = native_equivalent(name)
            .and_then(|native| report.configs.get(native))
            .map(|native| (median(&native.rps), median(&native.cpu_us_per_request)));
        let (vs_equivalent, cpu_over_equivalent) = equivalent.map_or_else(
            || (String::new(), String::new()),
            |(native_rps, native_cpu)| {
                (
                    format!("{:.1} %", 100.0 * rps / native_rps),
                    format!("{:+.1}", cpu - native_cpu),
                )
            },
        );
        let _ = writeln!(
            md,
            "| {name} | {rps:.0} | {:.1} % | {:.1} % | {vs_equivalent} | {cpu:.1} | {:+.1} | {cpu_over_equivalent} | {:.1} % | {:.1} |",
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
pub(super) fn render_envoy_side(md: &mut String, report: &Report) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_inserted_after_the_marker_then_replaced() {
        let report = format!("# t\n\n{NOTES_MARKER}\n\n## Notes\n");
        let once = with_section(&report, "x", "## X\n\nfirst\n");
        assert_eq!(
            once,
            format!(
                "# t\n\n{NOTES_MARKER}\n\n<!-- bench:x -->\n## X\n\nfirst\n<!-- /bench:x -->\n\n## Notes\n"
            )
        );
        let twice = with_section(&once, "x", "## X\n\nsecond");
        assert_eq!(twice, once.replace("first", "second"));
        let other = with_section(&twice, "y", "## Y");
        assert!(other.contains(
            "<!-- /bench:x -->\n\n<!-- bench:y -->\n## Y\n<!-- /bench:y -->\n\n## Notes"
        ));
        assert!(with_section("", "z", "Z").contains(NOTES_MARKER));
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
