//! ADS responses whose resources are encoded once and shared by every stream.
//!
//! A full state-of-the-world CDS of a large mesh is several MB. Built as a prost
//! `DiscoveryResponse`, every stream deep-cloned each `Any` into its own response and tonic then
//! encoded that into one more buffer per stream: two copies of the whole type per proxy, all
//! alive at once while a change fans out. Here a resource is encoded once per snapshot (as the
//! repeated field 2 element of the response, [`Entry::sotw`](super::snapshot::Entry::sotw)), a
//! response is those shared [`Bytes`] between a small head and tail, and the gRPC body hands
//! them to hyper as they are ([`ReplyBody`]), so a stream's response costs only its head, tail
//! and the handles.
//!
//! The bytes are exactly prost's encoding of the same message: prost writes fields in field
//! number order, the head holds field 1, the resources field 2 and the tail every later field,
//! so head, resources and tail concatenated are the whole message (tested below).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use hyper::body::{Body, Frame, SizeHint};
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;

/// A state-of-the-world response: `DiscoveryResponse` with its resources pre-encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct SotwResponse {
    /// `version_info`.
    pub version_info: String,
    /// `type_url`.
    pub type_url: String,
    /// `nonce`.
    pub nonce: String,
    /// Each resource as field 2 of the response (key, length, encoded `Any`), shared.
    pub resources: Vec<Bytes>,
}

/// A delta response: `DeltaDiscoveryResponse` with its resources pre-encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaResponse {
    /// `system_version_info`.
    pub system_version_info: String,
    /// `type_url`.
    pub type_url: String,
    /// `nonce`.
    pub nonce: String,
    /// `removed_resources`.
    pub removed_resources: Vec<String>,
    /// Each `Resource` as field 2 of the response (key, length, encoded message), shared.
    pub resources: Vec<Bytes>,
}

/// A response for the proxy.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// State of the world (`StreamAggregatedResources`).
    Sotw(SotwResponse),
    /// Incremental (`DeltaAggregatedResources`).
    Delta(DeltaResponse),
}

fn control_plane(identifier: &str) -> Option<ControlPlane> {
    Some(ControlPlane {
        identifier: identifier.to_owned(),
    })
}

impl Reply {
    /// The type URL of the response.
    pub fn type_url(&self) -> &str {
        match self {
            Reply::Sotw(r) => &r.type_url,
            Reply::Delta(r) => &r.type_url,
        }
    }

    /// The message as encoded pieces: head (fields before the resources), each resource,
    /// tail (the fields after them, `control_plane` naming `identifier`).
    fn pieces(&self, identifier: &str) -> (Bytes, &[Bytes], Bytes) {
        match self {
            Reply::Sotw(r) => {
                let head = DiscoveryResponse {
                    version_info: r.version_info.clone(),
                    ..Default::default()
                };
                let tail = DiscoveryResponse {
                    type_url: r.type_url.clone(),
                    nonce: r.nonce.clone(),
                    control_plane: control_plane(identifier),
                    ..Default::default()
                };
                (
                    head.encode_to_vec().into(),
                    &r.resources,
                    tail.encode_to_vec().into(),
                )
            }
            Reply::Delta(r) => {
                let head = DeltaDiscoveryResponse {
                    system_version_info: r.system_version_info.clone(),
                    ..Default::default()
                };
                let tail = DeltaDiscoveryResponse {
                    type_url: r.type_url.clone(),
                    nonce: r.nonce.clone(),
                    removed_resources: r.removed_resources.clone(),
                    control_plane: control_plane(identifier),
                    ..Default::default()
                };
                (
                    head.encode_to_vec().into(),
                    &r.resources,
                    tail.encode_to_vec().into(),
                )
            }
        }
    }

    /// The encoded message's length (as served with an empty identifier; for metrics).
    pub fn encoded_len(&self) -> usize {
        let (head, resources, tail) = self.pieces("");
        head.len() + resources.iter().map(Bytes::len).sum::<usize>() + tail.len()
    }

    /// The whole encoded message (tests, and anything that wants the message in one piece).
    pub fn encode_to_bytes(&self, identifier: &str) -> Bytes {
        let (head, resources, tail) = self.pieces(identifier);
        let mut out = BytesMut::new();
        out.put(head);
        for r in resources {
            out.put_slice(r);
        }
        out.put(tail);
        out.freeze()
    }

    /// The message as one gRPC length-prefixed message in pieces: the shared resource bytes
    /// are passed on as they are, small ones packed together up to [`PACK`] bytes so hyper
    /// and h2 are not handed thousands of tiny frames.
    fn grpc_chunks(&self, identifier: &str) -> VecDeque<Bytes> {
        let (head, resources, tail) = self.pieces(identifier);
        let len = head.len() + resources.iter().map(Bytes::len).sum::<usize>() + tail.len();
        let mut chunks = VecDeque::new();
        let mut pack = BytesMut::with_capacity(PACK);
        // gRPC message prefix: not compressed, then the length (big-endian u32).
        pack.put_u8(0);
        pack.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        pack.put(head);
        for r in resources {
            if r.len() >= PACK / 4 {
                if !pack.is_empty() {
                    chunks.push_back(pack.split().freeze());
                }
                chunks.push_back(r.clone());
            } else {
                if pack.len() + r.len() > PACK {
                    chunks.push_back(pack.split().freeze());
                }
                pack.put_slice(r);
            }
        }
        pack.put(tail);
        chunks.push_back(pack.freeze());
        chunks
    }
}

