//! libFuzzer runs of every target in fuzz/ (a separate crate with its own workspace and its own
//! target dir, fuzz/target). `cargo xtask test` and `cargo xtask fuzz` run them the same way,
//! and a missing tool is a failure, never a skip:
//!
//! - cargo-fuzz is installed by xtask itself from crates.io, pinned ([`CARGO_FUZZ_VERSION`]),
//!   into `.tools/cargo-fuzz` (built in a staging dir and renamed into place, so an aborted or
//!   concurrent install never leaves a half-made tool behind).
//! - No nightly toolchain: the targets are built with the pinned stable toolchain of
//!   rust-toolchain.toml and `RUSTC_BOOTSTRAP=1`. cargo-fuzz builds with the AddressSanitizer
//!   (its default) by passing `-Zsanitizer=address` to rustc, an unstable flag a stable rustc
//!   refuses; `RUSTC_BOOTSTRAP=1` is the switch that makes it accept it. Its other flags
//!   (`-Cpasses=sancov-module`, `-Cllvm-args=-sanitizer-coverage-*`, `--cfg fuzzing`) are
//!   stable. The variable is set only on the `cargo fuzz build` command, never on the
//!   workspace's own builds. The AddressSanitizer runtime ships with the stable toolchain
//!   (`librustc-stable_rt.asan.a`), and libfuzzer-sys builds libFuzzer with the system C++
//!   compiler, so nothing else is downloaded.
//! - Each run starts from a scratch copy of the committed seeds (fuzz/target/corpus-run/<target>):
//!   what libFuzzer adds to its corpus stays there, the repository stays clean.
//! - A crash, a hang (`-timeout`), an input over the RSS limit or a leak fails the run, with
//!   the reproducer's path and the failure report (panic message, stack) from the output.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The cargo-fuzz release xtask installs (crates.io, `--locked`).
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Seconds per target when neither `--seconds` nor [`SECONDS_ENV`] says otherwise (7 targets:
/// about 2.5 min of runs, plus the build).
pub const DEFAULT_SECONDS: u32 = 20;

/// Overrides [`DEFAULT_SECONDS`] for `cargo xtask test` and `cargo xtask fuzz`.
pub const SECONDS_ENV: &str = "SLUICE_FUZZ_SECONDS";

/// The targets of fuzz/Cargo.toml.
pub const TARGETS: [&str; 7] = [
    "router_config",
    "canary_config",
    "fault_config",
    "breaker_config",
    "match_request",
    "regex",
    "builder_yaml",
];

/// Limits of one libFuzzer run: an input running longer than `TIMEOUT_SECONDS` is a hang, a
/// process over `RSS_LIMIT_MB` a failure (the builder caps its YAML well below that).
const TIMEOUT_SECONDS: u32 = 10;
const RSS_LIMIT_MB: u32 = 2048;
const MAX_LEN: u32 = 8192;

/// Lines of a failing target's output shown in the error (the report and its stack).
const REPORT_LINES: usize = 150;

/// Seconds per target: `explicit` (`--seconds`), else `$SLUICE_FUZZ_SECONDS`, else
/// [`DEFAULT_SECONDS`].
pub fn seconds(explicit: Option<u32>) -> Result<u32> {
    if let Some(seconds) = explicit {
        return Ok(seconds);
    }
    parse_seconds(std::env::var(SECONDS_ENV).ok().as_deref())
}

fn parse_seconds(value: Option<&str>) -> Result<u32> {
    match value.map(str::trim) {
        None | Some("") => Ok(DEFAULT_SECONDS),
        Some(text) => match text.parse::<u32>() {
            Ok(seconds) if seconds > 0 => Ok(seconds),
            _ => bail!("{SECONDS_ENV}={text:?}: expected a positive number of seconds"),
        },
    }
}

fn tool_dir() -> PathBuf {
    crate::repo_root().join(".tools").join("cargo-fuzz")
}

/// Does `binary --version` say [`CARGO_FUZZ_VERSION`]?
fn has_pinned_version(binary: &Path) -> bool {
    Command::new(binary)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success() && is_pinned_version(&String::from_utf8_lossy(&o.stdout)))
}

/// `cargo-fuzz 0.13.2` (its `--version` line) is the pinned release.
fn is_pinned_version(version_output: &str) -> bool {
    version_output.split_whitespace().nth(1) == Some(CARGO_FUZZ_VERSION)
}

