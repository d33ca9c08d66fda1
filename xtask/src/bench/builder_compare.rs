//! `cargo xtask bench builder` (issue 19): the builder's time on the 1,000-service mesh, this
//! tree against a baseline commit (by default the last one before the re-layout into stage
//! folders), both built in release and run alternately on the same input; and the module
//! sizes table re-measured.
//!
//! The baseline is built from a temporary git worktree of that commit with a target folder of
//! its own (`target/bench-baseline/<commit>/`), which keeps the binary: a second run reuses
//! it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sluice_integration::wasm;

use super::builder_scale::{release_binary, synthetic_mesh};
use super::control_plane::load_average;
use super::report::{NOTES_MARKER, machine, median, today, upsert_section};

/// The last commit before the builder's re-layout (issue 19): db8cd0a ("the xds stage") and
/// 220bbed ("stage folders") are the first re-layout commits, both on top of it.
pub const PRE_RELAYOUT: &str = "23da502";

/// What to run.
#[derive(Debug, Clone)]
pub struct BuilderOptions {
    /// The commit to compare with.
    pub baseline: String,
    /// Runs of each binary.
    pub runs: usize,
    /// Services of the synthetic mesh (3 subsets, 10 rules each).
    pub services: u32,
    /// The report to update.
    pub output: PathBuf,
    /// The command line to print.
    pub command_line: String,
}

