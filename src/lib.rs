//! verdict: a Kubernetes validating admission webhook that proves where container images
//! came from and lets Rego policies decide.

pub mod decision;
pub mod images;
pub mod policy;
