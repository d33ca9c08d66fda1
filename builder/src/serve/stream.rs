//! The protocol state of one ADS stream, as plain functions of requests and snapshots.
//!
//! [`Stream`] takes what the proxy sends ([`Stream::sotw_request`], [`Stream::delta_request`])
//! and what the control plane publishes ([`Stream::set_snapshot`]) and returns the responses
//! to send, in order. It does no I/O, so every rule of the xDS protocol below is unit-tested:
//!
//! - a NACK is a request whose `error_detail` is set, never a version mismatch; it is recorded
//!   and the refused version is not sent again (the next different version is);
//! - only a request naming the latest nonce of its type is an ACK or a NACK; older nonces are
//!   stale and change nothing (delta subscription changes still apply: they are deltas);
//! - state of the world: LDS and CDS responses hold the full set (wildcard), EDS, RDS and ECDS
//!   the requested names that exist and that the proxy was not sent as they are now (Envoy
//!   applies those per name and keeps what a response leaves out);
//! - make before break: responses go out in [`Kind::ALL`] order (clusters, endpoints,
//!   listeners, route tables, filter configs), and clusters (with their endpoints) that a new
//!   snapshot removes stay in the proxy's view until every other type has answered, so no route
//!   ever names a cluster the proxy has already dropped;
//! - delta: a filter config the proxy still subscribes to is never removed (a warming listener
//!   may be replacing the one that names it);
//! - a cluster whose definition changed gets its endpoints again: Envoy rebuilds the cluster,
//!   and the new one waits in warming for an assignment (the classic stuck-warming bug);
//! - versions are content hashes ([`version_of`]), per type and per stream.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};

use super::snapshot::{Entry, Snapshot, version_of};
pub use super::wire::Reply;
use super::wire::{DeltaResponse, SotwResponse};
use crate::xds::Kind;

/// What happened on the stream, for status and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The proxy accepted `version` of `kind`.
    Ack {
        /// The type.
        kind: Kind,
        /// The version it accepted.
        version: String,
    },
    /// The proxy refused `version` of `kind`, saying `message`.
    Nack {
        /// The type.
        kind: Kind,
        /// The version it refused.
        version: String,
        /// Its `error_detail.message`.
        message: String,
    },
    /// Every type the proxy subscribed to has answered the responses of snapshot `version`.
    Settled {
        /// [`Snapshot::version`].
        version: String,
    },
}

#[derive(Debug, Default, Clone)]
struct TypeState {
    /// The proxy asked for this type on this stream.
    started: bool,
    /// Every resource of the type (LDS/CDS without names, or `*` in delta).
    wildcard: bool,
    /// The names asked for, when not wildcard.
    names: BTreeSet<String>,
    /// The nonce of the latest response of this type.
    nonce: String,
    /// A response is out that the proxy has not answered yet.
    awaiting: bool,
    /// The version of the latest response.
    sent_version: Option<String>,
    /// Name -> hash of what the proxy was sent (state of the world: the latest response; delta:
    /// what it holds, starting from its `initial_resource_versions`).
    sent: BTreeMap<String, String>,
    /// The version the proxy last accepted.
    acked_version: Option<String>,
    /// The version the proxy refused, not to be sent again.
    nacked_version: Option<String>,
    /// Respond even if nothing changed (a new subscription, a rebuilt cluster's endpoints).
    force: bool,
    /// State of the world: the proxy refused the latest response, and Envoy may have applied
    /// some of its resources before it refused another; what the proxy holds of it is unknown,
    /// so the next response holds the whole view, not only what changed.
    resend_view: bool,
    /// Something the response depends on may have changed since the type was last evaluated:
    /// its resources in the snapshot, the stale clusters kept, its subscriptions. A type that
    /// is neither dirty nor forced would answer as it did last time (nothing), so it is not
    /// evaluated again: every ACK would otherwise walk every type's resources.
    dirty: bool,
}

/// The protocol state of one ADS stream (one proxy).
#[derive(Debug)]
pub struct Stream {
    delta: bool,
    snapshot: Arc<Snapshot>,
    types: BTreeMap<Kind, TypeState>,
    next_nonce: u64,
    /// Clusters and endpoints the current snapshot removed but the proxy may still route to:
    /// kept in its view until everything else settled (make before break).
    stale: BTreeMap<Kind, BTreeMap<String, Entry>>,
    /// The snapshot version not yet announced as [`Event::Settled`].
    unsettled: Option<String>,
    events: Vec<Event>,
}

