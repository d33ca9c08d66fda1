//! The Envoy listener of a TCP/TLS port ([`crate::model::tcp::TcpChain`]s): one filter chain
//! per chain, matched on SNI and destination subnet, ending in `tcp_proxy`.

use serde_json::{Value, json};

use crate::model::{Listener, Target};

/// The Envoy listener of a TCP port: one filter chain per [`crate::model::tcp::TcpChain`], each a `tcp_proxy`, and
/// the `tls_inspector` when a chain matches on SNI.
pub fn listener_json(listener: &Listener, address: Value) -> Value {
    let chains: Vec<Value> = listener
        .tcp_chains
        .iter()
        .map(|c| {
            let mut proxy = json!({
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": c.stat_prefix,
            });
            if c.hash_source_ip {
                proxy["hash_policy"] = json!([{"source_ip": {}}]);
            }
            match &c.target {
                Target::Cluster(name) => proxy["cluster"] = json!(name),
                Target::Split(members) => {
                    let clusters: Vec<Value> = members
                        .iter()
                        .map(|(name, weight)| json!({"name": name, "weight": weight}))
                        .collect();
                    proxy["weighted_clusters"] = json!({"clusters": clusters});
                }
            }
            if let Some(t) = &c.tunnel {
                let mut config = json!({"hostname": t.hostname});
                if t.use_post {
                    config["use_post"] = json!(true);
                }
                proxy["tunneling_config"] = config;
            }
            let mut chain = json!({
                "name": c.name,
                "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}],
            });
            let mut m = serde_json::Map::new();
            if !c.server_names.is_empty() {
                m.insert("server_names".into(), json!(c.server_names));
            }
            if !c.destination_subnets.is_empty() {
                let ranges: Vec<Value> = c
                    .destination_subnets
                    .iter()
                    .map(|(a, l)| json!({"address_prefix": a, "prefix_len": l}))
                    .collect();
                m.insert("prefix_ranges".into(), json!(ranges));
            }
            if !m.is_empty() {
                chain["filter_chain_match"] = Value::Object(m);
            }
            if let Some(tls) = &c.tls {
                // No ALPN: the stream is not HTTP.
                chain["transport_socket"] = crate::xds::native::downstream_tls(tls, &[]);
            }
            chain
        })
        .collect();
    let mut value = json!({
        "name": listener.name(),
        "address": address,
        "filter_chains": chains,
    });
    if listener
        .tcp_chains
        .iter()
        .any(|c| !c.server_names.is_empty())
    {
        value["listener_filters"] = json!([{
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"},
        }]);
    }
    value
}
