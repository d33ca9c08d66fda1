//! Replicas sharing the health checking of endpoints: each endpoint is probed by exactly one
//! live replica, and every replica serves every endpoint's health.
//!
//! Layout under the store's prefix, beside the mesh (the mesh's followers ignore it):
//!
//! - `<prefix>/fleet/replicas/<id>`: one key per live replica, under that replica's lease.
//!   A replica that dies stops renewing; etcd deletes its key within the lease's TTL.
//! - `<prefix>/fleet/health/<endpoint>`: the health its owner last found ([`HealthReport`]),
//!   under the owner's lease, so the reports of a dead replica vanish with it.
//!
//! Ownership is rendezvous hashing ([`owner`]) over the live replicas: every replica computes
//! the same owner from the same list, with no election and no lock, and when a replica leaves
//! only its endpoints move (each to the replica that ranks next for it).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use etcd_client::{GetOptions, PutOptions, WatchOptions};
use sha2::{Digest, Sha256};

use super::etcd::{EtcdStore, StoreError};

/// The directory below the store's prefix that holds the fleet's keys.
pub const FLEET_DIR: &str = "fleet";

/// The replica that probes `endpoint` among `replicas`: the one whose hash with the endpoint
/// ranks highest (rendezvous hashing). `None` when no replica is live.
pub fn owner<'a>(endpoint: &str, replicas: &'a BTreeSet<String>) -> Option<&'a str> {
    replicas
        .iter()
        .max_by_key(|replica| rank(replica, endpoint))
        .map(String::as_str)
}

/// A replica's rank for an endpoint: the first 8 bytes of sha256(replica, 0, endpoint). A
/// cryptographic hash so that the ranks of similar names (replica-1, replica-2) are unrelated.
fn rank(replica: &str, endpoint: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(replica.as_bytes())
        .chain_update([0u8])
        .chain_update(endpoint.as_bytes())
        .finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

pub use crate::probe::HealthReport;

/// What the store says of the fleet, at one etcd revision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fleet {
    /// The live replicas' ids.
    pub replicas: BTreeSet<String>,
    /// The endpoints' reported health, by endpoint (`address:port`).
    pub health: BTreeMap<String, HealthReport>,
    /// The etcd revision it was read at.
    pub revision: i64,
}

impl EtcdStore {
    fn fleet_key(&self, rest: &str) -> String {
        self.key(&format!("{FLEET_DIR}/{rest}"))
    }

    /// Joins the fleet as replica `id` for as long as the returned lease is kept alive
    /// ([`EtcdStore::keep_alive`]); `ttl` is how long the others wait before they take over
    /// its endpoints after it dies.
    pub async fn join_fleet(&mut self, id: &str, ttl: Duration) -> Result<i64, StoreError> {
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let lease = self
            .retry(|mut c| async move { c.lease_grant(seconds, None).await })
            .await?
            .id();
        let key = self.fleet_key(&format!("replicas/{id}"));
        let id = id.to_owned();
        self.retry(|mut c| {
            let (key, id) = (key.clone(), id.clone());
            async move {
                c.put(key, id, Some(PutOptions::new().with_lease(lease)))
                    .await
            }
        })
        .await?;
        Ok(lease)
    }

    /// The live replicas and the reported health, read at one revision.
    pub async fn fleet(&mut self) -> Result<Fleet, StoreError> {
        let prefix = self.fleet_key("");
        let listed = self
            .retry(|mut c| {
                let key = prefix.clone();
                async move { c.get(key, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let mut fleet = Fleet {
            revision: listed.header().map_or(0, |h| h.revision()),
            ..Fleet::default()
        };
        for kv in listed.kvs() {
            let Some(rest) = kv.key_str().ok().and_then(|k| k.strip_prefix(&prefix)) else {
                continue;
            };
            if let Some(id) = rest.strip_prefix("replicas/") {
                fleet.replicas.insert(id.to_owned());
            } else if let Some(endpoint) = rest.strip_prefix("health/") {
                // A report this version cannot read is skipped, not fatal: its owner rewrites
                // it at the next change, and the endpoint keeps its last known health.
                if let Ok(report) = serde_json::from_slice(kv.value()) {
                    fleet.health.insert(endpoint.to_owned(), report);
                }
            }
        }
        Ok(fleet)
    }

    /// Publishes `report` for `endpoint`, under `lease` (the reporting replica's).
    pub async fn report_health(
        &mut self,
        lease: i64,
        endpoint: &str,
        report: &HealthReport,
    ) -> Result<(), StoreError> {
        let key = self.fleet_key(&format!("health/{endpoint}"));
        let text = serde_json::to_string(report).expect("JSON serialises");
        self.retry(|mut c| {
            let (key, text) = (key.clone(), text.clone());
            async move {
                c.put(key, text, Some(PutOptions::new().with_lease(lease)))
                    .await
            }
        })
        .await?;
        Ok(())
    }

    /// Withdraws the report of `endpoint` (it is no longer probed here).
    pub async fn withdraw_health(&mut self, endpoint: &str) -> Result<(), StoreError> {
        let key = self.fleet_key(&format!("health/{endpoint}"));
        self.retry(|mut c| {
            let key = key.clone();
            async move { c.delete(key, None).await }
        })
        .await?;
        Ok(())
    }

    /// Waits until a replica joins or leaves or a report changes after `revision`.
    pub async fn wait_for_fleet_change(&mut self, revision: i64) -> Result<(), StoreError> {
        let prefix = self.fleet_key("");
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut stream = self
            .retry(|mut c| {
                let (key, options) = (prefix.clone(), options.clone());
                async move { c.watch(key, Some(options)).await }
            })
            .await?;
        loop {
            let Some(response) = stream.message().await.map_err(|e| self.err(e))? else {
                return Err(StoreError::Corrupt("the etcd watch ended".into()));
            };
            // A compacted start revision or any event: the caller lists again.
            if response.compact_revision() > 0 || !response.events().is_empty() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn endpoints() -> Vec<String> {
        (0..1000)
            .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250))
            .collect()
    }

    #[test]
    fn every_replica_computes_the_same_owner_and_the_load_is_spread() {
        let three = replicas(&["serve-a", "serve-b", "serve-c"]);
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for endpoint in endpoints() {
            let chosen = owner(&endpoint, &three).expect("an owner");
            // The order replicas are listed in does not matter: a set, and a pure function.
            assert_eq!(owner(&endpoint, &three.clone()), Some(chosen));
            *counts.entry(chosen).or_default() += 1;
        }
        assert_eq!(counts.len(), 3, "{counts:?}");
        // 1,000 endpoints over 3 replicas: each gets 333 on average; with a uniform hash the
        // chance that one gets fewer than 250 is below 1e-9 (binomial tail).
        for (replica, count) in &counts {
            assert!(*count > 250, "{replica} owns only {count}: {counts:?}");
        }
    }

    #[test]
    fn when_a_replica_leaves_only_its_endpoints_move() {
        let three = replicas(&["serve-a", "serve-b", "serve-c"]);
        let two = replicas(&["serve-a", "serve-c"]);
        for endpoint in endpoints() {
            let before = owner(&endpoint, &three).expect("owner");
            let after = owner(&endpoint, &two).expect("owner");
            if before != "serve-b" {
                assert_eq!(before, after, "{endpoint} moved though its owner stayed");
            } else {
                assert_ne!(after, "serve-b");
            }
        }
        assert_eq!(owner("10.0.0.1:80", &BTreeSet::new()), None);
    }
}
