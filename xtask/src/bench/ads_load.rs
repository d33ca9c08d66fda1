//! The control-plane benches' load generator: many ADS streams that behave as Envoys do, built
//! on the same protos as `sluice serve` (envoy-types' ADS client over tonic).
//!
//! Each stream is one proxy (`node.id` = `bench-<n>`, `node.cluster` = the group), on its own
//! HTTP/2 connection, in state-of-the-world mode (or delta, `--delta`: the same subscriptions
//! as subscribe and unsubscribe lists, the client keeping the clusters and listeners it was
//! sent to know the names it needs):
//! - the first request (CDS) carries the node, as Envoy's does; CDS and LDS are wildcard;
//! - every response is ACKed at once (version and nonce of that response, the type's current
//!   names); nothing is ever NACKed;
//! - EDS, RDS and ECDS are subscribed by name, as Envoy subscribes them: the EDS clusters of
//!   the latest CDS response, the route tables and the filter names (ECDS `config_discovery`)
//!   of the HTTP connection managers of the latest LDS response. A response that changes a
//!   name set is followed by a request with the new names, so an added service costs the
//!   extra round trip it costs an Envoy (CDS, then the new cluster's EDS).
//!
//! What the bench reads back per stream ([`StreamLog`]): responses and bytes received, and when
//! the stream last sent an ACK: after a change has settled, the latest ACK of every stream is
//! when that stream finished taking the change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::{Filter, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use sluice::xds::Kind;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// The type URL of the HTTP connection manager inside a listener's filter chain.
const HCM_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// What one stream saw. Times are when the event happened in this process.
#[derive(Debug, Clone, Default)]
pub struct StreamLog {
    /// Responses received.
    pub responses: u64,
    /// Their encoded bytes.
    pub bytes: u64,
    /// When the stream last received a response.
    pub last_response: Option<Instant>,
    /// When it received each response.
    pub received: Vec<Instant>,
    /// When the stream last sent an ACK (queued it on its connection).
    pub last_ack: Option<Instant>,
    /// Types with at least one ACKed response.
    pub acked_types: BTreeSet<&'static str>,
    /// Why the stream ended, if it did.
    pub ended: Option<String>,
}

/// A fleet of ADS streams, each on its own connection, driven by a runtime of its own.
pub struct Fleet {
    runtime: tokio::runtime::Runtime,
    logs: Vec<Arc<Mutex<StreamLog>>>,
}

impl Fleet {
    /// Opens `streams` ADS streams of group `cluster`, stream `i` to `servers[i % len]`, `batch`
    /// at a time (each batch connected before the next starts, so serve's first full pushes are
    /// not one burst). `threads`: the generator's tokio workers. `delta`: incremental xDS
    /// (`DeltaAggregatedResources`) instead of state of the world.
    pub fn connect(
        servers: &[SocketAddr],
        streams: usize,
        cluster: &str,
        threads: usize,
        delta: bool,
    ) -> Result<Fleet> {
        if servers.is_empty() {
            bail!("no ADS server to connect to");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("ads-load")
            .enable_all()
            .build()
            .context("start the load generator's runtime")?;
        let mut fleet = Fleet {
            runtime,
            logs: Vec::new(),
        };
        const BATCH: usize = 10;
        for start in (0..streams).step_by(BATCH) {
            let end = (start + BATCH).min(streams);
            for i in start..end {
                let log = Arc::new(Mutex::new(StreamLog::default()));
                fleet.logs.push(log.clone());
                let node = Node {
                    id: format!("bench-{i}"),
                    cluster: cluster.to_owned(),
                    ..Node::default()
                };
                let server = servers[i % servers.len()];
                fleet.runtime.spawn(async move {
                    let outcome = if delta {
                        run_delta_stream(server, node, log.clone()).await
                    } else {
                        run_stream(server, node, log.clone()).await
                    };
                    let why = match outcome {
                        Ok(()) => "the server ended the stream".to_owned(),
                        Err(e) => format!("{e:#}"),
                    };
                    lock(&log).ended = Some(why);
                });
            }
            fleet.wait_all_synced(start..end, Duration::from_secs(300))?;
        }
        Ok(fleet)
    }

    /// Waits until the streams `range` have each ACKed all five types.
    fn wait_all_synced(&self, range: std::ops::Range<usize>, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut waiting = 0;
            for log in &self.logs[range.clone()] {
                let log = lock(log);
                if let Some(why) = &log.ended {
                    bail!("an ADS stream of the load generator ended: {why}");
                }
                if log.acked_types.len() < Kind::ALL.len() {
                    waiting += 1;
                }
            }
            if waiting == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{waiting} ADS streams did not get every type within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A copy of every stream's log.
    pub fn logs(&self) -> Vec<StreamLog> {
        self.logs.iter().map(|l| lock(l).clone()).collect()
    }

    /// CPU time of the generator's own threads so far (its runtime's workers), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        super::procfs::thread_cpu_seconds(std::process::id(), "ads-load")
    }

    /// Closes every stream.
    pub fn close(self) {
        self.runtime.shutdown_timeout(Duration::from_secs(5));
    }
}

fn lock(log: &Mutex<StreamLog>) -> std::sync::MutexGuard<'_, StreamLog> {
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One type's subscription on a stream.
#[derive(Debug, Default)]
struct Subscription {
    started: bool,
    names: Vec<String>,
    version: String,
    nonce: String,
}

fn request(kind: Kind, sub: &Subscription, node: Option<Node>) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: sub.version.clone(),
        node,
        resource_names: sub.names.clone(),
        type_url: kind.type_url().to_owned(),
        response_nonce: sub.nonce.clone(),
        ..DiscoveryRequest::default()
    }
}

