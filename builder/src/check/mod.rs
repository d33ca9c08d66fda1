//! Stage 2, check: per-resource and cross-resource validation of the input, producing
//! positioned diagnostics (file:line:col, resource, field path). Checks that need the resolved
//! mesh (references resolved, credentials read) live with the model that resolves them.
//!
//! May import: [`crate::input`] and the leaves.

pub mod locality;
pub mod native;
pub mod settings;
pub mod shadow;
pub mod tcp;
pub mod validate;
