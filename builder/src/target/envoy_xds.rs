//! Target `envoy-xds`: the small bootstrap an Envoy needs to join `sluice serve`.
//!
//! It holds no listener, route or mesh cluster: only who the proxy is (`node`: its `cluster`
//! selects what serve gives it), where the control plane is (one static cluster listing every
//! serve replica, HTTP/2 with keepalives), that everything comes over one ADS stream (state of
//! the world, or delta), the admin port, and the stats tags of the envoy target (so the
//! filters' metrics carry the same labels either way). The wasm modules are named by the
//! filter configs serve sends: files at serve's `--wasm-dir` on the proxy's host, as with the
//! envoy target, or, with `sluice serve --serve-modules` and `--modules-server` here, fetched
//! from serve's admin port through the cluster [`MODULES_CLUSTER`] (every replica), so the
//! proxy's host needs nothing but this bootstrap.

use serde_json::{Value, json};

use crate::input::options::{HaltReports, Options, XdsBootstrap};
use crate::model::Mesh;
use crate::xds::error::EmitError;
pub use crate::xds::resources::MODULES_CLUSTER;

use super::envoy::stats_tags;

/// The control-plane cluster's name in the bootstrap.
pub const XDS_CLUSTER: &str = "sluice-xds";

/// Splits `host:port` (`[v6]:port` too).
#[cfg(test)]
fn host_port(server: &str) -> Result<(String, u16), String> {
    host_port_of("--xds-server", server)
}

/// [`host_port`] of a value of the option `flag` (named in the error).
fn host_port_of(flag: &str, server: &str) -> Result<(String, u16), String> {
    let (host, port) = server
        .rsplit_once(':')
        .ok_or_else(|| format!("{flag} {server:?}: expected HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{flag} {server:?}: {port:?} is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{flag} {server:?}: no host"));
    }
    Ok((host.to_owned(), port))
}

