//! `sluice build --modules DIR --oci OUT`, run as the real binary on the real filter modules:
//! the image layout is unpacked and every digest, size and media type checked, each layer's
//! `plugin.wasm` is the module byte for byte, and the printed table tells the truth about the
//! module files.
//!
//! Needs the four modules in `target/wasm32-wasip1/release/` (or `$SLUICE_WASM_DIR`): build them
//! with `cargo xtask build-wasm`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

const FILTERS: [&str; 4] = ["router", "canary", "fault", "breaker"];
const TAG: &str = "9.8.7-test";

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Copies the four real modules into `dir`, so a concurrent rebuild of cargo's output cannot
/// change them under the test; returns filter -> module bytes.
fn snapshot_modules(dir: &Path) -> BTreeMap<&'static str, Vec<u8>> {
    let source = sluice::default_wasm_dir();
    FILTERS
        .iter()
        .map(|filter| {
            let path = source.join(format!("sluice_{filter}.wasm"));
            let bytes = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "the {filter} module is missing ({}: {e})\n  hint: build the four modules first with `cargo xtask build-wasm`",
                    path.display()
                )
            });
            assert!(
                bytes.starts_with(b"\0asm"),
                "{} is not a wasm module",
                path.display()
            );
            std::fs::write(dir.join(format!("sluice_{filter}.wasm")), &bytes).expect("copy");
            (*filter, bytes)
        })
        .collect()
}

/// A blob of the layout by digest; its file name must be the sha256 of its content.
fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("digest {digest:?} is not sha256:<hex>"));
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex))
        .unwrap_or_else(|e| panic!("blob {digest} is missing: {e}"));
    assert_eq!(sha256_hex(&bytes), hex, "blob {digest} holds other content");
    bytes
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

/// Checks a descriptor (`mediaType`, `digest`, `size`) against the blob it points to; returns
/// the blob.
fn descriptor(layout: &Path, d: &Value, media_type: &str, used: &mut BTreeSet<String>) -> Vec<u8> {
    assert_eq!(d["mediaType"], media_type, "{d}");
    let digest = d["digest"].as_str().expect("a digest");
    let bytes = blob(layout, digest);
    assert_eq!(
        d["size"].as_u64(),
        Some(bytes.len() as u64),
        "size of {digest}"
    );
    used.insert(digest.trim_start_matches("sha256:").to_owned());
    bytes
}

/// The single file of an uncompressed tar: its name and content.
fn only_file(tar_bytes: &[u8]) -> (String, Vec<u8>) {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut files = Vec::new();
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("a tar entry");
        let name = entry.path().expect("a path").to_string_lossy().into_owned();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).expect("readable entry");
        files.push((name, content));
    }
    assert_eq!(
        files.len(),
        1,
        "the layer holds one file: {:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    files.remove(0)
}

