//! Pure decisions: what to do given what was asked and what was observed, with the clock an
//! argument. Nothing here talks to Docker, a database or the API server; the callers act on the
//! answers.

pub mod analysis;
pub mod backup;
pub mod certificates;
pub mod heal;
pub mod history;
pub mod keys;
pub mod plan;
pub mod probe;
pub mod report;
pub mod rollback;
pub mod rollout;

#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod report_tests;
#[cfg(test)]
mod rollback_tests;
#[cfg(test)]
mod rollout_tests;
