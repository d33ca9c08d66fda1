//! The shared store behind `sluice apply`, `sluice diff`, `sluice get` and
//! `sluice serve --store`: the mesh's Istio resources in etcd, one whole generation at a time.
//!
//! Layout under a prefix (`/sluice` unless the store URL names another):
//!
//! - `<prefix>/objects/<sha256>`: one resource document, its YAML text as the user wrote it.
//!   Content-addressed: an unchanged resource is never written again, and writing an object
//!   twice is harmless, so a failed apply can simply be run again.
//! - `<prefix>/generations/<N>`: a [`Manifest`], the complete list of generation N's
//!   resources (kind/namespace/name -> object, source file and line).
//! - `<prefix>/current`: `N`, the generation readers serve.
//! - `<prefix>/registrations/<namespace>/<name>`: a VM's WorkloadEntry (`sluice register`),
//!   under the VM's lease.
//! - `<prefix>/fleet/`: the serve replicas and the endpoints' health they share
//!   ([`fleet`]); not part of the mesh.
//!
//! An apply writes the new objects first (in batches within etcd's request and transaction
//! limits), then in one transaction, guarded by the generation it planned against, the new
//! manifest and the `current` pointer. A reader reads `current`, then the manifest and its
//! objects at that same etcd revision, so it sees the old generation or the new one, never
//! half of an apply; two concurrent applies cannot overwrite each other (the second one fails
//! its guard and says so).

pub mod etcd;
pub mod fleet;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Diagnostics, Inputs, Options, SourceFile};

/// Where the store lives: `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    /// The etcd members' client endpoints, `http://HOST:PORT`.
    pub endpoints: Vec<String>,
    /// The key prefix, `/sluice` by default; no trailing `/`.
    pub prefix: String,
}

impl std::str::FromStr for StoreUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let hint = "expected etcd://HOST:PORT[,HOST:PORT...][/PREFIX], e.g. etcd://127.0.0.1:2379";
        let rest = text
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("unsupported store {text:?}: {hint}"))?;
        let (hosts, prefix) = match rest.split_once('/') {
            Some((hosts, prefix)) => (hosts, format!("/{}", prefix.trim_end_matches('/'))),
            None => (rest, "/sluice".to_owned()),
        };
        if prefix == "/" {
            return Err(format!("store {text:?}: an empty key prefix; {hint}"));
        }
        let endpoints: Vec<String> = hosts
            .split(',')
            .map(|h| {
                let (host, port) = h
                    .rsplit_once(':')
                    .ok_or_else(|| format!("store {text:?}: {h:?} has no port; {hint}"))?;
                if host.is_empty() || port.parse::<u16>().is_err() {
                    return Err(format!("store {text:?}: {h:?} is not HOST:PORT; {hint}"));
                }
                Ok(format!("http://{h}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(StoreUrl { endpoints, prefix })
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts: Vec<&str> = self
            .endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect();
        write!(f, "etcd://{}{}", hosts.join(","), self.prefix)
    }
}

/// One resource document of the inputs, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// `Kind/namespace/name`, the resource's identity in the store.
    pub key: String,
    /// The input file it came from.
    pub source: String,
    /// The line of the file where the document's content starts (1-based).
    pub line: usize,
    /// The document's text, from that line to the end of the document.
    pub text: String,
}

impl Document {
    /// The store's object id of this document: the SHA-256 of its text.
    pub fn object(&self) -> String {
        object_id(&self.text)
    }
}

/// The object id of a document's text.
pub fn object_id(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The resource documents of `inputs`, one per YAML document that names a kind and a
/// `metadata.name` (namespace `namespace` when it names none), in input order (which the
/// builder's merges depend on, as Istio's do on creation order). Documents that
/// are not resources (empty ones, comments) are left out; validation reports anything wrong
/// with them before a store is written.
pub fn documents(inputs: &Inputs, namespace: &str) -> Vec<Document> {
    let mut out = Vec::new();
    for file in &inputs.files {
        let Ok(docs) = crate::yaml::parse_documents(&file.text) else {
            continue;
        };
        let lines: Vec<&str> = file.text.split_inclusive('\n').collect();
        for doc in docs {
            let json = doc.root.to_json();
            let (Some(kind), Some(name)) =
                (json["kind"].as_str(), json["metadata"]["name"].as_str())
            else {
                continue;
            };
            let ns = json["metadata"]["namespace"].as_str().unwrap_or(namespace);
            let start = doc.root.pos.line.max(1);
            // The document runs to the next document marker (`---` or `...` at column 0).
            let end = lines
                .iter()
                .enumerate()
                .skip(start)
                .find(|(_, l)| l.starts_with("---") || l.starts_with("..."))
                .map_or(lines.len(), |(i, _)| i);
            let text: String = lines[start - 1..end].concat();
            out.push(Document {
                key: format!("{kind}/{ns}/{name}"),
                source: file.name.clone(),
                line: start,
                text,
            });
        }
    }
    out
}

/// The documents to store from `inputs`, if they pass every check `sluice validate` runs
/// with `options` (the store holds only what the control plane can serve); else every
/// diagnostic, and nothing may be written. The warnings come with the documents.
pub fn check(
    inputs: &Inputs,
    options: &Options,
) -> Result<(Vec<Document>, Diagnostics), Diagnostics> {
    let diags = crate::validate(inputs, options);
    if diags.has_errors() {
        return Err(diags);
    }
    Ok((documents(inputs, &options.namespace), diags))
}

/// One resource of a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The object holding its text.
    pub object: String,
    /// The input file it was applied from.
    pub source: String,
    /// The line in that file where it starts.
    pub line: usize,
    /// Its place in the inputs of the apply that wrote it: the builder reads a generation's
    /// resources in this order, so it builds what it built from the files.
    pub order: usize,
}

/// A generation: every resource the store holds, by `Kind/namespace/name`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The generation number (0: the empty store).
    pub generation: u64,
    /// The resources.
    pub resources: BTreeMap<String, Entry>,
}

