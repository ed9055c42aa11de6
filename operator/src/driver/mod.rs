//! Where the reconcile is called from. Each driver finds the ServiceStacks, feeds them to
//! [`crate::reconcile::reconcile`] (and [`crate::reconcile::cleanup`] when one is deleted),
//! and turns the reconcile's wakes ([`crate::reconcile::Wake`]: one stack, or every stack on an
//! engine) into passes due now:
//! - [`kube`]: kube-runtime's Controller over the API server, while this process holds the
//!   leader Lease; it writes through [`crate::store::kube::KubeStore`].
//! - [`local`]: manifest files polled on one machine; it writes through
//!   [`crate::store::local::LocalStore`].
//!
//! Leadership and shutdown belong here too: a driver that stops leading or is told to stop
//! calls [`crate::reconcile::Context::drain`] (no new work, running jobs finish) and then
//! [`crate::reconcile::Context::stop_all`].
//!
//! The reconcile never knows which driver called it; it sees only [`crate::store::Store`].

pub mod kube;
pub mod local;
