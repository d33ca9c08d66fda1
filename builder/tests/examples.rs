//! The checked-in `envoy-configs/<example>/envoy.yaml` are exactly what the builder generates
//! from `examples/`. Regenerate them with:
//!
//! ```sh
//! SLUICE_UPDATE_CONFIGS=1 cargo test -p sluice --test examples
//! ```

use std::path::{Path, PathBuf};

use sluice::{Inputs, Options, WasmModules, generate};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every example: output directory name -> input paths (relative to the repository).
fn examples() -> Vec<(String, Vec<String>)> {
    let mut list = vec![
        ("bookinfo".to_owned(), vec!["examples/bookinfo".to_owned()]),
        ("demo".to_owned(), vec!["examples/demo".to_owned()]),
        ("locality".to_owned(), vec!["examples/locality".to_owned()]),
    ];
    // `examples/native-*/`: one example per directory (Envoy-native Istio features).
    let mut native: Vec<String> = std::fs::read_dir(repo().join("examples"))
        .expect("examples exists")
        .map(|e| {
            e.expect("readable entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.starts_with("native-"))
        .collect();
    native.sort();
    list.extend(
        native
            .into_iter()
            .map(|n| (n.clone(), vec![format!("examples/{n}")])),
    );
    let mut variants: Vec<String> = std::fs::read_dir(repo().join("examples/ecommerce"))
        .expect("examples/ecommerce exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            p.file_stem()
                .expect("a file name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    variants.sort();
    for v in variants {
        list.push((
            format!("ecommerce-{v}"),
            vec![
                "examples/ecommerce/common".into(),
                format!("examples/ecommerce/{v}.yaml"),
            ],
        ));
    }
    list
}

/// The options the checked-in configs use: modules referenced repo-relative, to run from the
/// repository root (`envoy -c envoy-configs/bookinfo/envoy.yaml`).
fn checked_in_options() -> Options {
    Options {
        wasm: WasmModules::Reference("target/wasm32-wasip1/release".into()),
        ..Options::default()
    }
}

/// The proxy locality the `locality` example is generated for (its README's command:
/// `sluice generate --locality us-east/zone-a -f examples/locality`); other examples set none.
const LOCALITY_EXAMPLE_PROXY: &str = "us-east/zone-a";

fn generate_example(inputs: &[String]) -> Vec<u8> {
    let paths: Vec<PathBuf> = inputs.iter().map(|p| repo().join(p)).collect();
    let mut options = checked_in_options();
    if inputs.iter().any(|i| i == "examples/locality") {
        options.locality =
            Some(sluice::locality::Locality::parse(LOCALITY_EXAMPLE_PROXY).expect("valid"));
    }
    let inputs = Inputs::read(&paths).expect("example inputs are readable");
    let output =
        generate(&inputs, &options).unwrap_or_else(|d| panic!("example does not generate:\n{d}"));
    assert_eq!(
        output.files.len(),
        1,
        "reference mode writes only envoy.yaml"
    );
    output.files["envoy.yaml"].clone()
}

#[test]
fn checked_in_configs_match_the_examples() {
    let update = std::env::var_os("SLUICE_UPDATE_CONFIGS").is_some();
    let mut stale = Vec::new();
    for (name, inputs) in examples() {
        let generated = generate_example(&inputs);
        let path = repo().join("envoy-configs").join(&name).join("envoy.yaml");
        if update {
            std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            std::fs::write(&path, &generated).expect("write");
            continue;
        }
        match std::fs::read(&path) {
            Ok(existing) if existing == generated => {}
            _ => stale.push(name),
        }
    }
    assert!(
        stale.is_empty(),
        "envoy-configs out of date for {stale:?}; regenerate with SLUICE_UPDATE_CONFIGS=1 cargo test -p sluice --test examples"
    );
}

#[test]
fn every_example_config_dir_has_an_example() {
    let names: Vec<String> = examples().into_iter().map(|(n, _)| n).collect();
    for entry in std::fs::read_dir(repo().join("envoy-configs")).expect("envoy-configs exists") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.starts_with('.') || name.ends_with(".md") {
            continue;
        }
        assert!(
            names.contains(&name),
            "envoy-configs/{name} has no example input"
        );
    }
}

#[test]
fn generation_is_byte_identical() {
    for (_, inputs) in examples() {
        assert_eq!(generate_example(&inputs), generate_example(&inputs));
    }
}

#[test]
fn input_order_within_a_directory_does_not_matter() {
    // Same resources, files given in two orders: the model sorts what must be sorted.
    let a = repo().join("examples/bookinfo/services.yaml");
    let b = repo().join("examples/bookinfo/destination-rules.yaml");
    let c = repo().join("examples/bookinfo/routing.yaml");
    let one = generate(
        &Inputs::read(&[a.clone(), b.clone(), c.clone()]).expect("read"),
        &checked_in_options(),
    )
    .expect("ok");
    let two = generate(
        &Inputs::read(&[b, a, c]).expect("read"),
        &checked_in_options(),
    )
    .expect("ok");
    assert_eq!(one.files, two.files);
}

#[test]
fn bundle_mode_copies_modules_and_references_them_relative_to_the_output() {
    let wasm_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(wasm_dir.path().join("sluice_router.wasm"), b"\0asm-router").expect("write");
    let out = tempfile::tempdir().expect("tempdir");
    let out_dir = out.path().join("gen");
    let options = Options {
        wasm: WasmModules::Bundle {
            from: wasm_dir.path().into(),
            module_dir: sluice::DEFAULT_MODULE_DIR.into(),
        },
        ..Options::default()
    };
    let inputs = Inputs::read(&[repo().join("examples/bookinfo")]).expect("read");
    let output = generate(&inputs, &options).expect("generates");
    assert_eq!(output.files["wasm/sluice_router.wasm"], b"\0asm-router");
    sluice::write_output(&out_dir, &output).expect("written");
    let yaml = std::fs::read_to_string(out_dir.join("envoy.yaml")).expect("read back");
    assert!(
        yaml.contains("filename: wasm/sluice_router.wasm"),
        "no machine-specific path: {yaml}"
    );
    assert!(out_dir.join("wasm/sluice_router.wasm").exists());
    // --module-dir names where the modules will live on the host that runs Envoy.
    let shipped = Options {
        wasm: WasmModules::Bundle {
            from: wasm_dir.path().into(),
            module_dir: "/etc/sluice/wasm".into(),
        },
        ..Options::default()
    };
    let output = generate(&inputs, &shipped).expect("generates");
    let yaml = String::from_utf8(output.files["envoy.yaml"].clone()).expect("UTF-8");
    assert!(
        yaml.contains("filename: /etc/sluice/wasm/sluice_router.wasm"),
        "{yaml}"
    );
}

#[test]
fn bundle_mode_without_modules_fails_with_the_build_command() {
    let empty = tempfile::tempdir().expect("tempdir");
    let options = Options {
        wasm: WasmModules::Bundle {
            from: empty.path().into(),
            module_dir: sluice::DEFAULT_MODULE_DIR.into(),
        },
        ..Options::default()
    };
    let inputs = Inputs::read(&[repo().join("examples/bookinfo")]).expect("read");
    let err = generate(&inputs, &options)
        .expect_err("no modules")
        .to_string();
    assert!(
        err.contains("cargo build --release --target wasm32-wasip1 -p sluice-router"),
        "{err}"
    );
}

#[test]
fn write_output_replaces_its_own_files_and_refuses_a_foreign_folder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("out");
    let mut first = sluice::Output::default();
    first.files.insert("envoy.yaml".into(), b"old".to_vec());
    first.files.insert("stale.yaml".into(), b"old".to_vec());
    sluice::write_output(&dir, &first).expect("written");
    let mut second = sluice::Output::default();
    second.files.insert("envoy.yaml".into(), b"new".to_vec());
    sluice::write_output(&dir, &second).expect("rewritten");
    assert_eq!(std::fs::read(dir.join("envoy.yaml")).expect("read"), b"new");
    assert!(
        !dir.join("stale.yaml").exists(),
        "a file of the previous generation that the new one lacks is removed"
    );
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).expect("list").collect();
    assert_eq!(leftovers.len(), 1, "no staging files left behind");

    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).expect("mkdir");
    std::fs::write(foreign.join("notes.txt"), b"mine").expect("write");
    let err = sluice::write_output(&foreign, &second).expect_err("not sluice's folder");
    assert!(err.to_string().contains("notes.txt"), "{err}");
    assert_eq!(
        std::fs::read(foreign.join("notes.txt")).expect("kept"),
        b"mine"
    );
    assert!(!foreign.join("envoy.yaml").exists());
}
