//! `sluice serve` in a test: a mesh folder on disk, serve running on it in-process (its own
//! runtime thread, ports 0), and Envoys that join it with the `envoy-xds` bootstrap.
//!
//! ```no_run
//! use sluice_integration::serve::ServedMesh;
//! let served = ServedMesh::start(&[("mesh.yaml", "...".to_owned())]).unwrap();
//! let envoy = served.start_envoy("proxy-1", "mesh", false).unwrap();
//! served.write("mesh.yaml", "...changed...");
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use sluice::XdsBootstrap;
use sluice::serve::{Running, ServeConfig};
use sluice::{Inputs, Options, Target};

use crate::client::{self, Request};
use crate::envoy::{Envoy, EnvoyOptions};
use crate::upstream::Upstream;
use crate::{mesh, wasm};

/// A served mesh: its folder, and serve running on it.
pub struct ServedMesh {
    dir: tempfile::TempDir,
    config: ServeConfig,
    running: Option<Running>,
}

impl ServedMesh {
    /// Writes `files` (name, YAML) into a new folder and starts serve on it with the options of
    /// the builder-driven tests ([`mesh::options`]: listeners on 127.0.0.1 port 0).
    pub fn start(files: &[(&str, String)]) -> Result<ServedMesh> {
        Self::start_with(files, mesh::options())
    }

    /// [`ServedMesh::start`] with other builder options.
    pub fn start_with(files: &[(&str, String)], options: Options) -> Result<ServedMesh> {
        Self::start_serving(files, options, None)
    }

    /// [`ServedMesh::start_with`], serve also serving the modules of `serve_modules` over HTTP
    /// (`--serve-modules`) when given; its proxies' bootstraps then name serve's admin port as
    /// the module server (`--modules-server`).
    pub fn start_serving(
        files: &[(&str, String)],
        options: Options,
        serve_modules: Option<std::path::PathBuf>,
    ) -> Result<ServedMesh> {
        Self::start_configured(files, options, |config| {
            config.serve_modules = serve_modules
        })
    }

    /// [`ServedMesh::start`] with `--spread-halts`: one proxy's canary halt is spread to every
    /// proxy.
    pub fn start_spreading_halts(files: &[(&str, String)]) -> Result<ServedMesh> {
        Self::start_configured(files, mesh::options(), |config| config.spread_halts = true)
    }