/// Runs the comparison, re-measures the module sizes and writes both into the report.
pub fn builder(options: &BuilderOptions, wasm_dir: &Path) -> Result<()> {
    let load = load_average();
    let head = git(&["rev-parse", "--short", "HEAD"])?;
    let baseline = git(&[
        "rev-parse",
        "--short",
        &format!("{}^{{commit}}", options.baseline),
    ])?;
    let current = release_binary()?;
    let old = baseline_binary(&baseline)?;

    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-builder-")
        .tempdir()?;
    let input = dir.path().join("mesh.yaml");
    let mesh = synthetic_mesh(options.services, 3, 10);
    std::fs::write(&input, &mesh)?;
    let (mut now_times, mut old_times) = (Vec::new(), Vec::new());
    for run in 0..options.runs {
        // Alternate which goes first, so drift of the shared machine hits both alike.
        let order: [(&Path, &str); 2] = if run % 2 == 0 {
            [(&current, "now"), (&old, "baseline")]
        } else {
            [(&old, "baseline"), (&current, "now")]
        };
        for (binary, which) in order {
            let seconds = generate(binary, &input, &dir.path().join(which), wasm_dir)?;
            eprintln!("bench builder: run {} {which}: {seconds:.3} s", run + 1);
            if which == "now" {
                now_times.push(seconds);
            } else {
                old_times.push(seconds);
            }
        }
    }
    let same_output = std::fs::read(dir.path().join("now/envoy.yaml"))?
        == std::fs::read(dir.path().join("baseline/envoy.yaml"))?;

    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Builder: before and after the re-layout (issue 19)\n\nMeasured {} on {} (load \
         average {load} at the start: a shared machine, other engineers compiling beside it). \
         Command: `{}`.\n",
        today(),
        machine(),
        options.command_line
    );
    let _ = writeln!(
        md,
        "`sluice generate -f mesh.yaml -o OUT --wasm-dir DIR` on {} services x 3 subsets x 10 \
         rules ({} bytes of YAML, the builder-at-scale input), {} runs of each binary, \
         alternating; both `cargo build --release -p sluice` (the workspace's release profile). \
         Baseline: {baseline} (\"{}\"), the last commit before the re-layout, built in a \
         temporary worktree with its own target folder. Same envoy.yaml from both: {}.\n",
        options.services,
        mesh.len(),
        options.runs,
        git(&["log", "-1", "--format=%s", &baseline])?,
        if same_output {
            "yes"
        } else {
            "no (the builder's output changed since)"
        }
    );
    let _ = writeln!(
        md,
        "| build | median s | min s | max s | runs |\n| --- | ---: | ---: | ---: | --- |"
    );
    for (name, times) in [
        (format!("before: {baseline}"), &old_times),
        (format!("now: {head}"), &now_times),
    ] {
        let _ = writeln!(
            md,
            "| {name} | {:.3} | {:.3} | {:.3} | {} |",
            median(times),
            times.iter().copied().fold(f64::INFINITY, f64::min),
            times.iter().copied().fold(0.0, f64::max),
            times
                .iter()
                .map(|t| format!("{t:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let ratio = median(&now_times) / median(&old_times);
    let _ = writeln!(
        md,
        "\nNow / before (medians): {:.2} ({}).",
        ratio,
        if ratio <= 1.0 {
            "no slower".to_owned()
        } else {
            format!("{:.0} % slower", (ratio - 1.0) * 100.0)
        }
    );
    upsert_section(&options.output, "builder", &md)?;
    println!("{md}");

    let sizes = module_sizes(wasm_dir, &head)?;
    let report = std::fs::read_to_string(&options.output)?;
    std::fs::write(
        &options.output,
        replace_heading_section(&report, "## Module sizes", &sizes),
    )?;
    println!("{sizes}");
    Ok(())
}

/// `git ARGS` in the repository, its output trimmed.
fn git(args: &[&str]) -> Result<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(crate::repo_root())
        .output()
        .context("run git")?;
    if !output.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The release `sluice` of `commit`, built once in a temporary worktree.
fn baseline_binary(commit: &str) -> Result<PathBuf> {
    let full = git(&["rev-parse", commit])?;
    let home = crate::target_dir().join("bench-baseline").join(&full);
    let binary = home.join("target/release/sluice");
    if binary.is_file() {
        return Ok(binary);
    }
    let source = home.join("src");
    if !source.join("Cargo.toml").is_file() {
        std::fs::create_dir_all(&home)?;
        let source_text = source.to_string_lossy().into_owned();
        git(&["worktree", "add", "--detach", &source_text, &full])?;
    }
    eprintln!("bench builder: building {commit} in {}", source.display());
    let mut build = Command::new("cargo");
    build
        .args(["build", "--release", "-p", "sluice"])
        .current_dir(&source)
        .env("CARGO_TARGET_DIR", home.join("target"));
    crate::run(build)?;
    let source_text = source.to_string_lossy().into_owned();
    git(&["worktree", "remove", "--force", &source_text])?;
    Ok(binary)
}

/// One `sluice generate` run, seconds.
fn generate(binary: &Path, input: &Path, out: &Path, wasm_dir: &Path) -> Result<f64> {
    let started = Instant::now();
    let output = Command::new(binary)
        .args(["generate", "-f"])
        .arg(input)
        .arg("-o")
        .arg(out)
        .arg("--wasm-dir")
        .arg(wasm_dir)
        .output()
        .with_context(|| format!("run {}", binary.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "{} generate failed:\n{}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(seconds)
}

/// The body of the report's module sizes section, from the modules in `wasm_dir`.
fn module_sizes(wasm_dir: &Path, head: &str) -> Result<String> {
    let mut md = format!(
        "Re-measured {} by `cargo xtask bench builder` on {head} (`cargo xtask build-wasm`'s \
         modules).\n\n| module | bytes | budget 250 KB (256,000 B) |\n| --- | ---: | --- |\n",
        today()
    );
    for filter in wasm::MODULES {
        let path = wasm::module_in(wasm_dir, filter)?;
        let size = std::fs::metadata(&path)
            .with_context(|| format!("stat {}", path.display()))?
            .len();
        let verdict = if size <= 256_000 { "met" } else { "MISSED" };
        let _ = writeln!(
            md,
            "| {} | {size} | {verdict} |",
            sluice_core::wire::module_file(filter)
        );
    }
    Ok(md)
}

/// `report` with the body under `heading` (up to the next `## ` heading or the notes marker)
/// replaced by `body`; unchanged when the heading is missing.
fn replace_heading_section(report: &str, heading: &str, body: &str) -> String {
    let Some(start) = report.find(&format!("{heading}\n")) else {
        return report.to_owned();
    };
    let body_start = start + heading.len() + 1;
    let rest = &report[body_start..];
    let end = [rest.find("\n## "), rest.find(NOTES_MARKER)]
        .into_iter()
        .flatten()
        .min()
        .map_or(report.len(), |e| body_start + e);
    format!(
        "{}\n{}\n{}",
        &report[..body_start],
        body.trim_end(),
        &report[end..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heading_section_is_replaced_up_to_the_next_heading() {
        let report = "# R\n\n## Module sizes\n\n| a | 1 |\n\n## Builder at scale\n\nx\n";
        assert_eq!(
            replace_heading_section(report, "## Module sizes", "| a | 2 |\n"),
            "# R\n\n## Module sizes\n\n| a | 2 |\n\n## Builder at scale\n\nx\n"
        );
        assert_eq!(replace_heading_section(report, "## Other", "y"), report);
    }
}