/// The pinned cargo-fuzz, installed into `.tools/cargo-fuzz` when missing or another version.
/// Returns its binary.
pub fn ensure_cargo_fuzz() -> Result<PathBuf> {
    let dir = tool_dir();
    let binary = dir.join("bin").join("cargo-fuzz");
    if has_pinned_version(&binary) {
        return Ok(binary);
    }
    // Per-process staging dir: two concurrent installs do not share one, and a staging dir
    // left by an aborted install is never mistaken for a tool (only `dir` is looked at).
    let staging = dir.with_extension(format!("new-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    println!(
        "xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} into {} (once, a few minutes)",
        dir.display()
    );
    let mut install = Command::new("cargo");
    install
        .current_dir(crate::repo_root())
        .args(["install", "cargo-fuzz", "--locked", "--version"])
        .arg(format!("={CARGO_FUZZ_VERSION}"))
        .arg("--root")
        .arg(&staging)
        // cargo install builds in a temporary dir it removes, not in the workspace's target.
        .env_remove("CARGO_TARGET_DIR");
    let status = install.status().context("run cargo install cargo-fuzz")?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        bail!("cargo install cargo-fuzz --version ={CARGO_FUZZ_VERSION} failed ({status})");
    }
    if dir.exists() {
        if has_pinned_version(&binary) {
            // Another install finished first.
            let _ = std::fs::remove_dir_all(&staging);
            return Ok(binary);
        }
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    if let Err(error) = std::fs::rename(&staging, &dir) {
        let _ = std::fs::remove_dir_all(&staging);
        if !has_pinned_version(&binary) {
            return Err(error).with_context(|| format!("move cargo-fuzz into {}", dir.display()));
        }
    }
    if !has_pinned_version(&binary) {
        bail!(
            "{} does not report cargo-fuzz {CARGO_FUZZ_VERSION}",
            binary.display()
        );
    }
    Ok(binary)
}

/// The host triple of the pinned toolchain (`rustc -vV`): where cargo-fuzz puts the binaries.
fn host_triple() -> Result<String> {
    let output = Command::new("rustc")
        .current_dir(crate::repo_root())
        .arg("-vV")
        .output()
        .context("run rustc -vV")?;
    parse_host(&String::from_utf8_lossy(&output.stdout)).context("no host: line in rustc -vV")
}

fn parse_host(rustc_vv: &str) -> Option<String> {
    rustc_vv
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(|host| host.trim().to_string())
}

/// `cargo fuzz build -O` of every target, on the pinned stable toolchain (see the module doc
/// for `RUSTC_BOOTSTRAP`). Returns the directory of the target binaries.
fn build_targets(cargo_fuzz: &Path, fuzz_dir: &Path) -> Result<PathBuf> {
    let host = host_triple()?;
    let mut build = Command::new(cargo_fuzz);
    build
        // fuzz/ is under the repository: rust-toolchain.toml applies.
        .current_dir(fuzz_dir)
        .args(build_args(&host))
        .env("RUSTC_BOOTSTRAP", "1")
        // fuzz/ is its own workspace with its own target dir (fuzz/target).
        .env_remove("CARGO_TARGET_DIR");
    let status = build.status().context("run cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build -O failed ({status})");
    }
    Ok(fuzz_dir.join("target").join(host).join("release"))
}

fn build_args(host: &str) -> Vec<String> {
    ["fuzz", "build", "-O", "--target", host]
        .map(String::from)
        .to_vec()
}

/// The libFuzzer command line of one run: the scratch corpus (libFuzzer reads it and writes
/// what it finds into it), reproducers under `artifacts`, bounded time, length, RSS and time per
/// input, and the final stats this module parses.
fn run_args(seconds: u32, corpus: &Path, artifacts: &Path) -> Vec<OsString> {
    let mut prefix = OsString::from("-artifact_prefix=");
    prefix.push(artifacts.as_os_str());
    prefix.push("/");
    vec![
        prefix,
        format!("-max_total_time={seconds}").into(),
        format!("-max_len={MAX_LEN}").into(),
        format!("-rss_limit_mb={RSS_LIMIT_MB}").into(),
        format!("-timeout={TIMEOUT_SECONDS}").into(),
        "-print_final_stats=1".into(),
        corpus.as_os_str().to_owned(),
    ]
}

