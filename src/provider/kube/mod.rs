//! The Kubernetes side: connecting to the stack's cluster.

pub mod token;
