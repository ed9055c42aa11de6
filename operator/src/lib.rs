//! stackwarden: a reconciling operator for Docker Compose stacks.
//!
//! Data flows one way: [`admit`] checks the whole spec and gives the project [`compose`] builds
//! from it; [`reconcile`] observes Docker ([`observe`]), asks the pure modules ([`decide`],
//! [`heal`], the planner) what to do, acts through [`docker`], the database clients in [`act`]
//! and the [`jobs`] registry, and reports through [`store`]. The [`driver`]s (kube, local) call
//! the reconcile; the reconcile never knows which one did.

pub mod act;
pub mod admit;
pub mod api;
pub mod backup;
pub mod build_context;
pub mod cli;
pub mod compose;
pub mod decide;
pub mod docker;
pub mod driver;
pub mod env_file;
pub mod jobs;
pub mod metrics;
pub mod observe;
pub mod probe;
pub mod reconcile;
pub mod store;

/// Makes `ring` the process's rustls crypto provider. The kube client and reqwest 0.13 (S3
/// through object_store) take the process default; installing it explicitly keeps a dependency
/// that compiles in a second provider from leaving rustls unable to choose, which panics at the
/// first TLS client. Idempotent: a provider already installed stays.
pub fn install_crypto_provider() {
    // Err only says a provider is already installed, which is the state wanted.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
