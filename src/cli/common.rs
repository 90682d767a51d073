//! What the verbs share: finding the stack and state, choosing providers,
//! making plans, and printing errors with hints.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};

use super::Global;
use crate::plan::{self, Mode, PLAN_FORMAT_VERSION, Plan, PlanInput, StackRef};
use crate::provider::Providers;
use crate::provider::aws::{AwsProvider, AwsSetupError};
use crate::provider::fake::FakeProvider;
use crate::provider::kube::{Connection, KubeProvider};
use crate::provider::tls::TlsProvider;
use crate::refresh::{self, Refreshed};
use crate::resource::Desired;
use crate::stack::Stack;
use crate::stack::StateBackend;
use crate::state::{Backend, LocalBackend, LockError, S3Backend, State, StateError};
use crate::ui::Printer;

/// The run's settings.
pub struct Ctx<'a> {
    pub printer: Printer,
    pub global: &'a Global,
}

/// An error with a suggested next step.
#[derive(Debug)]
pub struct Hinted {
    pub message: String,
    pub hint: String,
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

pub fn hinted(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        message: message.into(),
        hint: hint.into(),
    })
}

/// Prints `error: …`, one `caused by:` per cause, and a hint when there is one.
pub fn report_error(printer: &Printer, err: &anyhow::Error) {
    let causes: Vec<String> = err.chain().skip(1).map(ToString::to_string).collect();
    let hint = err.chain().find_map(|e| {
        if let Some(h) = e.downcast_ref::<Hinted>() {
            return Some(h.hint.clone());
        }
        if let Some(l) = e.downcast_ref::<LockError>() {
            return l.hint();
        }
        if let Some(s) = e.downcast_ref::<StateError>() {
            return s.hint();
        }
        if let Some(d) = e.downcast_ref::<crate::deploy::DeployError>() {
            return d.hint();
        }
        if let Some(a) = e.downcast_ref::<AwsSetupError>() {
            return Some(a.hint().to_string());
        }
        None
    });
    printer.error(&err.to_string(), &causes, hint.as_deref());
}

