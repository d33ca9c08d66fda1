//! What the loader, the ADS streams and the admin port share: the published snapshot, the
//! input's health, each connected proxy's status, and the metrics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::watch;

use super::groups::Gateways;
use super::snapshot::Snapshot;
use super::stream::TypeStatus;
use crate::model::ProbedEndpoint;
use crate::probe::run::Prober;
use crate::probe::tracker::Health;
use crate::xds::health::EdsHealth;
use crate::xds::{Kind, ResourceSet};

/// A config as published: one snapshot per group, and when it was read, so a proxy's ACK can
/// be timed from it.
#[derive(Debug, Clone)]
pub struct Published {
    /// The version of the whole resource set.
    pub version: String,
    /// The Gateways, which name the groups.
    pub gateways: Gateways,
    /// Each group's snapshot (see [`super::groups`]).
    pub groups: BTreeMap<String, Arc<Snapshot>>,
    /// The typed snapshot of every resource the groups are cut from (health written in, once
    /// published): the next build takes the resources that did not change from it.
    pub typed: Arc<Snapshot>,
    /// When the loader published it.
    pub at: Instant,
    /// The resource set as the input gives it, before health is written into its endpoints:
    /// the listeners and endpoints whole, the other resources by name and hash only
    /// ([`super::load::kept_for_health`]).
    pub set: Arc<ResourceSet>,
    /// The endpoints probed, by probe key ([`ProbedEndpoint::key`]).
    pub probed: Arc<BTreeMap<String, ProbedEndpoint>>,
    /// `--serve-modules`: the bytes of each module the filter configs pin, by file name
    /// (`sluice_router.wasm`), read with this config, so what `/modules/` serves is exactly
    /// what the configs' sha256 name. Empty without `--serve-modules`.
    pub modules: Arc<BTreeMap<String, bytes::Bytes>>,
    /// The fingerprint of each guarded canary split, by split name, as the input gives it
    /// (what [`super::halts`] reads the proxies' reports against).
    pub guarded: Arc<BTreeMap<String, String>>,
}

impl Published {
    /// This config with `health` (by probe key; a key without a result yet is unhealthy, as
    /// Istio treats a health-checked WorkloadEntry before its first probe) written into its
    /// endpoints: only EDS resources differ from the input's, so proxies get only EDS.
    pub fn with_health(&self, health: &BTreeMap<String, Health>) -> Published {
        let by_socket = crate::xds::health::by_socket(&self.probed, |key| match health.get(key) {
            Some(Health::Healthy) => EdsHealth::Healthy,
            _ => EdsHealth::Unhealthy,
        });
        if by_socket.is_empty() {
            // Nothing probed: health changes no resource, and the groups are those of the set.
            return Published {
                at: Instant::now(),
                ..self.clone()
            };
        }
        let set = crate::xds::health::apply(&self.set, &by_socket);
        match super::load::group_snapshots(&set, &self.gateways, Some(&self.typed)) {
            Ok((_, typed, groups)) => Published {
                groups,
                typed,
                at: Instant::now(),
                ..self.clone()
            },
            // Health only sets an enum field of endpoints that typed before: cannot fail.
            Err(_) => self.clone(),
        }
    }

    /// The group of a proxy whose `node.cluster` is `cluster`, and its snapshot.
    pub fn for_cluster(&self, cluster: &str) -> (String, Arc<Snapshot>) {
        let group = self.gateways.group_of(cluster);
        let snapshot = self
            .groups
            .get(&group)
            .cloned()
            .unwrap_or_else(|| Arc::new(Snapshot::default()));
        (group, snapshot)
    }
}

/// The short xDS name of a kind (`CDS`, `EDS`, `LDS`, `RDS`, `ECDS`).
pub fn short_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Cluster => "CDS",
        Kind::Endpoint => "EDS",
        Kind::Listener => "LDS",
        Kind::Route => "RDS",
        Kind::ExtensionConfig => "ECDS",
    }
}