/// An ADS client on its own connection to `server`.
async fn connect(
    server: SocketAddr,
) -> Result<AggregatedDiscoveryServiceClient<tonic::transport::Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{server}"))?
        .connect()
        .await
        .with_context(|| format!("connect to ADS at {server}"))?;
    // A full CDS or ECDS response of a large mesh is many MB.
    Ok(AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(512 << 20))
}

async fn run_stream(server: SocketAddr, node: Node, log: Arc<Mutex<StreamLog>>) -> Result<()> {
    let mut client = connect(server).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut subs: BTreeMap<Kind, Subscription> = BTreeMap::new();
    for kind in [Kind::Cluster, Kind::Listener] {
        let sub = subs.entry(kind).or_default();
        sub.started = true;
        // `node` on the first request only, as Envoy sends it.
        let node = (kind == Kind::Cluster).then(|| node.clone());
        let _ = tx.send(request(kind, sub, node));
    }
    let mut responses = client
        .stream_aggregated_resources(UnboundedReceiverStream::new(rx))
        .await
        .context("open the ADS stream")?
        .into_inner();
    while let Some(response) = responses.message().await.context("ADS stream")? {
        let received = Instant::now();
        let Some(kind) = Kind::from_type_url(&response.type_url) else {
            continue;
        };
        let wanted = names_wanted(kind, &response.resources);
        let sub = subs.entry(kind).or_default();
        sub.version.clone_from(&response.version_info);
        sub.nonce.clone_from(&response.nonce);
        let _ = tx.send(request(kind, sub, None));
        record(&log, kind, response.encoded_len(), received);
        // New names: (re)subscribe, as Envoy does once it has the clusters or listeners.
        for (dependent, names) in wanted {
            let sub = subs.entry(dependent).or_default();
            if sub.started && sub.names == names {
                continue;
            }
            sub.started = true;
            sub.names = names;
            let _ = tx.send(request(dependent, sub, None));
        }
    }
    Ok(())
}

/// Counts a response of `bytes` received at `received`, ACKed just now.
fn record(log: &Mutex<StreamLog>, kind: Kind, bytes: usize, received: Instant) {
    let mut log = lock(log);
    log.responses += 1;
    log.bytes += bytes as u64;
    log.last_response = Some(received);
    log.received.push(received);
    log.last_ack = Some(Instant::now());
    log.acked_types
        .insert(sluice::serve::state::short_name(kind));
}

