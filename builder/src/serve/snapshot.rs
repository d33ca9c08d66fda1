//! A snapshot: one resource set, typed and versioned, ready to serve to every proxy of a group.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::Resource as DeltaResource;
use envoy_types::pb::google::protobuf::Any;
use sha2::{Digest, Sha256};

use crate::xds::{Kind, ResourceSet};

/// One resource as served: its content hash (the delta protocol's per-resource version) and
/// its typed form.
#[derive(Debug, Clone)]
pub struct Entry {
    /// [`crate::xds::Resource::hash`]: equal content, equal hash, on every machine.
    pub hash: String,
    /// The resource as xDS carries it.
    pub any: Arc<Any>,
    /// Its encodings as a response element, made on first use and shared by every stream (and
    /// by the next snapshot, which clones an unchanged entry): see [`super::wire`].
    encoded: Arc<Encoded>,
}

#[derive(Debug, Default)]
struct Encoded {
    sotw: OnceLock<Bytes>,
    delta: OnceLock<Bytes>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        // The encodings are functions of these.
        self.hash == other.hash && self.any == other.any
    }
}

impl Entry {
    /// The entry of a resource whose content hash is `hash`.
    pub fn new(hash: String, any: Arc<Any>) -> Entry {
        Entry {
            hash,
            any,
            encoded: Arc::default(),
        }
    }

    /// The resource as an element of a `DiscoveryResponse`'s `resources` (field 2: key,
    /// length, the encoded `Any`), encoded once.
    pub fn sotw(&self) -> Bytes {
        self.encoded.sotw.get_or_init(|| field2(&*self.any)).clone()
    }

    /// The resource as an element of a `DeltaDiscoveryResponse`'s `resources` (field 2: a
    /// `Resource` of `name`, its hash as version, the `Any`), encoded once. `name` is the name
    /// the entry is stored under in its snapshot, always the same for one entry.
    pub fn delta(&self, name: &str) -> Bytes {
        self.encoded
            .delta
            .get_or_init(|| {
                field2(&DeltaResource {
                    name: name.to_owned(),
                    version: self.hash.clone(),
                    resource: Some((*self.any).clone()),
                    ..Default::default()
                })
            })
            .clone()
    }
}

/// `message` as field 2 of its enclosing response.
fn field2(message: &impl prost::Message) -> Bytes {
    let mut out = BytesMut::with_capacity(prost::encoding::message::encoded_len(2, message));
    prost::encoding::message::encode(2, message, &mut out);
    out.freeze()
}

/// The resources of one kind by name, and their version.
#[derive(Debug, Clone, Default)]
pub struct TypeSnapshot {
    /// [`version_of`] the resources.
    pub version: String,
    /// The resources by name.
    pub resources: BTreeMap<String, Entry>,
    /// Every resource's [`Entry::sotw`], in name order, as one piece: what a stream that asked
    /// for the whole type is sent. Made on first use and shared by every such stream, so the
    /// gRPC body hands hyper one shared buffer instead of thousands of small pieces it would
    /// have to copy together per stream. Never cloned into another snapshot (its resources may
    /// differ), only with this one.
    all: Arc<OnceLock<Bytes>>,
}

impl PartialEq for TypeSnapshot {
    fn eq(&self, other: &TypeSnapshot) -> bool {
        // `all` is a function of the resources.
        self.version == other.version && self.resources == other.resources
    }
}

impl TypeSnapshot {
    /// The resources of a kind, whose [`version_of`] is `version`.
    pub fn new(version: String, resources: BTreeMap<String, Entry>) -> TypeSnapshot {
        TypeSnapshot {
            version,
            resources,
            all: Arc::default(),
        }
    }

    /// Every resource as elements of a `DiscoveryResponse`'s `resources`, in name order (the
    /// order of [`TypeSnapshot::resources`] and of a stream's view), encoded once.
    pub fn sotw_all(&self) -> Bytes {
        self.all
            .get_or_init(|| {
                let entries: Vec<Bytes> = self.resources.values().map(Entry::sotw).collect();
                let mut out = BytesMut::with_capacity(entries.iter().map(Bytes::len).sum());
                for e in entries {
                    out.extend_from_slice(&e);
                }
                out.freeze()
            })
            .clone()
    }
}

