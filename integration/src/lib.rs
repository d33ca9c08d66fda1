//! Test harness for sluice: a real Envoy process and in-process upstreams.
