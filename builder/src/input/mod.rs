//! Stage 1, input: YAML with a position on every node, read into typed Istio, Kubernetes and
//! sluice-annotation resources, plus the options of the run. Nothing here reports a problem
//! beyond what reading needs (a document that does not parse); every judgement is
//! [`crate::check`]'s.
//!
//! May import: the leaves ([`crate::diag`], [`crate::position`], [`crate::output`]).

pub mod annotations;
pub mod istio;
pub mod kube;
pub mod locality;
pub mod native;
pub mod options;
pub mod parse;
pub mod probe;
pub mod tcp;
pub mod yaml;
