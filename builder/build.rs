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
    // that editing files does not rebuild every crate that depends on the builder). The paths
    // are asked of git rather than assumed at ../.git: in a `git worktree`, .git is a file, and
    // a watched path that does not exist makes cargo rerun this script, and rebuild the
    // builder, on every build. Only this checkout's branch is watched, not every branch: other
    // worktrees' commits must not rebuild it.
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .filter(|text| !text.is_empty())
    };
    let head = git(&["rev-parse", "--path-format=absolute", "--git-path", "HEAD"]);
    let Some(head) = head else {
        // No git: nothing to watch but the script itself.
        println!("cargo:rerun-if-changed=build.rs");
        return;
    };
    println!("cargo:rerun-if-changed={head}");
    let branch_ref = git(&["symbolic-ref", "-q", "HEAD"])
        .and_then(|name| git(&["rev-parse", "--path-format=absolute", "--git-path", &name]));
    match branch_ref {
        Some(path) if std::path::Path::new(&path).exists() => {
            println!("cargo:rerun-if-changed={path}");
        }
        // A packed ref (or a detached HEAD, which the HEAD file itself names).
        _ => {
            let common = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]);
            let packed = common.map(|c| format!("{c}/packed-refs"));
            if let Some(packed) = packed.filter(|p| std::path::Path::new(p).exists()) {
                println!("cargo:rerun-if-changed={packed}");
            }
        }
    }
}