    /// [`ServedMesh::start_with`], `configure` changing serve's config before it starts.
    fn start_configured(
        files: &[(&str, String)],
        options: Options,
        configure: impl FnOnce(&mut ServeConfig),
    ) -> Result<ServedMesh> {
        for filter in wasm::FILTERS {
            wasm::module(filter)?;
        }
        let dir = tempfile::Builder::new()
            .prefix("sluice-serve-")
            .tempdir()
            .context("create the mesh folder")?;
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text)?;
        }
        let localhost: SocketAddr = "127.0.0.1:0".parse()?;
        let mut config = ServeConfig {
            xds_listen: localhost,
            admin_listen: localhost,
            ..ServeConfig::new(vec![dir.path().to_path_buf()], options)
        };
        configure(&mut config);
        let running = Running::start(config.clone())?;
        // Restarts bind the same ports, as a restarted process would.
        config.xds_listen = running.bound.xds;
        config.admin_listen = running.bound.admin;
        let served = ServedMesh {
            dir,
            config,
            running: Some(running),
        };
        served.wait_ready()?;
        Ok(served)
    }

    /// The mesh folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The ADS address.
    pub fn xds_addr(&self) -> SocketAddr {
        self.config.xds_listen
    }

    /// The admin address (and, with `--serve-modules`, the module server's).
    pub fn admin_addr(&self) -> SocketAddr {
        self.config.admin_listen
    }

    /// Replaces `name` in the folder at once (written aside, then renamed: serve never reads a
    /// half-written file).
    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write the mesh file");
        std::fs::rename(&tmp, self.dir.path().join(name)).expect("rename the mesh file");
    }

    /// Removes `name` from the folder.
    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join(name)).expect("remove the mesh file");
    }

    /// Stops serve (every ADS stream cut, as by a crash).
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
        }
    }

    /// Starts serve again on the same ports (stopping it first if it runs), with `options`.
    pub fn restart_with(&mut self, options: Options) -> Result<()> {
        self.stop();
        self.config.options = options;
        // The port was just released; a moment of TIME_WAIT is not a reason to fail.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Running::start(self.config.clone()) {
                Ok(running) => {
                    self.running = Some(running);
                    return self.wait_ready();
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("serve restart: {e:#}; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts serve again on the same ports with the same options.
    pub fn restart(&mut self) -> Result<()> {
        let options = self.config.options.clone();
        self.restart_with(options)
    }

    /// GET `path` on serve's admin port: status and body.
    pub fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        let response = client::send(
            &Request::get(self.config.admin_listen.port(), path)
                .authority("127.0.0.1")
                .timeout(Duration::from_secs(10)),
        )?;
        Ok((response.status, response.text()))
    }

    /// The `/status` document.
    pub fn status(&self) -> Result<Value> {
        let (code, body) = self.admin_get("/status")?;
        if code != 200 {
            bail!("/status answered {code}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// The value of the `/metrics` sample `name` (with its labels, as written), or 0.
    pub fn metric(&self, sample: &str) -> f64 {
        let (_, text) = self.admin_get("/metrics").unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix(sample))
            .filter_map(|rest| rest.strip_prefix(' '))
            .find_map(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self) -> Result<()> {
        poll(Duration::from_secs(60), "serve /readyz", || {
            matches!(self.admin_get("/readyz"), Ok((200, _)))
        })
    }

    /// The `envoy-xds` bootstrap for a proxy `node_id` of group `node_cluster` (admin on port
    /// 0), as `sluice generate --target envoy-xds` writes it.
    pub fn bootstrap(&self, node_id: &str, node_cluster: &str, delta: bool) -> Result<String> {
        let module_servers = self
            .config
            .serve_modules
            .iter()
            .map(|_| self.config.admin_listen.to_string())
            .collect();
        self.bootstrap_fetching_from(node_id, node_cluster, delta, module_servers)
    }

    /// [`ServedMesh::bootstrap`] whose module cluster lists `module_servers` (admin addresses
    /// of `--serve-modules` serves, maybe another replica's) instead of this serve's.
    pub fn bootstrap_fetching_from(
        &self,
        node_id: &str,
        node_cluster: &str,
        delta: bool,
        module_servers: Vec<String>,
    ) -> Result<String> {
        let inputs = Inputs::read(&self.config.inputs).map_err(|e| anyhow!(e))?;
        let options = Options {
            target: Target::EnvoyXds(XdsBootstrap {
                servers: vec![self.config.xds_listen.to_string()],
                node_id: node_id.to_owned(),
                node_cluster: node_cluster.to_owned(),
                delta,
                module_servers,
                ..XdsBootstrap::default()
            }),
            ..self.config.options.clone()
        };
        let output = sluice::generate(&inputs, &options)
            .map_err(|d| anyhow!("the mesh does not generate:\n{d}"))?;
        let yaml = output
            .files
            .get("envoy.yaml")
            .context("the envoy-xds target writes envoy.yaml")?;
        Ok(String::from_utf8(yaml.clone())?)
    }

    /// Starts an Envoy fed only by this serve and waits until it has every listener serve
    /// gives it.
    pub fn start_envoy(&self, node_id: &str, node_cluster: &str, delta: bool) -> Result<Envoy> {
        let config_yaml = self.bootstrap(node_id, node_cluster, delta)?;
        let envoy = Envoy::start_with(EnvoyOptions {
            config_yaml,
            ..EnvoyOptions::default()
        })?;
        Ok(envoy)
    }
}

/// An Envoy fed by the serve replicas at `servers` (group `mesh`, state of the world), with
/// the `envoy-xds` bootstrap generated from `mesh_text`: a proxy of a serve that follows a
/// store rather than a folder.
pub fn start_xds_envoy(mesh_text: &str, servers: &[SocketAddr], node_id: &str) -> Result<Envoy> {
    let options = Options {
        target: Target::EnvoyXds(XdsBootstrap {
            servers: servers.iter().map(ToString::to_string).collect(),
            node_id: node_id.to_owned(),
            node_cluster: "mesh".to_owned(),
            delta: false,
            module_servers: Vec::new(),
            ..XdsBootstrap::default()
        }),
        ..mesh::options()
    };
    let output = sluice::generate(&Inputs::from_text("mesh.yaml", mesh_text), &options)
        .map_err(|d| anyhow!("the mesh does not generate:\n{d}"))?;
    let config_yaml = String::from_utf8(
        output
            .files
            .get("envoy.yaml")
            .context("the envoy-xds target writes envoy.yaml")?
            .clone(),
    )?;
    Envoy::start_with(EnvoyOptions {
        config_yaml,
        ..EnvoyOptions::default()
    })
}

impl Drop for ServedMesh {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `shop` on port [`SHOP_PORT`] with one endpoint per port of `ports` (all on 127.0.0.1), each
/// probed by serve (`sluice.dev/probe`: `GET /healthz` on the endpoint's own `http` port,
/// every `period`, UNHEALTHY after `failures` failures in a row): the mesh of the central
/// health-checking tests.
pub fn probed_mesh(ports: &[u16], period: Duration, failures: u32) -> String {
    let mut yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: shop
  annotations:
    sluice.dev/probe: |
      httpGet: {{path: /healthz, port: http}}
      periodSeconds: {}
      timeoutSeconds: 1
      failureThreshold: {failures}
spec:
  hosts: [shop]
  ports:
  - {{number: {SHOP_PORT}, name: http, protocol: HTTP}}
  resolution: STATIC
  endpoints:
",
        period.as_secs()
    );
    for port in ports {
        yaml.push_str(&format!(
            "  - {{address: 127.0.0.1, ports: {{http: {port}}}}}\n"
        ));
    }
    yaml.push_str(
        "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop]
  http:
  - route:
    - destination: {host: shop}
",
    );
    yaml
}

/// The port of [`shop_mesh`]'s service.
pub const SHOP_PORT: u16 = 8000;

/// `shop` on port [`SHOP_PORT`] with subsets v1 and v2 split `weights` (route `shop-split`),
/// as one file: the mesh of the serve tests.
pub fn shop_mesh(v1: &Upstream, v2: &Upstream, weights: [u32; 2]) -> String {
    shop_mesh_guarded(v1, v2, weights, None)
}

/// [`shop_mesh`] whose split has the canary `guard` (the YAML flow mapping of
/// `sluice.dev/canary`'s `guard`), and no retries: Istio's default retries 503s, which would
/// hide the canary's failures from its guard.
pub fn shop_mesh_guarded(
    v1: &Upstream,
    v2: &Upstream,
    weights: [u32; 2],
    guard: Option<&str>,
) -> String {
    let (metadata, retries) = match guard {
        Some(guard) => (
            format!(
                "\n  name: shop\n  annotations:\n    sluice.dev/canary: |\n      shop-split:\n        guard: {guard}"
            ),
            "\n    retries: {attempts: 0}",
        ),
        None => (" {name: shop}".to_owned(), ""),
    };
    format!(
        "{}apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: shop}}
spec:
  host: shop
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:{metadata}
spec:
  hosts: [shop]
  http:
  - name: shop-split{retries}
    route:
    - destination: {{host: shop, subset: v1}}
      weight: {}
    - destination: {{host: shop, subset: v2}}
      weight: {}
",
        mesh::service_entry("shop", SHOP_PORT, &[(v1, "v1"), (v2, "v2")]),
        weights[0],
        weights[1]
    )
}

/// Requests sent in a loop from another thread until stopped: every outcome that is not a 2xx
/// from an upstream is kept (for "no request failed during ..." assertions).
pub struct Load {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<(u64, Vec<String>)>>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    /// Starts sending to `port` with `authority`.
    pub fn start(port: u16, authority: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new((0, Vec::new())));
        let thread = {
            let stop = stop.clone();
            let outcomes = outcomes.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let requests = vec![Request::get(port, "/").authority(authority); 8];
                    for result in client::send_many(requests, 4) {
                        let mut o = outcomes.lock().unwrap();
                        o.0 += 1;
                        match result {
                            Ok(r) if (200..300).contains(&r.status) && r.served_by().is_some() => {}
                            Ok(r) => {
                                o.1.push(format!("{} {:?} {}", r.status, r.served_by(), r.text()))
                            }
                            Err(e) => o.1.push(format!("transport error: {e:#}")),
                        }
                    }
                }
            })
        };
        Load {
            stop,
            outcomes,
            thread: Some(thread),
        }
    }

    /// Stops and returns (requests sent, failures).
    pub fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.outcomes.lock().unwrap())
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.outcomes.lock().unwrap().0
    }
}

/// Polls `condition` every 50 ms until it holds; fails naming `what` after `timeout`.
pub fn poll(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The port of listener `name` once Envoy has it (listeners arrive over LDS after startup).
pub fn wait_listener(envoy: &Envoy, name: &str) -> Result<u16> {
    let mut port = None;
    poll(Duration::from_secs(60), &format!("listener {name}"), || {
        port = envoy
            .listener_ports()
            .ok()
            .and_then(|ports| ports.into_iter().find(|(n, _)| n == name))
            .map(|(_, p)| p)
            .filter(|p| *p != 0);
        port.is_some()
    })?;
    port.ok_or_else(|| anyhow!("listener {name}"))
}
