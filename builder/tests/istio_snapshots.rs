//! insta snapshots of what `--target istio` and `--target compose` generate for
//! `examples/bookinfo`, so every change to those outputs is seen in review. Accept an intended
//! change with `cargo insta review` (or `INSTA_UPDATE=always cargo test -p sluice --test
//! istio_snapshots`).

use std::path::{Path, PathBuf};

use sluice::emit::istio_target::IstioOptions;
use sluice::{Inputs, Options, Target, WasmModules};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bookinfo() -> Inputs {
    Inputs::read(&[repo().join("examples/bookinfo")]).expect("readable example")
}

/// One snapshot per generated text file, named `<target>__<file>`.
fn snapshot_files(target: &str, output: &sluice::Output) -> Vec<String> {
    let mut names = Vec::new();
    for (name, bytes) in &output.files {
        let text = match std::str::from_utf8(bytes) {
            Ok(text) if !name.starts_with("wasm/") => text,
            // Modules: only their presence is part of the output's shape.
            _ => {
                names.push(format!("{name} ({} bytes)", bytes.len()));
                continue;
            }
        };
        names.push(name.clone());
        insta::assert_snapshot!(format!("{target}__{}", name.replace('/', "_")), text);
    }
    names
}

#[test]
fn istio_target_for_bookinfo() {
    let output = sluice::generate(
        &bookinfo(),
        &Options {
            // Fixed registry and tag: the snapshot must not change with the crate version.
            target: Target::Istio(IstioOptions {
                source: sluice::emit::istio_target::ModuleSource::Oci {
                    registry: "registry.example.com/sluice".into(),
                    tag: "1.2.3".into(),
                },
                ..IstioOptions::default()
            }),
            ..Options::default()
        },
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let files = snapshot_files("istio", &output);
    insta::assert_snapshot!(
        "istio__files",
        format!("{}\nwarnings:\n{}", files.join("\n"), output.warnings)
    );
}

#[test]
fn compose_target_for_bookinfo() {
    // Stand-in modules: the compose project copies them, and the snapshot must not depend on
    // how the real ones were last built.
    let modules = tempfile::tempdir().expect("tempdir");
    for filter in sluice::emit::envoy::FILTERS {
        std::fs::write(
            modules.path().join(format!("sluice_{filter}.wasm")),
            format!("\0asm\x01\0\0\0{filter}"),
        )
        .expect("write");
    }
    let output = sluice::generate(
        &bookinfo(),
        &Options {
            target: Target::Compose,
            wasm: WasmModules::Reference(modules.path().to_path_buf()),
            ..Options::default()
        },
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let files = snapshot_files("compose", &output);
    insta::assert_snapshot!(
        "compose__files",
        format!("{}\nwarnings:\n{}", files.join("\n"), output.warnings)
    );
}
