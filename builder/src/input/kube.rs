//! Kubernetes resources in the input: core `v1` Services are the registry of a Kubernetes mesh
//! (Istio's registry knows them without any ServiceEntry); other Kubernetes kinds of an app's
//! manifests (Deployments, ServiceAccounts, ConfigMaps...) are passed over with a note.
//!
//! A Service is read leniently: only what routing needs (its ports) is taken, and the many
//! other fields of a Service (type, selector, sessionAffinity...) are Kubernetes' business, not
//! errors.

use serde_json::Value;

use crate::input::yaml::FieldPath;

/// `apiVersion` of the Kubernetes Service sluice reads.
pub const SERVICE_API_VERSION: &str = "v1";

/// What a Service contributes to the registry.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSpec {
    /// `spec.ports`.
    pub ports: Vec<ServicePort>,
}

/// One `spec.ports[]` entry.
#[derive(serde::Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct ServicePort {
    /// `port`: the service port clients use, and the port of Istio's cluster name.
    pub port: u32,
    /// `name`: Istio derives the protocol from its prefix (`http`, `http2`, `grpc`, ...).
    pub name: Option<String>,
    /// `targetPort` when a number (a named target port is resolved by Kubernetes per pod).
    pub target_port: Option<u32>,
    /// `appProtocol` (e.g. `http`, `http2`, `grpc`, `kubernetes.io/h2c`).
    pub app_protocol: Option<String>,
}

impl ServicePort {
    /// Whether Istio speaks HTTP/2 to this port: `appProtocol` first, else the name's prefix
    /// (`http2-...`, `grpc-...`), as Istio's protocol selection reads them.
    pub fn http2(&self) -> bool {
        let by_app = self.app_protocol.as_deref().map(str::to_ascii_lowercase);
        if let Some(app) = by_app {
            return matches!(
                app.as_str(),
                "http2" | "grpc" | "grpc-web" | "kubernetes.io/h2c"
            );
        }
        let name = self.name.as_deref().unwrap_or("").to_ascii_lowercase();
        let prefix = name.split('-').next().unwrap_or("");
        matches!(prefix, "http2" | "grpc" | "grpc-web")
    }
}

/// Reads `spec` of a Service; the error names the field at fault and what is wrong.
pub fn read_service(spec: Option<&Value>) -> Result<ServiceSpec, (FieldPath, String)> {
    let at = FieldPath::root().key("spec").key("ports");
    let Some(ports) = spec.and_then(|s| s.get("ports")) else {
        return Ok(ServiceSpec::default());
    };
    let Some(ports) = ports.as_array() else {
        return Err((at, "expected a list of ports".into()));
    };
    let mut out = Vec::new();
    for (i, entry) in ports.iter().enumerate() {
        let here = at.clone().index(i);
        let port = entry
            .get("port")
            .and_then(Value::as_u64)
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| {
                (
                    here.clone().key("port"),
                    "expected the port number (1-65535)".to_owned(),
                )
            })?;
        let text = |key: &str| entry.get(key).and_then(Value::as_str).map(str::to_owned);
        out.push(ServicePort {
            port: u32::try_from(port).unwrap_or_default(),
            name: text("name"),
            target_port: entry
                .get("targetPort")
                .and_then(Value::as_u64)
                .and_then(|p| u32::try_from(p).ok()),
            app_protocol: text("appProtocol"),
        });
    }
    Ok(ServiceSpec { ports: out })
}

/// Whether `api_version` belongs to Kubernetes (or any API but Istio's): such documents are
/// passed over with a note, except a core `v1` Service.
pub fn is_foreign_api(api_version: &str) -> bool {
    !api_version.contains("istio.io")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ports_names_and_protocols() {
        let spec = json!({"type": "ClusterIP", "selector": {"app": "x"}, "ports": [
            {"name": "http", "port": 9080, "targetPort": 8080},
            {"name": "grpc-api", "port": 9090, "targetPort": "grpc"},
            {"port": 80, "appProtocol": "kubernetes.io/h2c"},
        ]});
        let read = read_service(Some(&spec)).expect("reads");
        assert_eq!(read.ports.len(), 3);
        assert_eq!(read.ports[0].target_port, Some(8080));
        assert!(!read.ports[0].http2());
        assert_eq!(
            read.ports[1].target_port, None,
            "named target ports stay per pod"
        );
        assert!(read.ports[1].http2());
        assert!(read.ports[2].http2());
    }

    #[test]
    fn a_port_without_a_number_is_an_error_at_its_path() {
        let spec = json!({"ports": [{"name": "http", "port": "eighty"}]});
        let (path, message) = read_service(Some(&spec)).expect_err("refused");
        assert_eq!(path.to_string(), "spec.ports[0].port");
        assert!(message.contains("port number"));
    }
}