/// What a stream's type has been told and has answered, for the status view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeStatus {
    /// The version the proxy last accepted.
    pub acked: Option<String>,
    /// The version of the latest response.
    pub sent: Option<String>,
    /// Resources in the proxy's view.
    pub resources: usize,
}

fn wildcard_by_default(kind: Kind) -> bool {
    matches!(kind, Kind::Cluster | Kind::Listener)
}

impl Stream {
    /// A stream serving `snapshot`; `delta` for `DeltaAggregatedResources`.
    pub fn new(delta: bool, snapshot: Arc<Snapshot>) -> Stream {
        // Only changes made while the proxy is connected are timed: its first fetch measures
        // when it connected, not how fast a change travels.
        let unsettled = None;
        Stream {
            delta,
            snapshot,
            types: BTreeMap::new(),
            next_nonce: 0,
            stale: BTreeMap::new(),
            unsettled,
            events: Vec::new(),
        }
    }

    /// The events since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The snapshot being served.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// Per type the proxy subscribed to: what it accepted and was sent.
    pub fn status(&self) -> BTreeMap<Kind, TypeStatus> {
        self.types
            .iter()
            .filter(|(_, st)| st.started)
            .map(|(kind, st)| {
                (
                    *kind,
                    TypeStatus {
                        acked: st.acked_version.clone(),
                        sent: st.sent_version.clone(),
                        resources: st.sent.len(),
                    },
                )
            })
            .collect()
    }

    /// A state-of-the-world request: the responses it calls for.
    pub fn sotw_request(&mut self, request: &DiscoveryRequest) -> Vec<Reply> {
        let Some(kind) = Kind::from_type_url(&request.type_url) else {
            return Vec::new();
        };
        let st = self.types.entry(kind).or_default();
        if !request.response_nonce.is_empty() && request.response_nonce != st.nonce {
            // An answer to a response the proxy has since been sent a newer one of.
            return Vec::new();
        }
        let first = !st.started;
        st.started = true;
        let names: BTreeSet<String> = request.resource_names.iter().cloned().collect();
        let wildcard = (names.is_empty() && wildcard_by_default(kind)) || names.contains("*");
        if first || names != st.names || wildcard != st.wildcard {
            st.force = true;
        }
        st.names = names;
        st.wildcard = wildcard;
        if !request.response_nonce.is_empty() {
            st.awaiting = false;
            let version = st.sent_version.clone().unwrap_or_default();
            match &request.error_detail {
                Some(status) => {
                    st.nacked_version = Some(version.clone());
                    st.resend_view = true;
                    self.events.push(Event::Nack {
                        kind,
                        version,
                        message: status.message.clone(),
                    });
                }
                None => {
                    st.acked_version = Some(request.version_info.clone());
                    self.events.push(Event::Ack {
                        kind,
                        version: request.version_info.clone(),
                    });
                }
            }
        }
        self.flush()
    }

    /// A delta request: the responses it calls for.
    pub fn delta_request(&mut self, request: &DeltaDiscoveryRequest) -> Vec<Reply> {
        let Some(kind) = Kind::from_type_url(&request.type_url) else {
            return Vec::new();
        };
        let st = self.types.entry(kind).or_default();
        let first = !st.started;
        st.started = true;
        if first {
            st.force = true;
            st.wildcard = wildcard_by_default(kind) && request.resource_names_subscribe.is_empty();
            st.sent = request
                .initial_resource_versions
                .iter()
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
        }
        if !request.resource_names_subscribe.is_empty()
            || !request.resource_names_unsubscribe.is_empty()
        {
            st.dirty = true;
        }
        for name in &request.resource_names_subscribe {
            if name == "*" {
                st.wildcard = true;
                continue;
            }
            st.names.insert(name.clone());
            if !first {
                // Asking again for what it holds means it lost it (Envoy re-subscribes the
                // endpoints of a rebuilt cluster): send it again.
                st.sent.remove(name);
            }
        }
        for name in &request.resource_names_unsubscribe {
            if name == "*" {
                st.wildcard = false;
                continue;
            }
            st.names.remove(name);
            st.sent.remove(name);
        }
        if !request.response_nonce.is_empty() && request.response_nonce == st.nonce {
            st.awaiting = false;
            let version = st.sent_version.clone().unwrap_or_default();
            match &request.error_detail {
                Some(status) => {
                    st.nacked_version = Some(version.clone());
                    self.events.push(Event::Nack {
                        kind,
                        version,
                        message: status.message.clone(),
                    });
                }
                None => {
                    st.acked_version = Some(version.clone());
                    self.events.push(Event::Ack { kind, version });
                }
            }
        }
        self.flush()
    }

