//! Debian packages the project's commands use, installed on first need, so a fresh machine
//! needs nothing by hand (CI and the developers' machines run as root).

use std::process::Command;
use std::sync::Once;

use anyhow::{Context, Result};

/// Makes sure `program` runs (probed with `probe_args`); if it is missing, installs the Debian
/// `package` that provides it. `apt-get update` runs first, once per process: a new machine's
/// package lists may be missing or old, and `apt-get install` then finds nothing.
pub fn ensure(program: &str, probe_args: &[&str], package: &str) -> Result<()> {
    if Command::new(program).args(probe_args).output().is_ok() {
        return Ok(());
    }
    install(program, package)
}

fn install(what: &str, package: &str) -> Result<()> {
    eprintln!("xtask: {what} missing, installing the Debian package `{package}` with apt-get");
    static UPDATE: Once = Once::new();
    UPDATE.call_once(|| {
        // A failed update is not fatal: the install below reports what is really missing.
        let _ = apt_get(&["update", "-qq"]);
    });
    crate::run(apt_get(&[
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        package,
    ]))
    .with_context(|| format!("install {what} (Debian package `{package}`)"))
}

/// Makes sure the file `path` exists; if not, installs the Debian `package` that provides it
/// (for packages of headers or data, which have no program to probe).
pub fn ensure_file(path: &str, package: &str) -> Result<()> {
    if std::path::Path::new(path).exists() {
        return Ok(());
    }
    install(path, package)
}

fn apt_get(args: &[&str]) -> Command {
    let mut command = Command::new("apt-get");
    command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    command
}

#[cfg(test)]
mod tests {
    /// A program that runs is left alone: no apt-get, no error.
    #[test]
    fn a_present_program_needs_no_install() {
        super::ensure("sh", &["-c", "true"], "dash").unwrap();
    }
}