/// One proxy's latest NACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NackRecord {
    /// The type refused.
    pub kind: Kind,
    /// The version refused.
    pub version: String,
    /// Envoy's reason.
    pub message: String,
    /// Seconds since the epoch.
    pub at: u64,
}

/// One connected proxy (one ADS stream).
#[derive(Debug, Clone)]
pub struct ProxyStatus {
    /// `node.id`.
    pub id: String,
    /// `node.cluster`, which selects the proxy's group.
    pub cluster: String,
    /// The group (see [`super::groups`]).
    pub group: String,
    /// `sotw` or `delta`.
    pub mode: &'static str,
    /// Seconds since the epoch when the stream opened.
    pub connected_at: u64,
    /// Per type: what the proxy accepted and was sent.
    pub types: BTreeMap<Kind, TypeStatus>,
    /// The latest NACK, if any.
    pub last_nack: Option<NackRecord>,
}

/// The loaded input.
#[derive(Debug, Clone, Default)]
pub struct InputStatus {
    /// The version being served, once any valid input was read.
    pub version: Option<String>,
    /// Warnings of the config being served.
    pub warnings: Vec<String>,
    /// The diagnostics of the latest refused read (cleared by a good one).
    pub error: Option<String>,
    /// Seconds since the epoch of the latest read.
    pub read_at: u64,
    /// Why the store cannot be read, while it cannot (`serve --store`): the last good config
    /// keeps serving meanwhile.
    pub degraded: Option<String>,
    /// The store generation served (`serve --store`).
    pub generation: Option<u64>,
}

/// Upper bounds of the change-to-ACK histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counters for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Responses sent, by type.
    pub pushes: BTreeMap<Kind, u64>,
    /// Bytes of responses sent, by type.
    pub bytes: BTreeMap<Kind, u64>,
    /// NACKs received, by type.
    pub nacks: BTreeMap<Kind, u64>,
    /// Reads of the input refused for errors.
    pub input_errors: u64,
    /// Snapshots published.
    pub snapshots: u64,
    /// Change-to-ACK latency: count per bucket of [`LATENCY_BUCKETS`] (not cumulative), then
    /// sum and count.
    pub latency_buckets: [u64; LATENCY_BUCKETS.len()],
    /// Sum of observed latencies in seconds.
    pub latency_sum: f64,
    /// Number of observed latencies.
    pub latency_count: u64,
}

impl Metrics {
    /// Records one change-to-ACK latency.
    pub fn observe_latency(&mut self, seconds: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b) {
            self.latency_buckets[i] += 1;
        }
        self.latency_sum += seconds;
        self.latency_count += 1;
    }
}

/// Everything shared, behind one mutex (a status read or a stream update is microseconds).
#[derive(Debug, Default)]
pub struct Inner {
    /// The input.
    pub input: InputStatus,
    /// Connected proxies by stream id.
    pub proxies: BTreeMap<u64, ProxyStatus>,
    /// Counters.
    pub metrics: Metrics,
    /// The canary halts each proxy last reported, by `node.id` ([`super::halts`]).
    pub halts: BTreeMap<String, super::halts::ProxyHalts>,
    /// The halts spread to the fleet (`--spread-halts`), by split name.
    pub fleet_halts: BTreeMap<String, super::halts::FleetHalt>,
    next_stream: u64,
}

