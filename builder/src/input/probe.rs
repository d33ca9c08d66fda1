//! What a probe checks, read from Istio's WorkloadGroup `probe` shape (Kubernetes' readiness
//! probe), with Kubernetes' defaults: the WorkloadGroup's input (and the `sluice.dev/probe`
//! annotation's, the same shape), resolved once by the check stage (its errors become
//! diagnostics) and by the model, which gives each probed endpoint its probe.

use std::time::Duration;

use serde::Deserialize;

/// A probe as written in YAML (WorkloadGroup `spec.probe`), before its defaults and checks.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeInput {
    /// An HTTP GET answered with a 2xx or 3xx status.
    pub http_get: Option<HttpGetInput>,
    /// A TCP connection accepted.
    pub tcp_socket: Option<PortInput>,
    /// gRPC health v1 answering SERVING.
    pub grpc: Option<GrpcInput>,
    /// A command run on the workload: istio-agent's, not a control plane's (refused).
    pub exec: Option<serde_json::Value>,
    /// Seconds before the first probe.
    pub initial_delay_seconds: Option<u32>,
    /// Seconds a probe may take (default 1).
    pub timeout_seconds: Option<u32>,
    /// Seconds between probes (default 10).
    pub period_seconds: Option<u32>,
    /// Successes in a row that make an endpoint healthy (default 1).
    pub success_threshold: Option<u32>,
    /// Failures in a row that make an endpoint unhealthy (default 3).
    pub failure_threshold: Option<u32>,
}

/// A probe's port: a number, or (in the `sluice.dev/probe` annotation only, as Kubernetes
/// allows a container port's name) the name of a port of the service, resolved per endpoint
/// to the port that endpoint serves it on.
#[derive(serde::Serialize, Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ProbePort {
    /// A port number.
    Number(u32),
    /// A port name (`ServiceEntry.spec.ports[].name`, or a key of a WorkloadEntry's `ports`).
    Name(String),
}

impl Default for ProbePort {
    fn default() -> Self {
        ProbePort::Number(0)
    }
}

/// `httpGet`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGetInput {
    /// The path (default `/`).
    pub path: Option<String>,
    /// The port on the endpoint.
    pub port: ProbePort,
    /// The Host header (default: the endpoint's address).
    pub host: Option<String>,
    /// `HTTP` (HTTPS is not probed by sluice yet: refused).
    pub scheme: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub http_headers: Vec<HeaderInput>,
}

/// One `httpHeaders` entry.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderInput {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// `tcpSocket`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortInput {
    /// The port on the endpoint.
    pub port: ProbePort,
    /// Ignored by Kubernetes for readiness on the same host; refused here to avoid surprises.
    pub host: Option<String>,
}

/// `grpc`.
#[derive(serde::Serialize, Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GrpcInput {
    /// The port on the endpoint.
    pub port: ProbePort,
    /// The service name asked about (empty: the server as a whole).
    pub service: Option<String>,
}

/// What one probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// GET `path` on `port`; healthy on 200..=399.
    Http {
        /// Port.
        port: u16,
        /// Path, starting with `/`.
        path: String,
        /// Host header, if not the endpoint's address.
        host: Option<String>,
        /// Extra headers.
        headers: Vec<(String, String)>,
    },
    /// Connect to `port`.
    Tcp {
        /// Port.
        port: u16,
    },
    /// gRPC health v1 `Check` on `port` for `service`; healthy on SERVING.
    Grpc {
        /// Port.
        port: u16,
        /// Service name (empty: the whole server).
        service: String,
    },
}

/// A probe with its defaults applied: what the prober runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The check.
    pub check: Check,
    /// Before the first probe.
    pub initial_delay: Duration,
    /// Per probe.
    pub timeout: Duration,
    /// Between two probes of one endpoint.
    pub period: Duration,
    /// Successes in a row to become healthy.
    pub success_threshold: u32,
    /// Failures in a row to become unhealthy.
    pub failure_threshold: u32,
}

/// Why a probe input is refused: the field path (below `probe`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeError {
    /// The field, e.g. `httpGet.port`.
    pub field: String,
    /// What is wrong, with what to do.
    pub message: String,
}

fn port(
    field: &str,
    port: &ProbePort,
    named: &dyn Fn(&str) -> Option<u32>,
) -> Result<u16, ProbeError> {
    let number = match port {
        ProbePort::Number(n) => *n,
        ProbePort::Name(name) => named(name).ok_or_else(|| ProbeError {
            field: field.into(),
            message: format!("no port is named {name:?} here"),
        })?,
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ProbeError {
            field: field.into(),
            message: format!("port {number} is not between 1 and 65535"),
        })
}

impl ProbeInput {
    /// The probe with Kubernetes' defaults (period 10 s, timeout 1 s, success 1, failure 3),
    /// or why it cannot run from a control plane. A port given by name is refused (Istio's
    /// WorkloadGroup takes numbers): see [`ProbeInput::resolve_with`].
    pub fn resolve(&self) -> Result<Probe, ProbeError> {
        self.resolve_with(&|_| None)
    }

    /// The name of the port the probe gives by name, if it does.
    pub fn port_name(&self) -> Option<&str> {
        let port = [
            self.http_get.as_ref().map(|h| &h.port),
            self.tcp_socket.as_ref().map(|t| &t.port),
            self.grpc.as_ref().map(|g| &g.port),
        ]
        .into_iter()
        .flatten()
        .next()?;
        match port {
            ProbePort::Name(n) => Some(n),
            ProbePort::Number(_) => None,
        }
    }