/// What an apply changes, by resource key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Resources the store does not hold yet.
    pub added: Vec<String>,
    /// Resources whose text differs.
    pub changed: Vec<String>,
    /// Resources the store holds and the inputs do not (removed only with `--prune`).
    pub removed: Vec<String>,
    /// Resources the store holds and the inputs do not, kept (no `--prune`).
    pub kept: Vec<String>,
    /// Resources whose text is the same.
    pub unchanged: usize,
    /// The same resources in another order (which can change how VirtualServices merge).
    pub reordered: bool,
}

impl Change {
    /// Whether the apply changes the store.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.removed.is_empty()
            && !self.reordered
    }

    /// `2 added, 1 changed, 0 removed, 12 unchanged`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} added, {} changed, {} removed, {} unchanged",
            self.added.len(),
            self.changed.len(),
            self.removed.len(),
            self.unchanged
        );
        if self.reordered {
            s.push_str(", reordered");
        }
        if !self.kept.is_empty() {
            s.push_str(&format!(
                " ({} not in the inputs kept: --prune removes them)",
                self.kept.len()
            ));
        }
        s
    }

    /// One line per changed resource: `+ key`, `~ key`, `- key`.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        lines.extend(self.added.iter().map(|k| format!("+ {k}")));
        lines.extend(self.changed.iter().map(|k| format!("~ {k}")));
        lines.extend(self.removed.iter().map(|k| format!("- {k}")));
        lines
    }
}

/// The next generation after `current` for the documents `desired`: with `prune` exactly
/// those documents, without it those documents plus every resource of `current` they do not
/// name. Also returns what changes.
pub fn plan(current: &Manifest, desired: &[Document], prune: bool) -> (Manifest, Change) {
    let mut next = Manifest {
        generation: current.generation + 1,
        resources: BTreeMap::new(),
    };
    let mut change = Change::default();
    for (order, doc) in desired.iter().enumerate() {
        let entry = Entry {
            object: doc.object(),
            source: doc.source.clone(),
            line: doc.line,
            order,
        };
        match current.resources.get(&doc.key) {
            None => change.added.push(doc.key.clone()),
            Some(old) if old.object != entry.object => change.changed.push(doc.key.clone()),
            Some(_) => change.unchanged += 1,
        }
        next.resources.insert(doc.key.clone(), entry);
    }
    let named: BTreeSet<&str> = desired.iter().map(|d| d.key.as_str()).collect();
    // Resources kept from before follow the applied ones, in their previous order.
    let mut before: Vec<(&String, &Entry)> = current.resources.iter().collect();
    before.sort_by_key(|(key, entry)| (entry.order, *key));
    for (key, entry) in before {
        if named.contains(key.as_str()) {
            continue;
        }
        if prune {
            change.removed.push(key.clone());
        } else {
            change.kept.push(key.clone());
            let order = desired.len() + change.kept.len();
            next.resources.insert(
                key.clone(),
                Entry {
                    order,
                    ..entry.clone()
                },
            );
        }
    }
    // The applied resources in another relative order than before (kept ones aside).
    let mut before: Vec<(usize, &str)> = desired
        .iter()
        .filter_map(|d| {
            current
                .resources
                .get(&d.key)
                .map(|e| (e.order, d.key.as_str()))
        })
        .collect();
    before.sort();
    change.reordered = change.added.is_empty()
        && before.len() == desired.len()
        && before
            .iter()
            .map(|(_, k)| *k)
            .ne(desired.iter().map(|d| d.key.as_str()));
    (next, change)
}

