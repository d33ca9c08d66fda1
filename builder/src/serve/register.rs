//! VM registration over HTTP on the admin port (`serve --store URL --register-token-file FILE`):
//! what `sluice register` does, for a VM that cannot run sluice, authenticated with a token
//! the operator issues.
//!
//! `POST /register` with `Authorization: Bearer TOKEN` and a JSON body
//! `{"group": "ratings-vm", "namespace": "shop", "address": "10.1.0.7", "labels": {..},
//! "ports": {..}, "ttlSeconds": 30}` writes the VM's WorkloadEntry into the store under an etcd
//! lease of `ttlSeconds` (the same entry `sluice register` writes,
//! [`crate::store::Registration::workload_entry`]). The VM renews by posting again before the
//! lease lapses (the answer says when: `renewEverySeconds`); a VM that stops posting (crash,
//! shutdown) disappears once its lease lapses. `"leave": true` removes it at once. A missing or
//! wrong token is refused with 401 and nothing is written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::store::etcd::EtcdStore;
use crate::store::{Registration, StoreUrl};

/// The default lease of an HTTP registration.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// Where registrations go and the token that allows them.
#[derive(Debug, Clone)]
pub struct Registrar {
    /// The store the replica follows.
    pub store: StoreUrl,
    /// The operator's token (`--register-token-file`).
    pub token: String,
}

/// The body of `POST /register`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Request {
    group: String,
    #[serde(default = "default_namespace")]
    namespace: String,
    address: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    ports: BTreeMap<String, u32>,
    ttl_seconds: Option<u64>,
    #[serde(default)]
    leave: bool,
}

fn default_namespace() -> String {
    "default".to_owned()
}

/// Whether `headers` carry `Authorization: Bearer <token>`, compared in constant time (the
/// answer's timing says nothing of how much of a guess was right).
pub fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `/register` route.
pub fn router(registrar: Registrar) -> Router {
    Router::new()
        .route("/register", post(register))
        .with_state(Arc::new(registrar))
}

type Answer = (StatusCode, axum::Json<Value>);

fn answer(status: StatusCode, body: Value) -> Answer {
    (status, axum::Json(body))
}

fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    answer(status, json!({"error": message.into()}))
}

async fn register(
    State(registrar): State<Arc<Registrar>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    if !authorized(&headers, &registrar.token) {
        return error(
            StatusCode::UNAUTHORIZED,
            "a registration needs `Authorization: Bearer TOKEN` with the operator's token",
        );
    }
    let request: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{e}; expected {{\"group\", \"address\", optional \"namespace\", \"labels\", \"ports\", \"ttlSeconds\", \"leave\"}}"
                ),
            );
        }
    };
    if request.group.is_empty() || request.address.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "`group` and `address` are required",
        );
    }
    let ttl = Duration::from_secs(request.ttl_seconds.unwrap_or(DEFAULT_TTL.as_secs()).max(1));
    let registration = Registration {
        group: request.group.clone(),
        namespace: request.namespace.clone(),
        address: request.address.clone(),
        labels: request.labels,
        ports: request.ports,
    };
    let name = registration.name();
    let unavailable = |e: crate::store::etcd::StoreError| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store cannot be written: {e}"),
        )
    };
    let mut store = match EtcdStore::connect(&registrar.store).await {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
    if request.leave {
        return match store.deregister(&request.namespace, &name, None).await {
            Ok(left) => answer(
                StatusCode::OK,
                json!({"name": name, "namespace": request.namespace, "left": left}),
            ),
            Err(e) => unavailable(e),
        };
    }
    let group = match store
        .workload_group(&request.namespace, &request.group)
        .await
    {
        Ok(Some(group)) => group,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                format!(
                    "no WorkloadGroup {}/{} in the store's current generation (`sluice apply` it first)",
                    request.namespace, request.group
                ),
            );
        }
        Err(e) => return unavailable(e),
    };
    let entry = registration.workload_entry(&group);
    match store.register(&request.namespace, &name, &entry, ttl).await {
        Ok(lease) => {
            eprintln!(
                "serve: registered {}/{name} ({}) over HTTP with a {ttl:?} lease",
                request.namespace, request.address
            );
            answer(
                StatusCode::OK,
                json!({
                    "name": name,
                    "namespace": request.namespace,
                    "lease": format!("{lease:x}"),
                    "ttlSeconds": ttl.as_secs(),
                    "renewEverySeconds": (ttl.as_secs() / 3).max(1),
                }),
            )
        }
        Err(e) => unavailable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_the_exact_bearer_token_is_authorized() {
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            h
        };
        assert!(authorized(&with("Bearer s3cret"), "s3cret"));
        assert!(!authorized(&with("Bearer s3cre"), "s3cret"));
        assert!(!authorized(&with("Bearer s3cret2"), "s3cret"));
        assert!(!authorized(&with("Basic s3cret"), "s3cret"));
        assert!(!authorized(&HeaderMap::new(), "s3cret"));
    }
}