    /// A new snapshot for this stream's group: the responses it calls for.
    pub fn set_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<Reply> {
        if snapshot.version == self.snapshot.version {
            return Vec::new();
        }
        for (kind, st) in &mut self.types {
            // Equal versions, equal names and content: the type's view cannot have changed.
            if snapshot.of(*kind).version != self.snapshot.of(*kind).version {
                st.dirty = true;
            }
        }
        // What the proxy holds of the old snapshot's clusters and endpoints that the new one
        // drops: keep serving it until the listeners and routes that name it are replaced.
        for kind in [Kind::Cluster, Kind::Endpoint] {
            if snapshot.of(kind).version == self.snapshot.of(kind).version {
                // Nothing of the kind came or went: what is stale stays stale.
                continue;
            }
            let Some(st) = self.types.get(&kind) else {
                continue;
            };
            let current = &self.snapshot.of(kind).resources;
            let next = &snapshot.of(kind).resources;
            let stale = self.stale.entry(kind).or_default();
            for name in st.sent.keys() {
                if next.contains_key(name) {
                    stale.remove(name);
                } else if let Some(entry) = current.get(name) {
                    stale.insert(name.clone(), entry.clone());
                }
            }
        }
        self.unsettled = Some(snapshot.version.clone());
        self.snapshot = snapshot;
        self.flush()
    }

    fn flush(&mut self) -> Vec<Reply> {
        let mut replies = self.respond_all();
        if !self.types.values().any(|st| st.awaiting) {
            if self.stale.values().any(|s| !s.is_empty()) {
                // Everything else is in place: now the removed clusters can go.
                for kind in self.stale.keys() {
                    if let Some(st) = self.types.get_mut(kind) {
                        st.dirty = true;
                    }
                }
                self.stale.clear();
                replies.extend(self.respond_all());
            }
            if !self.types.values().any(|st| st.awaiting)
                && self.types.values().any(|st| st.started)
                && let Some(version) = self.unsettled.take()
            {
                self.events.push(Event::Settled { version });
            }
        }
        replies
    }

    fn respond_all(&mut self) -> Vec<Reply> {
        Kind::ALL
            .into_iter()
            .filter_map(|kind| self.respond(kind))
            .collect()
    }

