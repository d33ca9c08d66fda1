//! Target `istio` (in progress).

use std::collections::BTreeMap;

use crate::model::Mesh;
use crate::parse::Resource;

use super::envoy::{EmitError, Emitted};

/// Options of the istio target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IstioOptions {}

/// Writes the Istio manifests for `mesh`.
pub fn emit(
    _resources: &[Resource],
    _mesh: &Mesh,
    _options: &IstioOptions,
) -> Result<Emitted, Vec<EmitError>> {
    Ok(Emitted {
        files: BTreeMap::new(),
    })
}
