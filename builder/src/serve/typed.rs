//! The resource set's JSON bodies as typed protobuf `Any` messages, through a descriptor pool.
//!
//! The builder writes Envoy resources in Envoy's v3 JSON form (the form a bootstrap holds).
//! xDS carries them as `google.protobuf.Any`: the binary encoding of the resource's message.
//! prost-reflect converts one into the other through the descriptors of Envoy's protos, with
//! unknown fields refused, so a body Envoy could not parse is refused here, when the snapshot is
//! built, and never reaches a proxy.
//!
//! The descriptors are the file descriptor set envoy-types 0.7.7 was generated from
//! (`src/generated/types.bin` of that crate, gzipped here as `envoy-types-0.7.7.bin.gz`): the
//! crate does not export it, and reading it from the cargo registry at build time would break
//! vendored and offline builds. Being the same descriptors, the bytes encoded here decode into
//! envoy-types' own generated structs (a unit test proves it for every kind); bump the file
//! together with the crate.

use std::io::Read;
use std::sync::OnceLock;

use envoy_types::pb::google::protobuf::Any;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage};
use serde_json::Value;

static DESCRIPTORS_GZ: &[u8] = include_bytes!("envoy-types-0.7.7.bin.gz");

/// The descriptor pool of Envoy's v3 API (and the well-known types it uses), decoded once.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(DESCRIPTORS_GZ)
            .read_to_end(&mut bytes)
            .expect("the embedded descriptor set is a valid gzip stream (a unit test reads it)");
        DescriptorPool::decode(bytes.as_slice())
            .expect("the embedded descriptor set decodes (a unit test reads it)")
    })
}

/// `body` (Envoy v3 JSON) encoded as the message named by `type_url`, wrapped in an `Any`.
/// Unknown fields, wrong types and unknown `@type`s of nested `Any` fields are errors.
pub fn to_any(type_url: &str, body: &Value) -> Result<Any, String> {
    let full_name = type_url.rsplit('/').next().unwrap_or(type_url);
    let descriptor = pool()
        .get_message_by_name(full_name)
        .ok_or_else(|| format!("no message {full_name} in Envoy's v3 API"))?;
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let message = DynamicMessage::deserialize_with_options(descriptor, body, &options)
        .map_err(|e| format!("{full_name}: {e}"))?;
    Ok(Any {
        type_url: type_url.to_owned(),
        value: prost::Message::encode_to_vec(&message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::Kind;
    use serde_json::json;

    #[test]
    fn descriptors_know_every_kind_and_the_wasm_filter() {
        for kind in Kind::ALL {
            let name = kind.type_url().rsplit('/').next().unwrap();
            assert!(pool().get_message_by_name(name).is_some(), "{name}");
        }
        assert!(
            pool()
                .get_message_by_name("envoy.extensions.filters.http.wasm.v3.Wasm")
                .is_some()
        );
    }

    #[test]
    fn the_envoy_xds_bootstrap_parses_as_envoys_bootstrap() {
        let xds = crate::XdsBootstrap {
            servers: vec!["serve-a:18000".into(), "10.0.0.2:18000".into()],
            delta: true,
            // The modules cluster too (`--modules-server`).
            module_servers: vec!["serve-a:18080".into()],
            // The metrics service sink too (`--halt-reports on`).
            halt_reports: crate::HaltReports::On,
            ..crate::XdsBootstrap::default()
        };
        let bootstrap =
            crate::target::envoy_xds::bootstrap(None, &crate::Options::default(), &xds).unwrap();
        to_any(
            "type.googleapis.com/envoy.config.bootstrap.v3.Bootstrap",
            &bootstrap,
        )
        .unwrap();
    }

    #[test]
    fn unknown_fields_are_refused_with_their_name() {
        let err = to_any(
            Kind::Cluster.type_url(),
            &json!({"name": "a", "conect_timeout": "1s"}),
        )
        .unwrap_err();
        assert!(err.contains("conect_timeout"), "{err}");
        let err = to_any(
            Kind::Cluster.type_url(),
            &json!({"name": "a", "typed_extension_protocol_options": {"x": {"@type": "type.googleapis.com/nope.Nope"}}}),
        )
        .unwrap_err();
        assert!(err.contains("nope.Nope"), "{err}");
    }

    #[test]
    fn encoded_bytes_decode_into_the_generated_structs() {
        use envoy_types::pb::envoy::config::cluster::v3::Cluster;
        let any = to_any(
            Kind::Cluster.type_url(),
            &json!({"name": "reviews", "type": "EDS", "connect_timeout": "2.5s",
                    "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}}}),
        )
        .unwrap();
        let cluster: Cluster = prost::Message::decode(any.value.as_slice()).unwrap();
        assert_eq!(cluster.name, "reviews");
        let timeout = cluster.connect_timeout.unwrap();
        assert_eq!((timeout.seconds, timeout.nanos), (2, 500_000_000));
    }
}
