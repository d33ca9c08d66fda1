//! Target `compose` (in progress).

use std::collections::BTreeMap;

use crate::Options;
use crate::model::Mesh;

use super::envoy::{EmitError, Emitted};

/// Writes the docker-compose project for `mesh`.
pub fn emit(_mesh: &Mesh, _options: &Options) -> Result<Emitted, Vec<EmitError>> {
    Ok(Emitted {
        files: BTreeMap::new(),
    })
}
