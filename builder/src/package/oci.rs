//! OCI image layouts of the wasm modules, in the format Istio's image fetcher accepts.
//!
//! Istio (`pkg/wasm/imagefetcher.go`) takes the *last* layer of an OCI image and, when its media
//! type is `application/vnd.oci.image.layer.v1.tar+gzip`, looks for `plugin.wasm` inside the
//! tarball: the "compat" variant of the Wasm image spec. A bare wasm layer is not accepted, so
//! every image here has exactly one gzip-tar layer holding `plugin.wasm`, and the manifest carries
//! the `module.wasm.image/variant: compat` annotation the spec asks for.
//!
//! One layout directory holds all modules; each manifest is named by the
//! `org.opencontainers.image.ref.name` annotation, so pushing one is
//! `skopeo copy oci:DIR:sluice-router-0.1.0 docker://REGISTRY/sluice-router:0.1.0`
//! (or `oras cp --from-oci-layout DIR:sluice-router-0.1.0 REGISTRY/sluice-router:0.1.0`).
//!
//! Everything is deterministic: fixed tar metadata (mtime 0, uid/gid 0, mode 0644), gzip without
//! a timestamp, manifests serialised with sorted keys. The same modules give the same digests.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::json;
use sha2::{Digest, Sha256};

/// Media type of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of the OCI image config blob.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of the single layer (the "compat" variant).
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The file name Istio's fetcher looks for inside the layer.
pub const PLUGIN_FILE_NAME: &str = "plugin.wasm";

/// A module to package: its image name (`sluice-router`) and the wasm bytes.
#[derive(Debug, Clone)]
pub struct Module<'a> {
    /// Image name, e.g. `sluice-router`.
    pub name: &'a str,
    /// The wasm module itself.
    pub wasm: &'a [u8],
}

/// What was written for one module: names and digests a user needs to push and reference it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// Image name, e.g. `sluice-router`.
    pub name: String,
    /// The reference name inside the layout (`<name>-<tag>`), for `skopeo copy oci:DIR:<ref>`.
    pub reference: String,
    /// `sha256:<hex>` of the manifest: what a registry reports as the image digest.
    pub manifest_digest: String,
    /// sha256 hex of the wasm module itself: what WasmPlugin's `sha256` field checks.
    pub wasm_sha256: String,
}

/// The files of an OCI image layout (relative path -> bytes) and a summary per image.
#[derive(Debug, Clone, Default)]
pub struct ImageLayout {
    /// Relative paths (`oci-layout`, `index.json`, `blobs/sha256/<hex>`) to file contents.
    pub files: BTreeMap<String, Vec<u8>>,
    /// One entry per module, in input order.
    pub images: Vec<ImageSummary>,
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Builds one OCI image layout holding an image per module, tagged `tag`.
pub fn image_layout(modules: &[Module<'_>], tag: &str) -> std::io::Result<ImageLayout> {
    let mut layout = ImageLayout::default();
    let mut manifests = Vec::new();
    for module in modules {
        let layer = compat_layer(module.wasm)?;
        // The config's diff_ids name the *uncompressed* layer, as the image spec requires.
        let layer_tar_digest = digest(&plugin_tar(module.wasm)?);
        let config = to_json_bytes(&json!({
            "architecture": "wasm",
            "os": "wasip1",
            "rootfs": {"type": "layers", "diff_ids": [layer_tar_digest]},
            "config": {},
        }));
        let reference = format!("{}-{}", module.name, tag);
        let manifest = to_json_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": digest(&config), "size": config.len()},
            "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": digest(&layer), "size": layer.len()}],
            "annotations": {
                "module.wasm.image/variant": "compat",
                "org.opencontainers.image.title": module.name,
                "org.opencontainers.image.version": tag,
            },
        }));
        let manifest_digest = digest(&manifest);
        manifests.push(json!({
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": reference},
        }));
        layout.images.push(ImageSummary {
            name: module.name.to_string(),
            reference,
            manifest_digest,
            wasm_sha256: sha256_hex(module.wasm),
        });
        for blob in [layer, config, manifest] {
            layout
                .files
                .insert(format!("blobs/sha256/{}", sha256_hex(&blob)), blob);
        }
    }
    layout.files.insert(
        "oci-layout".into(),
        to_json_bytes(&json!({"imageLayoutVersion": "1.0.0"})),
    );
    layout.files.insert(
        "index.json".into(),
        to_json_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        })),
    );
    Ok(layout)
}