/// A VM that joined a WorkloadGroup (`sluice register`): the WorkloadEntry the store keeps
/// for it while it renews its lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registration {
    /// The WorkloadGroup's name.
    pub group: String,
    /// The WorkloadGroup's namespace (the entry's too).
    pub namespace: String,
    /// The VM's address.
    pub address: String,
    /// Labels beyond the group's (`--label k=v`).
    pub labels: BTreeMap<String, String>,
    /// Ports beyond the group's template (`--port name=number`).
    pub ports: BTreeMap<String, u32>,
}

impl Registration {
    /// The entry's name: the group's, then the address with `.` and `:` as `-` (a DNS label,
    /// unique per address in the group).
    pub fn name(&self) -> String {
        let address: String = self
            .address
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        format!("{}-{address}", self.group)
    }

    /// The WorkloadEntry, as Istio's auto-registration writes it: the group's `template`
    /// (ports, serviceAccount, network, locality, weight, labels) and `metadata` labels, the
    /// VM's address, the extra labels and ports, and Istio's `istio.io/autoRegistrationGroup`
    /// annotation naming the group. `group` is the WorkloadGroup as JSON.
    pub fn workload_entry(&self, group: &serde_json::Value) -> serde_json::Value {
        let spec = &group["spec"];
        let mut entry = spec["template"].clone();
        if !entry.is_object() {
            entry = serde_json::json!({});
        }
        let mut labels: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        for source in [&spec["metadata"]["labels"], &spec["template"]["labels"]] {
            if let Some(map) = source.as_object() {
                labels.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        labels.extend(
            self.labels
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::json!(v))),
        );
        entry["address"] = serde_json::json!(self.address);
        if !labels.is_empty() {
            entry["labels"] = serde_json::json!(labels);
        }
        for (name, port) in &self.ports {
            entry["ports"][name] = serde_json::json!(port);
        }
        serde_json::json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadEntry",
            "metadata": {
                "name": self.name(),
                "namespace": self.namespace,
                "labels": spec["metadata"]["labels"].clone(),
                "annotations": {crate::input::istio::AUTO_REGISTRATION_GROUP: self.group},
            },
            "spec": entry,
        })
    }
}

/// The inputs a generation holds, for the builder, in the order they were applied: one source
/// per resource, named after the file it was applied from and padded so that its lines keep
/// their numbers there (a diagnostic about a stored resource points into the user's file).
/// `objects` maps object ids to texts; a missing object is an error naming it.
pub fn inputs_of(
    manifest: &Manifest,
    objects: &BTreeMap<String, String>,
) -> Result<Inputs, String> {
    inputs_with(manifest, objects, &BTreeMap::new())
}