impl Ctx<'_> {
    /// The stack file: `--stack`, or the only `stacks/*.toml`.
    pub fn stack_path(&self) -> Result<PathBuf> {
        if let Some(p) = &self.global.stack {
            return Ok(p.clone());
        }
        let dir = Path::new("stacks");
        let mut found: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect(),
            Err(_) => Vec::new(),
        };
        found.sort();
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(hinted(
                "no stack file given and no `stacks/*.toml` in the current directory",
                "pass `--stack FILE`, or run slipway from the directory that holds `stacks/`",
            )),
            _ => Err(hinted(
                format!(
                    "several stack files in `stacks/` ({}); slipway will not guess",
                    found
                        .iter()
                        .map(|p| format!("`{}`", p.display()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "pass `--stack FILE`",
            )),
        }
    }

    pub fn load_stack(&self) -> Result<Stack> {
        let path = self.stack_path()?;
        Ok(Stack::load(&path)?)
    }

    /// Where the stack's state is: `--state PATH` (a local file, whatever
    /// the stack says), else the stack's `[state]`: `state/<stack>.json` in
    /// the project directory, or its S3 object.
    pub fn backend(&self, stack: &Stack) -> Result<Backend> {
        match (&self.global.state, stack.state_backend()) {
            (Some(_), _) | (None, StateBackend::Local) => {
                Ok(Backend::Local(self.local_backend(stack)))
            }
            (None, StateBackend::S3(at)) => Ok(Backend::S3(Box::new(S3Backend::new(at.clone())?))),
        }
    }

    /// The local state file: `--state`, or `state/<stack>.json`.
    pub fn local_backend(&self, stack: &Stack) -> LocalBackend {
        match &self.global.state {
            Some(p) => LocalBackend::new(p),
            None => LocalBackend::new(
                stack
                    .project_root()
                    .join("state")
                    .join(format!("{}.json", stack.name())),
            ),
        }
    }

    /// The providers for this run: AWS for the kinds it manages (through the
    /// standard credential chain, honouring `AWS_ENDPOINT_URL`), Kubernetes
    /// through the stack's EKS cluster or an explicit kubeconfig, local TLS;
    /// and the simulated cloud when `SLIPWAY_FAKE_CLOUD` is set — for every
    /// kind, or for the kind prefixes listed in `SLIPWAY_FAKE_KINDS`.
    /// With the AWS and Kubernetes providers also by type (none under the
    /// simulated cloud alone). AWS's identity check is under way, not done:
    /// a run's first calls go through [`Platform::gated`].
    pub async fn platform(&self, stack: &Stack) -> Result<Platform> {
        let fake = match crate::env::fake_cloud_opt() {
            Some(path) => {
                self.printer.debug(&format!(
                    "using the simulated cloud at `{}`",
                    path.display()
                ));
                let p: Arc<dyn crate::provider::Provider> =
                    Arc::new(FakeProvider::open(stack.name(), &path)?);
                match crate::env::fake_kinds_opt() {
                    None => {
                        return Ok(Platform {
                            providers: Providers::new().with("", p),
                            aws: None,
                            kube: None,
                            connected: None,
                        });
                    }
                    Some(prefixes) => Some((p, prefixes)),
                }
            }
            None => None,
        };
        let aws = AwsProvider::connect(stack.name(), stack.region()).await?;
        let connection = match &self.global.kubeconfig {
            Some(path) => Connection::Kubeconfig(path.clone()),
            None => Connection::eks(&aws, stack.cluster_name(), stack.region()),
        };
        let aws = Arc::new(aws);
        let kube = Arc::new(KubeProvider::new(connection));
        let dyn_aws: Arc<dyn crate::provider::Provider> = aws.clone();
        let mut providers = Providers::new()
            .with("k8s.", kube.clone())
            .with("tls.", Arc::new(TlsProvider));
        for kind in crate::provider::aws::KINDS {
            providers = providers.with(kind, dyn_aws.clone());
        }
        let faked = |prefix: &str| {
            fake.as_ref().is_some_and(|(_, prefixes)| {
                prefixes.iter().any(|p| prefix.starts_with(p.as_str()))
            })
        };
        let connected = Some(aws.clone());
        let (aws, kube) = (
            (!faked("aws.")).then_some(aws),
            (!faked("k8s.")).then_some(kube),
        );
        if let Some((fake, prefixes)) = fake {
            for prefix in prefixes {
                providers = providers.with(&prefix, fake.clone());
            }
        }
        Ok(Platform {
            providers,
            aws,
            kube,
            connected,
        })
    }
}

/// The providers of a run, and the AWS and Kubernetes ones by type for what
/// goes beyond resources (drift's check of the controller's load
/// balancers, an environment's teardown). `None` where the simulated cloud
/// stands in.
pub struct Platform {
    pub providers: Providers,
    pub aws: Option<Arc<AwsProvider>>,
    pub kube: Option<Arc<KubeProvider>>,
    /// The AWS connection whose identity check [`Self::gated`] waits for.
    connected: Option<Arc<AwsProvider>>,
}

impl Platform {
    /// `work` (a run's first calls) beside AWS's identity check: when STS
    /// refuses the credentials, that is the error, whatever `work` says —
    /// its reads fail for the same reason, less clearly.
    pub async fn gated<T>(
        &self,
        printer: &Printer,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let Some(aws) = &self.connected else {
            return work.await;
        };
        let (me, out) = aws.gated(work).await?;
        printer.debug(&format!("AWS account {} as {}", me.account, me.arn));
        Ok(out)
    }
}

pub fn load_state(backend: &Backend, stack: &Stack) -> Result<Option<State>> {
    let state = backend.load_opt(stack.name())?;
    // Switched to S3 but not migrated: planning from nothing would
    // recreate (and lose track of) everything the local state tracks.
    if state.is_none()
        && let Backend::S3(s3) = backend
    {
        let local = stack
            .project_root()
            .join("state")
            .join(format!("{}.json", stack.name()));
        if local.exists() {
            return Err(hinted(
                format!(
                    "the stack keeps its state in {}, which has none yet, but `{}` holds a local state for it",
                    s3.location().url(),
                    local.display()
                ),
                "move it there first: `slipway state migrate --to s3` (docs/state.md); nothing was planned",
            ));
        }
    }
    Ok(state)
}

