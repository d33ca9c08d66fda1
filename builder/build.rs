//! Records the git commit the builder is compiled from, for `sluice version`. Outside a git
//! checkout (a source archive, CI's copy without .git) it says "unknown".

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|commit| !commit.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=SLUICE_GIT_COMMIT={commit}");
    // A new commit or a checkout changes HEAD or the ref it names (not watched: the index, so
    // that editing files does not rebuild every crate that depends on the builder). Paths that
    // do not exist are fine for cargo.
    for path in ["../.git/HEAD", "../.git/refs/heads"] {
        println!("cargo:rerun-if-changed={path}");
    }
}
