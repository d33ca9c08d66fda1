//! The documentation's hand-written Envoy bootstrap (`docs/minimal-envoy.yaml`, quoted in
//! README.md) runs through a real Envoy and does what it says, and the README quotes it as it is.

use sluice_integration::client;
use sluice_integration::envoy::{Envoy, EnvoyOptions};
use sluice_integration::upstream::Upstream;
use sluice_integration::{repo_root, wasm};

fn minimal_bootstrap() -> String {
    std::fs::read_to_string(repo_root().join("docs/minimal-envoy.yaml"))
        .expect("docs/minimal-envoy.yaml is readable")
}

#[test]
fn the_minimal_bootstrap_routes_with_the_router_filter() {
    if let Err(e) = wasm::module("router") {
        panic!("{e:#}");
    }
    let backend = Upstream::start("backend");
    // Same file, with the fixed ports swapped for the harness's: admin and listener on port 0,
    // the backend on the in-process upstream's port.
    let text = minimal_bootstrap();
    for port in ["port_value: 9901", "port_value: 10000", "port_value: 8080"] {
        assert_eq!(text.matches(port).count(), 1, "{port} appears once");
    }
    let config = text
        .replace("port_value: 9901", "port_value: 0")
        .replace("port_value: 10000", "port_value: 0")
        .replace(
            "port_value: 8080",
            &format!("port_value: {}", backend.port()),
        );
    let envoy = Envoy::start_with(EnvoyOptions {
        config_yaml: config,
        // The module path in the file is relative to the repository root, as documented.
        working_dir: Some(repo_root()),
        ..EnvoyOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let port = envoy.listener_port("main");

    let jason =
        client::get(port, "example", "/", &[("end-user", "jason")]).expect("request as jason");
    assert_eq!(jason.status, 200);
    assert_eq!(jason.header("x-served-by"), Some(b"backend".as_slice()));

    let anonymous = client::get(port, "example", "/", client::NO_HEADERS).expect("request");
    assert_eq!(anonymous.status, 404, "no rule matches: the router's 404");
    assert_eq!(
        backend.request_count(),
        1,
        "only jason's request reached the backend"
    );
}

#[test]
fn the_readme_quotes_the_minimal_bootstrap_verbatim() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let bootstrap = minimal_bootstrap();
    assert!(
        readme.contains(&format!("```yaml\n{bootstrap}```")),
        "README.md must quote docs/minimal-envoy.yaml verbatim in a ```yaml block"
    );
}
