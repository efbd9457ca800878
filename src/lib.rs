//! verdict: a Kubernetes validating admission webhook that proves where container images
//! came from and lets Rego policies decide.
//!
//! # Layers
//! Every arrow points down: a module imports only modules of a lower layer (and its own
//! rooms). `tests/layers.rs` holds the tree to this list, bottom first.
//! 1. Leaves, value types with no verdict imports: `json` (borrowed JSON and the pruned
//!    parse), `decision` (reason codes, findings), `certs` (certificates), `slots`.
//! 2. `decision_key` (the key findings are remembered under), `images` (references,
//!    digests, registry hosts, where a pod spec keeps its images), `logging` (the
//!    decision log).
//! 3. `metrics` (the explicit registry of series), `admission` (reading and answering
//!    AdmissionReviews), `manifest` (documents given to `verdict check`).
//! 4. `registry`: moving bytes from OCI registries.
//! 5. `cluster`: the Kubernetes API (the synced inventory).
//! 6. `verify`: what is proven about each image (signatures, attestations, caches).
//! 7. `policy`: Rego policies, their input and remembered decisions.
//! 8. `config`: the settings of every command.
//! 9. `review`: conducts one review (admission → images → verify → policy → decision).
//! 10. `report` (findings for people) and `setup` (wiring a reviewer from settings).
//! 11. `audit`: judging what already runs in the cluster.
//! 12. `server`: HTTPS, the metrics port, reloads.
//! 13. `cli`, on top.

pub mod admission;
pub mod audit;
pub mod certs;
pub mod cli;
pub mod cluster;
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