/// What one run measured, from libFuzzer's output.
#[derive(Debug, Default, PartialEq, Eq)]
struct Stats {
    /// `stat::number_of_executed_units`.
    executions: Option<u64>,
    /// `corp: N/...` of the last status line.
    corpus: Option<u64>,
    /// `cov: N` of the last status line (edges).
    coverage: Option<u64>,
    /// `Test unit written to <path>`: the reproducer of a failure.
    reproducer: Option<String>,
    /// The kind of failure libFuzzer reported, if any.
    failure: Option<&'static str>,
}

fn parse_output(output: &str) -> Stats {
    let mut stats = Stats::default();
    for line in output.lines() {
        let line = line.trim();
        if let Some(value) = line.strip_prefix("stat::number_of_executed_units:") {
            stats.executions = value.trim().parse().ok();
        }
        if line.starts_with('#') {
            if let Some(value) = field(line, "corp:") {
                stats.corpus = value.split('/').next().and_then(|n| n.parse().ok());
            }
            if let Some(value) = field(line, "cov:") {
                stats.coverage = value.parse().ok();
            }
        }
        if let Some(path) = line.split("Test unit written to ").nth(1) {
            stats.reproducer = Some(path.trim().to_string());
        }
        if stats.failure.is_none() {
            stats.failure = failure_kind(line);
        }
    }
    stats
}

/// The word after `key` in a libFuzzer status line (`#1024 NEW cov: 12 ft: 13 corp: 4/9b ...`).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == key)?;
    words.next()
}

fn failure_kind(line: &str) -> Option<&'static str> {
    if line.contains("libFuzzer: timeout") {
        Some("hang (timeout)")
    } else if line.contains("libFuzzer: out-of-memory") || line.contains("malloc limit") {
        Some("over the RSS limit")
    } else if line.contains("LeakSanitizer") {
        Some("leak")
    } else if line.contains("libFuzzer: deadly signal") || line.contains("ERROR: AddressSanitizer")
    {
        Some("crash")
    } else {
        None
    }
}

/// The failure report in a target's output: from the panic message or the first sanitizer or
/// libFuzzer error (whichever comes first) for [`REPORT_LINES`] lines, else the last lines.
fn report(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let start = lines
        .iter()
        .position(|line| line.contains("panicked at") || line.contains("ERROR: "))
        .unwrap_or(lines.len().saturating_sub(REPORT_LINES));
    let end = lines.len().min(start + REPORT_LINES);
    let mut report = lines[start..end].join("\n");
    if end < lines.len() {
        report.push_str(&format!("\n... ({} more lines)", lines.len() - end));
    }
    report
}

/// One target's result, for the summary.
struct Outcome {
    target: &'static str,
    seconds: f64,
    stats: Stats,
    /// None when the run passed, else why it failed (with the reproducer and the stack).
    error: Option<String>,
}

fn summary_line(outcome: &Outcome) -> String {
    let number = |n: Option<u64>| n.map_or_else(|| "?".to_string(), |n| n.to_string());
    let verdict = match &outcome.error {
        None => "ok",
        Some(_) => outcome.stats.failure.unwrap_or("failed"),
    };
    format!(
        "{:<15} {:>5.1}s {:>11} executions {:>6} corpus {:>6} cov  {verdict}",
        outcome.target,
        outcome.seconds,
        number(outcome.stats.executions),
        number(outcome.stats.corpus),
        number(outcome.stats.coverage),
    )
}

/// Copies the committed seeds of `target` into a fresh scratch corpus.
fn scratch_corpus(fuzz_dir: &Path, target: &str) -> Result<PathBuf> {
    let seeds = fuzz_dir.join("corpus").join(target);
    let scratch = fuzz_dir.join("target").join("corpus-run").join(target);
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).with_context(|| format!("mkdir {}", scratch.display()))?;
    for entry in std::fs::read_dir(&seeds).with_context(|| format!("read {}", seeds.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), scratch.join(entry.file_name()))
                .with_context(|| format!("copy {}", entry.path().display()))?;
        }
    }
    Ok(scratch)
}