/// Refreshes and plans.
pub async fn make_plan(
    ctx: &Ctx<'_>,
    providers: &Providers,
    stack: &Stack,
    desired: &Desired,
    state: Option<&State>,
    mode: Mode,
) -> Result<Plan> {
    Ok(
        refresh_and_plan(ctx, providers, stack, desired, state, mode, false)
            .await?
            .0,
    )
}

/// What a refresh found besides the plan: for `drift`.
pub struct RefreshInfo {
    /// What the load balancer controller made for the stack's cluster.
    pub controller: Vec<crate::provider::ControllerMade>,
    /// State addresses read.
    pub checked: usize,
    pub read_time: std::time::Duration,
    pub discover_time: std::time::Duration,
}

/// Refreshes — `thorough`ly for `drift` — and plans; the stack's
/// `[drift] ignore` marks accepted drift.
pub async fn refresh_and_plan(
    ctx: &Ctx<'_>,
    providers: &Providers,
    stack: &Stack,
    desired: &Desired,
    state: Option<&State>,
    mode: Mode,
    thorough: bool,
) -> Result<(Plan, RefreshInfo)> {
    let unmanageable: Vec<String> = desired
        .resources()
        .keys()
        .filter(|a| providers.for_addr(a).is_err())
        .map(|a| a.kind_key())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|k| format!("`{k}`"))
        .collect();
    if !unmanageable.is_empty() {
        return Err(hinted(
            format!(
                "this version of slipway cannot manage {} resources yet",
                unmanageable.join(", ")
            ),
            "every kind slipway plans has a provider, so this is a bug in slipway; please report it with the stack file",
        ));
    }
    let empty = State::new(stack.name());
    let prior = state.unwrap_or(&empty);
    let started = std::time::Instant::now();
    let Refreshed {
        live,
        discovered,
        read_time,
        discover_time,
    } = refresh::refresh(providers, prior, thorough).await?;
    ctx.printer.debug(&format!(
        "refreshed {} resource(s) in {:.2}s",
        live.len(),
        started.elapsed().as_secs_f64()
    ));
    let (changes, mut drift) = plan::plan(&PlanInput {
        desired,
        prior: prior.resources(),
        live: &live,
        discovered: &discovered,
        mode: &mode,
    })?;
    crate::drift::ignore::apply(&mut drift, stack.drift_ignore());
    let info = RefreshInfo {
        controller: discovered.controller,
        checked: live.len(),
        read_time,
        discover_time,
    };
    let plan = Plan {
        format_version: PLAN_FORMAT_VERSION,
        id: uuid::Uuid::new_v4().to_string(),
        created_at: crate::clock::now_rfc3339(),
        slipway_version: env!("CARGO_PKG_VERSION").to_string(),
        stack: StackRef {
            name: stack.name().to_string(),
            path: stack.path().display().to_string(),
            sha256: stack.source_sha256().to_string(),
        },
        mode,
        state_lineage: state.map(|s| s.lineage().to_string()),
        state_serial: state.map(State::serial),
        refreshed: live,
        changes,
        drift,
    };
    Ok((plan, info))
}

/// Writes a plan for `apply FILE` (mode 0600: it holds live attributes).
/// Secrets — the attributes a kind marks sensitive, such as the webhook's
/// TLS key — are written as the sensitive placeholder; [`restore_secrets`]
/// puts them back from the state and the stack when the plan is applied.
pub fn save_plan(plan: &Plan, path: &Path) -> Result<()> {
    let mut plan = plan.clone();
    redact_secrets(&mut plan);
    let text = serde_json::to_string_pretty(&plan).context("cannot serialise the plan")?;
    crate::state::local::write_atomic(path, text.as_bytes())?;
    Ok(())
}

fn sensitive_attrs(addr: &crate::addr::Address) -> &'static [&'static str] {
    crate::resource::spec_opt(&addr.kind_key()).map_or(&[], |s| s.sensitive)
}

fn placeholder() -> serde_json::Value {
    serde_json::Value::String(crate::render::SENSITIVE.to_string())
}

