//! Health checking shared by the replicas of one store (glue over [`crate::store::fleet`]):
//! each replica joins the fleet under a lease, probes only the endpoints it owns, reports their
//! health to etcd, and serves every endpoint's health as the fleet reports it. N replicas and
//! M endpoints cost M probes per period, not N x M; a replica's death hands its endpoints to
//! the others within the lease's TTL.
//!
//! Without the fleet (etcd unreachable, or not yet joined) a replica probes every endpoint
//! itself: health keeps flowing to its proxies whatever the store does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};

use super::health::{log_changes, targets};
use super::state::Shared;
use crate::model::ProbedEndpoint;
use crate::probe::HealthReport;
use crate::probe::run::Prober;
use crate::probe::tracker::Health;
use crate::store::StoreUrl;
use crate::store::etcd::{EtcdStore, StoreError};
use crate::store::fleet::{Fleet, owner};

/// How long the others wait for a replica that stopped renewing before they take over its
/// endpoints (`--fleet-ttl`).
pub const DEFAULT_FLEET_TTL: Duration = Duration::from_secs(5);

/// What one replica knows of the fleet, and decides from it (pure).
#[derive(Debug, Default)]
struct View {
    /// This replica's id in the fleet.
    me: String,
    /// The fleet as last read; `None` while it cannot be read (then this replica owns all).
    fleet: Option<Fleet>,
    /// Every endpoint's last known health, from this replica's probes or the fleet's reports:
    /// what an endpoint keeps while it changes hands (its old owner's reports vanish with it).
    last_known: BTreeMap<String, Health>,
}

impl View {
    /// Whether this replica probes `key`: its owner among the live replicas, or every key
    /// while it is not (yet) in the fleet (probing everything rather than nothing).
    fn owns(&self, key: &str) -> bool {
        match &self.fleet {
            Some(fleet) if fleet.replicas.contains(&self.me) => {
                owner(key, &fleet.replicas) == Some(self.me.as_str())
            }
            _ => true,
        }
    }

    /// Takes in a new read of the fleet: the reports of what others own become last known.
    fn read_fleet(&mut self, fleet: Option<Fleet>) {
        self.fleet = fleet;
        let reports: Vec<(String, Health)> = self
            .fleet
            .iter()
            .flat_map(|f| &f.health)
            .filter(|(key, _)| !self.owns(key))
            .filter_map(|(key, r)| Some((key.clone(), Health::from_eds_name(&r.health)?)))
            .collect();
        self.last_known.extend(reports);
    }

    /// Takes in this replica's own results (for what it owns; `Unknown` says nothing new).
    fn read_local(&mut self, local: &BTreeMap<String, Health>) {
        for (key, health) in local {
            if *health != Health::Unknown && self.owns(key) {
                self.last_known.insert(key.clone(), *health);
            }
        }
    }

    /// The health to serve for every probed endpoint: the last known, else `Unknown` (which
    /// serve sends as UNHEALTHY, as Istio treats a health-checked entry before its first
    /// probe).
    fn merged(&self, probed: &BTreeMap<String, ProbedEndpoint>) -> BTreeMap<String, Health> {
        probed
            .keys()
            .map(|key| {
                let health = self.last_known.get(key).copied().unwrap_or(Health::Unknown);
                (key.clone(), health)
            })
            .collect()
    }

    /// The fleet's reports of the endpoints others own (for `/endpoints`).
    fn others(&self) -> BTreeMap<String, HealthReport> {
        self.fleet
            .iter()
            .flat_map(|f| &f.health)
            .filter(|(key, _)| !self.owns(key))
            .map(|(key, r)| (key.clone(), r.clone()))
            .collect()
    }
}

/// What the fleet follower tells the main loop.
#[derive(Debug, Clone)]
struct Membership {
    fleet: Fleet,
    /// This replica's lease: its reports are written under it.
    lease: i64,
}

