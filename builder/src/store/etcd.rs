//! The store on a real etcd cluster (v3 API, through the `etcd-client` crate): see the
//! [layout](super) this module reads and writes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Txn, TxnOp,
};

use super::{Change, Document, Manifest, StoreUrl};

/// Objects per transaction: below etcd's default `--max-txn-ops` (128).
const TXN_OPS: usize = 64;
/// Bytes per request: below etcd's default `--max-request-bytes` (1.5 MiB), with room for keys
/// and framing.
const REQUEST_BYTES: usize = 1024 * 1024;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// etcd could not be reached or refused a request.
    #[error(
        "etcd at {url}: {source}\n  hint: is the cluster up? `etcdctl --endpoints {endpoints} endpoint health` tells"
    )]
    Etcd {
        /// The store.
        url: String,
        /// The members, as etcdctl takes them.
        endpoints: String,
        /// The client's error.
        source: etcd_client::Error,
    },
    /// Another apply moved the store between this apply's read and its write.
    #[error(
        "the store moved to generation {found} while this apply prepared generation {planned}: nothing was changed\n  hint: run the apply again (and `sluice diff` first to see what it does now)"
    )]
    Conflict {
        /// The generation this apply would have written.
        planned: u64,
        /// The generation the store holds now.
        found: u64,
    },
    /// The store holds something this version of sluice cannot read.
    #[error("{0}")]
    Corrupt(String),
    /// A document too large for one etcd request.
    #[error(
        "{key} is {bytes} bytes: etcd takes at most {REQUEST_BYTES} per request\n  hint: split the resource, or raise etcd's --max-request-bytes and this limit together"
    )]
    TooLarge {
        /// The resource.
        key: String,
        /// Its size.
        bytes: usize,
    },
}

/// A generation read from the store, consistent at one etcd revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The generation's manifest (generation 0 and no resources: an empty store).
    pub manifest: Manifest,
    /// The texts of its resources, by object id.
    pub objects: BTreeMap<String, String>,
    /// The live registrations (`sluice register`): key below `registrations/` -> the
    /// WorkloadEntry's text. They live as long as their VM renews its lease.
    pub registrations: BTreeMap<String, String>,
    /// The etcd revision it was read at.
    pub revision: i64,
}

/// A connection to the store.
pub struct EtcdStore {
    client: Client,
    url: StoreUrl,
}