fn run_target(
    bin_dir: &Path,
    fuzz_dir: &Path,
    target: &'static str,
    seconds: u32,
) -> Result<Outcome> {
    let corpus = scratch_corpus(fuzz_dir, target)?;
    let artifacts = fuzz_dir.join("artifacts").join(target);
    std::fs::create_dir_all(&artifacts)
        .with_context(|| format!("mkdir {}", artifacts.display()))?;
    let log = fuzz_dir
        .join("target")
        .join("corpus-run")
        .join(format!("{target}.log"));
    println!(
        "fuzz: {target} for {seconds}s (output in {})",
        log.display()
    );
    let started = Instant::now();
    let output = Command::new(bin_dir.join(target))
        .current_dir(fuzz_dir)
        .args(run_args(seconds, &corpus, &artifacts))
        .output()
        .with_context(|| format!("run the fuzz target {target}"))?;
    let elapsed = started.elapsed().as_secs_f64();
    // libFuzzer reports on stderr; a target's own prints go to stdout.
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    std::fs::write(&log, &text).with_context(|| format!("write {}", log.display()))?;
    let stats = parse_output(&text);
    let error = if output.status.success() && stats.failure.is_none() {
        None
    } else {
        let reproducer = stats.reproducer.as_deref().map_or_else(
            || format!("no reproducer written (see {})", artifacts.display()),
            |path| {
                format!(
                    "reproducer: {} (replay: {} {})",
                    fuzz_dir.join(path).display(),
                    bin_dir.join(target).display(),
                    fuzz_dir.join(path).display()
                )
            },
        );
        Some(format!(
            "fuzz target {target}: {} ({})\n{reproducer}\nfull output: {}\n--- the report ---\n{}",
            stats.failure.unwrap_or("failed"),
            output.status,
            log.display(),
            report(&text)
        ))
    };
    Ok(Outcome {
        target,
        seconds: elapsed,
        stats,
        error,
    })
}