/// [`run_stream`] in delta: CDS and LDS wildcard (an empty first subscription), EDS, RDS and
/// ECDS subscribed and unsubscribed by name as the clusters and listeners held change; every
/// response ACKed by its nonce.
async fn run_delta_stream(
    server: SocketAddr,
    node: Node,
    log: Arc<Mutex<StreamLog>>,
) -> Result<()> {
    let mut client = connect(server).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut node = Some(node);
    for kind in [Kind::Cluster, Kind::Listener] {
        let _ = tx.send(DeltaDiscoveryRequest {
            node: node.take(),
            type_url: kind.type_url().to_owned(),
            ..DeltaDiscoveryRequest::default()
        });
    }
    let mut responses = client
        .delta_aggregated_resources(UnboundedReceiverStream::new(rx))
        .await
        .context("open the delta ADS stream")?
        .into_inner();
    // The clusters and listeners held (what the names to subscribe come from), and the names
    // subscribed per dependent type.
    let mut held: BTreeMap<Kind, BTreeMap<String, Any>> = BTreeMap::new();
    let mut subscribed: BTreeMap<Kind, BTreeSet<String>> = BTreeMap::new();
    while let Some(response) = responses.message().await.context("delta ADS stream")? {
        let received = Instant::now();
        let Some(kind) = Kind::from_type_url(&response.type_url) else {
            continue;
        };
        let _ = tx.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..DeltaDiscoveryRequest::default()
        });
        record(&log, kind, response.encoded_len(), received);
        if !matches!(kind, Kind::Cluster | Kind::Listener) {
            continue;
        }
        let state = held.entry(kind).or_default();
        for removed in &response.removed_resources {
            state.remove(removed);
        }
        for resource in response.resources {
            if let Some(any) = resource.resource {
                state.insert(resource.name, any);
            }
        }
        for (dependent, names) in names_wanted(kind, state.values()) {
            let names: BTreeSet<String> = names.into_iter().collect();
            let had = subscribed.entry(dependent).or_default();
            let subscribe: Vec<String> = names.difference(had).cloned().collect();
            let unsubscribe: Vec<String> = had.difference(&names).cloned().collect();
            if subscribe.is_empty() && unsubscribe.is_empty() {
                continue;
            }
            *had = names;
            let _ = tx.send(DeltaDiscoveryRequest {
                type_url: dependent.type_url().to_owned(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                ..DeltaDiscoveryRequest::default()
            });
        }
    }
    Ok(())
}

/// The names resources of `kind` make the proxy subscribe to: EDS from clusters, RDS and ECDS
/// from listeners.
fn names_wanted<'a>(
    kind: Kind,
    resources: impl IntoIterator<Item = &'a Any>,
) -> Vec<(Kind, Vec<String>)> {
    match kind {
        Kind::Cluster => {
            let mut eds = BTreeSet::new();
            for any in resources {
                let Ok(cluster) = Cluster::decode(any.value.as_slice()) else {
                    continue;
                };
                let is_eds = matches!(
                    cluster.cluster_discovery_type,
                    Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32
                );
                if is_eds {
                    let service = cluster
                        .eds_cluster_config
                        .map(|c| c.service_name)
                        .filter(|s| !s.is_empty());
                    eds.insert(service.unwrap_or(cluster.name));
                }
            }
            vec![(Kind::Endpoint, eds.into_iter().collect())]
        }
        Kind::Listener => {
            let (mut routes, mut filters) = (BTreeSet::new(), BTreeSet::new());
            for any in resources {
                let Ok(listener) = Listener::decode(any.value.as_slice()) else {
                    continue;
                };
                let chains = listener
                    .filter_chains
                    .iter()
                    .chain(listener.default_filter_chain.as_ref());
                for filter in chains.flat_map(|c| c.filters.iter()) {
                    if let Some(hcm) = connection_manager(filter) {
                        if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                            routes.insert(rds.route_config_name);
                        }
                        for http in hcm.http_filters {
                            if let Some(ConfigType::ConfigDiscovery(_)) = http.config_type {
                                filters.insert(http.name);
                            }
                        }
                    }
                }
            }
            vec![
                (Kind::Route, routes.into_iter().collect()),
                (Kind::ExtensionConfig, filters.into_iter().collect()),
            ]
        }
        _ => Vec::new(),
    }
}

fn connection_manager(filter: &Filter) -> Option<HttpConnectionManager> {
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType as NetworkConfig;
    match &filter.config_type {
        Some(NetworkConfig::TypedConfig(any)) if any.type_url == HCM_TYPE_URL => {
            HttpConnectionManager::decode(any.value.as_slice()).ok()
        }
        _ => None,
    }
}
