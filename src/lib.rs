//! slipway: plan, apply and check a Jenkins + ECR + EKS-on-Fargate delivery
//! platform on AWS, and drive its deployments.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod addr;
pub mod apply;
pub mod cli;
pub mod clock;
pub mod deploy;
pub mod drift;
pub mod env;
pub mod graph;
pub mod plan;
pub mod provider;
pub mod refresh;
pub mod render;
pub mod resource;
pub mod stack;
pub mod state;
pub mod ui;
