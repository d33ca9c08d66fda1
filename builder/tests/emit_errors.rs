//! Errors raised while emitting are typed diagnostics: a missing wasm module is reported at the
//! module's path with the flag and variable that choose its folder, a flag the target needs at
//! that flag; none of them at the old `<output>:0:0`.

use sluice::{Inputs, Options, Target, WasmModules, generate};

const MESH: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
";

#[test]
fn a_missing_wasm_module_names_its_path_and_the_flag_and_variable_to_set() {
    let empty = tempfile::tempdir().expect("tempdir");
    let options = Options {
        wasm: WasmModules::Bundle {
            from: empty.path().to_path_buf(),
            module_dir: "wasm".into(),
        },
        ..Options::default()
    };
    let diags = generate(&Inputs::from_text("mesh.yaml", MESH), &options).expect_err("no module");
    let text = diags.to_string();
    let router = empty
        .path()
        .join("sluice_router.wasm")
        .display()
        .to_string();
    assert!(
        text.starts_with(&format!(
            "{router}: error[SL401]: cannot read the router filter module: "
        )),
        "{text}"
    );
    assert!(
        text.contains("hint: pass --wasm-dir DIR or set SLUICE_WASM_DIR to the folder holding sluice_router.wasm"),
        "{text}"
    );
    assert!(!text.contains("<output>"), "{text}");
    let d = diags.errors().next().expect("an error");
    assert_eq!((d.pos.line, d.pos.col), (0, 0));
}

#[test]
fn a_flag_the_istio_target_needs_is_reported_at_that_flag() {
    let istio = sluice::emit::istio_target::IstioOptions {
        attach: sluice::emit::istio_target::Attach::EnvoyFilter,
        ..Default::default()
    };
    let options = Options {
        target: Target::Istio(istio),
        wasm: WasmModules::NotRead,
        ..Options::default()
    };
    let text = generate(&Inputs::from_text("mesh.yaml", MESH), &options)
        .expect_err("an EnvoyFilter cannot load an OCI image")
        .to_string();
    assert!(
        text.starts_with(
            "--attach: error[SL401]: an EnvoyFilter cannot load an OCI image (only Istio's \
             WasmPlugin pulls images)\n  hint: give --module-path DIR"
        ),
        "{text}"
    );
}

/// A plugin config a filter refuses is blamed on the VirtualService rule it names. The checks
/// refuse such a fault first, so the model is changed by hand to reach the emitter.
#[test]
fn a_refused_plugin_config_is_reported_at_the_rule_it_names() {
    let text = format!(
        "{MESH}---\n\
         apiVersion: networking.istio.io/v1\n\
         kind: VirtualService\n\
         metadata: {{name: reviews}}\n\
         spec:\n  hosts: [reviews]\n  http:\n  - name: slow\n    route: [{{destination: {{host: reviews}}}}]\n"
    );
    let options = Options {
        wasm: WasmModules::NotRead,
        ..Options::default()
    };
    let modelled =
        sluice::model(&Inputs::from_text("mesh.yaml", &text), &options).expect("a valid mesh");
    let mut listener = modelled
        .mesh
        .listeners
        .values()
        .next()
        .expect("listener")
        .clone();
    let rule = &mut listener.virtual_hosts[0].rules[0];
    assert_eq!(rule.name, "slow");
    rule.fault = Some(sluice_core::fault::config::FaultRule {
        rule: rule.name.clone(),
        matches: Vec::new(),
        delay: None,
        abort: None,
    });
    let err = sluice::xds::filters::PluginConfigs::of(&listener, &modelled.mesh, "listener_9080")
        .expect_err("a fault with neither delay nor abort");
    let d = err.into_diagnostic();
    assert_eq!(
        (
            d.file.as_str(),
            d.pos.line,
            d.resource.as_str(),
            d.path.to_string().as_str()
        ),
        ("mesh.yaml", 16, "VirtualService/reviews", "spec.http[0]"),
        "{d}"
    );
}
