//! Short libFuzzer runs of every target in fuzz/ (a separate crate, excluded from the
//! workspace). `cargo xtask test` runs them when the nightly toolchain and cargo-fuzz are
//! installed and says clearly why it skips them otherwise; `cargo xtask fuzz` requires them.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Seconds per target in `cargo xtask test` (7 targets: about 1.5 min plus the build).
pub const TEST_SECONDS: u32 = 12;

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

/// Why fuzzing cannot run here, if it cannot.
fn missing_tools() -> Option<String> {
    let nightly = Command::new("cargo")
        .args(["+nightly", "--version"])
        .output();
    if !nightly.is_ok_and(|o| o.status.success()) {
        return Some("no nightly toolchain (rustup toolchain install nightly)".into());
    }
    let fuzz = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output();
    if !fuzz.is_ok_and(|o| o.status.success()) {
        return Some("cargo-fuzz is not installed (cargo install cargo-fuzz)".into());
    }
    None
}

/// Runs each target for `seconds` on its corpus (fuzz/corpus/<target>, seeds checked in).
/// `required`: fail when the tools are missing instead of skipping with a message.
pub fn fuzz(seconds: u32, required: bool) -> Result<()> {
    if let Some(reason) = missing_tools() {
        if required {
            bail!("cannot fuzz: {reason}");
        }
        println!("SKIPPED fuzzing: {reason}");
        return Ok(());
    }
    let dir = crate::repo_root().join("fuzz");
    // Build every target once, then run each binary: `cargo fuzz run` would check the build
    // again per target.
    let status = Command::new("cargo")
        .current_dir(&dir)
        .args(["+nightly", "fuzz", "build", "-O"])
        .status()
        .context("run cargo fuzz build")?;
    if !status.success() {
        bail!("cargo +nightly fuzz build -O failed ({status})");
    }
    let bin_dir = dir.join("target/x86_64-unknown-linux-gnu/release");
    let mut failed = Vec::new();
    for target in TARGETS {
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus).with_context(|| format!("mkdir {}", corpus.display()))?;
        println!("fuzz: {target} for {seconds}s");
        let artifacts = dir.join("artifacts").join(target);
        std::fs::create_dir_all(&artifacts)
            .with_context(|| format!("mkdir {}", artifacts.display()))?;
        let status = Command::new(bin_dir.join(target))
            .current_dir(&dir)
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(&corpus)
            .args([
                &format!("-max_total_time={seconds}"),
                "-max_len=8192",
                "-rss_limit_mb=2048",
                "-timeout=10",
            ])
            .status()
            .with_context(|| format!("run the fuzz target {target}"))?;
        if !status.success() {
            failed.push(target);
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (crashing inputs in fuzz/artifacts/<target>/)",
            failed.join(", ")
        );
    }
    Ok(())
}
