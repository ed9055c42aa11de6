//! stackwarden: a reconciling operator for Docker Compose stacks.
//!
//! `plan` decides, the edges act: [`compose`] turns a spec into a project, [`docker`] observes
//! and changes the engine, [`controller`] runs one reconcile for either [`store`] driver.

pub mod api;
pub mod backup;
pub mod cli;
pub mod compose;
pub mod controller;
pub mod docker;
pub mod heal;
pub mod metrics;
pub mod probe;
pub mod store;
