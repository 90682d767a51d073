//! `slipway deploy`, `promote`, `rollback`, `releases` and `jenkinsfile`:
//! the pipeline's deploy stage. Exit 0 on success, 1 on failure or refusal.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use serde_json::{Value, json};

use super::Exit;
use super::common::{Ctx, hinted};
use crate::deploy::history::{Kind, Release};
use crate::deploy::{self, Deployer, Done, ImageRef, Report, Request};
use crate::ui::{Paint, Printer};

fn duration(s: &str) -> Result<Duration, String> {
    crate::clock::parse_duration(s)
}

/// A git commit id: 7 to 40 hex digits (the promotion tag takes its first 7).
fn commit_sha(s: &str) -> Result<String, String> {
    if (7..=40).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("`{s}` is not a git commit id (7 to 40 hex digits)"))
    }
}

/// Options every releasing verb shares.
#[derive(Debug, Args)]
pub struct ReleaseOpts {
    /// How long to wait for the rollout and healthy load balancer targets
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = duration)]
    pub timeout: Duration,
    /// How long to wait for another deploy to the same environment to finish
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = duration)]
    pub lock_timeout: Duration,
    /// Show the server-side dry-run diff against the cluster; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The git branch that was built; picks the environment from the stack
    #[arg(long, value_name = "BRANCH", required_unless_present = "env")]
    pub branch: Option<String>,
    /// The environment, instead of (or checked against) the branch's
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// The image's tag in the stack's ECR repository
    #[arg(long, value_name = "TAG", required_unless_present = "image_digest")]
    pub image_tag: Option<String>,
    /// The image's digest (`sha256:…`), instead of or checked against the tag
    #[arg(long, value_name = "DIGEST")]
    pub image_digest: Option<String>,
    /// The git commit the image was built from (recorded)
    #[arg(long, value_name = "SHA", value_parser = commit_sha)]
    pub commit: Option<String>,
    /// Deploy even if the promotion policy refuses (asks on a terminal; recorded)
    #[arg(long)]
    pub force: bool,
    /// Why `--force` (recorded in the release history)
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Do not ask for confirmation (protected environments, `--force`)
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub opts: ReleaseOpts,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The environment whose current release is promoted
    #[arg(long, value_name = "NAME")]
    pub from: String,
    /// The environment it goes to
    #[arg(long, value_name = "NAME")]
    pub to: String,
    /// Do not ask for confirmation when the target is protected
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub opts: ReleaseOpts,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The environment to roll back
    #[arg(long, value_name = "NAME")]
    pub env: String,
    /// The revision to go back to [default: the one before the current]
    #[arg(long, value_name = "REVISION")]
    pub to: Option<u64>,
    /// Do not ask for confirmation when the environment is protected
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub opts: ReleaseOpts,
}

#[derive(Debug, Args)]
pub struct ReleasesArgs {
    /// The environment
    #[arg(long, value_name = "NAME")]
    pub env: String,
}

#[derive(Debug, Args)]
pub struct JenkinsfileArgs {
    /// The application's directory in the repository Jenkins builds
    #[arg(long, value_name = "DIR", default_value = "examples/flask-app")]
    pub app_dir: String,
}

/// Progress: a line per step; waits redraw one line on a terminal and
/// print timestamped lines otherwise, when what is awaited changes or
/// every progress interval.
struct Reporter {
    printer: Printer,
    tty: bool,
    last: Mutex<(String, Instant)>,
    every: Duration,
}

impl Reporter {
    fn new(printer: &Printer) -> Self {
        let every = crate::env::progress_interval_opt()
            .ok()
            .flatten()
            .unwrap_or(Duration::from_secs(30));
        Reporter {
            printer: printer.clone(),
            tty: printer.progress_bars() && std::io::stdout().is_terminal(),
            last: Mutex::new((String::new(), Instant::now())),
            every,
        }
    }