impl EtcdStore {
    /// Connects to the members of `url` (the client fails over between them).
    pub async fn connect(url: &StoreUrl) -> Result<EtcdStore, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(&url.endpoints, Some(options))
            .await
            .map_err(|e| etcd_error(url, e))?;
        Ok(EtcdStore {
            client,
            url: url.clone(),
        })
    }

    pub(super) fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.url.prefix)
    }

    pub(super) fn err(&self, e: etcd_client::Error) -> StoreError {
        etcd_error(&self.url, e)
    }

    /// Runs `op` on the client, again (up to three times per member, with a short backoff)
    /// when it fails because the member it reached is down: the client balances requests over
    /// every member and notices a dead one only when a request to it fails. Every operation
    /// here is safe to repeat (see [`EtcdStore::write`] for the one guarded write).
    pub(super) async fn retry<T, F, Fut>(&self, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let attempts = 3 * self.url.endpoints.len().max(1);
        let mut attempt = 0;
        loop {
            match op(self.client.clone()).await {
                Ok(value) => return Ok(value),
                Err(e) if attempt + 1 < attempts && unavailable(&e) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 * attempt.min(10) as u64)).await;
                }
                Err(e) => return Err(self.err(e)),
            }
        }
    }

    /// The current generation and its objects, all read at one revision.
    pub async fn snapshot(&mut self) -> Result<Snapshot, StoreError> {
        let current_key = self.key("current");
        let current = self
            .retry(|mut c| {
                let key = current_key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        let revision = current.header().map_or(0, |h| h.revision());
        let registrations = self.registrations_at(revision).await?;
        let Some(kv) = current.kvs().first() else {
            return Ok(Snapshot {
                revision,
                registrations,
                ..Snapshot::default()
            });
        };
        let generation: u64 = kv
            .value_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                StoreError::Corrupt(format!("{current_key} does not hold a generation number"))
            })?;
        let manifest_key = self.key(&format!("generations/{generation}"));
        let manifest = self
            .retry(|mut c| {
                let key = manifest_key.clone();
                let at = GetOptions::new().with_revision(revision);
                async move { c.get(key, Some(at)).await }
            })
            .await?;
        let manifest: Manifest = manifest
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice(kv.value()).ok())
            .ok_or_else(|| {
                StoreError::Corrupt(format!("{manifest_key} is missing or unreadable"))
            })?;
        let wanted: BTreeSet<&str> = manifest
            .resources
            .values()
            .map(|e| e.object.as_str())
            .collect();
        let prefix = self.key("objects/");
        let objects = self
            .retry(|mut c| {
                let key = prefix.clone();
                let at = GetOptions::new().with_prefix().with_revision(revision);
                async move { c.get(key, Some(at)).await }
            })
            .await?;
        let objects = objects
            .kvs()
            .iter()
            .filter_map(|kv| {
                let id = kv.key_str().ok()?.strip_prefix(&prefix)?;
                wanted
                    .contains(id)
                    .then(|| Some((id.to_owned(), kv.value_str().ok()?.to_owned())))?
            })
            .collect();
        Ok(Snapshot {
            manifest,
            objects,
            registrations,
            revision,
        })
    }

    async fn registrations_at(
        &self,
        revision: i64,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let prefix = self.key("registrations/");
        let listed = self
            .retry(|mut c| {
                let key = prefix.clone();
                let at = GetOptions::new().with_prefix().with_revision(revision);
                async move { c.get(key, Some(at)).await }
            })
            .await?;
        Ok(listed
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?.strip_prefix(&prefix)?.to_owned();
                Some((key, kv.value_str().ok()?.to_owned()))
            })
            .collect())
    }

    /// Registers a VM: writes `entry` (a WorkloadEntry, as JSON) under
    /// `registrations/<namespace>/<name>` with a lease of `ttl`, which the caller keeps alive
    /// with [`EtcdStore::keep_alive`]. When the lease lapses (the VM crashed or stopped
    /// renewing), etcd deletes the entry. Returns the lease.
    pub async fn register(
        &mut self,
        namespace: &str,
        name: &str,
        entry: &serde_json::Value,
        ttl: Duration,
    ) -> Result<i64, StoreError> {
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let lease = self
            .retry(|mut c| async move { c.lease_grant(seconds, None).await })
            .await?
            .id();
        let key = self.key(&format!("registrations/{namespace}/{name}"));
        let text = serde_json::to_string_pretty(entry).expect("JSON serialises");
        self.retry(|mut c| {
            let (key, text) = (key.clone(), text.clone());
            async move {
                c.put(
                    key,
                    text,
                    Some(etcd_client::PutOptions::new().with_lease(lease)),
                )
                .await
            }
        })
        .await?;
        Ok(lease)
    }

    /// Renews `lease` every `ttl / 3` until an error (the lease expired, or etcd is gone long
    /// enough that it did).
    pub async fn keep_alive(&mut self, lease: i64, ttl: Duration) -> Result<(), StoreError> {
        let (mut keeper, mut answers) = self
            .client
            .lease_keep_alive(lease)
            .await
            .map_err(|e| self.err(e))?;
        loop {
            keeper.keep_alive().await.map_err(|e| self.err(e))?;
            match answers.message().await.map_err(|e| self.err(e))? {
                Some(answer) if answer.ttl() > 0 => {}
                _ => {
                    return Err(StoreError::Corrupt(format!(
                        "lease {lease:x} expired: the registration is gone"
                    )));
                }
            }
            tokio::time::sleep(ttl / 3).await;
        }
    }

    /// Removes a registration at once (`sluice register --leave`), and revokes its lease if
    /// given.
    pub async fn deregister(
        &mut self,
        namespace: &str,
        name: &str,
        lease: Option<i64>,
    ) -> Result<bool, StoreError> {
        let key = self.key(&format!("registrations/{namespace}/{name}"));
        let deleted = self
            .retry(|mut c| {
                let key = key.clone();
                async move { c.delete(key, None).await }
            })
            .await?
            .deleted();
        if let Some(lease) = lease {
            let _ = self
                .retry(|mut c| async move { c.lease_revoke(lease).await })
                .await;
        }
        Ok(deleted > 0)
    }

    /// The WorkloadGroup `namespace/name` of the current generation, as JSON.
    pub async fn workload_group(
        &mut self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let snapshot = self.snapshot().await?;
        let key = format!("WorkloadGroup/{namespace}/{name}");
        let Some(entry) = snapshot.manifest.resources.get(&key) else {
            return Ok(None);
        };
        let text = snapshot
            .objects
            .get(&entry.object)
            .ok_or_else(|| StoreError::Corrupt(format!("the store lacks the object of {key}")))?;
        let docs = crate::yaml::parse_documents(text)
            .map_err(|e| StoreError::Corrupt(format!("{key}: {}", e.message)))?;
        Ok(docs.first().map(|d| d.root.to_json()))
    }

    /// Writes `next` (planned against `base`, see [`super::plan`]) as the new current
    /// generation: new objects in batches, then manifest and pointer in one transaction that
    /// fails with [`StoreError::Conflict`] if the store moved past `base` meanwhile. Then
    /// removes what neither this generation nor the one before it uses.
    pub async fn write(
        &mut self,
        base: &Snapshot,
        next: &Manifest,
        documents: &[Document],
    ) -> Result<(), StoreError> {
        let stored: BTreeSet<&str> = base.objects.keys().map(String::as_str).collect();
        let mut batch: Vec<TxnOp> = Vec::new();
        let mut bytes = 0;
        let mut written = BTreeSet::new();
        for doc in documents {
            let id = doc.object();
            if stored.contains(id.as_str()) || !written.insert(id.clone()) {
                continue;
            }
            if doc.text.len() > REQUEST_BYTES {
                return Err(StoreError::TooLarge {
                    key: doc.key.clone(),
                    bytes: doc.text.len(),
                });
            }
            if batch.len() == TXN_OPS || bytes + doc.text.len() > REQUEST_BYTES {
                self.commit(std::mem::take(&mut batch)).await?;
                bytes = 0;
            }
            bytes += doc.text.len();
            batch.push(TxnOp::put(
                self.key(&format!("objects/{id}")),
                doc.text.as_str(),
                None,
            ));
        }
        if !batch.is_empty() {
            self.commit(batch).await?;
        }
        let manifest = serde_json::to_string(next).expect("a manifest serialises");
        if manifest.len() > REQUEST_BYTES {
            return Err(StoreError::TooLarge {
                key: format!("the manifest of generation {}", next.generation),
                bytes: manifest.len(),
            });
        }
        let current_key = self.key("current");
        // The guard: `current` is still what the plan was made from.
        let guard = if base.manifest.generation == 0 {
            Compare::version(current_key.as_str(), CompareOp::Equal, 0)
        } else {
            Compare::value(
                current_key.as_str(),
                CompareOp::Equal,
                base.manifest.generation.to_string(),
            )
        };
        let txn = Txn::new()
            .when([guard])
            .and_then([
                TxnOp::put(
                    self.key(&format!("generations/{}", next.generation)),
                    manifest,
                    None,
                ),
                TxnOp::put(current_key.as_str(), next.generation.to_string(), None),
            ])
            .or_else([TxnOp::get(current_key.as_str(), None)]);
        let response = self
            .retry(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if !response.succeeded() {
            let found = self.snapshot().await?;
            // A retried transaction whose first attempt committed (its answer lost) finds
            // its own generation: that is success, not a conflict.
            if found.manifest != *next {
                return Err(StoreError::Conflict {
                    planned: next.generation,
                    found: found.manifest.generation,
                });
            }
        }
        // Garbage: best effort, the next apply retries what fails here. Readers of the
        // previous generation keep what they need (its objects and manifest stay).
        let _ = self.collect_garbage(&base.manifest, next).await;
        Ok(())
    }

    async fn commit(&mut self, ops: Vec<TxnOp>) -> Result<(), StoreError> {
        let txn = Txn::new().and_then(ops);
        self.retry(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
        Ok(())
    }

    /// Deletes the generations before `previous` and the objects neither `previous` nor
    /// `next` uses.
    async fn collect_garbage(
        &mut self,
        previous: &Manifest,
        next: &Manifest,
    ) -> Result<(), StoreError> {
        let keep: BTreeSet<&str> = previous
            .resources
            .values()
            .chain(next.resources.values())
            .map(|e| e.object.as_str())
            .collect();
        let prefix = self.key("objects/");
        let all = self.keys(&prefix).await?;
        let garbage: Vec<String> = all
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok())
            .filter(|k| k.strip_prefix(&prefix).is_some_and(|id| !keep.contains(id)))
            .map(str::to_owned)
            .collect();
        for chunk in garbage.chunks(TXN_OPS) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|k| TxnOp::delete(k.as_str(), None))
                .collect();
            self.commit(ops).await?;
        }
        if previous.generation > 0 {
            // Generation numbers are not zero-padded: old ones are found by number, not by a
            // key range.
            let gens = self.key("generations/");
            let listed = self.keys(&gens).await?;
            let old: Vec<String> = listed
                .kvs()
                .iter()
                .filter_map(|kv| kv.key_str().ok())
                .filter(|k| {
                    k.strip_prefix(&gens)
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|n| n < previous.generation)
                })
                .map(str::to_owned)
                .collect();
            for chunk in old.chunks(TXN_OPS) {
                let ops: Vec<TxnOp> = chunk
                    .iter()
                    .map(|k| TxnOp::delete(k.as_str(), None))
                    .collect();
                self.commit(ops).await?;
            }
        }
        Ok(())
    }

    async fn keys(&self, prefix: &str) -> Result<etcd_client::GetResponse, StoreError> {
        self.retry(|mut c| {
            let key = prefix.to_owned();
            async move {
                c.get(key, Some(GetOptions::new().with_prefix().with_keys_only()))
                    .await
            }
        })
        .await
    }

    /// Waits until anything under the prefix changes after `revision` (an apply's writes and
    /// switch, a registration coming or going), or the watch fails. Returns the revision of the
    /// change.
    pub async fn wait_for_change(&mut self, revision: i64) -> Result<i64, StoreError> {
        let current_key = format!("{}/", self.url.prefix);
        let options = etcd_client::WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut stream = self
            .retry(|mut c| {
                let key = current_key.clone();
                let options = options.clone();
                async move { c.watch(key, Some(options)).await }
            })
            .await?;
        loop {
            let Some(response) = stream.message().await.map_err(|e| self.err(e))? else {
                return Err(StoreError::Corrupt("the etcd watch ended".into()));
            };
            if response.compact_revision() > 0 {
                // The revision was compacted: the caller relists.
                return Ok(response.compact_revision());
            }
            // The fleet's keys (replicas and health reports, see [`super::fleet`]) change with
            // every probe result: they are not the mesh, and must not make followers relist.
            let fleet = format!("{current_key}{}/", super::fleet::FLEET_DIR);
            let mesh_event = response.events().iter().find(|event| {
                event
                    .kv()
                    .and_then(|kv| kv.key_str().ok())
                    .is_none_or(|key| !key.starts_with(&fleet))
            });
            if let Some(event) = mesh_event {
                return Ok(event.kv().map_or(revision + 1, |kv| kv.mod_revision()));
            }
        }
    }

    /// Removes every key under the store's prefix (tests).
    pub async fn clear(&mut self) -> Result<(), StoreError> {
        let prefix = format!("{}/", self.url.prefix);
        self.retry(|mut c| {
            let key = prefix.clone();
            async move {
                c.delete(key, Some(DeleteOptions::new().with_prefix()))
                    .await
            }
        })
        .await?;
        Ok(())
    }
}

