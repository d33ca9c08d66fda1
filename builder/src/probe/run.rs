//! The probes (HTTP/1.1 GET, TCP connect, gRPC health v1) and the prober that runs one task
//! per endpoint: each endpoint is probed once per period, the tasks spread over the period so
//! that a thousand endpoints do not all fire at the same instant.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http_body_util::Empty;
use hyper::body::Bytes;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::spec::{Check, Probe};
use super::tracker::{Health, Tracker};

/// One endpoint to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The endpoint's address (IP or DNS name).
    pub address: String,
    /// How to probe it.
    pub probe: Probe,
}

impl Target {
    /// The endpoint's identity in the prober: `address:port` of the probe.
    pub fn key(&self) -> String {
        let port = match &self.probe.check {
            Check::Http { port, .. } | Check::Tcp { port } | Check::Grpc { port, .. } => *port,
        };
        format!("{}:{port}", self.address)
    }
}

/// Runs one probe of `address`; `Err` says why it failed.
pub async fn probe_once(address: &str, probe: &Probe) -> Result<(), String> {
    match tokio::time::timeout(probe.timeout, check(address, &probe.check)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer in {:?}", probe.timeout)),
    }
}

async fn check(address: &str, check: &Check) -> Result<(), String> {
    match check {
        Check::Tcp { port } => TcpStream::connect((address, *port))
            .await
            .map(drop)
            .map_err(|e| format!("connect: {e}")),
        Check::Http {
            port,
            path,
            host,
            headers,
        } => {
            let stream = TcpStream::connect((address, *port))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("HTTP handshake: {e}"))?;
            let connection = tokio::spawn(connection);
            let authority = host.clone().unwrap_or_else(|| format!("{address}:{port}"));
            let mut request = hyper::Request::get(path.as_str())
                .header(hyper::header::HOST, authority)
                .header(hyper::header::USER_AGENT, "sluice-probe")
                .header(hyper::header::CONNECTION, "close");
            for (name, value) in headers {
                request = request.header(name.as_str(), value.as_str());
            }
            let request = request
                .body(Empty::<Bytes>::new())
                .map_err(|e| format!("request: {e}"))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("HTTP: {e}"));
            connection.abort();
            let status = response?.status();
            // Kubernetes' rule: 200 <= status < 400 passes.
            if (200..400).contains(&status.as_u16()) {
                Ok(())
            } else {
                Err(format!("HTTP {}", status.as_u16()))
            }
        }
        Check::Grpc { port, service } => {
            use tonic_health::pb::health_check_response::ServingStatus;
            use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
            let endpoint =
                tonic::transport::Endpoint::from_shared(format!("http://{address}:{port}"))
                    .map_err(|e| format!("gRPC endpoint: {e}"))?;
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| format!("gRPC connect: {e}"))?;
            let answer = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: service.clone(),
                })
                .await
                .map_err(|status| format!("gRPC health: {}", status.code()))?;
            let status = answer.into_inner().status();
            if status == ServingStatus::Serving {
                Ok(())
            } else {
                Err(format!("gRPC health: {}", status.as_str_name()))
            }
        }
    }
}

/// What the prober knows about one endpoint.
#[derive(Debug, Clone)]
pub struct EndpointStatus {
    /// `address:port`.
    pub key: String,
    /// Its health.
    pub health: Health,
    /// Probes run.
    pub probes: u64,
    /// How long ago its health last changed (`None`: never).
    pub since_change: Option<Duration>,
    /// Why its last probe failed.
    pub last_error: Option<String>,
}

struct Probed {
    tracker: Tracker,
    target: Target,
    task: JoinHandle<()>,
}

/// Probes a changing set of endpoints, one task each.
pub struct Prober {
    endpoints: Arc<Mutex<BTreeMap<String, Probed>>>,
    changes: watch::Sender<u64>,
    total: Arc<AtomicU64>,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober")
            .field("endpoints", &self.lock().len())
            .field("probes_total", &self.probes_total())
            .finish()
    }
}

impl Default for Prober {
    fn default() -> Self {
        Self::new()
    }
}

impl Prober {
    /// A prober with nothing to probe. Must be used inside a tokio runtime.
    pub fn new() -> Prober {
        Prober {
            endpoints: Arc::default(),
            changes: watch::channel(0).0,
            total: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Probed>> {
        // A panicking probe task cannot leave the map half-written: recover it.
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Probes exactly `targets` from now on: new ones start (their first probe spread over
    /// the period), removed ones stop, changed ones restart; unchanged ones go on untouched.
    pub fn set_targets(&self, targets: Vec<Target>) {
        let wanted: BTreeMap<String, Target> = targets.into_iter().map(|t| (t.key(), t)).collect();
        let mut endpoints = self.lock();
        endpoints.retain(|key, probed| {
            let keep = wanted.get(key) == Some(&probed.target);
            if !keep {
                probed.task.abort();
            }
            keep
        });
        let count = wanted.len().max(1) as u32;
        for (index, (key, target)) in wanted.into_iter().enumerate() {
            if endpoints.contains_key(&key) {
                continue;
            }
            // Spread the first probes evenly over one period.
            let offset = target.probe.period / count * index as u32;
            let task = tokio::spawn(probe_loop(
                key.clone(),
                target.clone(),
                offset,
                Arc::clone(&self.endpoints),
                self.changes.clone(),
                Arc::clone(&self.total),
            ));
            endpoints.insert(
                key,
                Probed {
                    tracker: Tracker::default(),
                    target,
                    task,
                },
            );
        }
    }

    /// The health of the endpoint `key` (`address:port`), if it is probed.
    pub fn health(&self, key: &str) -> Option<Health> {
        self.lock().get(key).map(|p| p.tracker.health())
    }

    /// Every probed endpoint's status, by key.
    pub fn status(&self) -> Vec<EndpointStatus> {
        let now = Instant::now();
        self.lock()
            .iter()
            .map(|(key, p)| EndpointStatus {
                key: key.clone(),
                health: p.tracker.health(),
                probes: p.tracker.probes(),
                since_change: p.tracker.changed().map(|c| now - c),
                last_error: p.tracker.last_error().map(str::to_owned),
            })
            .collect()
    }

    /// Probes run since the prober started, over every endpoint it probed.
    pub fn probes_total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Every probed endpoint's health, by key.
    pub fn health_by_key(&self) -> BTreeMap<String, Health> {
        self.lock()
            .iter()
            .map(|(key, p)| (key.clone(), p.tracker.health()))
            .collect()
    }

    /// A receiver that sees a new value each time some endpoint's health changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        for probed in self.lock().values() {
            probed.task.abort();
        }
    }
}

async fn probe_loop(
    key: String,
    target: Target,
    offset: Duration,
    endpoints: Arc<Mutex<BTreeMap<String, Probed>>>,
    changes: watch::Sender<u64>,
    total: Arc<AtomicU64>,
) {
    let probe = &target.probe;
    let start = tokio::time::Instant::now() + probe.initial_delay + offset;
    let mut ticks = tokio::time::interval_at(start, probe.period);
    // A slow probe delays the next one rather than firing a burst to catch up.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let result = probe_once(&target.address, probe).await;
        total.fetch_add(1, Ordering::Relaxed);
        let changed = {
            let mut endpoints = endpoints.lock().unwrap_or_else(|e| e.into_inner());
            let Some(probed) = endpoints.get_mut(&key) else {
                return;
            };
            probed.tracker.record(
                result,
                probe.success_threshold,
                probe.failure_threshold,
                Instant::now(),
            )
        };
        if changed {
            changes.send_modify(|n| *n += 1);
        }
    }
}