/// Joins the fleet as `me` and follows it: sends each read (`None` while it cannot be read),
/// rejoins after a lapsed lease, until the receiver is gone.
async fn follow_fleet(
    url: StoreUrl,
    me: String,
    ttl: Duration,
    out: watch::Sender<Option<Membership>>,
) {
    loop {
        let result = follow_fleet_once(&url, &me, ttl, &out).await;
        if out.is_closed() {
            return;
        }
        if let Err(e) = result {
            eprintln!("serve: fleet: {e}; this replica probes every endpoint until it rejoins");
        }
        out.send_replace(None);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn follow_fleet_once(
    url: &StoreUrl,
    me: &str,
    ttl: Duration,
    out: &watch::Sender<Option<Membership>>,
) -> Result<(), StoreError> {
    let mut store = EtcdStore::connect(url).await?;
    let lease = store.join_fleet(me, ttl).await?;
    let mut keeper = EtcdStore::connect(url).await?;
    let keep_alive = keeper.keep_alive(lease, ttl);
    let follow = async {
        loop {
            let fleet = store.fleet().await?;
            let revision = fleet.revision;
            if out.send(Some(Membership { fleet, lease })).is_err() {
                return Ok::<(), StoreError>(());
            }
            store.wait_for_fleet_change(revision).await?;
        }
    };
    tokio::select! {
        result = keep_alive => result,
        result = follow => result,
    }
}

/// Writes reports to the store, in order, for as long as the sender lives. A failed write is
/// dropped: the replica rejoins (and reports again) when the store answers.
async fn report(url: StoreUrl, mut reports: mpsc::UnboundedReceiver<(i64, String, HealthReport)>) {
    let mut store = None;
    while let Some((lease, key, report)) = reports.recv().await {
        if store.is_none() {
            store = EtcdStore::connect(&url).await.ok();
        }
        if let Some(s) = store.as_mut()
            && s.report_health(lease, &key, &report).await.is_err()
        {
            store = None;
        }
    }
}

/// Keeps `prober` on the endpoints this replica owns, reports their health to the fleet, and
/// publishes every endpoint's health (its own results and the fleet's), until aborted.
pub async fn run(
    shared: Arc<Shared>,
    prober: Arc<Prober>,
    url: StoreUrl,
    me: String,
    ttl: Duration,
) {
    let (membership_tx, mut membership) = watch::channel(None);
    let follower = tokio::spawn(follow_fleet(url.clone(), me.clone(), ttl, membership_tx));
    let (report_tx, report_rx) = mpsc::unbounded_channel();
    let reporter = tokio::spawn(report(url, report_rx));
    let mut published = shared.published.subscribe();
    published.mark_changed();
    let mut changes = prober.changes();
    let mut view = View {
        me: me.clone(),
        ..View::default()
    };
    let mut probed: Arc<BTreeMap<String, ProbedEndpoint>> = Arc::default();
    let mut lease = None;
    // What this replica last reported under `lease`, by endpoint.
    let mut reported: BTreeMap<String, Health> = BTreeMap::new();
    let mut last_local: BTreeMap<String, Health> = BTreeMap::new();
    loop {
        tokio::select! {
            changed = published.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = published.borrow_and_update().as_ref().map(|p| p.probed.clone());
                match now {
                    Some(now) if !Arc::ptr_eq(&now, &probed) && *now != *probed => probed = now,
                    _ => continue,
                }
            }
            changed = membership.changed() => {
                if changed.is_err() {
                    break;
                }
                let read = membership.borrow_and_update().clone();
                let new_lease = read.as_ref().map(|m| m.lease);
                if new_lease != lease {
                    // A new lease: the reports under the old one are gone with it.
                    reported.clear();
                    lease = new_lease;
                }
                view.read_fleet(read.map(|m| m.fleet));
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                changes.borrow_and_update();
            }
        }
        prober.set_targets(targets(
            probed
                .values()
                .filter(|endpoint| view.owns(&endpoint.key())),
        ));
        let local = prober.health_by_key();
        log_changes(&prober, &last_local, &local);
        view.read_local(&local);
        if let Some(lease) = lease {
            for status in prober.status() {
                let known = status.health != Health::Unknown;
                if known
                    && view.owns(&status.key)
                    && reported.get(&status.key) != Some(&status.health)
                {
                    reported.insert(status.key.clone(), status.health);
                    let changed_unix_ms = status
                        .since_change
                        .and_then(|ago| SystemTime::now().checked_sub(ago))
                        .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
                        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                    let report = HealthReport {
                        health: status.health.eds_name().to_owned(),
                        by: me.clone(),
                        probes: status.probes,
                        changed_unix_ms,
                        last_error: status.last_error.clone(),
                    };
                    let _ = report_tx.send((lease, status.key.clone(), report));
                }
            }
        }
        shared.set_others(view.others());
        shared.publish_health(view.merged(&probed));
        last_local = local;
    }
    follower.abort();
    reporter.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn fleet(replicas: &[&str], reports: &[(&str, &str, &str)]) -> Fleet {
        Fleet {
            replicas: replicas.iter().map(|r| (*r).to_owned()).collect(),
            health: reports
                .iter()
                .map(|(key, health, by)| {
                    let report = HealthReport {
                        health: (*health).to_owned(),
                        by: (*by).to_owned(),
                        probes: 1,
                        changed_unix_ms: 0,
                        last_error: None,
                    };
                    ((*key).to_owned(), report)
                })
                .collect(),
            revision: 1,
        }
    }

    fn keys() -> Vec<String> {
        (0..50).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    #[test]
    fn outside_the_fleet_a_replica_owns_everything() {
        let view = View {
            me: "a".into(),
            ..View::default()
        };
        assert!(keys().iter().all(|k| view.owns(k)));
        let mut view = view;
        view.read_fleet(Some(fleet(&["b"], &[])));
        assert!(
            keys().iter().all(|k| view.owns(k)),
            "a is not in the fleet yet"
        );
    }

    #[test]
    fn in_the_fleet_each_key_has_one_owner_and_reports_of_others_are_served() {
        let both = ["a", "b"];
        let set: BTreeSet<String> = both.iter().map(|r| (*r).to_owned()).collect();
        let theirs: Vec<String> = keys()
            .into_iter()
            .filter(|k| owner(k, &set) == Some("b"))
            .collect();
        assert!(!theirs.is_empty());
        let reports: Vec<(&str, &str, &str)> = theirs
            .iter()
            .map(|k| (k.as_str(), "UNHEALTHY", "b"))
            .collect();
        let mut a = View {
            me: "a".into(),
            ..View::default()
        };
        a.read_fleet(Some(fleet(&both, &reports)));
        for key in keys() {
            assert_eq!(a.owns(&key), !theirs.contains(&key), "{key}");
        }
        let probed: BTreeMap<String, ProbedEndpoint> = BTreeMap::new();
        assert!(a.merged(&probed).is_empty());
        assert_eq!(a.others().len(), theirs.len());
        assert_eq!(a.last_known.get(&theirs[0]), Some(&Health::Unhealthy));
    }

    #[test]
    fn an_endpoint_keeps_its_last_known_health_while_it_changes_hands() {
        let mut a = View {
            me: "a".into(),
            ..View::default()
        };
        let set: BTreeSet<String> = ["a", "b"].iter().map(|r| (*r).to_owned()).collect();
        let key = keys()
            .into_iter()
            .find(|k| owner(k, &set) == Some("b"))
            .expect("b owns one");
        a.read_fleet(Some(fleet(&["a", "b"], &[(&key, "HEALTHY", "b")])));
        // b dies: its replica key and its reports vanish together.
        a.read_fleet(Some(fleet(&["a"], &[])));
        assert!(a.owns(&key));
        // a's first probe has not answered yet: the endpoint stays HEALTHY, not UNKNOWN.
        a.read_local(&BTreeMap::from([(key.clone(), Health::Unknown)]));
        assert_eq!(a.last_known.get(&key), Some(&Health::Healthy));
        a.read_local(&BTreeMap::from([(key.clone(), Health::Unhealthy)]));
        assert_eq!(a.last_known.get(&key), Some(&Health::Unhealthy));
    }
}