/// The shared state.
#[derive(Debug)]
pub struct Shared {
    /// The latest good snapshot (`None` until a valid input was read).
    pub published: watch::Sender<Option<Published>>,
    inner: Mutex<Inner>,
    /// Held while a config is published (a new input, or new health): the two publishers
    /// must not interleave, or one would publish over the other with stale content.
    publishing: Mutex<()>,
    /// The health last reported by the prober, by probe key.
    health: Mutex<BTreeMap<String, Health>>,
    /// The health other replicas report of the endpoints they probe (with a store), by probe
    /// key.
    others: Mutex<BTreeMap<String, crate::probe::HealthReport>>,
    /// The prober, once serve runs one.
    pub prober: OnceLock<Arc<Prober>>,
    /// This replica's name (`control_plane.identifier`), once ADS listens.
    pub identifier: OnceLock<String>,
    /// Asks the watcher for a rebuild of the input (a fleet halt was added), once it watches.
    pub reload: OnceLock<tokio::sync::mpsc::UnboundedSender<()>>,
    /// What the last build kept for the next ([`crate::Reuse`]); held for a whole build, so
    /// builds also run one at a time.
    pub reuse: Mutex<crate::Reuse>,
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Shared {
    /// Nothing loaded, nobody connected.
    pub fn new() -> Shared {
        Shared {
            published: watch::Sender::new(None),
            inner: Mutex::new(Inner::default()),
            reuse: Mutex::new(crate::Reuse::default()),
            publishing: Mutex::new(()),
            health: Mutex::new(BTreeMap::new()),
            others: Mutex::new(BTreeMap::new()),
            prober: OnceLock::new(),
            identifier: OnceLock::new(),
            reload: OnceLock::new(),
        }
    }

    /// Rebuilds the input soon (after the watcher's debounce), if a watcher runs.
    pub fn request_reload(&self) {
        if let Some(reload) = self.reload.get() {
            let _ = reload.send(());
        }
    }

    /// Publishes `published` (a config as the input gives it) with the current health, unless
    /// `skip` says, under the publishing lock, that it must not be; returns whether it was.
    pub fn publish_config(
        &self,
        published: Published,
        skip: impl FnOnce(Option<&Published>) -> bool,
    ) -> bool {
        let _publishing = self
            .publishing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if skip(self.published.borrow().as_ref()) {
            return false;
        }
        let health = self
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        self.published
            .send_replace(Some(published.with_health(&health)));
        true
    }

    /// Records the prober's `health` (by probe key) and publishes the current config with it.
    pub fn publish_health(&self, health: BTreeMap<String, Health>) {
        let _publishing = self
            .publishing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.published.borrow().clone();
        if let Some(current) = current {
            self.published
                .send_replace(Some(current.with_health(&health)));
        }
        *self
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = health;
    }

    /// Records what other replicas report of the endpoints they probe (`/endpoints` shows it).
    pub fn set_others(&self, others: BTreeMap<String, crate::probe::HealthReport>) {
        *self
            .others
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = others;
    }

    /// The `/endpoints` document: every probed endpoint with its clusters, health, who probes
    /// it, its probe count, when its health last changed and its last error.
    pub fn endpoints_json(&self) -> Value {
        let published = self.published.borrow().clone();
        let status: BTreeMap<String, crate::probe::run::EndpointStatus> = self
            .prober
            .get()
            .map(|p| p.status())
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.key.clone(), s))
            .collect();
        let replica = self.identifier.get().cloned().unwrap_or_default();
        let others = self
            .others
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let served = self
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let now = SystemTime::now();
        let endpoints: Vec<Value> = published
            .as_ref()
            .map(|p| {
                p.probed
                    .iter()
                    .map(|(key, e)| {
                        // Probed here, or by another replica of the store's fleet (its report).
                        let (health, by, probes, changed_at, last_error) =
                            match (status.get(key), others.get(key)) {
                                (Some(s), _) => (
                                    s.health.eds_name().to_owned(),
                                    replica.clone(),
                                    s.probes,
                                    s.since_change.and_then(|ago| {
                                        now.checked_sub(ago)?
                                            .duration_since(UNIX_EPOCH)
                                            .ok()
                                            .map(|d| d.as_secs())
                                    }),
                                    s.last_error.clone(),
                                ),
                                (None, Some(r)) => (
                                    r.health.clone(),
                                    r.by.clone(),
                                    r.probes,
                                    (r.changed_unix_ms > 0).then_some(r.changed_unix_ms / 1000),
                                    r.last_error.clone(),
                                ),
                                (None, None) => (
                                    Health::Unknown.eds_name().to_owned(),
                                    String::new(),
                                    0,
                                    None,
                                    None,
                                ),
                            };
                        let eds = served.get(key) == Some(&Health::Healthy);
                        json!({
                            "key": key,
                            "address": e.address,
                            "ports": e.ports,
                            "clusters": crate::xds::health::clusters_of(&p.set, &e.address, &e.ports),
                            "source": e.source,
                            "health": health,
                            "eds": if eds { "HEALTHY" } else { "UNHEALTHY" },
                            "probed_by": by,
                            "probes": probes,
                            "changed_at": changed_at,
                            "last_error": last_error,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({"replica": replica, "endpoints": endpoints})
    }

    /// The state, locked. A panic while holding the lock cannot leave it half-updated in a way
    /// that matters (counters and status), so a poisoned lock is used as is.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new stream id.
    pub fn next_stream_id(&self) -> u64 {
        let mut inner = self.lock();
        inner.next_stream += 1;
        inner.next_stream
    }

    /// True once a valid config is being served.
    pub fn ready(&self) -> bool {
        self.published.borrow().is_some()
    }

    /// The `/status` document.
    pub fn status_json(&self) -> Value {
        let inner = self.lock();
        let proxies: Vec<Value> = inner
            .proxies
            .values()
            .map(|p| {
                let types: serde_json::Map<String, Value> = p
                    .types
                    .iter()
                    .map(|(k, t)| {
                        (
                            short_name(*k).to_owned(),
                            json!({"acked": t.acked, "sent": t.sent, "resources": t.resources}),
                        )
                    })
                    .collect();
                json!({
                    "id": p.id,
                    "cluster": p.cluster,
                    "group": p.group,
                    "mode": p.mode,
                    "connected_at": p.connected_at,
                    "types": types,
                    "last_nack": p.last_nack.as_ref().map(|n| json!({
                        "type": short_name(n.kind), "version": n.version,
                        "message": n.message, "at": n.at,
                    })),
                    // Reported over the metrics service (no report: `null`).
                    "halted": inner.halts.get(&p.id).map(|h| &h.splits),
                })
            })
            .collect();
        let fleet_halts: Vec<Value> = inner
            .fleet_halts
            .iter()
            .map(|(split, h)| json!({"split": split, "by": h.by, "at": h.at, "fingerprint": h.fingerprint}))
            .collect();
        json!({
            "ready": self.ready(),
            "config": {
                "version": inner.input.version,
                "warnings": inner.input.warnings,
                "error": inner.input.error,
                "read_at": inner.input.read_at,
                "generation": inner.input.generation,
                "degraded": inner.input.degraded,
            },
            "proxies": proxies,
            "fleet_halts": fleet_halts,
        })
    }

    /// The `/metrics` text (Prometheus exposition format 0.0.4).
    pub fn metrics_text(&self) -> String {
        use std::fmt::Write;
        let inner = self.lock();
        let m = &inner.metrics;
        let mut out = String::new();
        let mut by_group: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for p in inner.proxies.values() {
            *by_group.entry((p.group.as_str(), p.mode)).or_default() += 1;
        }
        let _ = writeln!(
            out,
            "# HELP sluice_serve_connected_proxies ADS streams open, by group and mode.\n# TYPE sluice_serve_connected_proxies gauge"
        );
        for ((group, mode), n) in &by_group {
            let _ = writeln!(
                out,
                "sluice_serve_connected_proxies{{group=\"{}\",mode=\"{mode}\"}} {n}",
                escape(group)
            );
        }
        let per_type = |out: &mut String, name: &str, help: &str, map: &BTreeMap<Kind, u64>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for kind in Kind::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{type=\"{}\"}} {}",
                    short_name(kind),
                    map.get(&kind).copied().unwrap_or(0)
                );
            }
        };
        per_type(
            &mut out,
            "sluice_serve_pushes_total",
            "xDS responses sent, by type.",
            &m.pushes,
        );
        per_type(
            &mut out,
            "sluice_serve_push_bytes_total",
            "Bytes of xDS responses sent, by type.",
            &m.bytes,
        );
        per_type(
            &mut out,
            "sluice_serve_nacks_total",
            "Responses proxies refused (NACK), by type.",
            &m.nacks,
        );
        let _ = writeln!(
            out,
            "# HELP sluice_serve_store_degraded 1 while the store cannot be read (the last good config keeps serving), else 0.\n# TYPE sluice_serve_store_degraded gauge\nsluice_serve_store_degraded {}",
            u8::from(inner.input.degraded.is_some())
        );
        let _ = writeln!(
            out,
            "# HELP sluice_serve_input_errors_total Reads of the input refused for errors (the last good config kept serving).\n# TYPE sluice_serve_input_errors_total counter\nsluice_serve_input_errors_total {}",
            m.input_errors
        );
        let _ = writeln!(
            out,
            "# HELP sluice_serve_snapshots_total Configs published.\n# TYPE sluice_serve_snapshots_total counter\nsluice_serve_snapshots_total {}",
            m.snapshots
        );
        let _ = writeln!(
            out,
            "# HELP sluice_serve_ready 1 once a valid config is served.\n# TYPE sluice_serve_ready gauge\nsluice_serve_ready {}",
            u8::from(self.ready())
        );
        let mut halted: BTreeMap<&str, u64> = BTreeMap::new();
        for split in inner.halts.values().flat_map(|h| &h.splits) {
            *halted.entry(split.as_str()).or_default() += 1;
        }
        let _ = writeln!(
            out,
            "# HELP sluice_serve_halted_proxies Proxies whose canary guard reports the split's canary halted.\n# TYPE sluice_serve_halted_proxies gauge"
        );
        for (split, n) in halted {
            let _ = writeln!(
                out,
                "sluice_serve_halted_proxies{{split=\"{}\"}} {n}",
                escape(split)
            );
        }
        let _ = writeln!(
            out,
            "# HELP sluice_serve_fleet_halted 1 for each split whose canary serve took out of every proxy (--spread-halts).\n# TYPE sluice_serve_fleet_halted gauge"
        );
        for split in inner.fleet_halts.keys() {
            let _ = writeln!(
                out,
                "sluice_serve_fleet_halted{{split=\"{}\"}} 1",
                escape(split)
            );
        }
        if let Some(prober) = self.prober.get() {
            let _ = writeln!(
                out,
                "# HELP sluice_serve_probes_total Health probes run by this replica.\n# TYPE sluice_serve_probes_total counter\nsluice_serve_probes_total {}",
                prober.probes_total()
            );
            let mut by_health: BTreeMap<&str, u64> =
                [("HEALTHY", 0), ("UNHEALTHY", 0), ("UNKNOWN", 0)].into();
            for s in prober.status() {
                *by_health.entry(s.health.eds_name()).or_default() += 1;
            }
            let _ = writeln!(
                out,
                "# HELP sluice_serve_endpoints Probed endpoints, by health (UNKNOWN: not probed enough yet; proxies get it as UNHEALTHY).\n# TYPE sluice_serve_endpoints gauge"
            );
            for (health, n) in by_health {
                let _ = writeln!(out, "sluice_serve_endpoints{{health=\"{health}\"}} {n}");
            }
        }
        let name = "sluice_serve_change_to_ack_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From a config's publication to a proxy having answered every response of it.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(m.latency_buckets) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
            m.latency_count, m.latency_sum, m.latency_count
        );
        out
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_with_inf() {
        let shared = Shared::new();
        shared.lock().metrics.observe_latency(0.02);
        shared.lock().metrics.observe_latency(3.0);
        let text = shared.metrics_text();
        assert!(text.contains("sluice_serve_change_to_ack_seconds_bucket{le=\"0.025\"} 1"));
        assert!(text.contains("sluice_serve_change_to_ack_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("sluice_serve_change_to_ack_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("sluice_serve_ready 0"));
    }
}
