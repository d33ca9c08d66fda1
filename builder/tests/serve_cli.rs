//! The `sluice serve`, `sluice status` and `generate --target envoy-xds` commands as a user runs
//! them (the protocol itself is tested through real Envoys in integration/tests/serve.rs).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

fn demo() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/demo")
        .display()
        .to_string()
}

/// Kills the serve process (by its own pid) when the test ends, passing or not.
struct Serve(Child);

impl Serve {
    /// Starts `sluice serve -f INPUT` on ephemeral ports with `more` arguments; returns it with
    /// its first log line (the one naming its ports) and its admin address.
    fn start(input: &str, more: &[&str]) -> (Serve, String, String) {
        let mut child = sluice()
            .args(["serve", "-f", input])
            .args([
                "--xds-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(more)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sluice serve starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let serve = Serve(child);
        let mut lines = BufReader::new(stderr).lines();
        let first = lines.next().expect("a line").expect("UTF-8");
        let admin = first
            .split("admin on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no admin address in {first:?}"))
            .to_owned();
        // Keep draining serve's log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        (serve, first, admin)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sluice generate -f examples/demo --target envoy-xds -o - MORE`: the bootstrap it prints
/// (the run must succeed).
fn xds_bootstrap(more: &[&str]) -> String {
    let run = sluice()
        .args([
            "generate",
            "-f",
            &demo(),
            "--target",
            "envoy-xds",
            "-o",
            "-",
        ])
        .args(more)
        .output()
        .expect("sluice generate runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8_lossy(&run.stdout).into_owned()
}

#[test]
fn serve_reports_its_ports_and_status_prints_the_table() {
    let (serve, first, admin) = Serve::start(&demo(), &["--wasm-dir", "/opt/sluice/wasm"]);
    assert!(first.contains("ADS on 127.0.0.1:"), "{first}");

    let deadline = Instant::now() + Duration::from_secs(60);
    let table = loop {
        let run = sluice()
            .args(["status", "--admin", &admin])
            .output()
            .expect("sluice status runs");
        let text = String::from_utf8_lossy(&run.stdout).into_owned();
        if run.status.success() && !text.contains("(none loaded)") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no config loaded: {text}{}",
            String::from_utf8_lossy(&run.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(table.contains("(0 proxies)"), "{table}");
    assert!(
        table.contains("NAME") && table.contains("GROUP") && table.contains("ECDS"),
        "{table}"
    );
    let json = sluice()
        .args(["status", "--admin", &admin, "--format", "json"])
        .output()
        .expect("sluice status runs");
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(doc["ready"], true);
    drop(serve);

    let refused = sluice()
        .args(["status", "--admin", &admin])
        .output()
        .expect("sluice status runs");
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is `sluice serve` running"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn envoy_xds_bootstrap_names_every_server_and_the_mode() {
    let text = xds_bootstrap(&[
        "--xds-server",
        "10.0.0.1:18000",
        "--xds-server",
        "serve.internal:18000",
        "--node-id",
        "vm-7",
        "--node-cluster",
        "edge",
        "--delta",
    ]);
    for want in [
        "DELTA_GRPC",
        "10.0.0.1",
        "serve.internal",
        "STRICT_DNS",
        "vm-7",
        "edge",
        "set_node_on_first_message_only: true",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    assert!(
        !text.contains("listener_9080"),
        "no listener in the bootstrap:\n{text}"
    );
}

#[test]
fn status_endpoints_lists_each_probed_endpoint_with_its_health_and_error() {
    // One endpoint answers (a bound listener: the TCP probe connects), one does not (a port
    // bound then released: refused).
    let open = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let (up, down) = (
        open.local_addr().expect("addr").port(),
        closed.local_addr().expect("addr").port(),
    );
    drop(closed);
    let dir = tempfile::tempdir().expect("a folder");
    std::fs::write(
        dir.path().join("mesh.yaml"),
        format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: shop
  annotations:
    sluice.dev/probe: '{{tcpSocket: {{port: http}}, periodSeconds: 1, failureThreshold: 1}}'
spec:
  hosts: [shop]
  ports: [{{number: 8000, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {up}}}}}
  - {{address: 127.0.0.1, ports: {{http: {down}}}}}
"
        ),
    )
    .expect("write the mesh");
    let (_serve, _, admin) = Serve::start(
        &dir.path().display().to_string(),
        &["--wasm-dir", "/opt/sluice/wasm"],
    );

    let row = |table: &str, port: u16| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("127.0.0.1:{port} ")))
            .map(str::to_owned)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let table = loop {
        let run = sluice()
            .args(["status", "--admin", &admin, "--endpoints"])
            .output()
            .expect("sluice status runs");
        let text = String::from_utf8_lossy(&run.stdout).into_owned();
        let health =
            |port| row(&text, port).and_then(|r| r.split_whitespace().nth(2).map(str::to_owned));
        let settled = health(up).as_deref() == Some("HEALTHY")
            && health(down).as_deref() == Some("UNHEALTHY");
        if run.status.success() && settled {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "not settled: {text}{}",
            String::from_utf8_lossy(&run.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(table.starts_with("2 probed endpoints\n"), "{table}");
    let bad = row(&table, down).expect("the refused endpoint's row");
    for part in ["outbound|8000||shop", "sluice-serve", "connect: ", "s ago"] {
        assert!(bad.contains(part), "{part:?} in {bad}");
    }
    let json = sluice()
        .args([
            "status",
            "--admin",
            &admin,
            "--endpoints",
            "--format",
            "json",
        ])
        .output()
        .expect("sluice status runs");
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(doc["endpoints"].as_array().map(Vec::len), Some(2), "{doc}");
    assert!(
        doc["replica"].as_str().is_some_and(|r| r.contains("pid")),
        "{doc}"
    );
    drop(open);
}

#[test]
fn serve_modules_as_a_user_gives_them() {
    // The bootstrap: the module cluster lists every replica's admin address.
    let text = xds_bootstrap(&[
        "--modules-server",
        "10.0.0.1:18080",
        "--modules-server",
        "10.0.0.2:18080",
    ]);
    for want in ["sluice-modules", "10.0.0.2", "port_value: 18080", "/readyz"] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    assert!(!text.contains(".wasm"), "no module file:\n{text}");

    // Files on the proxy or modules over HTTP: one or the other.
    let both = sluice()
        .args(["serve", "-f", &demo(), "--serve-modules", "/tmp"])
        .args(["--wasm-dir", "/opt/sluice/wasm"])
        .output()
        .expect("sluice serve runs");
    assert_eq!(both.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&both.stderr).contains("cannot be used with"),
        "{}",
        String::from_utf8_lossy(&both.stderr)
    );

    // A folder without modules: serve stays up, serves nothing, and says why.
    let empty = tempfile::tempdir().expect("tempdir");
    let (serve, _, admin) = Serve::start(
        &demo(),
        &["--serve-modules", &empty.path().display().to_string()],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let error = loop {
        let run = sluice()
            .args(["status", "--admin", &admin, "--format", "json"])
            .output()
            .expect("sluice status runs");
        let doc: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap_or_default();
        if let Some(error) = doc["config"]["error"].as_str() {
            assert_eq!(doc["ready"], false);
            break error.to_owned();
        }
        assert!(Instant::now() < deadline, "no refusal: {doc}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        error.contains("--serve-modules: no sluice_<module>.wasm"),
        "{error}"
    );
    drop(serve);
}
