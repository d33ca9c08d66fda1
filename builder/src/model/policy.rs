//! A cluster's load balancing, resolved from the Istio `loadBalancer` settings into sluice's
//! own types: the consistent-hash ring (Maglev or ring hash, with its size) and slow start
//! (window, aggression, minimum weight). Istio keeps `consistentHash` and `warmup` as free-form
//! JSON in its input types; they are read once here, so emission writes Envoy fields from typed
//! values instead of interpreting input again.

use std::time::Duration;

use crate::input::istio::TrafficPolicy;
use crate::input::native::{HashKey, hash_key};

/// How a consistent-hash cluster spreads its keys over endpoints.
#[derive(serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub enum HashRing {
    /// Envoy `MAGLEV`, with its lookup table size (`None`: Envoy's default).
    Maglev {
        /// `maglev.tableSize`.
        table_size: Option<u64>,
    },
    /// Envoy `RING_HASH`, with its minimum ring size (`None`: Envoy's default).
    RingHash {
        /// `ringHash.minimumRingSize` (or the deprecated top-level `minimumRingSize`).
        minimum_ring_size: Option<u64>,
    },
}

/// Slow start of a round-robin or least-request cluster: a new endpoint's weight grows over a
/// window (Istio `warmupDurationSecs` or `warmup`).
#[derive(serde::Serialize, Debug, Clone, PartialEq)]
pub struct SlowStart {
    /// The ramp-up window.
    pub window: Duration,
    /// How fast the weight grows (`warmup.aggression`; Envoy's default 1.0 is linear).
    pub aggression: Option<f64>,
    /// The weight a new endpoint starts from, in percent (`warmup.minimumPercent`).
    pub min_weight_percent: Option<f64>,
}

/// A cluster's load balancing, resolved.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq)]
pub struct LoadBalancing {
    /// What a route to the cluster hashes (header, cookie, source IP, query parameter), when
    /// it hashes.
    pub hash_key: Option<HashKey>,
    /// The consistent-hash ring, when the cluster hashes.
    pub hash_ring: Option<HashRing>,
    /// Slow start, when configured.
    pub slow_start: Option<SlowStart>,
}

/// The load balancing of `policy` (its `loadBalancer`, port-level settings already applied).
pub fn load_balancing(policy: &TrafficPolicy) -> LoadBalancing {
    let Some(lb) = &policy.load_balancer else {
        return LoadBalancing::default();
    };
    let hash_ring = lb
        .consistent_hash
        .as_ref()
        .map(|ch| match ch.get("maglev") {
            Some(maglev) => HashRing::Maglev {
                table_size: maglev.get("tableSize").and_then(serde_json::Value::as_u64),
            },
            None => HashRing::RingHash {
                minimum_ring_size: ch
                    .get("ringHash")
                    .and_then(|r| r.get("minimumRingSize"))
                    .or_else(|| ch.get("minimumRingSize"))
                    .and_then(serde_json::Value::as_u64),
            },
        });
    let dur = |t: Option<&str>| t.and_then(|t| sluice_core::duration::parse(t).ok());
    let warmup = lb.warmup.as_ref();
    let window = dur(lb.warmup_duration_secs.as_deref()).or_else(|| {
        dur(warmup
            .and_then(|w| w.get("duration"))
            .and_then(serde_json::Value::as_str))
    });
    let slow_start = window.map(|window| SlowStart {
        window,
        aggression: warmup
            .and_then(|w| w.get("aggression"))
            .and_then(serde_json::Value::as_f64),
        min_weight_percent: warmup
            .and_then(|w| w.get("minimumPercent"))
            .and_then(serde_json::Value::as_f64),
    });
    LoadBalancing {
        hash_key: lb.consistent_hash.as_ref().and_then(hash_key),
        hash_ring,
        slow_start,
    }
}
