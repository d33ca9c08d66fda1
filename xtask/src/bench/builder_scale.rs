//! The builder's scale figure: the time `sluice generate` takes on a synthetic mesh of many
//! services.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice_integration::envoy::Envoy;

use super::BuilderScale;
use super::report::median;

/// A synthetic mesh: `services` ServiceEntries with `subsets` labelled endpoints each, a
/// DestinationRule with the subsets, and a VirtualService with `rules` http routes (header
/// matches on subsets, the last one a 90/10 canary split).
pub fn synthetic_mesh(services: u32, subsets: u32, rules: u32) -> String {
    (0..services)
        .map(|i| synthetic_service(i, subsets, rules, &Variant::default()))
        .collect()
}

/// What the control-plane benches change in a [`synthetic_service`]; the default is the mesh
/// of [`synthetic_mesh`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Weight of subset v0 in the default route's canary split (v1 gets the rest).
    pub weight_v0: u32,
    /// Moves every endpoint address (EDS changes).
    pub address_shift: u32,
    /// Appended to every header value the rules match (the router's config changes).
    pub rule_suffix: String,
    /// The DestinationRule's `connectionPool.tcp.connectTimeout` (every cluster changes).
    pub connect_timeout: Option<String>,
}

impl Default for Variant {
    fn default() -> Self {
        Variant {
            weight_v0: 90,
            address_shift: 0,
            rule_suffix: String::new(),
            connect_timeout: None,
        }
    }
}

/// Service `i` of a synthetic mesh (`svc<i>`): its ServiceEntry, DestinationRule and
/// VirtualService, each document ended by `---`.
pub fn synthetic_service(i: u32, subsets: u32, rules: u32, variant: &Variant) -> String {
    let mut mesh = String::new();
    let (a, b) = (i / 250 + 8 * variant.address_shift, i % 250);
    let _ = write!(
        mesh,
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc{i}}}\n\
         spec:\n  hosts: [svc{i}]\n  ports: [{{number: 8000, name: http, protocol: HTTP}}]\n  \
         resolution: STATIC\n  endpoints:\n"
    );
    for s in 0..subsets {
        let _ = writeln!(
            mesh,
            "  - {{address: 10.{s}.{a}.{b}, labels: {{version: v{s}}}}}"
        );
    }
    let _ = write!(
        mesh,
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc{i}}}\n\
         spec:\n  host: svc{i}\n"
    );
    if let Some(timeout) = &variant.connect_timeout {
        let _ = writeln!(
            mesh,
            "  trafficPolicy: {{connectionPool: {{tcp: {{connectTimeout: {timeout}}}}}}}"
        );
    }
    let _ = writeln!(mesh, "  subsets:");
    for s in 0..subsets {
        let _ = writeln!(mesh, "  - {{name: v{s}, labels: {{version: v{s}}}}}");
    }
    let _ = write!(
        mesh,
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc{i}}}\n\
         spec:\n  hosts: [svc{i}]\n  http:\n"
    );
    for r in 0..rules.saturating_sub(1) {
        let s = r % subsets.max(1);
        let _ = writeln!(
            mesh,
            "  - match: [{{headers: {{end-user: {{exact: user{r}{}}}}}}}]\n    \
             route: [{{destination: {{host: svc{i}, subset: v{s}}}}}]",
            variant.rule_suffix
        );
    }
    let _ = writeln!(
        mesh,
        "  - route:\n    - {{destination: {{host: svc{i}, subset: v0}}, weight: {}}}\n    \
         - {{destination: {{host: svc{i}, subset: v1}}, weight: {}}}\n---",
        variant.weight_v0,
        100 - variant.weight_v0
    );
    mesh
}

/// The `sluice` CLI built in release (the profile users build), as the benches run it.
pub(super) fn release_binary() -> Result<PathBuf> {
    crate::run(crate::cargo(&["build", "--release", "-p", "sluice"]))?;
    Ok(crate::target_dir().join("release").join("sluice"))
}

pub(super) fn builder_scale(wasm_dir: &Path) -> Result<BuilderScale> {
    let shape = (1000, 3, 10);
    let binary = release_binary()?;
    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-mesh-")
        .tempdir()?;
    let input = dir.path().join("mesh.yaml");
    let mesh = synthetic_mesh(shape.0, shape.1, shape.2);
    std::fs::write(&input, &mesh)?;
    let out = dir.path().join("out");
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let output = Command::new(&binary)
            .args(["generate", "-f"])
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .arg("--wasm-dir")
            .arg(wasm_dir)
            .output()
            .context("run sluice generate")?;
        times.push(started.elapsed().as_secs_f64());
        if !output.status.success() {
            bail!(
                "sluice generate failed on the synthetic mesh:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    let mut output_bytes = 0;
    for entry in std::fs::read_dir(&out)? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            output_bytes += meta.len();
        }
    }
    let started = Instant::now();
    let validated = Envoy::validate(&out.join("envoy.yaml"))?;
    let validate = started.elapsed();
    if !validated.status.success() {
        bail!(
            "envoy --mode validate refused the generated mesh:\n{}",
            String::from_utf8_lossy(&validated.stderr)
        );
    }
    Ok(BuilderScale {
        shape,
        input_bytes: mesh.len() as u64,
        generate: Duration::from_secs_f64(median(&times)),
        output_bytes,
        validate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn synthetic_mesh_generates() {
        let mesh = synthetic_mesh(3, 3, 4);
        let inputs = sluice::Inputs::from_text("mesh.yaml", &mesh);
        let options = sluice::Options {
            wasm: sluice::WasmModules::Reference(PathBuf::from("/nonexistent")),
            ..sluice::Options::default()
        };
        let output = sluice::generate(&inputs, &options).unwrap_or_else(|d| panic!("{d}"));
        assert!(output.files.contains_key("envoy.yaml"));
    }
}