fn redact_secrets(plan: &mut Plan) {
    let redact = |addr: &crate::addr::Address, attrs: &mut crate::resource::Attrs| {
        for attr in sensitive_attrs(addr) {
            if let Some(v) = attrs.get_mut(*attr) {
                *v = placeholder();
            }
        }
    };
    for (addr, live) in &mut plan.refreshed {
        if let Some(live) = live {
            redact(addr, &mut live.attrs);
        }
    }
    for c in &mut plan.changes {
        if let Some(before) = &mut c.before {
            redact(&c.addr, &mut before.attrs);
        }
        for attr in sensitive_attrs(&c.addr) {
            if let Some(e) = c.after.as_mut().and_then(|a| a.get_mut(*attr)) {
                *e = crate::resource::Expr::Lit(placeholder());
            }
        }
    }
    for f in &mut plan.drift {
        let attr = f
            .path
            .as_deref()
            .map(|p| p.split(['.', '[']).next().unwrap_or(p))
            .unwrap_or_default();
        if crate::render::is_sensitive(&f.address, attr) {
            for v in [&mut f.recorded, &mut f.live].into_iter().flatten() {
                *v = placeholder();
            }
        }
    }
}

/// Puts back what [`save_plan`] left out of a saved plan: refreshed
/// secrets from the state the plan was checked against (same lineage and
/// serial), planned ones as the stack's own expressions, resolved when
/// applied (the plan was checked to come from this very stack file).
pub fn restore_secrets(plan: &mut Plan, desired: &Desired, state: Option<&State>) {
    let restore = |addr: &crate::addr::Address, attrs: &mut crate::resource::Attrs| {
        for attr in sensitive_attrs(addr) {
            if attrs.get(*attr) != Some(&placeholder()) {
                continue;
            }
            match state
                .and_then(|s| s.get_opt(addr))
                .and_then(|r| r.attributes.get(*attr))
            {
                Some(v) => {
                    attrs.insert((*attr).to_string(), v.clone());
                }
                None => {
                    attrs.remove(*attr);
                }
            }
        }
    };
    for (addr, live) in &mut plan.refreshed {
        if let Some(live) = live {
            restore(addr, &mut live.attrs);
        }
    }
    for c in &mut plan.changes {
        if let Some(before) = &mut c.before {
            restore(&c.addr, &mut before.attrs);
        }
        let declared = desired.get_opt(&c.addr);
        if let Some(after) = &mut c.after {
            for attr in sensitive_attrs(&c.addr) {
                if after.get(*attr) != Some(&crate::resource::Expr::Lit(placeholder())) {
                    continue;
                }
                // An output (the TLS key) is the object's own, as for a
                // value not known yet; applying never sends outputs.
                let e = declared
                    .and_then(|r| r.attrs().get(*attr).cloned())
                    .unwrap_or_else(|| crate::resource::Expr::reference(&c.addr, attr));
                after.insert((*attr).to_string(), e);
            }
        }
    }
}

pub fn load_plan(path: &Path) -> Result<Plan> {
    let again =
        "make a new plan with `slipway plan --out FILE` and apply that; nothing was changed";
    let text = std::fs::read_to_string(path).map_err(|e| {
        let message = format!("cannot read plan file `{}`: {e}", path.display());
        if e.kind() == std::io::ErrorKind::InvalidData {
            // Not text, so not a plan.
            hinted(message, again)
        } else {
            hinted(
                message,
                "check the path: it is the FILE that `slipway plan --out FILE` wrote",
            )
        }
    })?;
    let header: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        hinted(
            format!("`{}` is not a slipway plan file ({e})", path.display()),
            again,
        )
    })?;
    let version = header
        .get("format_version")
        .and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(PLAN_FORMAT_VERSION)) {
        return Err(hinted(
            format!(
                "plan file `{}` has format version {version:?}; this slipway reads {PLAN_FORMAT_VERSION}",
                path.display()
            ),
            "make a new plan with this slipway: `slipway plan --out FILE`",
        ));
    }
    serde_json::from_value(header).map_err(|e| {
        hinted(
            format!("`{}` is not a slipway plan file ({e})", path.display()),
            again,
        )
    })
}
