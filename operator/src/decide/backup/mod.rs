//! The pure half of backups: what a target should do next ([`plan`]), when its slots fall
//! ([`schedule`]), and which backups retention keeps ([`retention`]). `crate::backup` acts.

pub mod plan;
pub mod retention;
pub mod schedule;