#[test]
fn oci_layout_of_the_real_modules_is_consistent_and_holds_them_byte_for_byte() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let modules_dir = tmp.path().join("modules");
    std::fs::create_dir_all(&modules_dir).expect("mkdir");
    let modules = snapshot_modules(&modules_dir);
    let layout = tmp.path().join("oci");
    let out_dir = tmp.path().join("out");

    let run = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("build")
        .arg("--modules")
        .arg(&modules_dir)
        .arg("--oci")
        .arg(&layout)
        .arg("--out-dir")
        .arg(&out_dir)
        .args(["--tag", TAG, "--no-wasm-opt"])
        .output()
        .expect("sluice runs");
    let stdout = String::from_utf8(run.stdout).expect("UTF-8");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "sluice build failed:\n{stdout}\n{stderr}"
    );

    // The layout's fixed files.
    assert_eq!(
        json(&std::fs::read(layout.join("oci-layout")).expect("oci-layout")),
        serde_json::json!({"imageLayoutVersion": "1.0.0"})
    );
    let index = json(&std::fs::read(layout.join("index.json")).expect("index.json"));
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), FILTERS.len(), "one image per filter");

    let mut used = BTreeSet::new();
    let mut manifest_digests = BTreeMap::new();
    for (entry, filter) in manifests.iter().zip(FILTERS) {
        let wasm = &modules[filter];
        let name = format!("sluice-{filter}");
        assert_eq!(
            entry["annotations"]["org.opencontainers.image.ref.name"],
            format!("{name}-{TAG}")
        );
        let manifest = json(&descriptor(
            &layout,
            entry,
            sluice::oci::MANIFEST_MEDIA_TYPE,
            &mut used,
        ));
        manifest_digests.insert(filter, entry["digest"].as_str().expect("digest").to_owned());
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["mediaType"], sluice::oci::MANIFEST_MEDIA_TYPE);
        assert_eq!(
            manifest["annotations"]["module.wasm.image/variant"],
            "compat"
        );
        assert_eq!(
            manifest["annotations"]["org.opencontainers.image.title"],
            name
        );
        assert_eq!(
            manifest["annotations"]["org.opencontainers.image.version"],
            TAG
        );

        let layers = manifest["layers"].as_array().expect("layers");
        assert_eq!(
            layers.len(),
            1,
            "{name}: Istio reads the last layer; there is one"
        );
        let layer = descriptor(
            &layout,
            &layers[0],
            sluice::oci::LAYER_MEDIA_TYPE,
            &mut used,
        );
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&layer[..])
            .read_to_end(&mut tar_bytes)
            .expect("the layer is gzip");
        let (file, content) = only_file(&tar_bytes);
        assert_eq!(file, sluice::oci::PLUGIN_FILE_NAME);
        assert!(
            content == *wasm,
            "{name}: plugin.wasm ({} bytes) differs from sluice_{filter}.wasm ({} bytes)",
            content.len(),
            wasm.len()
        );

        let config = json(&descriptor(
            &layout,
            &manifest["config"],
            sluice::oci::CONFIG_MEDIA_TYPE,
            &mut used,
        ));
        // diff_ids name the uncompressed layer.
        assert_eq!(
            config["rootfs"]["diff_ids"],
            serde_json::json!([format!("sha256:{}", sha256_hex(&tar_bytes))])
        );
        assert_eq!(config["rootfs"]["type"], "layers");

        // The module sluice build wrote out is the input, unchanged (no wasm-opt).
        let written = std::fs::read(out_dir.join(format!("sluice_{filter}.wasm"))).expect("out");
        assert!(written == *wasm, "{name}: --out-dir copy differs");
    }
    // No stray blob: every file under blobs/sha256 is referenced.
    let blobs: BTreeSet<String> = std::fs::read_dir(layout.join("blobs/sha256"))
        .expect("blobs/sha256")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(blobs, used, "blobs on disk vs blobs referenced");

    // The printed table: one row per module with its file name, size and sha256, then one
    // line per image with its reference and manifest digest.
    let rows: BTreeMap<&str, Vec<&str>> = stdout
        .lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.first()
                .filter(|c| c.ends_with(".wasm"))
                .map(|c| (*c, cols.clone()))
        })
        .collect();
    assert_eq!(rows.len(), FILTERS.len(), "table:\n{stdout}");
    for filter in FILTERS {
        let wasm = &modules[filter];
        let file = format!("sluice_{filter}.wasm");
        let row = rows
            .get(file.as_str())
            .unwrap_or_else(|| panic!("no row for {file} in:\n{stdout}"));
        assert_eq!(
            row[1..],
            [wasm.len().to_string().as_str(), sha256_hex(wasm).as_str()],
            "row of {file}"
        );
        let image_line = format!("image sluice-{filter}");
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&image_line) && l.contains(&format!("sluice-{filter}-{TAG}")))
            .unwrap_or_else(|| panic!("no image line for {filter} in:\n{stdout}"));
        assert!(
            line.ends_with(&format!("manifest {}", manifest_digests[filter])),
            "{line}"
        );
    }
    assert!(
        stdout.contains("wasm-opt skipped: --no-wasm-opt"),
        "{stdout}"
    );
}

#[test]
fn a_missing_module_fails_with_its_path_and_nothing_is_packaged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let modules_dir: PathBuf = tmp.path().join("modules");
    std::fs::create_dir_all(&modules_dir).expect("mkdir");
    snapshot_modules(&modules_dir);
    std::fs::remove_file(modules_dir.join("sluice_fault.wasm")).expect("remove");
    let layout = tmp.path().join("oci");
    let run = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("build")
        .arg("--modules")
        .arg(&modules_dir)
        .arg("--oci")
        .arg(&layout)
        .arg("--out-dir")
        .arg(tmp.path().join("out"))
        .arg("--no-wasm-opt")
        .output()
        .expect("sluice runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sluice_fault.wasm"), "{stderr}");
    assert!(!layout.join("index.json").exists(), "no partial layout");
}
