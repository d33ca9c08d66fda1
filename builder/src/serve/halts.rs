//! The canary halts proxies report (issue 29), and spreading one to the fleet.
//!
//! Each Envoy's guard halts its own canary (the filter needs no control plane). To let serve
//! see it, the `envoy-xds` bootstrap of a mesh with a guard adds Envoy's own metrics service
//! sink pointed at serve's ADS port (`envoy.stat_sinks.metrics_service`, gRPC
//! `envoy.service.metrics.v3.MetricsService`): every stats flush carries the guards' gauges
//! (`sluice.canary.split.<split>.guard_halted`, 1 when halted). [`Reports`] reads them: which
//! splits each proxy has halted goes to `/status` (`sluice status`'s HALTED column) and
//! `/metrics`; with `--spread-halts`, a halt also becomes a fleet halt ([`crate::model::halts`]),
//! and the next build takes the canary out of every proxy's split until the operator changes
//! the split.
//!
//! A stale report must not halt a canary the operator has just changed: a proxy flushes its
//! stats on its own clock, so the flush that says "halted" may predate the new config. A halt
//! is spread only when the proxy had acknowledged the ECDS version it runs now at its previous
//! report already (one whole flush interval under that config), and only for the split's
//! current fingerprint.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::service::metrics::v3::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use envoy_types::pb::envoy::service::metrics::v3::{StreamMetricsMessage, StreamMetricsResponse};
use envoy_types::pb::io::prometheus::client::MetricFamily;
use tonic::{Request, Response, Status, Streaming};

use super::state::{Shared, now_secs};
use crate::xds::Kind;

/// What one proxy last reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyHalts {
    /// The guarded splits whose canary this proxy has halted.
    pub splits: BTreeSet<String>,
    /// Seconds since the epoch of the report.
    pub at: u64,
    /// The ECDS version the proxy had acknowledged (and was last sent) at that report.
    pub ecds: Option<String>,
}

/// A halt spread to the fleet (`--spread-halts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetHalt {
    /// The split's fingerprint when it was halted ([`crate::model::halts::fingerprint`]): the
    /// halt holds while the split is unchanged.
    pub fingerprint: String,
    /// The proxy (`node.id`) whose guard halted it.
    pub by: String,
    /// Seconds since the epoch.
    pub at: u64,
}

/// The Envoy stat name of split `split`'s halted gauge, as the metrics service sends it
/// (wasm-defined metrics carry Envoy's `wasmcustom.` prefix).
pub fn halted_gauge(split: &str) -> String {
    format!(
        "wasmcustom.{}",
        sluice_core::canary::guard_halted_metric(split)
    )
}

/// The splits among `guarded` (split name -> anything) whose halted gauge is set in
/// `families`.
pub fn halted_splits<V>(
    families: &[MetricFamily],
    guarded: &BTreeMap<String, V>,
) -> BTreeSet<String> {
    if guarded.is_empty() {
        return BTreeSet::new();
    }
    let gauges: BTreeMap<&str, f64> = families
        .iter()
        .filter_map(|f| {
            let name = f.name.as_deref()?;
            name.ends_with(sluice_core::wire::CANARY_GUARD_HALTED_SUFFIX)
                .then_some(())?;
            let value = f.metric.first()?.gauge.as_ref()?.value?;
            Some((name, value))
        })
        .collect();
    guarded
        .keys()
        .filter(|split| {
            gauges
                .get(halted_gauge(split).as_str())
                .is_some_and(|v| *v >= 1.0)
        })
        .cloned()
        .collect()
}

impl Shared {
    /// Records `node`'s report (its metric families); with `spread`, turns a settled halt of
    /// a split that is not halted fleet-wide yet into a fleet halt. Returns whether one was
    /// added (the config must be rebuilt).
    pub fn report_halts(&self, node: &str, families: &[MetricFamily], spread: bool) -> bool {
        let Some(guarded) = self.published.borrow().as_ref().map(|p| p.guarded.clone()) else {
            return false;
        };
        let halted = halted_splits(families, &guarded);
        let mut inner = self.lock();
        // In sync on ECDS: the proxy runs the filter configs serve sent it last.
        let ecds = inner
            .proxies
            .values()
            .filter(|p| p.id == node)
            .filter_map(|p| p.types.get(&Kind::ExtensionConfig))
            .find(|t| t.acked.is_some() && t.acked == t.sent)
            .and_then(|t| t.acked.clone());
        let previous = inner.halts.insert(
            node.to_owned(),
            ProxyHalts {
                splits: halted.clone(),
                at: now_secs(),
                ecds: ecds.clone(),
            },
        );
        let settled = ecds.is_some() && previous.is_some_and(|p| p.ecds == ecds);
        if !spread || !settled {
            return false;
        }
        let mut added = false;
        for split in halted {
            if inner.fleet_halts.contains_key(&split) {
                continue;
            }
            let Some(fingerprint) = guarded.get(&split) else {
                continue;
            };
            eprintln!(
                "serve: proxy {node} halted the canary of split {split:?}: spreading the halt to every proxy (--spread-halts) until the split changes"
            );
            inner.fleet_halts.insert(
                split,
                FleetHalt {
                    fingerprint: fingerprint.clone(),
                    by: node.to_owned(),
                    at: now_secs(),
                },
            );
            added = true;
        }
        added
    }

