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
    // sluice's own earlier output: a failed run must leave it exactly as it was.
    let first = sluice()
        .args(["generate", "-f", &repo("examples/bookinfo"), "-o"])
        .arg(&out)
        .args(["--wasm-dir", "/opt/wasm"])
        .output()
        .expect("runs");
    assert!(first.status.success());
    let previous = std::fs::read_to_string(out.join("envoy.yaml")).expect("written");
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
        previous
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

/// Every file under `dir` (relative path -> bytes): what a refused run must leave as it was.
fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("list") {
            let path = entry.expect("entry").path();
            let rel = path
                .strip_prefix(root)
                .expect("inside")
                .display()
                .to_string();
            if path.is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                walk(root, &path, out);
            } else {
                out.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A working folder as a user has it: their own notes and the mesh they generate from.
fn workspace() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("notes.txt"), "mine").expect("write");
    let mesh = tmp.path().join("bi");
    std::fs::create_dir(&mesh).expect("mkdir");
    for file in ["services.yaml", "routing.yaml", "destination-rules.yaml"] {
        std::fs::copy(repo(&format!("examples/bookinfo/{file}")), mesh.join(file)).expect("copy");
    }
    tmp
}

fn generate_in(dir: &Path, args: &[&str]) -> std::process::Output {
    sluice()
        .current_dir(dir)
        .arg("generate")
        .args(args)
        .args(["--wasm-dir", "/opt/wasm"])
        .output()
        .expect("runs")
}

#[test]
fn refused_outputs_change_nothing_on_disk() {
    let ws = workspace();
    std::fs::write(ws.path().join("afile"), "a file").expect("write");
    std::fs::create_dir(ws.path().join("theirs")).expect("mkdir");
    std::fs::write(ws.path().join("theirs/keep.txt"), "keep").expect("write");
    let before = tree(ws.path());
    for (out, says) in [
        (".", "it is the current directory"),
        ("bi", "it holds the input bi"),
        ("afile", "it is a file, not a folder"),
        ("theirs", "holds files sluice did not write (e.g. keep.txt)"),
        ("..", "it is the current directory or holds it"),
    ] {
        let run = generate_in(ws.path(), &["-f", "bi", "-o", out]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "-o {out}: {stderr}");
        assert!(stderr.contains(says), "-o {out}: {stderr}");
        assert!(stderr.contains("hint:"), "-o {out}: {stderr}");
        assert_eq!(tree(ws.path()), before, "-o {out} changed the disk");
    }
    // `-f same -o same`: the inputs themselves are never a destination.
    let run = generate_in(
        ws.path(),
        &["-f", "bi/routing.yaml", "-f", "bi", "-o", "bi"],
    );
    assert_eq!(run.status.code(), Some(2));
    assert_eq!(tree(ws.path()), before);
}

