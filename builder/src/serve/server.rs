//! Running serve: binding, loading, watching, serving (the glue of [`super`]'s stages).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use super::{admin, ads, health, load, state};
use crate::Options;

/// How `sluice serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The input files and folders (watched).
    pub inputs: Vec<PathBuf>,
    /// Builder options: how resources are generated (wasm module paths, ports, ...).
    pub options: Options,
    /// The gRPC ADS address.
    pub xds_listen: SocketAddr,
    /// The admin HTTP address (`/healthz`, `/readyz`, `/metrics`, `/status`).
    pub admin_listen: SocketAddr,
    /// How long the tree must be quiet before a change is read: an editor's save or a
    /// `git checkout` is many events, and one read of the result is what counts.
    pub debounce: Duration,
    /// `--serve-modules DIR`: serve `DIR/sluice_<module>.wasm` on the admin port
    /// (`/modules/sluice_<module>.wasm`) and make the filter configs fetch them from there
    /// (Envoy's remote data source, pinned by sha256) instead of naming a file on the proxy's
    /// host. `None`: the configs name files (`options.wasm`).
    pub serve_modules: Option<PathBuf>,
    /// `--spread-halts`: when one proxy's canary guard halts a split's canary (reported over
    /// Envoy's metrics service, [`super::halts`]), take that canary out of every proxy's split
    /// until the split changes. Off: each proxy guards itself, and `/status` shows who halted.
    pub spread_halts: bool,
    /// Serve the store's current generation instead of `inputs` (`--store etcd://...`): every
    /// replica following one store serves the same versions.
    #[cfg(feature = "etcd")]
    pub store: Option<crate::store::StoreUrl>,
    /// The token VMs must present to register over HTTP (`POST /register` on the admin port,
    /// `--register-token-file`); needs `store`. `None`: no HTTP registration.
    #[cfg(feature = "etcd")]
    pub register_token: Option<String>,
    /// With `store`: how long the other replicas wait for this one, once it stops renewing
    /// its lease (it died), before they probe its endpoints (`--fleet-ttl`).
    #[cfg(feature = "etcd")]
    pub fleet_ttl: Duration,
}

impl ServeConfig {
    /// Serving the files and folders `inputs` with `options`, on the default ports, with the
    /// default debounce.
    pub fn new(inputs: Vec<PathBuf>, options: Options) -> ServeConfig {
        ServeConfig {
            inputs,
            options,
            xds_listen: super::DEFAULT_XDS_LISTEN
                .parse()
                .expect("the default ADS address parses"),
            admin_listen: super::DEFAULT_ADMIN_LISTEN
                .parse()
                .expect("the default admin address parses"),
            debounce: DEFAULT_DEBOUNCE,
            serve_modules: None,
            spread_halts: false,
            #[cfg(feature = "etcd")]
            store: None,
            #[cfg(feature = "etcd")]
            register_token: None,
            #[cfg(feature = "etcd")]
            fleet_ttl: super::fleet::DEFAULT_FLEET_TTL,
        }
    }
}

/// The default debounce, istiod's `PILOT_DEBOUNCE_AFTER`.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);

/// The bound addresses of a running serve.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// Where ADS listens.
    pub xds: SocketAddr,
    /// Where the admin port listens.
    pub admin: SocketAddr,
}