    fn clear(&self) {
        if self.tty {
            self.printer.info_inline("");
        }
    }
}

impl Report for Reporter {
    fn step(&self, text: &str) {
        self.clear();
        if self.tty {
            self.printer.info(text);
        } else {
            self.printer
                .info(&format!("{} {text}", crate::clock::now_hms()));
        }
    }

    fn waiting(&self, text: &str) {
        if self.tty {
            self.printer.info_inline(&format!("… {text}"));
            return;
        }
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.0 != text || last.1.elapsed() >= self.every {
            *last = (text.to_string(), Instant::now());
            self.printer
                .info(&format!("{} … {text}", crate::clock::now_hms()));
        }
    }
}

/// What the deploy stage's verbs work with: the stack and connections to
/// its ECR, load balancers and cluster.
struct Session {
    stack: crate::stack::Stack,
    aws: crate::provider::aws::DeployAws,
    kube: crate::provider::kube::KubeProvider,
    reporter: Reporter,
}

impl Session {
    async fn open(ctx: &Ctx<'_>) -> Result<Self> {
        use crate::provider::aws::AwsProvider;
        use crate::provider::kube::{Connection, KubeProvider};
        let stack = ctx.load_stack()?;
        let aws = AwsProvider::connect(stack.name(), stack.region()).await?;
        let connection = match &ctx.global.kubeconfig {
            Some(path) => Connection::Kubeconfig(path.clone()),
            None => Connection::eks(&aws, stack.cluster_name(), stack.region()),
        };
        Ok(Session {
            aws: aws.deploy_clients(),
            kube: KubeProvider::new(connection),
            reporter: Reporter::new(&ctx.printer),
            stack,
        })
    }

    /// The deployer; Ctrl-C and SIGTERM stop its waits.
    fn deployer(&self) -> Deployer<'_> {
        let d = Deployer::new(&self.stack, &self.kube, self.aws.clone(), &self.reporter);
        on_interrupt(d.cancel_handle());
        d
    }
}

/// Ctrl-C or SIGTERM stops the deploy's waits; it then records the release
/// as failed and releases the lock before exiting.
fn on_interrupt(cancel: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        cancel.store(true, std::sync::atomic::Ordering::SeqCst);
    });
}

fn request(environment: &str, image: ImageRef, opts: &ReleaseOpts) -> Request {
    Request {
        environment: environment.to_string(),
        image,
        kind: Kind::Deploy,
        branch: None,
        commit: None,
        force: false,
        reason: None,
        promoted_from: None,
        rollback_to: None,
        dry_run: opts.dry_run,
        timeout: opts.timeout,
        lock_timeout: opts.lock_timeout,
    }
}

/// Asks on a terminal; without one, `--yes` is needed.
fn confirm(ctx: &Ctx<'_>, yes: bool, question: &str, flag_hint: &str) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(hinted(
            format!("{question} (no terminal to ask on)"),
            flag_hint.to_string(),
        ));
    }
    if ctx.printer.confirm(question) {
        Ok(())
    } else {
        Err(hinted(
            "not confirmed; nothing was done",
            flag_hint.to_string(),
        ))
    }
}

