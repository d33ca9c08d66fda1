//! The Rust toolchain the filters are built with: the one `rust-toolchain.toml` pins, with the
//! `wasm32-wasip1` target (and, for the project's lints, rustfmt and clippy).
//!
//! rustup installs a pinned toolchain on first use with the targets and components the file
//! lists, but it does not add them to a toolchain that is already installed: a machine whose
//! rustup already had 1.95.0 fails the first wasm build with "can't find crate for `std`".
//! [`ensure`] closes that gap before the first build. `rustup target add` and `rustup component
//! add` are idempotent; they are only run for what is missing, so a ready machine pays two quick
//! `rustup ... list` calls.

use std::path::Path;
use std::process::Command;

/// The target the filters are compiled for.
pub const WASM_TARGET: &str = "wasm32-wasip1";

/// Makes sure the toolchain that applies in `repo` (its `rust-toolchain.toml`) has the wasm
/// target and the given `components` (e.g. `["rustfmt", "clippy"]`), adding what is missing
/// with rustup. Returns one line that says what it found or added.
///
/// Without rustup (a distribution's Rust), nothing can be added: the target's standard library
/// must already be there, else the error names the command to run.
pub fn ensure(repo: &Path, components: &[&str]) -> Result<String, String> {
    if !runs(Command::new("rustup").arg("--version")) {
        return without_rustup(repo, components);
    }
    let toolchain = rustup_output(repo, &["show", "active-toolchain"])?
        .split_whitespace()
        .next()
        .unwrap_or("the active toolchain")
        .to_owned();
    let installed_targets = rustup_output(repo, &["target", "list", "--installed"])?;
    let installed_components = rustup_output(repo, &["component", "list", "--installed"])?;
    let mut added = Vec::new();
    if !installed_targets.lines().any(|l| l.trim() == WASM_TARGET) {
        rustup(repo, &["target", "add", WASM_TARGET])?;
        added.push(WASM_TARGET.to_owned());
    }
    for &component in components {
        // Installed components are listed with the host triple: `clippy-x86_64-unknown-...`.
        let present = installed_components
            .lines()
            .any(|l| l.trim() == component || l.trim().starts_with(&format!("{component}-")));
        if !present {
            rustup(repo, &["component", "add", component])?;
            added.push(component.to_owned());
        }
    }
    let wanted = std::iter::once(WASM_TARGET)
        .chain(components.iter().copied())
        .collect::<Vec<_>>()
        .join(", ");
    Ok(if added.is_empty() {
        format!("toolchain {toolchain}: {wanted} present")
    } else {
        format!(
            "toolchain {toolchain}: added {} (rustup), now has {wanted}",
            added.join(", ")
        )
    })
}

/// No rustup: check that the wasm target's standard library exists.
fn without_rustup(repo: &Path, components: &[&str]) -> Result<String, String> {
    let libdir = Command::new("rustc")
        .current_dir(repo)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    match libdir {
        Some(dir) if Path::new(&dir).is_dir() => Ok(format!(
            "rustc without rustup: {WASM_TARGET} found in {dir} (components {} not checked)",
            if components.is_empty() {
                "-".to_owned()
            } else {
                components.join(", ")
            }
        )),
        _ => Err(format!(
            "the {WASM_TARGET} target is not installed and rustup is not there to add it\n  \
             hint: install rustup (https://rustup.rs), then run `rustup target add {WASM_TARGET}` \
             in the sluice checkout; rust-toolchain.toml pins the toolchain"
        )),
    }
}

fn runs(command: &mut Command) -> bool {
    command.output().is_ok_and(|out| out.status.success())
}

fn rustup_output(repo: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("rustup")
        .current_dir(repo)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run rustup {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "rustup {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn rustup(repo: &Path, args: &[&str]) -> Result<(), String> {
    let shown = format!("rustup {}", args.join(" "));
    eprintln!("==> {shown}");
    let status = Command::new("rustup")
        .current_dir(repo)
        .args(args)
        .status()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{shown} failed ({status})\n  hint: run `{shown}` by hand in the sluice checkout and read its error"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On this checkout, the pinned toolchain ends up with the wasm target, and a second call
    /// finds everything present (idempotent: nothing is added twice).
    #[test]
    fn the_pinned_toolchain_gets_the_wasm_target_and_stays_ready() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        ensure(&repo, &["rustfmt"]).expect("the toolchain can be made ready");
        let again = ensure(&repo, &["rustfmt"]).expect("still ready");
        assert!(again.ends_with("wasm32-wasip1, rustfmt present"), "{again}");
    }
}