    /// [`ProbeInput::resolve`], with a port given by name looked up with `named` (the port
    /// one endpoint serves that name on).
    pub fn resolve_with(&self, named: &dyn Fn(&str) -> Option<u32>) -> Result<Probe, ProbeError> {
        let set = [
            self.http_get.is_some(),
            self.tcp_socket.is_some(),
            self.grpc.is_some(),
            self.exec.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            return Err(ProbeError {
                field: String::new(),
                message: format!(
                    "a probe has exactly one of httpGet, tcpSocket and grpc; this one has {set}"
                ),
            });
        }
        let check = if let Some(h) = &self.http_get {
            if let Some(scheme) = h
                .scheme
                .as_deref()
                .filter(|s| !s.is_empty() && *s != "HTTP")
            {
                return Err(ProbeError {
                    field: "httpGet.scheme".into(),
                    message: format!(
                        "scheme {scheme:?} is not probed by sluice's control plane (HTTP only); use tcpSocket for a TLS port"
                    ),
                });
            }
            let path = h.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') {
                return Err(ProbeError {
                    field: "httpGet.path".into(),
                    message: format!("path {path:?} must start with /"),
                });
            }
            Check::Http {
                port: port("httpGet.port", &h.port, named)?,
                path,
                host: h.host.clone().filter(|h| !h.is_empty()),
                headers: h
                    .http_headers
                    .iter()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
            }
        } else if let Some(t) = &self.tcp_socket {
            if t.host.as_deref().is_some_and(|h| !h.is_empty()) {
                return Err(ProbeError {
                    field: "tcpSocket.host".into(),
                    message: "the probe connects to each endpoint's own address; remove host"
                        .into(),
                });
            }
            Check::Tcp {
                port: port("tcpSocket.port", &t.port, named)?,
            }
        } else if let Some(g) = &self.grpc {
            Check::Grpc {
                port: port("grpc.port", &g.port, named)?,
                service: g.service.clone().unwrap_or_default(),
            }
        } else {
            return Err(ProbeError {
                field: "exec".into(),
                message: "an exec probe runs a command on the workload (istio-agent does that); \
                          a control plane probes over the network: use httpGet, tcpSocket or grpc"
                    .into(),
            });
        };
        let seconds =
            |s: Option<u32>, default: u64| Duration::from_secs(s.map_or(default, u64::from));
        let probe = Probe {
            check,
            initial_delay: seconds(self.initial_delay_seconds, 0),
            timeout: seconds(self.timeout_seconds.filter(|t| *t > 0), 1),
            period: seconds(self.period_seconds.filter(|p| *p > 0), 10),
            success_threshold: self.success_threshold.filter(|t| *t > 0).unwrap_or(1),
            failure_threshold: self.failure_threshold.filter(|t| *t > 0).unwrap_or(3),
        };
        if probe.timeout > probe.period {
            return Err(ProbeError {
                field: "timeoutSeconds".into(),
                message: format!(
                    "timeout {:?} is longer than the period {:?}: probes would overlap",
                    probe.timeout, probe.period
                ),
            });
        }
        Ok(probe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: serde_json::Value) -> ProbeInput {
        serde_json::from_value(json).expect("a probe")
    }

    #[test]
    fn kubernetes_defaults_apply() {
        let probe = input(serde_json::json!({"httpGet": {"port": 8080}}))
            .resolve()
            .unwrap();
        assert_eq!(
            probe,
            Probe {
                check: Check::Http {
                    port: 8080,
                    path: "/".into(),
                    host: None,
                    headers: vec![]
                },
                initial_delay: Duration::ZERO,
                timeout: Duration::from_secs(1),
                period: Duration::from_secs(10),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
    }

    #[test]
    fn what_a_control_plane_cannot_probe_is_refused_with_the_field() {
        for (json, field) in [
            (serde_json::json!({"exec": {"command": ["true"]}}), "exec"),
            (serde_json::json!({"httpGet": {"port": 0}}), "httpGet.port"),
            (
                serde_json::json!({"httpGet": {"port": 80, "scheme": "HTTPS"}}),
                "httpGet.scheme",
            ),
            (
                serde_json::json!({"httpGet": {"port": 80, "path": "health"}}),
                "httpGet.path",
            ),
            (
                serde_json::json!({"tcpSocket": {"port": 80, "host": "x"}}),
                "tcpSocket.host",
            ),
            (serde_json::json!({"grpc": {"port": 70000}}), "grpc.port"),
            (
                serde_json::json!({"tcpSocket": {"port": 80}, "timeoutSeconds": 20}),
                "timeoutSeconds",
            ),
            (
                serde_json::json!({"tcpSocket": {"port": 80}, "grpc": {"port": 80}}),
                "",
            ),
            (serde_json::json!({}), ""),
            (
                serde_json::json!({"httpGet": {"port": "http"}}),
                "httpGet.port",
            ),
        ] {
            let error = input(json.clone()).resolve().expect_err("refused");
            assert_eq!(error.field, field, "{json}: {error:?}");
        }
    }

    #[test]
    fn a_named_port_is_the_endpoints_port_of_that_name() {
        let probe = input(serde_json::json!({"tcpSocket": {"port": "http"}}));
        assert_eq!(probe.port_name(), Some("http"));
        let named = |n: &str| (n == "http").then_some(9081);
        assert_eq!(
            probe.resolve_with(&named).unwrap().check,
            Check::Tcp { port: 9081 }
        );
        let other = input(serde_json::json!({"tcpSocket": {"port": "admin"}}));
        let error = other.resolve_with(&named).expect_err("no such port");
        assert_eq!(error.field, "tcpSocket.port");
        assert!(error.message.contains("\"admin\""), "{}", error.message);
    }
}