/// [`inputs_of`] plus the registered WorkloadEntries (`registrations`: store key -> text),
/// after the applied resources, each named `registration <key>` in diagnostics.
pub fn inputs_with(
    manifest: &Manifest,
    objects: &BTreeMap<String, String>,
    registrations: &BTreeMap<String, String>,
) -> Result<Inputs, String> {
    let mut files = Vec::new();
    let mut entries: Vec<(&String, &Entry)> = manifest.resources.iter().collect();
    entries.sort_by_key(|(key, entry)| (entry.order, *key));
    for (key, entry) in entries {
        let text = objects.get(&entry.object).ok_or_else(|| {
            format!(
                "generation {} names object {} for {key}, which the store does not hold",
                manifest.generation, entry.object
            )
        })?;
        let mut padded = "\n".repeat(entry.line.saturating_sub(1));
        padded.push_str(text);
        files.push(SourceFile {
            name: entry.source.clone(),
            text: padded,
        });
    }
    for (key, text) in registrations {
        files.push(SourceFile {
            name: format!("registration {key}"),
            text: text.clone(),
        });
    }
    Ok(Inputs {
        files,
        read_errors: Vec::new(),
        skipped: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESH: &str = "\
# the shop
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop}
spec: {hosts: [shop]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: shop
  namespace: prod
spec: {hosts: [shop]}
...
---

";

    fn docs() -> Vec<Document> {
        documents(&Inputs::from_text("mesh.yaml", MESH), "default")
    }

    #[test]
    fn documents_are_split_with_their_keys_and_lines() {
        let docs = docs();
        let keys: Vec<&str> = docs.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(
            keys,
            ["ServiceEntry/default/shop", "VirtualService/prod/shop"]
        );
        assert_eq!(docs[0].line, 2);
        assert!(docs[0].text.starts_with("apiVersion") && docs[0].text.ends_with("[shop]}\n"));
        assert_eq!(docs[1].line, 7);
        assert!(
            docs[1].text.ends_with("spec: {hosts: [shop]}\n"),
            "{:?}",
            docs[1].text
        );
    }

    #[test]
    fn a_plan_says_what_changes_and_prune_removes() {
        let (first, change) = plan(&Manifest::default(), &docs(), false);
        assert_eq!(first.generation, 1);
        assert_eq!(change.added.len(), 2);
        let (same, change) = plan(&first, &docs(), false);
        assert!(change.is_empty() && change.unchanged == 2);
        let mut swapped = docs();
        swapped.reverse();
        let (_, change) = plan(&first, &swapped, false);
        assert!(change.reordered && !change.is_empty(), "{change:?}");
        assert_eq!(same.resources, first.resources);
        let mut edited = docs();
        edited[1].text = edited[1].text.replace("[shop]", "[shop, shop.example.com]");
        edited.remove(0);
        let (kept, change) = plan(&first, &edited, false);
        assert_eq!(change.changed, ["VirtualService/prod/shop"]);
        assert_eq!(change.kept, ["ServiceEntry/default/shop"]);
        assert_eq!(kept.resources.len(), 2);
        let (pruned, change) = plan(&first, &edited, true);
        assert_eq!(change.removed, ["ServiceEntry/default/shop"]);
        assert_eq!(pruned.resources.len(), 1);
    }

    #[test]
    fn stored_inputs_keep_their_file_and_line_numbers() {
        let docs = docs();
        let (manifest, _) = plan(&Manifest::default(), &docs, false);
        let objects: BTreeMap<String, String> =
            docs.iter().map(|d| (d.object(), d.text.clone())).collect();
        let inputs = inputs_of(&manifest, &objects).expect("complete");
        assert_eq!(inputs.files.len(), 2);
        let vs = &inputs.files[1];
        assert_eq!(vs.name, "mesh.yaml");
        assert_eq!(
            vs.text.lines().nth(6),
            Some("apiVersion: networking.istio.io/v1")
        );
        // Split again, the stored inputs give the same documents.
        let again = documents(&inputs, "default");
        assert_eq!(again, docs);
        let missing = inputs_of(&manifest, &BTreeMap::new()).unwrap_err();
        assert!(missing.contains("does not hold"), "{missing}");
    }

    #[test]
    fn store_urls() {
        let url: StoreUrl = "etcd://127.0.0.1:2379,10.0.0.2:2379/mesh-a/"
            .parse()
            .unwrap();
        assert_eq!(
            url.endpoints,
            ["http://127.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(url.prefix, "/mesh-a");
        assert_eq!(
            url.to_string(),
            "etcd://127.0.0.1:2379,10.0.0.2:2379/mesh-a"
        );
        let default: StoreUrl = "etcd://localhost:2379".parse().unwrap();
        assert_eq!(default.prefix, "/sluice");
        for bad in [
            "http://x:1",
            "etcd://x",
            "etcd://:1",
            "etcd://x:port",
            "etcd://x:1/",
        ] {
            assert!(bad.parse::<StoreUrl>().is_err(), "{bad}");
        }
    }
}