    /// Forgets what `node` reported (its metrics stream ended).
    pub fn forget_halts(&self, node: &str) {
        self.lock().halts.remove(node);
    }

    /// The fleet halts, split name -> fingerprint, for the next build.
    pub fn fleet_halted(&self) -> BTreeMap<String, String> {
        self.lock()
            .fleet_halts
            .iter()
            .map(|(split, h)| (split.clone(), h.fingerprint.clone()))
            .collect()
    }

    /// Drops each fleet halt whose split no longer has the fingerprint it was halted at in
    /// `guarded` (the split's current fingerprints): the operator changed it (or removed it),
    /// which re-arms the guard.
    pub fn lift_changed_halts(&self, guarded: &BTreeMap<String, String>) {
        self.lock().fleet_halts.retain(|split, halt| {
            let keep = guarded.get(split) == Some(&halt.fingerprint);
            if !keep {
                eprintln!(
                    "serve: split {split:?} changed: its fleet halt is lifted and its guard re-armed"
                );
            }
            keep
        });
    }
}

/// The metrics service the proxies' stats sink streams to.
#[derive(Debug, Clone)]
pub struct Reports {
    shared: Arc<Shared>,
    spread: bool,
}

/// Stats of a large Envoy are several MB per flush.
const MAX_REPORT: usize = 64 << 20;

impl Reports {
    /// The service, as tonic serves it. `spread`: `--spread-halts`.
    pub fn server(shared: Arc<Shared>, spread: bool) -> MetricsServiceServer<Reports> {
        MetricsServiceServer::new(Reports { shared, spread }).max_decoding_message_size(MAX_REPORT)
    }
}

#[tonic::async_trait]
impl MetricsService for Reports {
    async fn stream_metrics(
        &self,
        request: Request<Streaming<StreamMetricsMessage>>,
    ) -> Result<Response<StreamMetricsResponse>, Status> {
        let mut stream = request.into_inner();
        let mut node: Option<String> = None;
        // Envoy streams forever; the stream ends with the proxy (or an error).
        while let Ok(Some(message)) = stream.message().await {
            if let Some(id) = message.identifier.and_then(|i| i.node).map(|n| n.id) {
                node = Some(id);
            }
            let Some(node) = &node else {
                continue;
            };
            if self
                .shared
                .report_halts(node, &message.envoy_metrics, self.spread)
            {
                self.shared.request_reload();
            }
        }
        if let Some(node) = node {
            self.shared.forget_halts(&node);
        }
        Ok(Response::new(StreamMetricsResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::io::prometheus::client::{Gauge, Metric, MetricType};

    fn gauge(name: &str, value: f64) -> MetricFamily {
        MetricFamily {
            name: Some(name.to_owned()),
            r#type: Some(MetricType::Gauge as i32),
            metric: vec![Metric {
                gauge: Some(Gauge { value: Some(value) }),
                ..Metric::default()
            }],
            ..MetricFamily::default()
        }
    }

    #[test]
    fn reads_the_halted_gauges_of_guarded_splits_only() {
        let guarded: BTreeMap<String, ()> = [("shop-split".to_owned(), ()), ("b.c".to_owned(), ())]
            .into_iter()
            .collect();
        let families = vec![
            gauge(&halted_gauge("shop-split"), 1.0),
            gauge(&halted_gauge("b.c"), 0.0),
            gauge(&halted_gauge("unguarded"), 1.0),
            gauge("cluster.x.upstream_rq_active", 3.0),
        ];
        assert_eq!(
            halted_splits(&families, &guarded),
            BTreeSet::from(["shop-split".to_owned()])
        );
        assert_eq!(
            halted_gauge("shop-split"),
            "wasmcustom.sluice.canary.split.shop-split.guard_halted"
        );
    }
}
