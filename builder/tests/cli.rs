//! The `sluice` binary: exit codes, messages on stderr, and that nothing is written on errors.

use std::path::Path;
use std::process::Command;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

fn repo(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
        .display()
        .to_string()
}

#[test]
fn generates_the_bookinfo_example() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("bookinfo");
    let run = sluice()
        .args(["generate", "-f", &repo("examples/bookinfo"), "-o"])
        .arg(&out)
        .args([
            "--wasm-dir",
            "/opt/wasm",
            "--listen-address",
            "127.0.0.1",
            "--admin-port",
            "9911",
        ])
        .output()
        .expect("runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let yaml = std::fs::read_to_string(out.join("envoy.yaml")).expect("written");
    assert!(yaml.contains("port_value: 9911"), "admin port");
    assert!(
        yaml.contains("address: \"127.0.0.1\"\n        port_value: 9080"),
        "listen address"
    );
    assert!(yaml.contains("filename: /opt/wasm/sluice_router.wasm"));
}

#[test]
fn errors_exit_1_and_leave_the_output_untouched() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [r]\n  http:\n  - route:\n    - destination: {host: nowhere}\n",
    )
    .expect("write");
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    std::fs::write(out.join("envoy.yaml"), "previous").expect("write");
    let run = sluice()
        .args(["generate", "-f"])
        .arg(&bad)
        .arg("-o")
        .arg(&out)
        .args(["--wasm-dir", "/opt/wasm"])
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:8:21: error[SL301]: VirtualService/r: spec.http[0].route[0].destination.host: unknown destination host \"nowhere\"",
            bad.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(out.join("envoy.yaml")).expect("kept"),
        "previous"
    );
}

#[test]
fn help_teaches_with_examples() {
    let run = sluice()
        .args(["generate", "--help"])
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success());
    for needle in [
        "-f, --file",
        "-o, --out",
        "--wasm-dir",
        "--listen-address",
        "--admin-port",
        "Examples:",
        "envoy -c",
    ] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn missing_input_is_a_clear_error() {
    let run = sluice()
        .args([
            "generate",
            "-f",
            "/nonexistent/mesh.yaml",
            "-o",
            "/tmp/sluice-never",
        ])
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("/nonexistent/mesh.yaml: cannot read"));
}