/// The gzip-compressed tar holding `plugin.wasm`: the image's only layer.
fn compat_layer(wasm: &[u8]) -> std::io::Result<Vec<u8>> {
    let tar = plugin_tar(wasm)?;
    // GzBuilder without mtime/filename keeps the bytes identical from run to run.
    let mut gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar)?;
    gz.finish()
}

/// An uncompressed tar with the single file `plugin.wasm`, with fixed metadata.
fn plugin_tar(wasm: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(wasm.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, PLUGIN_FILE_NAME, wasm)?;
    builder.into_inner()
}

/// JSON with keys in a stable order (serde_json's map is a BTreeMap without `preserve_order`).
fn to_json_bytes(value: &serde_json::Value) -> Vec<u8> {
    // Serialising a Value cannot fail: it holds only JSON-representable data.
    serde_json::to_vec_pretty(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn layout() -> ImageLayout {
        let router = b"\0asm\x01\0\0\0router".to_vec();
        let fault = b"\0asm\x01\0\0\0fault".to_vec();
        image_layout(
            &[
                Module {
                    name: "sluice-router",
                    wasm: &router,
                },
                Module {
                    name: "sluice-fault",
                    wasm: &fault,
                },
            ],
            "0.1.0",
        )
        .unwrap()
    }

    fn blob<'a>(layout: &'a ImageLayout, digest: &str) -> &'a [u8] {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let bytes = &layout.files[&format!("blobs/sha256/{hex}")];
        assert_eq!(sha256_hex(bytes), hex, "blob content matches its name");
        bytes
    }

    #[test]
    fn every_digest_size_and_media_type_is_right_and_plugin_wasm_is_inside() {
        let layout = layout();
        let index: serde_json::Value = serde_json::from_slice(&layout.files["index.json"]).unwrap();
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 2);
        for (entry, (name, wasm)) in manifests.iter().zip([
            ("sluice-router", &b"\0asm\x01\0\0\0router"[..]),
            ("sluice-fault", &b"\0asm\x01\0\0\0fault"[..]),
        ]) {
            assert_eq!(entry["mediaType"], MANIFEST_MEDIA_TYPE);
            assert_eq!(
                entry["annotations"]["org.opencontainers.image.ref.name"],
                format!("{name}-0.1.0")
            );
            let manifest_bytes = blob(&layout, entry["digest"].as_str().unwrap());
            assert_eq!(entry["size"], manifest_bytes.len());
            let manifest: serde_json::Value = serde_json::from_slice(manifest_bytes).unwrap();
            assert_eq!(
                manifest["annotations"]["module.wasm.image/variant"],
                "compat"
            );
            let config = blob(&layout, manifest["config"]["digest"].as_str().unwrap());
            assert_eq!(manifest["config"]["size"], config.len());
            assert_eq!(manifest["config"]["mediaType"], CONFIG_MEDIA_TYPE);
            let layers = manifest["layers"].as_array().unwrap();
            assert_eq!(layers.len(), 1, "compat variant: exactly one layer");
            assert_eq!(layers[0]["mediaType"], LAYER_MEDIA_TYPE);
            let layer = blob(&layout, layers[0]["digest"].as_str().unwrap());
            assert_eq!(layers[0]["size"], layer.len());

            let mut tar_bytes = Vec::new();
            flate2::read::GzDecoder::new(layer)
                .read_to_end(&mut tar_bytes)
                .unwrap();
            let config: serde_json::Value = serde_json::from_slice(config).unwrap();
            assert_eq!(config["rootfs"]["diff_ids"][0], digest(&tar_bytes));
            let mut archive = tar::Archive::new(&tar_bytes[..]);
            let mut entries = archive.entries().unwrap();
            let mut file = entries.next().unwrap().unwrap();
            assert_eq!(file.path().unwrap().to_str(), Some(PLUGIN_FILE_NAME));
            let mut content = Vec::new();
            file.read_to_end(&mut content).unwrap();
            assert_eq!(content, wasm);
            assert!(entries.next().is_none());
        }
        let oci_layout: serde_json::Value =
            serde_json::from_slice(&layout.files["oci-layout"]).unwrap();
        assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
    }

    #[test]
    fn identical_modules_give_identical_bytes() {
        assert_eq!(layout().files, layout().files);
        assert_eq!(layout().images, layout().images);
    }
}
