//! slipway: plan, apply and check a Jenkins + ECR + EKS-on-Fargate delivery
//! platform on AWS, and drive its deployments.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod addr;
pub mod graph;
pub mod resource;