pub async fn run_deploy(ctx: &Ctx<'_>, args: &DeployArgs) -> Result<Exit> {
    let session = Session::open(ctx).await?;
    let d = session.deployer();
    let env = match (&args.branch, &args.env) {
        (Some(b), Some(e)) => {
            let by_branch = d.environment_for_branch(b)?;
            if by_branch.name() != e {
                return Err(hinted(
                    format!("branch `{b}` deploys to `{}`, not `{e}`", by_branch.name()),
                    "drop `--env`, or deploy the branch that environment takes",
                ));
            }
            by_branch
        }
        (Some(b), None) => d.environment_for_branch(b)?,
        (None, Some(e)) => d.environment(e)?,
        (None, None) => {
            return Err(hinted(
                "say where to deploy",
                "pass `--branch BRANCH` or `--env NAME`",
            ));
        }
    };
    if args.force {
        let Some(reason) = args.reason.as_deref().filter(|r| !r.trim().is_empty()) else {
            return Err(hinted(
                "`--force` needs `--reason TEXT`: overriding the promotion policy is recorded with why",
                "add `--reason \"…\"`",
            ));
        };
        if !args.opts.dry_run {
            confirm(
                ctx,
                args.yes,
                &format!(
                    "Deploy to `{}` overriding its promotion policy ({reason})?",
                    env.name()
                ),
                "add `--yes` to override the policy without a terminal",
            )?;
        }
    }
    if env.protected() && !args.opts.dry_run {
        confirm(
            ctx,
            args.yes,
            &format!("`{}` is a protected environment. Deploy to it?", env.name()),
            "add `--yes` to deploy to a protected environment without a terminal",
        )?;
    }
    let mut req = request(
        env.name(),
        ImageRef {
            tag: args.image_tag.clone(),
            digest: args.image_digest.clone(),
        },
        &args.opts,
    );
    req.branch = args
        .branch
        .clone()
        .or_else(|| Some(env.branch().to_string()));
    req.commit = args.commit.clone();
    req.force = args.force;
    req.reason = args.reason.clone();
    finish(ctx, &session.stack, d.release(&req).await)
}

pub async fn run_promote(ctx: &Ctx<'_>, args: &PromoteArgs) -> Result<Exit> {
    let session = Session::open(ctx).await?;
    let d = session.deployer();
    let target = d.environment(&args.to)?;
    d.environment(&args.from)?;
    if target.protected() && !args.opts.dry_run {
        confirm(
            ctx,
            args.yes,
            &format!(
                "Promote `{}`'s current release to protected environment `{}`?",
                args.from, args.to
            ),
            "add `--yes` to promote to a protected environment without a terminal",
        )?;
    }
    let req = request(&args.to, ImageRef::default(), &args.opts);
    finish(
        ctx,
        &session.stack,
        d.promote(&args.from, &args.to, req).await,
    )
}

pub async fn run_rollback(ctx: &Ctx<'_>, args: &RollbackArgs) -> Result<Exit> {
    let session = Session::open(ctx).await?;
    let d = session.deployer();
    let env = d.environment(&args.env)?;
    if env.protected() && !args.opts.dry_run {
        confirm(
            ctx,
            args.yes,
            &format!("Roll back protected environment `{}`?", env.name()),
            "add `--yes` to roll back a protected environment without a terminal",
        )?;
    }
    let req = request(&args.env, ImageRef::default(), &args.opts);
    finish(ctx, &session.stack, d.rollback(args.to, req).await)
}

fn finish(
    ctx: &Ctx<'_>,
    stack: &crate::stack::Stack,
    done: Result<Done, deploy::DeployError>,
) -> Result<Exit> {
    let p = &ctx.printer;
    let done = match done {
        Err(deploy::DeployError::Interrupted) => {
            p.error(&deploy::DeployError::Interrupted.to_string(), &[], None);
            return Ok(Exit::Interrupted);
        }
        other => other,
    };
    match done? {
        Done::Released(r) => {
            if p.json() {
                p.out(&json!({"format_version": crate::render::json::JSON_FORMAT_VERSION, "release": release_json(&r)}).to_string());
            } else {
                p.out(&format!(
                    "{} release {} of `{}`: {} ({})",
                    p.paint(Paint::Green, "Deployed"),
                    r.revision,
                    r.environment,
                    r.image,
                    r.address
                        .as_deref()
                        .map(|a| format!("http://{a}"))
                        .unwrap_or_else(|| "no load balancer".into())
                ));
            }
        }
        Done::DryRun(dry) => {
            if p.json() {
                let changes: Vec<Value> = dry
                    .changes
                    .iter()
                    .map(|(o, d)| json!({"object": o, "changed": d.is_some(), "diff": d}))
                    .collect();
                p.out(&json!({"format_version": crate::render::json::JSON_FORMAT_VERSION, "dry_run": true, "digest": dry.digest, "changes": changes, "prune": dry.prune}).to_string());
            } else {
                let mut text = String::new();
                for (obj, diff) in &dry.changes {
                    match diff {
                        None => text.push_str(&format!("  {obj}: unchanged\n")),
                        Some(lines) => {
                            text.push_str(&format!("{} {obj}\n", p.paint(Paint::Yellow, "~")));
                            for l in lines {
                                let paint = if l.starts_with('+') {
                                    Paint::Green
                                } else if l.starts_with('-') {
                                    Paint::Red
                                } else {
                                    Paint::Dim
                                };
                                text.push_str(&format!("    {}\n", p.paint(paint, l)));
                            }
                        }
                    }
                }
                for obj in &dry.prune {
                    text.push_str(&format!(
                        "{} {obj} (pruned: no longer rendered)\n",
                        p.paint(Paint::Red, "-")
                    ));
                }
                text.push_str(&format!(
                    "Dry run of stack `{}`: nothing was changed.",
                    stack.name()
                ));
                p.out(&text);
            }
        }
    }
    Ok(Exit::Ok)
}