/// Whether `e` says the member reached is down or unreachable (another may answer).
fn unavailable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

fn etcd_error(url: &StoreUrl, source: etcd_client::Error) -> StoreError {
    StoreError::Etcd {
        url: url.to_string(),
        endpoints: url
            .endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect::<Vec<_>>()
            .join(","),
        source,
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The change.
    pub change: Change,
    /// The generation the store serves now (unchanged when there was nothing to change).
    pub generation: u64,
}

/// Applies `documents` (already validated) to the store: reads the current generation,
/// plans the next ([`super::plan`]), and writes it unless nothing changes (`dry_run`: never
/// writes; the change is what would be applied).
pub async fn apply(
    store: &mut EtcdStore,
    documents: &[Document],
    prune: bool,
    dry_run: bool,
) -> Result<Applied, StoreError> {
    let base = store.snapshot().await?;
    let (next, change) = super::plan(&base.manifest, documents, prune);
    if change.is_empty() || dry_run {
        return Ok(Applied {
            change,
            generation: base.manifest.generation,
        });
    }
    store.write(&base, &next, documents).await?;
    Ok(Applied {
        change,
        generation: next.generation,
    })
}

/// What [`follow`] reports.
#[derive(Debug)]
pub enum Followed {
    /// A generation to serve (the first one read, then each new one, or the same one with
    /// other registrations).
    Generation {
        /// Its number.
        generation: u64,
        /// How many registered WorkloadEntries it includes.
        registrations: usize,
        /// The etcd revision it was read at.
        revision: i64,
        /// Its resources and the registrations, as builder inputs ([`super::inputs_with`]).
        inputs: crate::Inputs,
    },
    /// The store cannot be read (etcd down or unreachable, or the generation unreadable): keep
    /// serving what was last good. Sent once per outage.
    Degraded(String),
    /// The store answers again after [`Followed::Degraded`] (a new generation, if one was
    /// applied meanwhile, follows).
    Recovered,
}

/// Follows the store's current generation for a control plane: reads it, then watches from
/// the revision read, and reads again on each change (or when the watch's revision was
/// compacted away). When etcd is unreachable it reports [`Followed::Degraded`] once and tries
/// again with a capped backoff; when etcd is back it reads the current generation, so nothing
/// applied meanwhile is missed. Ends when the receiver is dropped.
pub async fn follow(url: StoreUrl, events: tokio::sync::mpsc::Sender<Followed>) {
    let mut last_sent: Option<Sent> = None;
    let mut degraded = false;
    let mut backoff = Duration::from_millis(100);
    loop {
        match follow_connected(&url, &events, &mut last_sent, &mut degraded).await {
            Ok(()) => return,
            Err(e) => {
                if !degraded {
                    degraded = true;
                    backoff = Duration::from_millis(100);
                    if events
                        .send(Followed::Degraded(e.to_string()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if events.is_closed() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// What [`follow`] last reported: the generation and the registrations.
type Sent = (u64, BTreeMap<String, String>);

/// One connection's worth of [`follow`]: returns `Ok` when the receiver is gone, the error
/// that ended the connection otherwise.
async fn follow_connected(
    url: &StoreUrl,
    events: &tokio::sync::mpsc::Sender<Followed>,
    last_sent: &mut Option<Sent>,
    degraded: &mut bool,
) -> Result<(), StoreError> {
    let mut store = EtcdStore::connect(url).await?;
    // A broken watch is not an unreachable store: the member it ran on may have restarted
    // while the others answer. It only sends the loop back to list (with a growing pause, so
    // a watch that keeps failing does not hammer the cluster); the store is degraded when the
    // list itself fails, after its retries over every member.
    let mut watch_pause = Duration::from_millis(50);
    loop {
        let snapshot = store.snapshot().await?;
        if *degraded {
            *degraded = false;
            if events.send(Followed::Recovered).await.is_err() {
                return Ok(());
            }
        }
        let generation = snapshot.manifest.generation;
        let sent = (generation, snapshot.registrations.clone());
        if last_sent.as_ref() != Some(&sent) {
            let inputs = super::inputs_with(
                &snapshot.manifest,
                &snapshot.objects,
                &snapshot.registrations,
            )
            .map_err(StoreError::Corrupt)?;
            let event = Followed::Generation {
                generation,
                registrations: snapshot.registrations.len(),
                revision: snapshot.revision,
                inputs,
            };
            if events.send(event).await.is_err() {
                return Ok(());
            }
            *last_sent = Some(sent);
        }
        match store.wait_for_change(snapshot.revision).await {
            Ok(_) => watch_pause = Duration::from_millis(50),
            Err(_) => {
                tokio::time::sleep(watch_pause).await;
                watch_pause = (watch_pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}
