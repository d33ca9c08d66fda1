//! The gRPC ADS service: one task per stream drives a [`Stream`] with the proxy's requests and
//! the published snapshots, and sends what it returns.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Status;
use tonic::codec::{DecodeBuf, Decoder, Streaming};
use tonic::codegen::http;

use super::state::{NackRecord, ProxyStatus, Shared, now_secs};
use super::stream::{Event, Reply, Stream};
use super::wire::ReplyBody;
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

/// Serves ADS on `listener` until `shutdown` completes, and beside it gRPC health and the
/// metrics service the proxies report their canary halts to (`spread_halts`: `--spread-halts`).
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    spread_halts: bool,
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
    // The proxies' stats sink (the canary guards' halts) on the same port as ADS.
    let reports = super::halts::Reports::server(shared.clone(), spread_halts);
    let service = Ads {
        shared,
        identifier: identifier.into(),
    };
    tonic::transport::Server::builder()
        // Find dead proxies (a VM gone without a FIN) and keep NATs from dropping idle streams.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health)
        .add_service(reports)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

/// The ADS service, written over tonic's transport instead of envoy-types' generated server so
/// that responses go out as the shared pre-encoded bytes of [`super::wire`] (the generated
/// server takes prost messages and encodes each into a buffer of its own, per stream).
#[derive(Clone)]
struct Ads {
    shared: Arc<Shared>,
    identifier: Arc<str>,
}

impl tonic::server::NamedService for Ads {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// A full snapshot of a large mesh is several MB, and so may a proxy's request be (delta's
/// `initial_resource_versions`): lift tonic's 4 MB default, as the generated server was.
const MAX_REQUEST: usize = 64 << 20;

/// Decodes requests with prost, as the generated server did.
struct ProstDecoder<T>(PhantomData<fn() -> T>);

impl<T: prost::Message + Default + 'static> Decoder for ProstDecoder<T> {
    type Item = T;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<T>, Status> {
        T::decode(buf)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

fn requests<T: prost::Message + Default + 'static>(
    body: tonic::body::Body,
    wrap: fn(T) -> Incoming,
) -> IncomingStream {
    let streaming = Streaming::new_request(
        ProstDecoder::<T>(PhantomData),
        body,
        None,
        Some(MAX_REQUEST),
    );
    Box::pin(streaming.map(move |r| r.map(wrap)))
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for Ads {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let delta = match request.uri().path() {
            SOTW_PATH => false,
            DELTA_PATH => true,
            _ => return std::future::ready(Ok(Status::unimplemented("").into_http())),
        };
        let body = request.into_body();
        let incoming = if delta {
            requests(body, Incoming::Delta)
        } else {
            requests(body, Incoming::Sotw)
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(self.shared.clone(), delta, incoming, tx));
        let body = ReplyBody::new(rx, self.identifier.to_string());
        let mut response = http::Response::new(tonic::body::Body::new(body));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        std::future::ready(Ok(response))
    }
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
        let bytes = reply.encoded_len();
        if let Some(kind) = Kind::from_type_url(reply.type_url()) {
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
