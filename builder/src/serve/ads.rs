//! The gRPC ADS service: one task per stream drives a [`Stream`] with the proxy's requests and
//! the published snapshots, and sends what it returns.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{ControlPlane, Node};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use super::state::{NackRecord, ProxyStatus, Shared, now_secs};
use super::stream::{Event, Reply, Stream};
use crate::xds::Kind;

/// This replica's name, from the address ADS listens on and the process: what proxies see as
/// `control_plane.identifier`, and its id in the store's fleet.
pub fn identifier(xds: std::net::SocketAddr) -> String {
    format!(
        "sluice-serve {} at {xds} (pid {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    )
}

/// Serves ADS on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Each replica names itself in every response (`control_plane.identifier`), so a proxy's
    // config_dump and logs say which replica it follows.
    let address = listener.local_addr()?;
    let identifier = shared
        .identifier
        .get_or_init(|| identifier(address))
        .clone();
    // gRPC health v1 on the ADS port: the envoy-xds bootstrap health-checks every replica, so
    // a proxy reconnecting after its replica died picks a live one.
    let (_reporter, health) = tonic_health::server::health_reporter();
    let service = AggregatedDiscoveryServiceServer::new(Ads { shared, identifier })
        // A full snapshot of a large mesh is several MB: lift tonic's 4 MB default.
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(256 << 20);
    tonic::transport::Server::builder()
        // Find dead proxies (a VM gone without a FIN) and keep NATs from dropping idle streams.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

struct Ads {
    shared: Arc<Shared>,
    identifier: String,
}

fn control_plane(identifier: &str) -> Option<ControlPlane> {
    Some(ControlPlane {
        identifier: identifier.to_owned(),
    })
}

/// A request of either flavour.
enum Incoming {
    Sotw(DiscoveryRequest),
    Delta(DeltaDiscoveryRequest),
}

impl Incoming {
    fn node(&self) -> Option<&Node> {
        match self {
            Incoming::Sotw(r) => r.node.as_ref(),
            Incoming::Delta(r) => r.node.as_ref(),
        }
    }
}

type ResponseStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let incoming = request.into_inner().map(|r| r.map(Incoming::Sotw));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(self.shared.clone(), false, Box::pin(incoming), tx));
        let identifier = self.identifier.clone();
        let out = UnboundedReceiverStream::new(rx).filter_map(move |r| match r {
            Reply::Sotw(mut r) => {
                r.control_plane = control_plane(&identifier);
                Some(Ok(r))
            }
            Reply::Delta(_) => None,
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let incoming = request.into_inner().map(|r| r.map(Incoming::Delta));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(self.shared.clone(), true, Box::pin(incoming), tx));
        let identifier = self.identifier.clone();
        let out = UnboundedReceiverStream::new(rx).filter_map(move |r| match r {
            Reply::Delta(mut r) => {
                r.control_plane = control_plane(&identifier);
                Some(Ok(r))
            }
            Reply::Sotw(_) => None,
        });
        Ok(Response::new(Box::pin(out)))
    }
}

type IncomingStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<Incoming, Status>> + Send>>;

/// One stream, from its first request to its end.
async fn drive(
    shared: Arc<Shared>,
    delta: bool,
    mut incoming: IncomingStream,
    tx: mpsc::UnboundedSender<Reply>,
) {
    let Some(Ok(first)) = incoming.next().await else {
        return;
    };
    // `node` comes on the first request only (Envoy may leave it out of later ones).
    let node = first.node().cloned().unwrap_or_default();
    let mut published = shared.published.subscribe();
    // Until the input is valid there is nothing to serve: the proxy waits, connected.
    let Ok(current) = published
        .wait_for(Option::is_some)
        .await
        .map(|p| p.as_ref().cloned())
    else {
        return;
    };
    let Some(mut current) = current else { return };
    let (mut group, snapshot) = current.for_cluster(&node.cluster);
    let id = shared.next_stream_id();
    shared.lock().proxies.insert(
        id,
        ProxyStatus {
            id: node.id.clone(),
            cluster: node.cluster.clone(),
            group: group.clone(),
            mode: if delta { "delta" } else { "sotw" },
            connected_at: now_secs(),
            types: Default::default(),
            last_nack: None,
        },
    );
    let mut stream = Stream::new(delta, snapshot);
    let mut next = Some(first);
    loop {
        let replies = if let Some(request) = next.take() {
            handle(&mut stream, &request)
        } else {
            tokio::select! {
                request = incoming.next() => match request {
                    Some(Ok(request)) => handle(&mut stream, &request),
                    // The stream broke (a reset, a keepalive timeout): the proxy will be back
                    // on a new stream; say why, as a stall or a reconnect storm starts here.
                    Some(Err(status)) => {
                        eprintln!(
                            "serve: ADS stream of proxy {:?} ({}, {}) broke: {}",
                            node.id,
                            node.cluster,
                            if delta { "delta" } else { "sotw" },
                            status.message()
                        );
                        break;
                    }
                    // The proxy closed it: forget it.
                    None => break,
                },
                changed = published.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let Some(p) = published.borrow_and_update().clone() else { continue };
                    current = p;
                    // The proxy's Gateway may have come or gone: its group is chosen again.
                    let (now_group, snapshot) = current.for_cluster(&node.cluster);
                    if now_group != group {
                        group = now_group;
                        if let Some(p) = shared.lock().proxies.get_mut(&id) {
                            p.group.clone_from(&group);
                        }
                    }
                    stream.set_snapshot(snapshot)
                }
            }
        };
        if !send(&shared, id, &mut stream, &current, replies, &tx) {
            break;
        }
    }
    shared.lock().proxies.remove(&id);
}

fn handle(stream: &mut Stream, request: &Incoming) -> Vec<Reply> {
    match request {
        Incoming::Sotw(r) => stream.sotw_request(r),
        Incoming::Delta(r) => stream.delta_request(r),
    }
}

/// Sends `replies` and records them and the stream's events; false once the proxy is gone.
fn send(
    shared: &Shared,
    id: u64,
    stream: &mut Stream,
    current: &super::state::Published,
    replies: Vec<Reply>,
    tx: &mpsc::UnboundedSender<Reply>,
) -> bool {
    let events = stream.take_events();
    let mut inner = shared.lock();
    for reply in &replies {
        let (type_url, bytes) = match reply {
            Reply::Sotw(r) => (r.type_url.as_str(), r.encoded_len()),
            Reply::Delta(r) => (r.type_url.as_str(), r.encoded_len()),
        };
        if let Some(kind) = Kind::from_type_url(type_url) {
            *inner.metrics.pushes.entry(kind).or_default() += 1;
            *inner.metrics.bytes.entry(kind).or_default() += bytes as u64;
        }
    }
    for event in events {
        match event {
            Event::Ack { .. } => {}
            Event::Nack {
                kind,
                version,
                message,
            } => {
                eprintln!("serve: proxy {id} refused {kind:?} version {version}: {message}");
                *inner.metrics.nacks.entry(kind).or_default() += 1;
                if let Some(p) = inner.proxies.get_mut(&id) {
                    p.last_nack = Some(NackRecord {
                        kind,
                        version,
                        message,
                        at: now_secs(),
                    });
                }
            }
            Event::Settled { version } => {
                if version == stream.snapshot().version {
                    let seconds = current.at.elapsed().as_secs_f64();
                    inner.metrics.observe_latency(seconds);
                }
            }
        }
    }
    if let Some(p) = inner.proxies.get_mut(&id) {
        p.types = stream.status();
    }
    drop(inner);
    replies.into_iter().all(|r| tx.send(r).is_ok())
}