#[test]
fn force_writes_beside_foreign_files_and_keeps_them() {
    let ws = workspace();
    std::fs::create_dir(ws.path().join("theirs")).expect("mkdir");
    std::fs::write(ws.path().join("theirs/keep.txt"), "keep").expect("write");
    let run = generate_in(ws.path(), &["-f", "bi", "-o", "theirs", "--force"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let files = tree(&ws.path().join("theirs"));
    assert_eq!(files["keep.txt"], b"keep");
    assert!(files.contains_key("envoy.yaml") && files.contains_key(".sluice-output.json"));
}

#[test]
fn output_inside_the_input_folder_is_never_read_back() {
    let ws = workspace();
    for round in 0..2 {
        let run = generate_in(ws.path(), &["-f", "bi", "-o", "bi/out"]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "round {round}: {stderr}");
        if round == 1 {
            assert!(
                stderr.contains("note: skipped bi/out: sluice's own output"),
                "{stderr}"
            );
        }
    }
    // A user's file added to sluice's folder survives regeneration.
    std::fs::write(ws.path().join("bi/out/README.txt"), "mine").expect("write");
    let run = generate_in(ws.path(), &["-f", "bi", "-o", "bi/out"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("bi/out/README.txt")).expect("kept"),
        "mine"
    );
    // A generated file given explicitly is passed over too.
    let run = generate_in(
        ws.path(),
        &["-f", "bi", "-f", "bi/out/envoy.yaml", "-o", "out2"],
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("written by sluice generate, not read"),
        "{stderr}"
    );
}

#[test]
fn a_failed_generation_leaves_a_new_output_folder_uncreated() {
    let ws = workspace();
    std::fs::write(
        ws.path().join("bi/broken.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec:\n  hosts: [x]\n  http:\n  - route:\n    - destination: {host: nowhere}\n",
    )
    .expect("write");
    let before = tree(ws.path());
    let run = generate_in(ws.path(), &["-f", "bi", "-o", "new/out"]);
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(tree(ws.path()), before, "no folder, no leftovers");
}

#[test]
fn stdin_and_stdout_with_a_dash() {
    use std::io::Write;
    let mesh: String = ["services.yaml", "routing.yaml", "destination-rules.yaml"]
        .iter()
        .map(|f| std::fs::read_to_string(repo(&format!("examples/bookinfo/{f}"))).expect("read"))
        .collect::<Vec<_>>()
        .join("\n---\n");
    let mut child = sluice()
        .args(["generate", "-f", "-", "-o", "-", "--wasm-dir", "/opt/wasm"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(mesh.as_bytes())
        .expect("write");
    let run = child.wait_with_output().expect("finishes");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let yaml = String::from_utf8(run.stdout).expect("UTF-8");
    assert!(yaml.starts_with("# Generated by `sluice generate --target envoy`"));
    assert!(yaml.contains("filename: /opt/wasm/sluice_router.wasm"));
    // The istio target prints its manifests as one multi-document YAML.
    let run = sluice()
        .args([
            "generate",
            "-f",
            &repo("examples/bookinfo"),
            "-o",
            "-",
            "--target",
            "istio",
        ])
        .output()
        .expect("runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = String::from_utf8(run.stdout).expect("UTF-8");
    let docs = sluice::yaml::parse_documents(&text).expect("one multi-document YAML");
    assert!(docs.len() > 3, "{text}");
    // compose writes a project of several files: not to stdout.
    let run = sluice()
        .args([
            "generate",
            "-f",
            &repo("examples/bookinfo"),
            "-o",
            "-",
            "--target",
            "compose",
        ])
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("hint:"));
}

#[test]
fn an_empty_input_names_what_was_searched() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(tmp.path().join("empty")).expect("mkdir");
    let run = sluice()
        .current_dir(tmp.path())
        .args(["generate", "-f", "empty", "-o", "out"])
        .output()
        .expect("runs");
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("no YAML file (*.yaml, *.yml) in empty"),
        "{stderr}"
    );
    assert!(!tmp.path().join("out").exists());
}

#[test]
fn version_completion_and_schema_list() {
    let run = sluice().arg("version").output().expect("runs");
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success());
    assert!(
        text.starts_with(&format!("sluice {}\ncommit ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("tested with Envoy 1.40.0"), "{text}");
    assert!(text.contains("sluice_router.wasm"), "{text}");
    for shell in ["bash", "zsh", "fish"] {
        let run = sluice().args(["completion", shell]).output().expect("runs");
        let script = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{shell}");
        assert!(
            script.contains("generate") && script.contains("wasm-dir"),
            "{shell}: {script}"
        );
    }
    let run = sluice().arg("schema").output().expect("runs");
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for filter in ["router", "canary", "fault", "breaker", "suite"] {
        assert!(
            text.contains(&format!("sluice-{filter}.schema.json")),
            "{text}"
        );
    }
}

/// `sluice generate --target istio` pins exactly what `sluice build --oci` packaged, pins
/// nothing (and says so) when it cannot know the bytes, and refuses a layout without the image.
#[test]
fn istio_pins_come_from_what_sluice_build_packaged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (oci, modules) = (tmp.path().join("oci"), tmp.path().join("modules"));
    let build = sluice()
        .args(["build", "--tag", "t1", "--modules"])
        .arg(sluice::default_wasm_dir())
        .arg("--oci")
        .arg(&oci)
        .arg("--out-dir")
        .arg(&modules)
        .output()
        .expect("runs");
    assert!(
        build.status.success(),
        "{}\nhint: cargo xtask build-wasm",
        String::from_utf8_lossy(&build.stderr)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci.join("index.json")).expect("index"))
            .expect("JSON");
    let digest_of = |reference: &str| -> String {
        index["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == reference)
            .and_then(|m| m["digest"].as_str())
            .and_then(|d| d.strip_prefix("sha256:"))
            .unwrap_or_else(|| panic!("no {reference}"))
            .to_owned()
    };
    let istio = |extra: &[&str]| {
        sluice()
            .args([
                "generate",
                "-f",
                &repo("examples/demo"),
                "-o",
                "-",
                "--target",
                "istio",
            ])
            .args(extra)
            .output()
            .expect("runs")
    };
    let oci_arg = oci.display().to_string();
    let pinned = istio(&["--oci-layout", &oci_arg, "--tag", "t1"]);
    assert!(
        pinned.status.success(),
        "{}",
        String::from_utf8_lossy(&pinned.stderr)
    );
    let text = String::from_utf8(pinned.stdout).expect("UTF-8");
    let mut seen = 0;
    for doc in sluice::yaml::parse_documents(&text).expect("YAML") {
        let doc = doc.root.to_json();
        if doc["kind"] != "WasmPlugin" {
            continue;
        }
        let name = doc["metadata"]["name"].as_str().expect("name");
        assert_eq!(
            doc["spec"]["sha256"],
            digest_of(&format!("{name}-t1")),
            "{name}"
        );
        seen += 1;
    }
    assert!(seen >= 3, "{text}");

    let unpinned = istio(&[]);
    assert!(unpinned.status.success());
    assert!(!String::from_utf8_lossy(&unpinned.stdout).contains("sha256:"));
    assert!(
        String::from_utf8_lossy(&unpinned.stderr).contains("carry no sha256 pin"),
        "{}",
        String::from_utf8_lossy(&unpinned.stderr)
    );

    let wrong_tag = istio(&["--oci-layout", &oci_arg, "--tag", "other"]);
    assert_eq!(wrong_tag.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&wrong_tag.stderr).contains("has no image sluice-router-other")
    );
}

/// An attachment that cannot work with the given flags is a usage error with a hint, and
/// nothing is written.
#[test]
fn envoyfilter_attachment_options_that_cannot_work_are_refused() {
    let ws = workspace();
    let before = tree(ws.path());
    for (extra, says) in [
        (vec![], "cannot load OCI images"),
        (
            vec!["--module-url", "https://downloads.example.com/sluice"],
            "needs --module-cluster",
        ),
    ] {
        let mut args = vec![
            "-f",
            "bi",
            "-o",
            "out",
            "--target",
            "istio",
            "--attach",
            "envoyfilter",
        ];
        args.extend(extra);
        let run = sluice()
            .current_dir(ws.path())
            .arg("generate")
            .args(&args)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(says) && stderr.contains("hint:"),
            "{stderr}"
        );
        assert_eq!(tree(ws.path()), before, "nothing written");
    }
    let run = sluice()
        .current_dir(ws.path())
        .args(["generate", "-f", "bi", "-o", "out", "--target", "istio"])
        .args([
            "--attach",
            "envoyfilter",
            "--module-path",
            "/var/lib/sluice/wasm",
        ])
        .output()
        .expect("runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(ws.path().join("out/envoyfilters.yaml").is_file());
    assert!(!ws.path().join("out/wasmplugins.yaml").exists());
}
