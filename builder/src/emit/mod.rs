//! Stage 4: the model written out for a target. Each target is one module here; adding a
//! target (istio, compose) is one more module and one more [`crate::Target`] arm.

pub mod compose;
pub mod envoy;
pub mod istio_target;
pub mod yaml_out;