/// The `lb_endpoints` of `servers` (values of `flag`), and whether every host is an IP (a
/// STATIC cluster) rather than a name (STRICT_DNS).
fn endpoints_of(flag: &str, servers: &[String], errors: &mut Vec<String>) -> (Vec<Value>, bool) {
    let mut endpoints = Vec::new();
    let mut all_ips = true;
    for server in servers {
        match host_port_of(flag, server) {
            Ok((host, port)) => {
                all_ips &= host.parse::<std::net::IpAddr>().is_ok();
                endpoints.push(json!({"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}));
            }
            Err(e) => errors.push(e),
        }
    }
    (endpoints, all_ips)
}

/// The cluster the filter configs of `sluice serve --serve-modules` fetch the modules through:
/// every replica's admin port, plain HTTP/1.1, health-checked on `/readyz` (a replica with no
/// valid config loaded has no modules to give).
fn modules_cluster(endpoints: Vec<Value>, all_ips: bool) -> Value {
    json!({
        "name": MODULES_CLUSTER,
        "type": if all_ips { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": MODULES_CLUSTER, "endpoints": [{"lb_endpoints": endpoints}]},
        "health_checks": [{
            "timeout": "1s",
            "interval": "2s",
            "unhealthy_threshold": 2,
            "healthy_threshold": 1,
            "http_health_check": {"path": "/readyz"},
        }],
    })
}

/// The bootstrap, as JSON.
pub fn bootstrap(
    mesh_node: Option<&Value>,
    options: &Options,
    xds: &XdsBootstrap,
) -> Result<Value, Vec<String>> {
    let mut errors = Vec::new();
    let (endpoints, all_ips) = endpoints_of("--xds-server", &xds.servers, &mut errors);
    let (module_endpoints, modules_all_ips) =
        endpoints_of("--modules-server", &xds.module_servers, &mut errors);
    if xds.servers.is_empty() {
        errors.push("no --xds-server: name at least one `sluice serve` address".to_owned());
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut node = mesh_node.cloned().unwrap_or_else(|| json!({}));
    node["id"] = json!(xds.node_id);
    node["cluster"] = json!(xds.node_cluster);
    let admin_port = if options.ephemeral_ports {
        0
    } else {
        options.admin_port
    };
    let ads = json!({"ads": {}, "resource_api_version": "V3"});
    let mut bootstrap = json!({
        "node": node,
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "stats_config": {"stats_tags": stats_tags()},
        "dynamic_resources": {
            "ads_config": {
                "api_type": if xds.delta { "DELTA_GRPC" } else { "GRPC" },
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{"envoy_grpc": {
                    "cluster_name": XDS_CLUSTER,
                    // Reconnect soon after a serve restart (Envoy's default backoff grows to 30s).
                    "retry_policy": {"retry_back_off": {"base_interval": "0.25s", "max_interval": "5s"}},
                }}],
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {"clusters": [{
            "name": XDS_CLUSTER,
            // Several replicas: any one serves the whole config.
            "type": if all_ips { "STATIC" } else { "STRICT_DNS" },
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [{"lb_endpoints": endpoints}]},
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {
                        // Find a dead control plane (a host gone without a FIN) and reconnect.
                        "connection_keepalive": {"interval": "30s", "timeout": "5s"},
                    }},
                },
            },
            "upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 300}},
            // gRPC health v1 on each replica's ADS port: a proxy whose replica died reconnects
            // to one that answers.
            "health_checks": [{
                "timeout": "1s",
                "interval": "2s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {},
            }],
        }]},
    });
    if xds.halt_reports == HaltReports::On {
        // Envoy's own metrics service sink, to the replicas' ADS port (serve answers it beside
        // ADS): each flush carries the canary guards' halted gauges (`serve::halts`). Envoy
        // sends only the stats in use, every `stats_flush_interval` (its default, 5 s).
        bootstrap["stats_flush_interval"] = json!("5s");
        bootstrap["stats_sinks"] = json!([{
            "name": "envoy.stat_sinks.metrics_service",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig",
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": XDS_CLUSTER}},
            },
        }]);
    }
    if !module_endpoints.is_empty()
        && let Some(clusters) = bootstrap["static_resources"]["clusters"].as_array_mut()
    {
        clusters.push(modules_cluster(module_endpoints, modules_all_ips));
    }
    Ok(bootstrap)
}

/// The `envoy-xds` target's files: `envoy.yaml`.
pub fn emit(
    mesh: &Mesh,
    options: &Options,
    xds: &XdsBootstrap,
) -> Result<std::collections::BTreeMap<String, Vec<u8>>, Vec<EmitError>> {
    // The node's locality comes from the same place as the envoy target's.
    let set = crate::xds::resources::build(mesh, options)?;
    let xds = XdsBootstrap {
        halt_reports: match xds.halt_reports {
            HaltReports::Auto if crate::model::halts::guarded(mesh).is_empty() => HaltReports::Off,
            HaltReports::Auto => HaltReports::On,
            other => other,
        },
        ..xds.clone()
    };
    let bootstrap = bootstrap(set.node.as_ref(), options, &xds).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| {
                let flag = if e.starts_with("--modules-server") {
                    "--modules-server"
                } else {
                    "--xds-server"
                };
                EmitError::option(flag, e)
            })
            .collect::<Vec<_>>()
    })?;
    let text = format!(
        "# Generated by `sluice generate --target envoy-xds`: joins `sluice serve` at {}. Do not edit.\n{}",
        xds.servers.join(", "),
        super::yaml_out::to_yaml(&bootstrap)
    );
    Ok([("envoy.yaml".to_owned(), text.into_bytes())].into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_parse_and_refuse() {
        assert_eq!(
            host_port("127.0.0.1:18000").unwrap(),
            ("127.0.0.1".into(), 18000)
        );
        assert_eq!(host_port("[::1]:18000").unwrap(), ("::1".into(), 18000));
        assert!(host_port("serve").is_err());
        assert!(host_port("serve:http").is_err());
    }

    #[test]
    fn delta_flag_and_dns_servers() {
        let xds = XdsBootstrap {
            servers: vec!["serve-a:18000".into(), "10.0.0.2:18000".into()],
            delta: true,
            ..XdsBootstrap::default()
        };
        let b = bootstrap(None, &Options::default(), &xds).unwrap();
        assert_eq!(
            b["dynamic_resources"]["ads_config"]["api_type"],
            "DELTA_GRPC"
        );
        assert_eq!(b["static_resources"]["clusters"][0]["type"], "STRICT_DNS");
        assert_eq!(
            b["static_resources"]["clusters"].as_array().unwrap().len(),
            1,
            "no modules cluster without --modules-server"
        );
        assert_eq!(
            b["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn modules_cluster_lists_every_replica_admin_address() {
        let xds = XdsBootstrap {
            module_servers: vec!["10.0.0.1:18080".into(), "10.0.0.2:18080".into()],
            ..XdsBootstrap::default()
        };
        let b = bootstrap(None, &Options::default(), &xds).unwrap();
        let clusters = b["static_resources"]["clusters"].as_array().unwrap();
        let modules = clusters
            .iter()
            .find(|c| c["name"] == MODULES_CLUSTER)
            .expect("the modules cluster");
        assert_eq!(modules["type"], "STATIC");
        assert_eq!(
            modules["load_assignment"]["endpoints"][0]["lb_endpoints"][1]["endpoint"]["address"]["socket_address"]
                ["address"],
            "10.0.0.2"
        );
        let bad = XdsBootstrap {
            module_servers: vec!["serve".into()],
            ..XdsBootstrap::default()
        };
        let errors = bootstrap(None, &Options::default(), &bad).unwrap_err();
        assert!(errors[0].starts_with("--modules-server"), "{errors:?}");
    }
}
