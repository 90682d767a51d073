//! The command line: clap definitions and one file per verb. This is the
//! only layer that uses `anyhow`.

mod apply;
mod common;
mod deploy;
mod drift;
mod graph;
mod import;
mod interrupt;
mod plan;
mod state;
mod teardown;
mod validate;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::ui::{Printer, Verbosity};

/// How a command ended; the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success; for `plan --detailed-exitcode` and `drift`: nothing changed.
    Ok = 0,
    /// An error (printed on stderr).
    Error = 1,
    /// `plan --detailed-exitcode`: changes pending; `drift`: drift found.
    Changes = 2,
    /// The run was interrupted by SIGINT/SIGTERM after saving state.
    Interrupted = 130,
}

#[derive(Debug, Parser)]
#[command(
    name = "slipway",
    version,
    about = "Provision and drive a Jenkins + ECR + EKS-on-Fargate delivery platform on AWS",
    long_about = None,
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every verb takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The stack file [default: the only `stacks/*.toml`]
    #[arg(long, global = true, value_name = "FILE")]
    pub stack: Option<PathBuf>,
    /// The state file [default: `state/<stack>.json` next to `stacks/`]
    #[arg(long, global = true, value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// Say more (repeatable)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only print results and errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Connect to Kubernetes with this kubeconfig (its current context)
    /// instead of through the stack's EKS cluster
    #[arg(long, global = true, value_name = "PATH", env = "SLIPWAY_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Machine-readable output on stdout (see docs/json.md)
    #[arg(long, global = true)]
    pub json: bool,
    /// Never colour output (also: the NO_COLOR environment variable)
    #[arg(long, global = true)]
    pub no_color: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the stack file offline
    Validate,
    /// Print the resource dependency graph as Graphviz DOT
    Graph,
    /// Refresh live state and show what apply would do
    Plan(plan::PlanArgs),
    /// Execute a fresh plan, or a plan saved with `plan --out`
    Apply(apply::ApplyArgs),
    /// Delete the whole stack, or one environment with `--env`
    Destroy(apply::DestroyArgs),
    /// Report what changed outside slipway (read-only; for cron)
    Drift(drift::DriftArgs),
    /// Deploy a branch's image to its environment (the pipeline's deploy stage)
    Deploy(deploy::DeployArgs),
    /// Put the exact image running in one environment into another
    Promote(deploy::PromoteArgs),
    /// Redeploy an environment's previous release
    Rollback(deploy::RollbackArgs),
    /// List an environment's release history (kept in the cluster)
    Releases(deploy::ReleasesArgs),
    /// Print the multibranch Jenkinsfile that runs this stack's pipeline
    Jenkinsfile(deploy::JenkinsfileArgs),
    /// Adopt an object the stack declares that exists but is not in the state
    Import(import::ImportArgs),
    /// Inspect the state and its lock
    #[command(subcommand)]
    State(state::StateCommand),
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Exit {
    let verbosity = if cli.global.quiet {
        Verbosity::Quiet
    } else if cli.global.verbose > 0 {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let printer = Printer::new(verbosity, cli.global.no_color, cli.global.json);
    let ctx = common::Ctx {
        printer: printer.clone(),
        global: &cli.global,
    };
    let result = match &cli.command {
        Command::Validate => validate::run(&ctx),
        Command::Graph => graph::run(&ctx),
        Command::Plan(args) => plan::run(&ctx, args).await,
        Command::Apply(args) => apply::run_apply(&ctx, args).await,
        Command::Destroy(args) => apply::run_destroy(&ctx, args).await,
        Command::Drift(args) => drift::run(&ctx, args).await,
        Command::Deploy(args) => deploy::run_deploy(&ctx, args).await,
        Command::Promote(args) => deploy::run_promote(&ctx, args).await,
        Command::Rollback(args) => deploy::run_rollback(&ctx, args).await,
        Command::Releases(args) => deploy::run_releases(&ctx, args).await,
        Command::Jenkinsfile(args) => deploy::run_jenkinsfile(&ctx, args),
        Command::Import(args) => import::run(&ctx, args).await,
        Command::State(cmd) => state::run(&ctx, cmd),
    };
    match result {
        Ok(exit) => exit,
        Err(err) => {
            common::report_error(&printer, &err);
            Exit::Error
        }
    }
}