/// Everything a group of proxies is served.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// [`ResourceSet::version`]: the hash of every resource's kind, name and content.
    pub version: String,
    /// The resources by kind (every kind present, possibly empty).
    pub kinds: BTreeMap<Kind, TypeSnapshot>,
}

/// The version of a list of resources: the hash of their names and content hashes, so equal
/// content gives an equal version in every process (a restarted serve does not make every
/// proxy re-apply its config) and map fields' random order never shows.
pub fn version_of<'a>(entries: impl IntoIterator<Item = (&'a String, &'a Entry)>) -> String {
    let mut digest = Sha256::new();
    for (name, entry) in entries {
        digest.update(name.as_bytes());
        digest.update([0]);
        digest.update(entry.hash.as_bytes());
        digest.update([0]);
    }
    // 16 hex digits are plenty to tell versions apart and keep Envoy's stats and logs short.
    hex::encode(&digest.finalize()[..8])
}

impl Snapshot {
    /// The typed form of `set`, or the resources that do not convert (each with the reason).
    pub fn build(set: &ResourceSet) -> Result<Snapshot, Vec<String>> {
        Snapshot::build_reusing(set, None)
    }

    /// [`Snapshot::build`], taking each resource whose kind, name and content hash `previous`
    /// already holds from it instead of typing it again: typing (JSON to protobuf through the
    /// descriptors) is most of a build's cost, and a change of a large mesh leaves most
    /// resources as they were. The result is the same as without `previous`.
    pub fn build_reusing(
        set: &ResourceSet,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, Vec<String>> {
        let mut errors = Vec::new();
        let mut kinds = BTreeMap::new();
        for kind in Kind::ALL {
            let mut resources = BTreeMap::new();
            let before = previous.map(|p| &p.of(kind).resources);
            for r in set.of(kind) {
                if let Some(entry) = before
                    .and_then(|b| b.get(&r.name))
                    .filter(|e| e.hash == r.hash)
                {
                    resources.insert(r.name.clone(), entry.clone());
                    continue;
                }
                match super::typed::to_any(kind.type_url(), &r.body) {
                    Ok(any) => {
                        resources.insert(r.name.clone(), Entry::new(r.hash.clone(), Arc::new(any)));
                    }
                    Err(e) => errors.push(format!("{kind:?} {:?}: {e}", r.name)),
                }
            }
            let version = version_of(&resources);
            kinds.insert(kind, TypeSnapshot::new(version, resources));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let full = set.version();
        Ok(Snapshot {
            version: full[..16.min(full.len())].to_owned(),
            kinds,
        })
    }

    /// The resources of `kind`.
    pub fn of(&self, kind: Kind) -> &TypeSnapshot {
        static EMPTY: std::sync::OnceLock<TypeSnapshot> = std::sync::OnceLock::new();
        self.kinds
            .get(&kind)
            .unwrap_or_else(|| EMPTY.get_or_init(TypeSnapshot::default))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::xds::Resource;
    use serde_json::json;

    /// A small set: one EDS cluster with its endpoints, one listener with its route table.
    pub fn set(weight_note: &str) -> ResourceSet {
        let mut set = ResourceSet::default();
        let mut add = |kind: Kind, body: serde_json::Value| {
            let name = body["name"]
                .as_str()
                .or(body["cluster_name"].as_str())
                .unwrap()
                .to_owned();
            set.resources
                .entry(kind)
                .or_default()
                .push(Resource::new(name, body));
        };
        add(
            Kind::Cluster,
            json!({"name": "a", "type": "EDS", "eds_cluster_config": {"eds_config": {"ads": {}}}}),
        );
        add(Kind::Endpoint, json!({"cluster_name": "a"}));
        add(
            Kind::Route,
            json!({"name": "r", "virtual_hosts": [{"name": weight_note, "domains": ["*"]}]}),
        );
        set
    }

    #[test]
    fn versions_follow_content_only() {
        let a = Snapshot::build(&set("x")).unwrap();
        let b = Snapshot::build(&set("x")).unwrap();
        let c = Snapshot::build(&set("y")).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.version, c.version);
        assert_eq!(
            a.of(Kind::Cluster).version,
            c.of(Kind::Cluster).version,
            "a route change leaves the cluster version alone"
        );
        assert_ne!(a.of(Kind::Route).version, c.of(Kind::Route).version);
    }

    #[test]
    fn a_rebuild_types_only_what_changed_and_equals_a_fresh_build() {
        let before = Snapshot::build(&set("x")).unwrap();
        let after = Snapshot::build_reusing(&set("y"), Some(&before)).unwrap();
        assert_eq!(after, Snapshot::build(&set("y")).unwrap());
        let cluster = |s: &Snapshot| s.of(Kind::Cluster).resources["a"].any.clone();
        assert!(
            Arc::ptr_eq(&cluster(&before), &cluster(&after)),
            "the unchanged cluster is taken as it was typed"
        );
        let route = |s: &Snapshot| s.of(Kind::Route).resources["r"].any.clone();
        assert!(!Arc::ptr_eq(&route(&before), &route(&after)));
        // A resource of the same name and hash is reused only if the hash matches: a body
        // that no longer types is still refused.
        let mut bad = set("x");
        bad.resources.get_mut(&Kind::Cluster).unwrap()[0] =
            Resource::new("a", json!({"name": "a", "typo": 1}));
        assert!(Snapshot::build_reusing(&bad, Some(&before)).is_err());
    }

    #[test]
    fn an_entry_is_encoded_once_as_prost_encodes_it_in_a_response() {
        use envoy_types::pb::envoy::service::discovery::v3::{
            DeltaDiscoveryResponse, DiscoveryResponse,
        };
        use prost::Message;
        let snapshot = Snapshot::build(&set("x")).unwrap();
        let entry = &snapshot.of(Kind::Cluster).resources["a"];
        let sotw = DiscoveryResponse {
            resources: vec![(*entry.any).clone()],
            ..Default::default()
        };
        assert_eq!(entry.sotw().to_vec(), sotw.encode_to_vec());
        let delta = DeltaDiscoveryResponse {
            resources: vec![DeltaResource {
                name: "a".into(),
                version: entry.hash.clone(),
                resource: Some((*entry.any).clone()),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(entry.delta("a").to_vec(), delta.encode_to_vec());
        // Shared, not encoded again: by this entry's clones (the next snapshot's) too.
        let again = entry.clone().sotw();
        assert_eq!(again.as_ptr(), entry.sotw().as_ptr());
        // The whole type in one piece is its entries' pieces in name order.
        let two = Snapshot::build(&crate::serve::stream::tests::with_cluster(
            set("x"),
            "b",
            "",
        ))
        .unwrap();
        let clusters = two.of(Kind::Cluster);
        let pieces: Vec<u8> = clusters
            .resources
            .values()
            .flat_map(|e| e.sotw().to_vec())
            .collect();
        assert_eq!(clusters.sotw_all().to_vec(), pieces);
    }

    #[test]
    fn a_body_envoy_would_refuse_is_refused_here() {
        let mut bad = set("x");
        bad.resources.get_mut(&Kind::Cluster).unwrap()[0] =
            Resource::new("a", json!({"name": "a", "typo": 1}));
        let errors = Snapshot::build(&bad).unwrap_err();
        assert!(errors[0].contains("typo"), "{errors:?}");
    }
}

#[cfg(test)]
mod examples {
    use super::*;

    /// Every example mesh's resources convert: the builder writes nothing Envoy's v3 API
    /// (as envoy-types knows it) would refuse.
    #[test]
    fn every_example_mesh_types() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut typed = 0;
        for entry in std::fs::read_dir(&root).unwrap() {
            let dir = entry.unwrap().path();
            if !dir.is_dir() {
                continue;
            }
            let inputs = crate::Inputs::read(std::slice::from_ref(&dir)).unwrap();
            let options = crate::Options {
                wasm: crate::WasmModules::NotRead,
                locality: crate::locality::Locality::parse("us-east1/us-east1-b").ok(),
                ..crate::Options::default()
            };
            let Ok((set, _)) = crate::resources(&inputs, &options) else {
                continue;
            };
            let snapshot =
                Snapshot::build(&set).unwrap_or_else(|e| panic!("{}: {e:#?}", dir.display()));
            typed += snapshot
                .kinds
                .values()
                .map(|t| t.resources.len())
                .sum::<usize>();
        }
        assert!(typed > 20, "only {typed} resources typed");
    }
}