fn release_json(r: &Release) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}

pub async fn run_releases(ctx: &Ctx<'_>, args: &ReleasesArgs) -> Result<Exit> {
    let session = Session::open(ctx).await?;
    let d = session.deployer();
    let env = d.environment(&args.env)?;
    let history = d.history(env).await?;
    let p = &ctx.printer;
    if p.json() {
        let list: Vec<Value> = history.iter().map(release_json).collect();
        p.out(&json!({"format_version": crate::render::json::JSON_FORMAT_VERSION, "environment": env.name(), "releases": list}).to_string());
        return Ok(Exit::Ok);
    }
    if history.is_empty() {
        p.out(&format!(
            "Environment `{}` has no releases yet.",
            env.name()
        ));
        return Ok(Exit::Ok);
    }
    let mut text = format!(
        "{:<4} {:<9} {:<12} {:<9} {:<19} {:<20} {:<14} {}\n",
        "REV", "KIND", "RESULT", "VERIFIED", "DIGEST", "FINISHED", "TAG", "BY"
    );
    for r in &history {
        let kind = match r.kind {
            Kind::Deploy => "deploy",
            Kind::Promote => "promote",
            Kind::Rollback => "rollback",
        };
        let mut by = format!("{}@{}", r.user, r.host);
        if let Some(u) = &r.build_url {
            by.push_str(&format!(" {u}"));
        }
        if r.forced {
            by.push_str(&format!(
                " FORCED: {}",
                r.reason.as_deref().unwrap_or("no reason")
            ));
        }
        if let Some(src) = &r.promoted_from {
            by.push_str(&format!(" (from {} r{})", src.environment, src.revision));
        }
        if let Some(to) = r.rollback_to {
            by.push_str(&format!(" (to r{to})"));
        }
        text.push_str(&format!(
            "{:<4} {:<9} {:<12} {:<9} {:<19} {:<20} {:<14} {}\n",
            r.revision,
            kind,
            r.result.as_str(),
            if r.verified { "yes" } else { "no" },
            r.digest.chars().take(19).collect::<String>(),
            r.finished_at.as_deref().unwrap_or("-"),
            r.tag.as_deref().unwrap_or("-"),
            by
        ));
    }
    p.out(text.trim_end());
    Ok(Exit::Ok)
}

pub fn run_jenkinsfile(ctx: &Ctx<'_>, args: &JenkinsfileArgs) -> Result<Exit> {
    let path = ctx.stack_path()?;
    let stack = crate::stack::Stack::load(&path)?;
    let shown = path.display().to_string();
    ctx.printer
        .out(&deploy::jenkinsfile::render(&stack, &shown, &args.app_dir));
    Ok(Exit::Ok)
}
