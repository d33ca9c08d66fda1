//! Gateway `credentialName` through the credentials directory (`--credentials-dir`): the
//! secret's files become the listener's certificate, a missing file is an error at the field,
//! and without a directory the server is skipped with a warning.

use std::path::Path;

const HTTPS_GATEWAY: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: web}\nspec:\n  hosts: [web.example.com]\n  ports: [{number: 8080, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 127.0.0.1}]\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [web.example.com]\n    tls:\n      mode: SIMPLE\n      credentialName: web-cert\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web}\nspec:\n  hosts: [web.example.com]\n  gateways: [gw]\n  http:\n  - route: [{destination: {host: web.example.com}}]\n";

fn generate_gateway(credentials_dir: Option<&Path>) -> Result<String, String> {
    let options = sluice::Options {
        credentials_dir: credentials_dir.map(Path::to_path_buf),
        wasm: sluice::WasmModules::Reference("wasm".into()),
        ..sluice::Options::default()
    };
    sluice::generate(
        &sluice::Inputs::from_text("gw.yaml", HTTPS_GATEWAY),
        &options,
    )
    .map(|o| {
        String::from_utf8_lossy(o.files.get("envoy.yaml").map_or(&[][..], |f| f)).into_owned()
            + &o.warnings.to_string()
    })
    .map_err(|d| d.to_string())
}

#[test]
fn credential_name_reads_the_secret_files_from_the_credentials_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("web-cert");
    std::fs::create_dir(&secret).expect("mkdir");
    std::fs::write(secret.join("tls.crt"), "cert").expect("write");
    std::fs::write(secret.join("tls.key"), "key").expect("write");
    let envoy = generate_gateway(Some(dir.path())).expect("generates");
    let crt = secret.join("tls.crt").display().to_string();
    let key = secret.join("tls.key").display().to_string();
    assert!(envoy.contains(&crt) && envoy.contains(&key), "{envoy}");
    assert!(envoy.contains("listener_443"), "{envoy}");
    assert!(!envoy.contains("credentialName"), "{envoy}");
}

#[test]
fn a_missing_secret_file_is_an_error_at_credential_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("web-cert");
    std::fs::create_dir(&secret).expect("mkdir");
    std::fs::write(secret.join("tls.crt"), "cert").expect("write");
    let errors = generate_gateway(Some(dir.path())).expect_err("tls.key is missing");
    let key = secret.join("tls.key").display().to_string();
    assert!(
        errors.starts_with(&format!(
            "gw.yaml:19:7: error[SL307]: Gateway/gw: spec.servers[0].tls.credentialName: secret \"web-cert\" not found in the credentials directory: missing {key}\n  hint: put the secret's files in "
        )),
        "{errors}"
    );
    assert!(
        errors.ends_with("1 error; nothing was written\n"),
        "{errors}"
    );
}

#[test]
fn without_a_credentials_dir_credential_name_stays_a_warning() {
    let out = generate_gateway(None).expect("still generates");
    assert!(!out.contains("listener_443"), "{out}");
    assert!(
        out.contains(
            "gw.yaml:19:7: warning[SL901]: Gateway/gw: spec.servers[0].tls.credentialName:"
        ),
        "{out}"
    );
}

/// A secret store that is not the file system: the model asks it, and the listener names the
/// files it answers with, none of which exists on this machine.
struct Vault;

impl sluice::model::credentials::CredentialSource for Vault {
    fn secret_file(&self, secret: &str, key: &str) -> sluice::model::credentials::SecretFile {
        let path = format!("/vault/{secret}/{key}");
        sluice::model::credentials::SecretFile {
            looked_at: path.clone(),
            path,
            present: secret == "web-cert",
        }
    }

    fn secret_location(&self, secret: &str) -> String {
        format!("/vault/{secret}")
    }
}

#[test]
fn credential_names_resolve_through_an_injected_source() {
    let options = sluice::Options {
        wasm: sluice::WasmModules::Reference("wasm".into()),
        ..sluice::Options::default()
    };
    let inputs = sluice::Inputs::from_text("gw.yaml", HTTPS_GATEWAY);
    let modelled = sluice::model_with(&inputs, &options, Some(&Vault)).expect("models");
    let listener = modelled.mesh.listeners.get(&443).expect("listener_443");
    let tls = format!("{:?}", listener.tls);
    assert!(
        tls.contains("/vault/web-cert/tls.crt") && tls.contains("/vault/web-cert/tls.key"),
        "{tls}"
    );
    let missing = HTTPS_GATEWAY.replace("web-cert", "other-cert");
    let errors = sluice::model_with(
        &sluice::Inputs::from_text("gw.yaml", &missing),
        &options,
        Some(&Vault),
    )
    .expect_err("the vault has no other-cert")
    .to_string();
    assert!(
        errors.starts_with(
            "gw.yaml:19:7: error[SL307]: Gateway/gw: spec.servers[0].tls.credentialName: secret \
             \"other-cert\" not found in the credentials directory: missing \
             /vault/other-cert/tls.crt, /vault/other-cert/tls.key\n  hint: put the secret's \
             files in /vault/other-cert/"
        ),
        "{errors}"
    );
}
