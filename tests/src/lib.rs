//! Support for stackwarden's end-to-end tests and benchmarks: the test images and the demo app.
//!
//! Modules that use the operator crate (`stackwarden`) must be declared with
//! `#[cfg(feature = "operator")]`: the demo-app image is built without that feature.

pub mod demo;
#[cfg(feature = "operator")]
pub mod harness;
pub mod images;
pub mod s3;
#[cfg(feature = "operator")]
pub mod trap;
