//! The builder's scale figure: the time `sluice generate` takes on a synthetic mesh of many
//! services.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice_integration::envoy::Envoy;

use super::BuilderScale;
use super::report::median;

/// A synthetic mesh: `services` ServiceEntries with `subsets` labelled endpoints each, a
/// DestinationRule with the subsets, and a VirtualService with `rules` http routes (header
/// matches on subsets, the last one a default).
pub fn synthetic_mesh(services: u32, subsets: u32, rules: u32) -> String {
    let mut mesh = String::new();
    for i in 0..services {
        let (a, b) = (i / 250, i % 250);
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
             spec:\n  host: svc{i}\n  subsets:\n"
        );
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
                "  - match: [{{headers: {{end-user: {{exact: user{r}}}}}}}]\n    \
                 route: [{{destination: {{host: svc{i}, subset: v{s}}}}}]"
            );
        }
        let _ = writeln!(
            mesh,
            "  - route:\n    - {{destination: {{host: svc{i}, subset: v0}}, weight: 90}}\n    \
             - {{destination: {{host: svc{i}, subset: v1}}, weight: 10}}\n---"
        );
    }
    mesh
}

pub(super) fn builder_scale(wasm_dir: &Path) -> Result<BuilderScale> {
    let shape = (1000, 3, 10);
    crate::run(crate::cargo(&["build", "--release", "-p", "sluice"]))?;
    let binary = crate::target_dir().join("release").join("sluice");
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
