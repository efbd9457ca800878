//! verdict: a Kubernetes validating admission webhook that proves where container images
//! came from and lets Rego policies decide.

pub mod admission;
pub mod certs;
pub mod cli;
pub mod config;
pub mod decision;
pub mod decision_key;
pub mod images;
pub mod json;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod policy;
pub mod registry;
pub mod report;
pub mod review;
pub mod server;
pub mod setup;
mod slots;
pub mod verify;