/// Installs cargo-fuzz if needed, builds every target, runs each for `seconds` from a scratch
/// copy of its seeds, prints a summary line per target, and fails on any crash, hang, RSS
/// overrun or leak.
pub fn fuzz(seconds: u32) -> Result<()> {
    let cargo_fuzz = ensure_cargo_fuzz()?;
    let fuzz_dir = crate::repo_root().join("fuzz");
    let bin_dir = build_targets(&cargo_fuzz, &fuzz_dir)?;
    let mut outcomes = Vec::new();
    for target in TARGETS {
        let outcome = run_target(&bin_dir, &fuzz_dir, target, seconds)?;
        if let Some(error) = &outcome.error {
            eprintln!("{error}");
        }
        outcomes.push(outcome);
    }
    println!(
        "\n==> fuzz summary ({seconds}s per target; target, time, executions, corpus, coverage, outcome)"
    );
    for outcome in &outcomes {
        println!("  {}", summary_line(outcome));
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.error.is_some())
        .map(|o| o.target)
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (reproducers in fuzz/artifacts/<target>/, output above)",
            failed.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_default_and_override() {
        assert_eq!(parse_seconds(None).unwrap(), DEFAULT_SECONDS);
        assert_eq!(parse_seconds(Some("")).unwrap(), DEFAULT_SECONDS);
        assert_eq!(parse_seconds(Some(" 45 ")).unwrap(), 45);
        assert!(parse_seconds(Some("0")).is_err());
        assert!(parse_seconds(Some("ten")).is_err());
        assert_eq!(seconds(Some(3)).unwrap(), 3);
    }

    #[test]
    fn pinned_version_is_read_from_the_version_line() {
        assert!(is_pinned_version("cargo-fuzz 0.13.2\n"));
        assert!(!is_pinned_version("cargo-fuzz 0.12.0\n"));
        assert!(!is_pinned_version(""));
    }

    #[test]
    fn host_comes_from_rustc_vv() {
        let vv = "rustc 1.95.0 (abc 2026-01-01)\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\nrelease: 1.95.0\n";
        assert_eq!(parse_host(vv).as_deref(), Some("x86_64-unknown-linux-gnu"));
        assert_eq!(parse_host("rustc 1.95.0"), None);
    }

    #[test]
    fn build_is_optimised_for_the_host() {
        assert_eq!(
            build_args("x86_64-unknown-linux-gnu").join(" "),
            "fuzz build -O --target x86_64-unknown-linux-gnu"
        );
    }

    #[test]
    fn run_command_is_bounded_and_writes_only_to_the_scratch_corpus() {
        let args = run_args(
            20,
            Path::new("/r/fuzz/target/corpus-run/regex"),
            Path::new("/r/fuzz/artifacts/regex"),
        );
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "-artifact_prefix=/r/fuzz/artifacts/regex/",
                "-max_total_time=20",
                "-max_len=8192",
                "-rss_limit_mb=2048",
                "-timeout=10",
                "-print_final_stats=1",
                "/r/fuzz/target/corpus-run/regex",
            ]
        );
    }

    #[test]
    fn final_stats_of_a_clean_run() {
        let output = "\
INFO: Seed: 1234
INFO:        6 files found in corpus-run/regex
#7\tINITED cov: 310 ft: 400 corp: 6/120b exec/s: 0 rss: 40Mb
#1024\tNEW    cov: 320 ft: 420 corp: 7/130b lim: 8 exec/s: 0 rss: 41Mb L: 4/8 MS: 1 ChangeBit-
#402113\tDONE   cov: 455 ft: 1533 corp: 301/9870b lim: 4096 exec/s: 20105 rss: 350Mb
Done 402113 runs in 21 second(s)
stat::number_of_executed_units: 402113
stat::average_exec_per_sec:     20105
stat::new_units_added:          310
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              350
";
        assert_eq!(
            parse_output(output),
            Stats {
                executions: Some(402_113),
                corpus: Some(301),
                coverage: Some(455),
                reproducer: None,
                failure: None,
            }
        );
    }

    #[test]
    fn crash_timeout_and_oom_are_failures_with_their_reproducer() {
        let crash = "\
#100\tNEW    cov: 20 ft: 21 corp: 3/9b lim: 4 exec/s: 0 rss: 30Mb
thread '<unnamed>' panicked at src/lib.rs:3:5:
boom
==4242== ERROR: libFuzzer: deadly signal
    #0 0x55 in __sanitizer_print_stack_trace
artifact_prefix='/r/fuzz/artifacts/regex/'; Test unit written to /r/fuzz/artifacts/regex/crash-da39a3ee
Base64: AAEC
stat::number_of_executed_units: 101
";
        let stats = parse_output(crash);
        assert_eq!(stats.failure, Some("crash"));
        assert_eq!(
            stats.reproducer.as_deref(),
            Some("/r/fuzz/artifacts/regex/crash-da39a3ee")
        );
        assert_eq!(stats.executions, Some(101));

        let timeout = "==77== ERROR: libFuzzer: timeout after 10 seconds\nTest unit written to a/timeout-01\n";
        assert_eq!(parse_output(timeout).failure, Some("hang (timeout)"));
        let oom = "==77== ERROR: libFuzzer: out-of-memory (used: 2100Mb; exceeds: 2048Mb)\nTest unit written to a/oom-01\n";
        let stats = parse_output(oom);
        assert_eq!(stats.failure, Some("over the RSS limit"));
        assert_eq!(stats.reproducer.as_deref(), Some("a/oom-01"));
        let leak = "==9==ERROR: LeakSanitizer: detected memory leaks\n";
        assert_eq!(parse_output(leak).failure, Some("leak"));
    }

    #[test]
    fn report_starts_at_the_panic_or_error() {
        let output = "#1 INITED\n#2 NEW\nthread '<unnamed>' panicked at a.rs:1:1:\nboom\n==1== ERROR: libFuzzer: deadly signal\nTest unit written to x\n";
        assert_eq!(
            report(output),
            "thread '<unnamed>' panicked at a.rs:1:1:\nboom\n==1== ERROR: libFuzzer: deadly signal\nTest unit written to x"
        );
        let long: String = (0..400).map(|i| format!("line {i}\n")).collect();
        let tail = report(&long);
        assert!(tail.starts_with("line 250\n"), "{tail}");
        assert!(tail.ends_with("line 399"), "{tail}");
        let long = format!("ERROR: x\n{long}");
        assert!(report(&long).ends_with("... (251 more lines)"));
    }

    #[test]
    fn summary_line_names_target_time_executions_corpus_and_outcome() {
        let outcome = Outcome {
            target: "regex",
            seconds: 20.4,
            stats: Stats {
                executions: Some(402_113),
                corpus: Some(301),
                coverage: Some(455),
                ..Stats::default()
            },
            error: None,
        };
        assert_eq!(
            summary_line(&outcome),
            "regex            20.4s      402113 executions    301 corpus    455 cov  ok"
        );
        let failed = Outcome {
            stats: Stats {
                failure: Some("crash"),
                ..Stats::default()
            },
            error: Some("boom".into()),
            ..outcome
        };
        let line = summary_line(&failed);
        assert!(line.contains("? executions"), "{line}");
        assert!(line.ends_with("? cov  crash"), "{line}");
    }
}