/// Small resources are copied together into chunks of about this size; larger ones go out as
/// the shared bytes they are.
const PACK: usize = 128 * 1024;

/// The gRPC response body of one ADS stream: the replies sent on `rx`, each as its encoded
/// pieces, then `grpc-status` 0 once the stream's task ends.
pub struct ReplyBody {
    rx: mpsc::UnboundedReceiver<Reply>,
    identifier: String,
    chunks: VecDeque<Bytes>,
    done: bool,
}

impl ReplyBody {
    /// The body of a stream whose replies come on `rx`, naming `identifier` in each.
    pub fn new(rx: mpsc::UnboundedReceiver<Reply>, identifier: String) -> ReplyBody {
        ReplyBody {
            rx,
            identifier,
            chunks: VecDeque::new(),
            done: false,
        }
    }
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            if let Some(chunk) = this.chunks.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match this.rx.poll_recv(cx) {
                // Only the next reply is turned into chunks: the rest wait as shared handles.
                Poll::Ready(Some(reply)) => this.chunks = reply.grpc_chunks(&this.identifier),
                Poll::Ready(None) => {
                    this.done = true;
                    // The stream's task ended (the proxy went, or serve stops): a clean end.
                    let mut trailers = tonic::codegen::http::HeaderMap::new();
                    trailers.insert(
                        "grpc-status",
                        tonic::codegen::http::HeaderValue::from_static("0"),
                    );
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::Resource as DeltaResource;
    use envoy_types::pb::google::protobuf::Any;

    fn any(n: usize) -> Any {
        Any {
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            // Some large, some small: both packing paths.
            value: vec![n as u8; if n.is_multiple_of(2) { 9000 } else { 30 }],
        }
    }

    fn field2<M: Message>(m: &M) -> Bytes {
        let mut b = BytesMut::new();
        prost::encoding::message::encode(2, m, &mut b);
        b.freeze()
    }

    /// The gRPC body's bytes without the 5-byte prefix, after checking the prefix.
    fn unframe(chunks: VecDeque<Bytes>) -> Vec<u8> {
        let all: Vec<u8> = chunks.into_iter().flat_map(|c| c.to_vec()).collect();
        assert_eq!(all[0], 0, "not compressed");
        let len = u32::from_be_bytes(all[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, all.len() - 5, "the prefix gives the message's length");
        all[5..].to_vec()
    }

    #[test]
    fn a_pre_encoded_sotw_response_is_prosts_encoding() {
        let anys: Vec<Any> = (0..40).map(any).collect();
        let reply = Reply::Sotw(SotwResponse {
            version_info: "v1".into(),
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            nonce: "7".into(),
            resources: anys.iter().map(field2).collect(),
        });
        let expected = DiscoveryResponse {
            version_info: "v1".into(),
            resources: anys,
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            nonce: "7".into(),
            control_plane: control_plane("me"),
            ..Default::default()
        };
        assert_eq!(
            reply.encode_to_bytes("me").to_vec(),
            expected.encode_to_vec()
        );
        assert_eq!(unframe(reply.grpc_chunks("me")), expected.encode_to_vec());
        assert_eq!(
            DiscoveryResponse::decode(reply.encode_to_bytes("me")).unwrap(),
            expected
        );
        assert_eq!(
            reply.encoded_len(),
            DiscoveryResponse {
                control_plane: control_plane(""),
                ..expected
            }
            .encoded_len()
        );
    }

    #[test]
    fn a_pre_encoded_delta_response_is_prosts_encoding() {
        let resources: Vec<DeltaResource> = (0..40)
            .map(|n| DeltaResource {
                name: format!("c{n}"),
                version: format!("h{n}"),
                resource: Some(any(n)),
                ..Default::default()
            })
            .collect();
        let reply = Reply::Delta(DeltaResponse {
            system_version_info: "v1".into(),
            type_url: "t".into(),
            nonce: "3".into(),
            removed_resources: vec!["gone".into()],
            resources: resources.iter().map(field2).collect(),
        });
        let expected = DeltaDiscoveryResponse {
            system_version_info: "v1".into(),
            resources,
            type_url: "t".into(),
            removed_resources: vec!["gone".into()],
            nonce: "3".into(),
            control_plane: control_plane("me"),
            ..Default::default()
        };
        assert_eq!(
            reply.encode_to_bytes("me").to_vec(),
            expected.encode_to_vec()
        );
        assert_eq!(unframe(reply.grpc_chunks("me")), expected.encode_to_vec());
    }

    #[test]
    fn an_empty_response_is_one_chunk() {
        let reply = Reply::Sotw(SotwResponse {
            version_info: String::new(),
            type_url: "t".into(),
            nonce: "1".into(),
            resources: Vec::new(),
        });
        let chunks = reply.grpc_chunks("");
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            unframe(chunks),
            DiscoveryResponse {
                type_url: "t".into(),
                nonce: "1".into(),
                control_plane: control_plane(""),
                ..Default::default()
            }
            .encode_to_vec()
        );
    }
}