    fn respond(&mut self, kind: Kind) -> Option<Reply> {
        let st = self.types.get_mut(&kind)?;
        if !st.started || !(st.force || st.dirty) {
            return None;
        }
        st.dirty = false;
        let view = view(&self.snapshot, self.stale.get(&kind), kind, st);
        let all = self.snapshot.of(kind);
        let whole = !view.is_empty()
            && view.len() == all.resources.len()
            && self.stale.get(&kind).is_none_or(BTreeMap::is_empty);
        let version = if whole {
            // Every resource of the snapshot and nothing else: its version, computed once
            // ([`version_of`] the same entries; an empty default snapshot carries none).
            all.version.clone()
        } else {
            version_of(view.iter().map(|(n, e)| (*n, *e)))
        };
        let reply = if self.delta {
            let updates: Vec<(&String, &Entry)> = view
                .iter()
                .map(|(n, e)| (*n, *e))
                .filter(|(n, e)| st.sent.get(*n) != Some(&e.hash))
                .collect();
            let removed: Vec<String> = st
                .sent
                .keys()
                .filter(|n| !view.contains_key(n))
                // A filter config the proxy still subscribes to is still named by one of its
                // listeners: that listener may be serving while its replacement warms (a new
                // module, `--serve-modules`), so it keeps its filters until Envoy drops it and
                // unsubscribes (make before break, as for clusters).
                .filter(|n| !(kind == Kind::ExtensionConfig && st.names.contains(*n)))
                .cloned()
                .collect();
            let changed = !updates.is_empty() || !removed.is_empty();
            let refused = st.nacked_version.as_deref() == Some(version.as_str());
            if !(st.force || changed && !refused) {
                return None;
            }
            let rebuilt = redefined(kind, &st.sent, view.iter().map(|(n, e)| (*n, *e)));
            self.next_nonce += 1;
            let nonce = self.next_nonce.to_string();
            let response = DeltaResponse {
                system_version_info: version.clone(),
                type_url: kind.type_url().to_owned(),
                // Encoded once per resource and shared with every other stream.
                resources: updates.iter().map(|(name, e)| e.delta(name)).collect(),
                removed_resources: removed.clone(),
                nonce: nonce.clone(),
            };
            for (name, e) in &updates {
                st.sent.insert((*name).clone(), e.hash.clone());
            }
            for name in &removed {
                st.sent.remove(name);
            }
            st.nonce = nonce;
            (Reply::Delta(response), rebuilt)
        } else {
            let unchanged = st.sent_version.as_deref() == Some(version.as_str());
            let refused = st.nacked_version.as_deref() == Some(version.as_str());
            // Only LDS and CDS responses must hold the whole set: Envoy applies the others
            // per watched name, and leaves a name the response does not hold as it was (the
            // xDS protocol's "grouping resources into responses"). So those carry only what
            // the proxy was not sent yet: a weight change sends one filter config, not all.
            let partial = !wildcard_by_default(kind);
            let changed: Vec<&Entry> = if partial {
                view.iter()
                    .filter(|(n, e)| st.resend_view || st.sent.get(**n) != Some(&e.hash))
                    .map(|(_, e)| *e)
                    .collect()
            } else {
                Vec::new()
            };
            // Partial: something the proxy lacks, even under the version it was last sent
            // (a resource that left the view and came back as it was).
            let news = if partial {
                !changed.is_empty()
            } else {
                !unchanged
            };
            if !(st.force || news && !refused) {
                if partial {
                    // Resources dropped from the view (a removed route table its listener
                    // still names): the proxy keeps them, this stream forgets them, so one
                    // that comes back is sent again.
                    st.sent.retain(|n, _| view.contains_key(n));
                }
                return None;
            }
            let rebuilt = redefined(kind, &st.sent, view.iter().map(|(n, e)| (*n, *e)));
            self.next_nonce += 1;
            let nonce = self.next_nonce.to_string();
            let response = SotwResponse {
                version_info: version.clone(),
                type_url: kind.type_url().to_owned(),
                // Encoded once and shared with every other stream: the whole type in one piece
                // when the view is the whole type (the wildcard CDS and LDS of every proxy).
                resources: if partial && changed.len() < view.len() {
                    changed.iter().map(|e| e.sotw()).collect()
                } else if whole {
                    vec![all.sotw_all()]
                } else {
                    view.values().map(|e| e.sotw()).collect()
                },
                nonce: nonce.clone(),
            };
            st.sent = view
                .iter()
                .map(|(n, e)| ((*n).clone(), e.hash.clone()))
                .collect();
            st.resend_view = false;
            st.nonce = nonce;
            (Reply::Sotw(response), rebuilt)
        };
        let (reply, rebuilt) = reply;
        st.force = false;
        st.awaiting = true;
        st.sent_version = Some(version);
        self.resend_endpoints_of(&rebuilt);
        Some(reply)
    }

    /// Envoy rebuilds a cluster whose definition changed, and the new cluster waits for an
    /// assignment: send the endpoints of every such cluster (`rebuilt`) again, even if they did
    /// not change.
    fn resend_endpoints_of(&mut self, rebuilt: &[String]) {
        if rebuilt.is_empty() {
            return;
        }
        let Some(eds) = self.types.get_mut(&Kind::Endpoint) else {
            return;
        };
        for name in rebuilt {
            if eds.sent.remove(name).is_some() || eds.names.contains(name) {
                eds.force = true;
            }
        }
    }
}

/// The resources of `kind` a proxy should have now, by name: those of `snapshot` it asked for
/// (`st`), and the `stale` ones it still holds (make before break).
fn view<'a>(
    snapshot: &'a Snapshot,
    stale: Option<&'a BTreeMap<String, Entry>>,
    kind: Kind,
    st: &TypeState,
) -> BTreeMap<&'a String, &'a Entry> {
    let current = &snapshot.of(kind).resources;
    let all = current.iter().chain(
        stale
            .into_iter()
            .flatten()
            .filter(|(n, _)| !current.contains_key(*n)),
    );
    all.filter(|(name, _)| st.wildcard || st.names.contains(*name))
        .collect()
}

