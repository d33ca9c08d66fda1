//! TLS around Envoy, with the `openssl` and `curl` CLIs: self-signed test certificates, HTTPS
//! servers (`openssl s_server`) as upstreams or passthrough backends, and HTTPS requests
//! (`curl`) that send a chosen SNI to an Envoy listener on 127.0.0.1.
//!
//! The CLIs rather than a Rust TLS stack: they are what an operator would point at Envoy, and
//! a handshake or verification failure shows as the CLI's own refusal, not a library's choice.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Creates the Kubernetes-style TLS secret `<credentials_dir>/<name>/` that the builder's
/// `--credentials-dir` reads for `credentialName: <name>`: each `(source, file)` of `files`
/// copies the file at `source` to `<name>/<file>` (`tls.crt`, `tls.key`, `ca.crt`).
///
/// Panics when the directory or a copy fails.
pub fn credential_secret(credentials_dir: &Path, name: &str, files: &[(&str, &str)]) {
    let secret = credentials_dir.join(name);
    std::fs::create_dir(&secret).unwrap_or_else(|e| panic!("secret dir {}: {e}", secret.display()));
    for (source, file) in files {
        std::fs::copy(source, secret.join(file))
            .unwrap_or_else(|e| panic!("{source} -> {name}/{file}: {e}"));
    }
}

/// A self-signed certificate for `host` (also its own CA: trust the certificate to verify it),
/// made with `openssl req`: the paths of `<host>.crt` and `<host>.key` in `dir`.
///
/// Panics when the `openssl` CLI is missing or fails.
pub fn self_signed(dir: &Path, host: &str) -> (String, String) {
    let cert = dir.join(format!("{host}.crt")).display().to_string();
    let key = dir.join(format!("{host}.key")).display().to_string();
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-keyout", &key, "-out", &cert, "-subj"])
        .arg(format!("/CN={host}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{host}"))
        .stderr(Stdio::null())
        .status()
        .expect("the openssl CLI runs (apt-get install openssl)");
    assert!(status.success(), "openssl req failed");
    (cert, key)
}

/// What an [`OpensslServer`] answers an HTTP request with.
#[derive(Debug, Clone, Copy)]
pub enum Serve<'a> {
    /// `-www`: 200 and a status page, for any path.
    StatusPage,
    /// `-WWW`: the files of this directory, by the request's path (404 for others).
    Files(&'a Path),
}

/// `openssl s_server` on a free port of 127.0.0.1: an HTTPS server presenting `cert`, and with
/// a client CA, refusing clients without a certificate that CA signed. Killed on drop.
pub struct OpensslServer {
    child: Child,
    port: u16,
}

impl OpensslServer {
    /// Starts the server and waits (10 s at most, else panics) until it accepts connections.
    pub fn start(serve: Serve<'_>, cert: &str, key: &str, client_ca: Option<&str>) -> Self {
        // A free port: bind, read, release (s_server binds it right after).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut cmd = Command::new("openssl");
        cmd.args([
            "s_server",
            "-quiet",
            "-accept",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["-cert", cert, "-key", key]);
        match serve {
            Serve::StatusPage => cmd.arg("-www"),
            Serve::Files(dir) => cmd.arg("-WWW").current_dir(dir),
        };
        if let Some(ca) = client_ca {
            // -Verify (capital): a client certificate is required.
            cmd.args(["-Verify", "1", "-CAfile", ca]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server starts");
        // Owned from here on, so every path (the panic below included) kills and waits for it.
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "openssl s_server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for OpensslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one [`curl_https`] request saw.
#[derive(Debug, Clone, Default)]
pub struct Https {
    /// HTTP status; 0 when no response came (handshake or verification failed).
    pub status: u16,
    /// The response head (status line and headers).
    pub head: String,
    /// The response body.
    pub body: String,
}

/// `GET https://<sni><path>` by `curl`, connected to 127.0.0.1:`port`: SNI `sni` (curl sends
/// the URL's host), `Host: authority`, trusting only the certificate file `ca` (`None`:
/// `--insecure`, nothing verified). Gives up after 10 s.
///
/// Panics when the `curl` CLI is missing.
pub fn curl_https(port: u16, sni: &str, authority: &str, path: &str, ca: Option<&str>) -> Https {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "--max-time", "10"]);
    match ca {
        Some(ca) => cmd.args(["--cacert", ca]),
        None => cmd.arg("--insecure"),
    };
    let output = cmd
        // The URL keeps the name (and no port) a client of a real :443 would use;
        // --connect-to sends the connection to Envoy.
        .arg("--connect-to")
        .arg(format!("{sni}:443:127.0.0.1:{port}"))
        .args(["-H", &format!("Host: {authority}")])
        .arg(format!("https://{sni}{path}"))
        .output()
        .expect("the curl CLI runs (apt-get install curl)");
    let text = String::from_utf8_lossy(&output.stdout);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Https {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}