/// Binds both ports, loads the inputs once (an invalid tree is logged and serves nothing until
/// fixed), then serves and watches until `shutdown` completes. `on_bound` learns the addresses
/// (port 0 is resolved) before anything is served.
pub async fn run(
    config: ServeConfig,
    on_bound: impl FnOnce(Bound),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let xds = TcpListener::bind(config.xds_listen)
        .await
        .with_context(|| format!("cannot listen on --xds-listen {}", config.xds_listen))?;
    let admin = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on --admin-listen {}", config.admin_listen))?;
    let bound = Bound {
        xds: xds.local_addr()?,
        admin: admin.local_addr()?,
    };
    on_bound(bound);
    let shared = Arc::new(state::Shared::new());
    let prober = Arc::new(crate::probe::run::Prober::new());
    let _ = shared.prober.set(prober.clone());
    let identifier = shared
        .identifier
        .get_or_init(|| ads::identifier(bound.xds))
        .clone();
    // With a store, the replicas share the probing (each endpoint probed by one of them);
    // alone, this replica probes every endpoint.
    #[cfg(feature = "etcd")]
    let health_task = match &config.store {
        Some(url) => tokio::spawn(super::fleet::run(
            shared.clone(),
            prober,
            url.clone(),
            identifier,
            config.fleet_ttl,
        )),
        None => tokio::spawn(health::run(shared.clone(), prober)),
    };
    #[cfg(not(feature = "etcd"))]
    let health_task = {
        let _ = identifier;
        tokio::spawn(health::run(shared.clone(), prober))
    };
    #[cfg(feature = "etcd")]
    let follower = config
        .store
        .clone()
        .map(|url| tokio::spawn(follow_store(url, config.clone(), shared.clone())));
    #[cfg(not(feature = "etcd"))]
    let follower: Option<tokio::task::JoinHandle<()>> = None;
    let watcher = if follower.is_some() {
        None
    } else {
        load::reload(&config, &shared);
        Some(load::watch(config.clone(), shared.clone())?)
    };
    #[allow(unused_mut)]
    let mut admin_routes = admin::router(shared.clone());
    #[cfg(feature = "etcd")]
    if let (Some(store), Some(token)) = (&config.store, &config.register_token) {
        admin_routes = admin_routes.merge(super::register::router(super::register::Registrar {
            store: store.clone(),
            token: token.clone(),
        }));
    }
    let admin_task = tokio::spawn(async move { axum::serve(admin, admin_routes).await });
    // Not tonic's graceful shutdown: it waits for every stream to end, and ADS streams do not.
    // Dropping the server closes the listener; the runtime's end cuts the open streams.
    let result = tokio::select! {
        result = ads::serve(xds, shared, config.spread_halts, std::future::pending()) => result,
        () = shutdown => Ok(()),
    };
    admin_task.abort();
    health_task.abort();
    if let Some(follower) = follower {
        follower.abort();
    }
    drop(watcher);
    result
}

/// `--store`: serves each generation the store's follower reports (the same stages and
/// diagnostics as the files), marks the replica degraded while etcd cannot be read (the last
/// good config keeps serving to existing and new proxies), and catches up when it can.
#[cfg(feature = "etcd")]
async fn follow_store(
    url: crate::store::StoreUrl,
    config: ServeConfig,
    shared: Arc<state::Shared>,
) {
    use crate::store::etcd::{Followed, follow};
    let (tx, mut events) = tokio::sync::mpsc::channel(4);
    let follower = tokio::spawn(follow(url.clone(), tx));
    while let Some(event) = events.recv().await {
        match event {
            Followed::Generation {
                generation,
                registrations,
                inputs,
                ..
            } => {
                eprintln!(
                    "serve: {url} generation {generation} ({} resources, {registrations} registered)",
                    inputs.files.len()
                );
                let (config, shared) = (config.clone(), shared.clone());
                // Modelling is CPU work: off the async workers.
                let _ = tokio::task::spawn_blocking(move || {
                    let mut reuse = shared.reuse.lock().unwrap_or_else(|e| e.into_inner());
                    let previous = shared.published.borrow().as_ref().map(|p| p.typed.clone());
                    load::publish(
                        load::load_inputs(
                            &inputs,
                            &config,
                            previous.as_deref(),
                            &load::Halted::new(),
                            &mut reuse,
                        ),
                        &shared,
                    );
                    drop(reuse);
                    shared.lock().input.generation = Some(generation);
                })
                .await;
            }
            Followed::Degraded(why) => {
                eprintln!("serve: degraded, the last good config keeps serving: {why}");
                shared.lock().input.degraded = Some(why);
            }
            Followed::Recovered => {
                eprintln!("serve: {url} answers again");
                shared.lock().input.degraded = None;
            }
        }
    }
    follower.abort();
}

/// A serve running on its own runtime thread, for tests and embedding: dropping it (or
/// [`Running::stop`]) ends it at once, every ADS stream cut as by a crash.
#[derive(Debug)]
pub struct Running {
    /// The bound addresses.
    pub bound: Bound,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Starts serve with `config` and returns once both ports are bound.
    pub fn start(config: ServeConfig) -> anyhow::Result<Running> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = bound_tx.send(Err(anyhow::anyhow!("tokio runtime: {e}")));
                    return;
                }
            };
            let errors = bound_tx.clone();
            runtime.block_on(async move {
                let shutdown = async move {
                    let _ = stopped.await;
                };
                if let Err(e) = run(config, |b| drop(bound_tx.send(Ok(b))), shutdown).await {
                    let _ = errors.send(Err(e));
                }
            });
            // Cut every connection now rather than wait for streams that never end.
            runtime.shutdown_background();
        });
        let bound = bound_rx.recv().context("serve stopped before binding")??;
        Ok(Running {
            bound,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops serve and waits for its thread.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop_now();
    }
}