/// For clusters: the names `sent` holds that `view` defines differently (Envoy rebuilds them).
fn redefined<'a>(
    kind: Kind,
    sent: &BTreeMap<String, String>,
    view: impl IntoIterator<Item = (&'a String, &'a Entry)>,
) -> Vec<String> {
    if kind != Kind::Cluster {
        return Vec::new();
    }
    view.into_iter()
        .filter(|(n, e)| sent.get(*n).is_some_and(|old| *old != e.hash))
        .map(|(n, _)| n.clone())
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::serve::snapshot::tests::set;
    use crate::xds::{Resource, ResourceSet};
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse,
    };
    use envoy_types::pb::google::rpc::Status;
    use prost::Message;
    use serde_json::json;

    fn snap(set: &ResourceSet) -> Arc<Snapshot> {
        Arc::new(Snapshot::build(set).unwrap())
    }

    fn sotw(kind: Kind, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: kind.type_url().into(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn one(replies: Vec<Reply>) -> DiscoveryResponse {
        assert_eq!(replies.len(), 1, "{replies:#?}");
        let reply = replies.into_iter().next().unwrap();
        assert!(
            matches!(reply, Reply::Sotw(_)),
            "delta reply on a sotw stream"
        );
        // As the proxy reads it: the pre-encoded pieces decode as one response.
        DiscoveryResponse::decode(reply.encode_to_bytes("")).unwrap()
    }

    fn one_delta(replies: Vec<Reply>) -> DeltaDiscoveryResponse {
        assert_eq!(replies.len(), 1, "{replies:#?}");
        let reply = replies.into_iter().next().unwrap();
        assert!(
            matches!(reply, Reply::Delta(_)),
            "sotw reply on a delta stream"
        );
        DeltaDiscoveryResponse::decode(reply.encode_to_bytes("")).unwrap()
    }

    pub(crate) fn with_cluster(mut s: ResourceSet, name: &str, note: &str) -> ResourceSet {
        s.resources
            .entry(Kind::Cluster)
            .or_default()
            .push(Resource::new(
                name,
                json!({"name": name, "type": "EDS", "alt_stat_name": note,
                   "eds_cluster_config": {"eds_config": {"ads": {}}}}),
            ));
        s.resources
            .entry(Kind::Endpoint)
            .or_default()
            .push(Resource::new(name, json!({"cluster_name": name})));
        s
    }

    #[test]
    fn sotw_ack_answers_nothing_and_a_stale_nonce_is_ignored() {
        let mut stream = Stream::new(false, snap(&set("x")));
        let cds = one(stream.sotw_request(&sotw(Kind::Cluster, &[], "", "")));
        assert_eq!(cds.resources.len(), 1);
        // The ACK.
        let acked = stream.sotw_request(&sotw(Kind::Cluster, &[], &cds.version_info, &cds.nonce));
        assert!(acked.is_empty());
        assert_eq!(
            stream.take_events(),
            vec![Event::Ack {
                kind: Kind::Cluster,
                version: cds.version_info.clone()
            }]
        );
        // A change, then an answer to the old nonce: stale, nothing happens.
        let new = one(stream.set_snapshot(snap(&with_cluster(set("x"), "b", ""))));
        assert_eq!(new.resources.len(), 2, "CDS is the full set");
        assert!(
            stream
                .sotw_request(&sotw(Kind::Cluster, &[], &cds.version_info, &cds.nonce))
                .is_empty()
        );
        assert!(stream.take_events().is_empty());
    }

    #[test]
    fn sotw_nack_is_error_detail_and_the_refused_version_is_not_resent() {
        let mut stream = Stream::new(false, snap(&set("x")));
        let rds = one(stream.sotw_request(&sotw(Kind::Route, &["r"], "", "")));
        stream.sotw_request(&sotw(Kind::Route, &["r"], &rds.version_info, &rds.nonce));
        let bad = one(stream.set_snapshot(snap(&set("y"))));
        let mut nack = sotw(Kind::Route, &["r"], &rds.version_info, &bad.nonce);
        nack.error_detail = Some(Status {
            code: 3,
            message: "refused".into(),
            details: vec![],
        });
        assert!(stream.sotw_request(&nack).is_empty(), "no resend loop");
        let events = stream.take_events();
        assert!(events.contains(&Event::Nack {
            kind: Kind::Route,
            version: bad.version_info.clone(),
            message: "refused".into()
        }));
        // The same version published again: still nothing; a fix: sent.
        assert!(stream.set_snapshot(snap(&set("y"))).is_empty());
        let fixed = one(stream.set_snapshot(snap(&set("z"))));
        assert_ne!(fixed.version_info, bad.version_info);
    }

    #[test]
    fn sotw_named_types_get_what_exists_of_what_they_ask() {
        let mut stream = Stream::new(false, snap(&set("x")));
        let rds = one(stream.sotw_request(&sotw(Kind::Route, &["r", "missing"], "", "")));
        assert_eq!(rds.resources.len(), 1);
        // Asking for other names is answered even though nothing changed.
        let again = one(stream.sotw_request(&sotw(
            Kind::Route,
            &["missing"],
            &rds.version_info,
            &rds.nonce,
        )));
        assert!(again.resources.is_empty());
    }

    #[test]
    fn removed_clusters_stay_until_the_routes_have_answered() {
        let two = with_cluster(set("x"), "b", "");
        let mut stream = Stream::new(false, snap(&two));
        let cds = one(stream.sotw_request(&sotw(Kind::Cluster, &[], "", "")));
        stream.sotw_request(&sotw(Kind::Cluster, &[], &cds.version_info, &cds.nonce));
        let rds = one(stream.sotw_request(&sotw(Kind::Route, &["r"], "", "")));
        stream.sotw_request(&sotw(Kind::Route, &["r"], &rds.version_info, &rds.nonce));
        // Cluster b goes, and the route table changes (it no longer names b).
        let replies = stream.set_snapshot(snap(&set("y")));
        assert_eq!(
            replies.len(),
            1,
            "the route table first; CDS keeps b: {replies:#?}"
        );
        let Reply::Sotw(routes) = &replies[0] else {
            panic!()
        };
        assert_eq!(routes.type_url, Kind::Route.type_url());
        let last = one(stream.sotw_request(&sotw(
            Kind::Route,
            &["r"],
            &routes.version_info,
            &routes.nonce,
        )));
        assert_eq!(last.type_url, Kind::Cluster.type_url());
        assert_eq!(last.resources.len(), 1, "now b goes");
    }

    #[test]
    fn a_changed_cluster_gets_its_endpoints_again() {
        let mut stream = Stream::new(false, snap(&with_cluster(set("x"), "b", "1")));
        let cds = one(stream.sotw_request(&sotw(Kind::Cluster, &[], "", "")));
        stream.sotw_request(&sotw(Kind::Cluster, &[], &cds.version_info, &cds.nonce));
        let eds = one(stream.sotw_request(&sotw(Kind::Endpoint, &["a", "b"], "", "")));
        stream.sotw_request(&sotw(
            Kind::Endpoint,
            &["a", "b"],
            &eds.version_info,
            &eds.nonce,
        ));
        let replies = stream.set_snapshot(snap(&with_cluster(set("x"), "b", "2")));
        let types: Vec<&str> = replies
            .iter()
            .map(|r| match r {
                Reply::Sotw(r) => r.type_url.as_str(),
                Reply::Delta(_) => unreachable!(),
            })
            .collect();
        assert_eq!(types, [Kind::Cluster.type_url(), Kind::Endpoint.type_url()]);
        let Reply::Sotw(eds) = &replies[1] else {
            unreachable!()
        };
        let eds = DiscoveryResponse::decode(Reply::Sotw(eds.clone()).encode_to_bytes("")).unwrap();
        assert_eq!(
            names_in(&eds),
            ["b"],
            "the rebuilt cluster's endpoints, unchanged"
        );
    }

    /// The names of the resources of a state-of-the-world response.
    fn names_in(response: &DiscoveryResponse) -> Vec<String> {
        use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
        use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
        response
            .resources
            .iter()
            .map(|any| match Kind::from_type_url(&any.type_url) {
                Some(Kind::Route) => {
                    RouteConfiguration::decode(any.value.as_slice())
                        .unwrap()
                        .name
                }
                Some(Kind::Endpoint) => {
                    ClusterLoadAssignment::decode(any.value.as_slice())
                        .unwrap()
                        .cluster_name
                }
                other => panic!("no name reader for {other:?}"),
            })
            .collect()
    }

    fn with_route(mut s: ResourceSet, name: &str, note: &str) -> ResourceSet {
        s.resources
            .entry(Kind::Route)
            .or_default()
            .push(Resource::new(
                name,
                json!({"name": name, "virtual_hosts": [{"name": note, "domains": ["*"]}]}),
            ));
        s
    }

    /// The proxy's ACK of `response`, for route tables `r` and `r2`.
    fn ack(stream: &mut Stream, response: &DiscoveryResponse) {
        let names = ["r", "r2"];
        let request = sotw(Kind::Route, &names, &response.version_info, &response.nonce);
        assert!(
            stream.sotw_request(&request).is_empty(),
            "an ACK answers nothing"
        );
    }

    #[test]
    fn sotw_named_types_carry_only_what_the_proxy_was_not_sent() {
        let mut stream = Stream::new(false, snap(&with_route(set("x"), "r2", "a")));
        let rds = one(stream.sotw_request(&sotw(Kind::Route, &["r", "r2"], "", "")));
        assert_eq!(names_in(&rds), ["r", "r2"], "the first response holds both");
        ack(&mut stream, &rds);
        // r2 changes: only r2 travels, under the version of the whole view.
        let changed = one(stream.set_snapshot(snap(&with_route(set("x"), "r2", "b"))));
        assert_eq!(names_in(&changed), ["r2"]);
        assert_ne!(changed.version_info, rds.version_info);
        ack(&mut stream, &changed);
        assert_eq!(stream.status()[&Kind::Route].resources, 2);
        // r2 goes from the snapshot while the proxy still asks for it: nothing to send; when
        // it comes back as it was, the proxy is sent it again.
        assert!(stream.set_snapshot(snap(&set("x"))).is_empty());
        let back = one(stream.set_snapshot(snap(&with_route(set("x"), "r2", "b"))));
        assert_eq!(names_in(&back), ["r2"]);
        ack(&mut stream, &back);
        // A refused response: the next one holds the whole view again (Envoy may have applied
        // part of the refused one), the refused version is not sent again.
        let bad = one(stream.set_snapshot(snap(&with_route(set("x"), "r2", "bad"))));
        assert_eq!(names_in(&bad), ["r2"]);
        let mut nack = sotw(Kind::Route, &["r", "r2"], &back.version_info, &bad.nonce);
        nack.error_detail = Some(Status {
            message: "refused".into(),
            ..Default::default()
        });
        assert!(stream.sotw_request(&nack).is_empty(), "no resend loop");
        let fixed = one(stream.set_snapshot(snap(&with_route(set("x"), "r2", "c"))));
        assert_eq!(names_in(&fixed), ["r", "r2"], "r unchanged, sent again");
        ack(&mut stream, &fixed);
        let next = one(stream.set_snapshot(snap(&with_route(set("x"), "r2", "b"))));
        assert_eq!(names_in(&next), ["r2"], "and only what changed after that");
        ack(&mut stream, &next);
        let back = next;
        // A new stream (a reconnected proxy) is sent everything again.
        let mut fresh = Stream::new(false, snap(&with_route(set("x"), "r2", "b")));
        let all = one(fresh.sotw_request(&sotw(Kind::Route, &["r", "r2"], "", "")));
        assert_eq!(names_in(&all), ["r", "r2"]);
        assert_eq!(
            all.version_info, back.version_info,
            "same view, same version"
        );
    }

    #[test]
    fn delta_sends_only_changes_and_removals() {
        let mut stream = Stream::new(true, snap(&with_cluster(set("x"), "b", "")));
        let first = one_delta(stream.delta_request(&DeltaDiscoveryRequest {
            type_url: Kind::Cluster.type_url().into(),
            ..Default::default()
        }));
        assert_eq!(first.resources.len(), 2);
        stream.delta_request(&DeltaDiscoveryRequest {
            type_url: Kind::Cluster.type_url().into(),
            response_nonce: first.nonce.clone(),
            ..Default::default()
        });
        let changed = one_delta(stream.set_snapshot(snap(&with_cluster(set("x"), "b", "2"))));
        assert_eq!(changed.resources.len(), 1);
        assert_eq!(changed.resources[0].name, "b");
        stream.delta_request(&DeltaDiscoveryRequest {
            type_url: Kind::Cluster.type_url().into(),
            response_nonce: changed.nonce.clone(),
            ..Default::default()
        });
        let removed = one_delta(stream.set_snapshot(snap(&set("x"))));
        assert!(removed.resources.is_empty());
        assert_eq!(removed.removed_resources, ["b"]);
    }

    #[test]
    fn delta_in_sync_answers_only_what_changed_and_a_resubscribe() {
        let mut stream = Stream::new(true, snap(&set("x")));
        let ask = |kind: Kind, names: &[&str], nonce: &str| DeltaDiscoveryRequest {
            type_url: kind.type_url().into(),
            resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
            response_nonce: nonce.into(),
            ..Default::default()
        };
        for (kind, names) in [
            (Kind::Cluster, &[][..]),
            (Kind::Endpoint, &["a"]),
            (Kind::Route, &["r"]),
        ] {
            let first = one_delta(stream.delta_request(&ask(kind, names, "")));
            assert!(
                stream
                    .delta_request(&ask(kind, &[], &first.nonce))
                    .is_empty()
            );
        }
        // In sync: an ACK again, or a new snapshot changing only the route table, touches only
        // what changed.
        let routes = one_delta(stream.set_snapshot(snap(&set("y"))));
        assert_eq!(routes.type_url, Kind::Route.type_url());
        assert!(
            stream
                .delta_request(&ask(Kind::Route, &[], &routes.nonce))
                .is_empty()
        );
        // Subscribing again to what it holds (Envoy lost it: a rebuilt cluster) gets it again.
        let again = one_delta(stream.delta_request(&ask(Kind::Endpoint, &["a"], "")));
        assert_eq!(again.resources.len(), 1);
        assert_eq!(again.resources[0].name, "a");
        assert!(
            stream
                .delta_request(&ask(Kind::Endpoint, &[], &again.nonce))
                .is_empty()
        );
        assert!(
            stream
                .take_events()
                .iter()
                .any(|e| matches!(e, Event::Settled { .. })),
            "the change settled"
        );
    }

    #[test]
    fn delta_reconnect_with_initial_versions_gets_nothing_it_has() {
        let snapshot = snap(&set("x"));
        let a = &snapshot.of(Kind::Cluster).resources["a"];
        let mut stream = Stream::new(true, snapshot.clone());
        let reply = one_delta(stream.delta_request(&DeltaDiscoveryRequest {
            type_url: Kind::Cluster.type_url().into(),
            initial_resource_versions: [("a".to_owned(), a.hash.clone())].into(),
            ..Default::default()
        }));
        assert!(
            reply.resources.is_empty(),
            "the first request is always answered, with nothing new"
        );
    }

    #[test]
    fn delta_removes_clusters_only_after_the_routes_answered() {
        let mut stream = Stream::new(true, snap(&with_cluster(set("x"), "b", "")));
        let ask = |kind: Kind, names: &[&str], nonce: &str| DeltaDiscoveryRequest {
            type_url: kind.type_url().into(),
            resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
            response_nonce: nonce.into(),
            ..Default::default()
        };
        let cds = one_delta(stream.delta_request(&ask(Kind::Cluster, &[], "")));
        stream.delta_request(&ask(Kind::Cluster, &[], &cds.nonce));
        let eds = one_delta(stream.delta_request(&ask(Kind::Endpoint, &["a", "b"], "")));
        stream.delta_request(&ask(Kind::Endpoint, &[], &eds.nonce));
        let rds = one_delta(stream.delta_request(&ask(Kind::Route, &["r"], "")));
        stream.delta_request(&ask(Kind::Route, &[], &rds.nonce));
        let replies = stream.set_snapshot(snap(&set("y")));
        let routes = one_delta(replies);
        assert_eq!(
            routes.type_url,
            Kind::Route.type_url(),
            "b and its endpoints stay for now"
        );
        let replies = stream.delta_request(&ask(Kind::Route, &[], &routes.nonce));
        assert_eq!(replies.len(), 2, "{replies:#?}");
        let Reply::Delta(clusters) = &replies[0] else {
            panic!()
        };
        let Reply::Delta(endpoints) = &replies[1] else {
            panic!()
        };
        assert_eq!(clusters.type_url, Kind::Cluster.type_url());
        assert_eq!(clusters.removed_resources, ["b"]);
        assert_eq!(endpoints.removed_resources, ["b"]);
    }
}
