//! The builder from text to a validated model and an emitted config (nothing is written):
//! whatever the YAML, `generate` returns Ok or diagnostics, never panics or hangs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::{Inputs, Options, WasmModules, generate};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let options = Options {
        wasm: WasmModules::Reference("wasm".into()),
        ..Options::default()
    };
    if let Err(diags) = generate(&Inputs::from_text("fuzz.yaml", text), &options) {
        let _ = diags.to_string();
    }
});
