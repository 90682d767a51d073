//! The pipeline's deploy stage, beside `apply/`: it reads the stack, ECR and
//! the cluster, and does not go through the resource planner. A release is:
//! resolve the image to its digest → check the promotion policy → render
//! the overlay and pin the image by digest → take the environment's lock →
//! record the release → server-side apply as an ApplySet and prune →
//! wait for the rollout and for healthy load balancer targets → record the
//! outcome. Its objects are written under their own field manager, so the
//! platform's `plan` and `drift` never see them.

pub mod applyset;
pub mod history;
pub mod jenkinsfile;
pub mod lock;
pub mod policy;
pub mod render;
pub mod wait;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};

use crate::provider::ProviderError;
use crate::provider::aws::{DeployAws, Retag};
use crate::provider::kube::app::{AppCluster, KindScope};
use crate::provider::kube::{KubeProvider, Rollout};
use crate::stack::{Environment, Stack};
use history::{Kind, Outcome, Release, Source};

/// The field manager of everything the deploy stage writes (the platform's
/// is `slipway`).
pub const FIELD_MANAGER: &str = "slipway-deploy";
/// How often waits ask the API server and ELBv2 again, at most: they
/// start at [`FIRST_POLL`] and double, so a rollout that is done in a
/// moment is seen in a moment, and a long one costs one call a second.
const POLL: Duration = Duration::from_secs(1);
const FIRST_POLL: Duration = Duration::from_millis(100);

/// The pause before the next look of a wait: [`FIRST_POLL`], doubling up
/// to [`POLL`].
struct Poll(Duration);

impl Poll {
    fn new() -> Self {
        Poll(FIRST_POLL)
    }

    async fn pause(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(POLL);
    }
}

/// The longest a wait on watches goes without looking again when nothing
/// it watches changes (its deadline and progress line are checked then).
const QUIET: Duration = Duration::from_secs(10);
/// How often a wait on watches checks for an interruption.
const CANCEL_CHECK: Duration = Duration::from_millis(100);

/// What a wait watches: apiVersion, kind, label selector, field selector.
type Watched = (&'static str, &'static str, String, String);
type Events = futures::stream::SelectAll<BoxStream<'static, Option<Result<(), ProviderError>>>>;

/// Wakes a wait when what it waits on changes, as `kubectl rollout status`
/// does: the watches are opened before the first look, so a change between
/// a look and the wait is not missed. Where a watch cannot be opened, or
/// stops (API servers end watches now and then), the wait polls
/// ([`Poll`]) and watches again at its next pause.
struct Wake<'c> {
    cluster: &'c AppCluster,
    watched: Vec<Watched>,
    events: Option<Events>,
    poll: Poll,
}

impl<'c> Wake<'c> {
    async fn new(
        cluster: &'c AppCluster,
        watched: Vec<Watched>,
        deadline: tokio::time::Instant,
    ) -> Self {
        let mut wake = Wake {
            cluster,
            watched,
            events: None,
            poll: Poll::new(),
        };
        // Not longer than a poll would wait: kube-rs retries a watch the
        // server answers 503 or 429 for minutes.
        let until = tokio::time::Instant::now() + POLL;
        wake.events = tokio::time::timeout_at(until, wake.open(deadline))
            .await
            .ok()
            .flatten();
        wake
    }

    async fn open(&self, deadline: tokio::time::Instant) -> Option<Events> {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let opened = futures::future::try_join_all(self.watched.iter().map(
            |(api_version, kind, labels, fields)| {
                self.cluster.watch(api_version, kind, labels, fields, left)
            },
        ))
        .await;
        // Each watch says when it ends (`None`), so one that stops is seen
        // even while the others go on.
        opened.ok().map(|streams| {
            futures::stream::select_all(streams.into_iter().map(|events| {
                events
                    .map(Some)
                    .chain(futures::stream::once(async { None }))
                    .boxed()
            }))
        })
    }

    /// Returns when something watched changed (every change that came
    /// together taken at once), after [`QUIET`] without a change, at
    /// `deadline`, when `stop` says so, or when a watch stopped. Without
    /// watches, it waits a [`Poll`] pause, trying meanwhile to watch again
    /// (and returning as soon as that worked).
    async fn next(&mut self, deadline: tokio::time::Instant, stop: &dyn Fn() -> bool) {
        let Some(events) = &mut self.events else {
            let until = (tokio::time::Instant::now() + self.poll.0).min(deadline);
            match tokio::time::timeout_at(until, self.open(deadline)).await {
                Ok(Some(events)) => self.events = Some(events),
                _ => tokio::time::sleep_until(until).await,
            }
            self.poll.0 = (self.poll.0 * 2).min(POLL);
            return;
        };
        let until = (tokio::time::Instant::now() + QUIET).min(deadline);
        let changed = loop {
            let check = (tokio::time::Instant::now() + CANCEL_CHECK).min(until);
            match tokio::time::timeout_at(check, events.next()).await {
                Ok(Some(Some(Ok(())))) => break true,
                Ok(_) => break false,
                Err(_) if tokio::time::Instant::now() >= until || stop() => return,
                Err(_) => {}
            }
        };
        let mut stopped = !changed;
        while !stopped {
            match events.next().now_or_never() {
                Some(Some(Some(Ok(())))) => {}
                Some(_) => stopped = true,
                None => break,
            }
        }
        if stopped {
            self.events = None;
        }
    }
}

/// Label on every applied object: the revision that applied it last.
pub const RELEASE_REVISION_LABEL: &str = "slipway.dev/release";

/// Why a deploy stage command failed or refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{message}")]
    Kubectl { message: String, hint: String },
    #[error("{message}")]
    Rendered { message: String },
    #[error("{message}")]
    Refused { message: String, hint: String },
    #[error(
        "the deploy lock of environment `{environment}` is held by {holder} (for {}); waited {waited_secs}s",
        crate::clock::human_duration(*held_secs)
    )]
    Locked {
        environment: String,
        holder: String,
        held_secs: i64,
        waited_secs: u64,
    },
    #[error("{message}")]
    Failed { message: String, hint: String },
    #[error(
        "interrupted; a release already started is recorded as failed, and the lock is released"
    )]
    Interrupted,
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Credentials(#[from] crate::provider::aws::AwsSetupError),
}

impl DeployError {
    pub fn hint(&self) -> Option<String> {
        match self {
            DeployError::Kubectl { hint, .. }
            | DeployError::Refused { hint, .. }
            | DeployError::Failed { hint, .. } => Some(hint.clone()),
            DeployError::Rendered { .. } => Some(
                "the overlay may only render namespaced objects for its environment; `kubectl kustomize OVERLAY` shows what it renders".into(),
            ),
            DeployError::Locked { .. } => Some(
                "wait for the other deploy to finish, or give `--lock-timeout` a longer duration".into(),
            ),
            DeployError::Credentials(e) => Some(e.hint().to_string()),
            DeployError::Provider(e) => match e.code.as_str() {
                "Forbidden" | "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" => Some(
                    "the identity slipway runs as lacks a permission the deploy stage needs: ECR on the stack's repository, `elasticloadbalancing:DescribeTargetHealth`, and the `slipway-deployer` Role in the environment's namespace (docs/deploy.md)".into(),
                ),
                _ if e.retryable => Some("a temporary failure: running the same command again may succeed".into()),
                _ => None,
            },
            DeployError::Interrupted => None,
        }
    }
}

fn refused(message: impl Into<String>, hint: impl Into<String>) -> DeployError {
    DeployError::Refused {
        message: message.into(),
        hint: hint.into(),
    }
}

/// Where a deploy tells what it is doing.
pub trait Report: Send + Sync {
    /// A step done or begun: one line.
    fn step(&self, text: &str);
    /// What a wait is waiting for; called repeatedly.
    fn waiting(&self, text: &str);
}

/// Every environment's releases, and the records skipped reading them.
#[derive(Debug, Default)]
struct Histories {
    releases: BTreeMap<String, Vec<Release>>,
    skipped: Vec<String>,
}

/// Which image to deploy.
#[derive(Debug, Clone, Default)]
pub struct ImageRef {
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// One deploy, promotion or rollback into one environment.
#[derive(Debug, Clone)]
pub struct Request {
    pub environment: String,
    pub image: ImageRef,
    pub kind: Kind,
    pub branch: Option<String>,
    pub commit: Option<String>,
    /// Override the promotion policy (recorded with `reason`).
    pub force: bool,
    pub reason: Option<String>,
    pub promoted_from: Option<Source>,
    pub rollback_to: Option<u64>,
    pub dry_run: bool,
    pub timeout: Duration,
    pub lock_timeout: Duration,
}

/// What `--dry-run` found.
#[derive(Debug, Clone)]
pub struct DryRun {
    pub digest: String,
    /// Per object (`Kind/name`): `None` when unchanged, else the diff lines.
    pub changes: Vec<(String, Option<Vec<String>>)>,
    /// Objects the apply would prune.
    pub prune: Vec<String>,
}

/// The result of a command of the deploy stage.
#[derive(Debug, Clone)]
pub enum Done {
    Released(Box<Release>),
    DryRun(DryRun),
}

/// The deploy stage for one stack.
pub struct Deployer<'a> {
    stack: &'a Stack,
    kube: &'a KubeProvider,
    aws: DeployAws,
    report: &'a dyn Report,
    clusters: tokio::sync::Mutex<BTreeMap<String, Arc<AppCluster>>>,
    cancel: Arc<AtomicBool>,
    /// Set when this run lost the environment's lock while holding it.
    lost: Arc<AtomicBool>,
}

/// An applied object, for pruning: group-kind, name, uid.
type Applied = (String, String, String);

/// A live member of the ApplySet.
struct Member {
    api_version: String,
    kind: String,
    name: String,
    uid: String,
}

fn s<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The apiVersion each `Kind.group` of `objects` is written in.
fn versions_of(objects: &[Value]) -> BTreeMap<String, String> {
    objects
        .iter()
        .map(|o| {
            (
                applyset::group_kind(s(o, "/apiVersion"), s(o, "/kind")),
                s(o, "/apiVersion").to_string(),
            )
        })
        .collect()
}

fn selector_of(labels: &Value) -> String {
    labels
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

impl<'a> Deployer<'a> {
    pub fn new(
        stack: &'a Stack,
        kube: &'a KubeProvider,
        aws: DeployAws,
        report: &'a dyn Report,
    ) -> Self {
        Deployer {
            stack,
            kube,
            aws,
            report,
            clusters: tokio::sync::Mutex::new(BTreeMap::new()),
            cancel: Arc::new(AtomicBool::new(false)),
            lost: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set it to stop waiting: the release then ends as failed
    /// ([`DeployError::Interrupted`]), recorded, with the lock released.
    pub fn cancel_handle(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    fn check_cancel(&self) -> Result<(), DeployError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(DeployError::Failed {
                message: "this deploy lost the environment's lock (it could not renew its Lease, or another run took it over) and stopped".into(),
                hint: "check `kubectl get lease slipway-deploy` in the namespace and the API server's health; then deploy again".into(),
            });
        }
        if self.cancel.load(Ordering::SeqCst) {
            Err(DeployError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// The environment named, or an error listing them.
    pub fn environment(&self, name: &str) -> Result<&'a Environment, DeployError> {
        self.stack.environment_opt(name).ok_or_else(|| {
            refused(
                format!("stack `{}` has no environment `{name}`", self.stack.name()),
                format!("environments: {}", self.mappings()),
            )
        })
    }

    /// The environment a branch deploys to, or an error listing the mappings.
    pub fn environment_for_branch(&self, branch: &str) -> Result<&'a Environment, DeployError> {
        self.stack.environment_for_branch_opt(branch).ok_or_else(|| {
            refused(
                format!(
                    "branch `{branch}` deploys to no environment of stack `{}`",
                    self.stack.name()
                ),
                format!(
                    "the stack maps {}; deploy one of those branches or add an environment for `{branch}`",
                    self.mappings()
                ),
            )
        })
    }

    fn mappings(&self) -> String {
        self.stack
            .environments()
            .iter()
            .map(|e| format!("`{}` → `{}`", e.branch(), e.name()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    async fn cluster(&self, env: &Environment) -> Result<Arc<AppCluster>, DeployError> {
        let mut map = self.clusters.lock().await;
        if let Some(c) = map.get(env.name()) {
            return Ok(c.clone());
        }
        let c = Arc::new(self.kube.app_cluster(env.namespace()).await?);
        map.insert(env.name().to_string(), c.clone());
        Ok(c)
    }

    /// An environment's releases, oldest first.
    pub async fn history(&self, env: &Environment) -> Result<Vec<Release>, DeployError> {
        let (releases, skipped) = self.read_history(env).await?;
        self.warn_skipped(&skipped);
        Ok(releases)
    }

    /// An environment's releases, oldest first, and why each record that
    /// could not be read was skipped.
    async fn read_history(
        &self,
        env: &Environment,
    ) -> Result<(Vec<Release>, Vec<String>), DeployError> {
        // The first reads of `releases`, `promote` and `rollback`: beside
        // the identity check, whose failure is the error to report.
        let cms = self
            .aws
            .gated(async {
                let cluster = self.cluster(env).await?;
                Ok::<_, DeployError>(record_config_maps(&cluster, env).await?)
            })
            .await?;
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        for cm in &cms {
            match history::from_config_map(cm) {
                Ok(r) => out.push(r),
                Err(e) => skipped.push(e.to_string()),
            }
        }
        Ok((history::sorted(out), skipped))
    }

    fn warn_skipped(&self, skipped: &[String]) {
        for e in skipped {
            self.report
                .step(&format!("warning: skipping a release record: {e}"));
        }
    }

    /// One more than the highest revision recorded, by the records' labels
    /// (so that a record this slipway cannot read still holds its number).
    async fn next_revision(
        &self,
        cluster: &AppCluster,
        env: &Environment,
    ) -> Result<u64, DeployError> {
        let cms = record_config_maps(cluster, env).await?;
        Ok(cms
            .iter()
            .filter_map(|c| {
                c.pointer("/metadata/labels")
                    .and_then(|l| l.get(history::REVISION_LABEL))
                    .and_then(Value::as_str)
                    .and_then(|r| r.parse::<u64>().ok())
            })
            .max()
            .unwrap_or(0)
            + 1)
    }

    /// Every environment's releases (the promotion policy reads the
    /// upstream ones), read at once, with the records skipped. A failure
    /// is the first environment's in the stack's order, whichever came
    /// back first.
    async fn histories(&self) -> Result<Histories, DeployError> {
        let envs = self.stack.environments();
        let read = futures::future::join_all(envs.iter().map(|env| self.read_history(env))).await;
        let mut out = Histories::default();
        for (env, result) in envs.iter().zip(read) {
            let (releases, skipped) = result?;
            out.releases.insert(env.name().to_string(), releases);
            out.skipped.extend(skipped);
        }
        Ok(out)
    }

    /// The overlay's objects, or why rendering failed: an interruption
    /// when it was one (SIGINT stops kubectl too, which then looks failed).
    fn rendered(
        &self,
        joined: Result<Result<Vec<Value>, DeployError>, tokio::task::JoinError>,
    ) -> Result<Vec<Value>, DeployError> {
        let result = joined.map_err(|e| DeployError::Kubectl {
            message: format!("rendering the overlay stopped: {e}"),
            hint: "run `kubectl kustomize` on the overlay to see why".into(),
        });
        match result {
            Ok(Ok(objects)) => Ok(objects),
            Ok(Err(e)) | Err(e) => {
                self.check_cancel()?;
                Err(e)
            }
        }
    }

    /// The repository URI and the digest the image reference names.
    async fn resolve(&self, image: &ImageRef) -> Result<(String, String), DeployError> {
        let repo = self.stack.repository_name();
        let region = self.stack.region();
        let (uri, found) = tokio::join!(
            self.aws.repository_uri_opt(repo),
            self.aws
                .image_opt(repo, image.tag.as_deref(), image.digest.as_deref())
        );
        // A missing repository is said as such, whatever the image read found.
        let uri = uri?.ok_or_else(|| {
            refused(
                format!("ECR repository `{repo}` does not exist in region `{region}`"),
                "run `slipway apply` to create the platform first",
            )
        })?;
        let found = found?;
        let what = match (&image.tag, &image.digest) {
            (Some(t), Some(d)) => format!("tag `{t}` with digest `{d}`"),
            (Some(t), None) => format!("tag `{t}`"),
            (None, Some(d)) => format!("digest `{d}`"),
            (None, None) => {
                return Err(refused(
                    "no image given",
                    "pass `--image-tag TAG` or `--image-digest sha256:…`",
                ));
            }
        };
        let img = found.ok_or_else(|| {
            refused(
                format!("ECR repository `{repo}` in region `{region}` has no image with {what}"),
                "push the image first (the Jenkinsfile's build stage does), or check the tag",
            )
        })?;
        if let (Some(d), Some(t)) = (&image.digest, &image.tag)
            && &img.digest != d
        {
            return Err(refused(
                format!("tag `{t}` in `{repo}` names `{}`, not `{d}`", img.digest),
                "pass only one of `--image-tag` and `--image-digest`, or the pair that agrees",
            ));
        }
        Ok((uri, img.digest))
    }

    /// `slipway deploy` (and the deploy half of `promote` and `rollback`).
    pub async fn release(&self, req: &Request) -> Result<Done, DeployError> {
        let env = self.environment(&req.environment)?;
        // The overlay renders (kubectl, a process of its own) while the
        // image and the histories are read; a broken overlay or kubectl is
        // reported before anything the reads found, and stops the reads
        // rather than waiting on them.
        let overlay = env.overlay().to_path_buf();
        let mut rendering = tokio::task::spawn_blocking(move || {
            render::kustomize(&overlay).and_then(|yaml| render::parse(&yaml))
        });
        // The identity check goes beside them, and its failure comes first.
        let reads = self.aws.gated(async {
            Ok::<_, DeployError>(tokio::join!(self.resolve(&req.image), self.histories()))
        });
        tokio::pin!(reads);
        let (mut objects, read) = tokio::select! {
            rendered = &mut rendering => (self.rendered(rendered)?, reads.await),
            read = &mut reads => (self.rendered(rendering.await)?, read),
        };
        let (resolved, histories) = read?;
        let (uri, digest) = resolved?;
        self.report.step(&format!("image {uri}@{digest}"));
        let histories = histories?;
        self.warn_skipped(&histories.skipped);
        let histories = histories.releases;
        self.check_policy(req, env, &histories, &digest)?;
        self.check_cancel()?;
        let cluster = self.cluster(env).await?;
        let revision = histories
            .get(env.name())
            .and_then(|h| h.last())
            .map_or(1, |r| r.revision + 1);
        let labels = vec![
            (
                applyset::PART_OF_LABEL.to_string(),
                applyset::id(env.namespace()),
            ),
            (RELEASE_REVISION_LABEL.to_string(), revision.to_string()),
        ];
        let pinned = render::prepare(
            &mut objects,
            &render::Pin {
                repository_uri: &uri,
                repository: self.stack.repository_name(),
                digest: &digest,
                namespace: env.namespace(),
                labels: &labels,
            },
        )?;
        // Every kind's discovery at once; the Lease's too, which the lock
        // below needs next (its answer is kept for it, not looked at here).
        let (scopes, _lease) = tokio::join!(
            futures::future::try_join_all(
                objects
                    .iter()
                    .map(|obj| cluster.scope_opt(s(obj, "/apiVersion"), s(obj, "/kind")))
            ),
            cluster.scope_opt(lock::API_VERSION, lock::KIND)
        );
        for (obj, scope) in objects.iter().zip(scopes?) {
            match scope {
                Some(KindScope::Namespaced) => {}
                Some(KindScope::Cluster) => {
                    return Err(DeployError::Rendered {
                        message: format!(
                            "the overlay renders {}, which is cluster-scoped; the deploy stage writes only into namespace `{}` (cluster-wide objects belong to the platform)",
                            render::describe(obj),
                            env.namespace()
                        ),
                    });
                }
                None => {
                    return Err(DeployError::Rendered {
                        message: format!(
                            "the cluster does not serve `{}` in `{}` (rendered {})",
                            s(obj, "/kind"),
                            s(obj, "/apiVersion"),
                            render::describe(obj)
                        ),
                    });
                }
            }
        }
        objects.sort_by_key(|o| apply_order(s(o, "/kind")));
        self.report.step(&format!(
            "rendered {} objects from `{}`; {} container(s) pinned by digest",
            objects.len(),
            env.overlay().display(),
            pinned.count
        ));
        for other in &pinned.unpinned {
            self.report.step(&format!(
                "warning: {other} is not pinned by digest, so it may change without a release; pin it in the overlay (`image@sha256:…`)"
            ));
        }
        if req.dry_run {
            return self
                .dry_run(&cluster, &objects, digest)
                .await
                .map(Done::DryRun);
        }

        let (build_url, job_name) = crate::env::jenkins_build_opt();
        let holder = format!(
            "{}@{} (pid {}{})",
            crate::state::lock::current_user(),
            crate::state::lock::hostname(),
            std::process::id(),
            build_url
                .as_deref()
                .map(|u| format!(", {u}"))
                .unwrap_or_default()
        );
        let lock = lock::acquire(
            cluster.clone(),
            env.name(),
            &holder,
            req.lock_timeout,
            &self.cancel,
            self.lost.clone(),
            &|w| self.report.waiting(w),
        )
        .await?;
        let result = self
            .locked_release(
                req, env, &cluster, objects, &uri, &digest, build_url, job_name,
            )
            .await;
        lock.release().await;
        result.map(|r| Done::Released(Box::new(r)))
    }

    /// The promotion policy for this request (rollback is never blocked by it).
    fn check_policy(
        &self,
        req: &Request,
        env: &Environment,
        histories: &BTreeMap<String, Vec<Release>>,
        digest: &str,
    ) -> Result<(), DeployError> {
        if req.kind == Kind::Rollback {
            return Ok(());
        }
        match policy::check(
            env,
            self.stack.environments(),
            histories,
            digest,
            crate::clock::now_unix(),
        ) {
            Ok(policy::Allowed::Unrestricted) => Ok(()),
            Ok(policy::Allowed::Verified {
                environment,
                revision,
                soaked_secs,
            }) => {
                self.report.step(&format!(
                    "promotion policy: verified in `{environment}` (revision {revision}, ran there {})",
                    crate::clock::human_duration(soaked_secs)
                ));
                Ok(())
            }
            Err(why) if req.force => {
                self.report.step(&format!(
                    "promotion policy overridden with --force ({}): {why}",
                    req.reason.as_deref().unwrap_or("no reason given")
                ));
                Ok(())
            }
            Err(why) => Err(refused(
                why,
                "deploy it to the upstream environment first and let it be verified there, or `slipway promote`; `--force --reason TEXT` overrides the policy and is recorded",
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn locked_release(
        &self,
        req: &Request,
        env: &Environment,
        cluster: &Arc<AppCluster>,
        mut objects: Vec<Value>,
        uri: &str,
        digest: &str,
        build_url: Option<String>,
        job_name: Option<String>,
    ) -> Result<Release, DeployError> {
        // Read again under the lock: another deploy may have finished
        // meanwhile, upstream or here. (What it skips was said already.)
        // The ApplySet's parent is read beside them, for the apply.
        let (histories, revision, parent) =
            tokio::try_join!(self.histories(), self.next_revision(cluster, env), async {
                cluster
                    .get_opt("v1", "ConfigMap", applyset::PARENT_NAME)
                    .await
                    .map_err(DeployError::from)
            })?;
        let histories = histories.releases;
        self.check_policy(req, env, &histories, digest)?;
        // The ApplySet's kinds are settled (another tool's ApplySet refused)
        // before anything is written.
        let union = applyset_kinds(env.namespace(), parent.as_ref(), &objects)?;
        let history = histories.get(env.name()).cloned().unwrap_or_default();
        // Closing a record changes no revision label: `revision` holds.
        self.close_abandoned(cluster, env, &history).await?;
        for o in &mut objects {
            o["metadata"]["labels"][RELEASE_REVISION_LABEL] = json!(revision.to_string());
        }
        let mut record = Release {
            format_version: history::RECORD_VERSION,
            revision,
            environment: env.name().to_string(),
            kind: req.kind,
            digest: digest.to_string(),
            image: format!("{uri}@{digest}"),
            tag: req.image.tag.clone(),
            branch: req.branch.clone(),
            commit: req.commit.clone(),
            user: crate::state::lock::current_user(),
            host: crate::state::lock::hostname(),
            build_url,
            job_name,
            started_at: crate::clock::now_rfc3339(),
            finished_at: None,
            result: Outcome::Running,
            verified: false,
            forced: req.force,
            reason: req.reason.clone(),
            promoted_from: req.promoted_from.clone(),
            rollback_to: req.rollback_to,
            address: None,
            error: None,
        };
        // The record and the parent (listing every kind that may hold a
        // member before any is written, so an interrupted deploy still
        // knows what to prune) go at once.
        let (record_cm, parent_cm) = (
            history::to_config_map(&record, env.namespace(), None),
            applyset::parent(env.namespace(), &union),
        );
        let (written, parented) = tokio::join!(
            cluster.create(&record_cm, FIELD_MANAGER),
            cluster.apply(&parent_cm, FIELD_MANAGER, false)
        );
        // Without its record nothing started (a parent written meanwhile
        // only lists kinds, the old ones among them: it prunes nothing by
        // itself); with it, a failure from here on is recorded.
        let written = written?;
        self.report
            .step(&format!("release {revision} of `{}` started", env.name()));
        let outcome = match parented {
            Err(e) => Err(e.into()),
            Ok(_) => {
                self.apply_and_verify(
                    env,
                    cluster,
                    &union,
                    &objects,
                    &format!("{uri}@{digest}"),
                    req.timeout,
                )
                .await
            }
        };
        record.finished_at = Some(crate::clock::now_rfc3339());
        match &outcome {
            Ok(address) => {
                record.result = Outcome::Succeeded;
                record.verified = true;
                record.address = address.clone();
            }
            Err(e) => {
                record.result = Outcome::Failed;
                record.error = Some(e.to_string());
            }
        }
        self.write_record(cluster, env, &record, &written).await?;
        if record.result == Outcome::Succeeded
            && req.kind == Kind::Rollback
            && let Some(undone) = history::current(&history)
        {
            let mut undone = undone.clone();
            undone.result = Outcome::RolledBack;
            if let Some(cm) = cluster
                .get_opt(
                    "v1",
                    "ConfigMap",
                    &history::config_map_name(undone.revision),
                )
                .await?
            {
                self.write_record(cluster, env, &undone, &cm).await?;
            }
        }
        outcome.map(|_| record)
    }

    /// Records left `running` by a deploy that died (killed, or its machine
    /// lost) are closed as failed: every deploy writes its record under the
    /// lock and finishes it before letting go, so with the lock held here
    /// none of them is still going.
    async fn close_abandoned(
        &self,
        cluster: &AppCluster,
        env: &Environment,
        history: &[Release],
    ) -> Result<(), DeployError> {
        for r in history.iter().filter(|r| r.result == Outcome::Running) {
            let Some(cm) = cluster
                .get_opt("v1", "ConfigMap", &history::config_map_name(r.revision))
                .await?
            else {
                continue;
            };
            let mut closed = r.clone();
            closed.result = Outcome::Failed;
            closed.finished_at = Some(crate::clock::now_rfc3339());
            closed.error = Some(
                "its deploy stopped before it finished (killed, or its lock expired); the next deploy closed it"
                    .to_string(),
            );
            self.write_record(cluster, env, &closed, &cm).await?;
            self.report.step(&format!(
                "release {} of `{}` was left running by a deploy that stopped ({}@{}, started {}); recorded as failed",
                r.revision,
                env.name(),
                r.user,
                r.host,
                r.started_at
            ));
        }
        Ok(())
    }

    async fn write_record(
        &self,
        cluster: &AppCluster,
        env: &Environment,
        record: &Release,
        live: &Value,
    ) -> Result<(), DeployError> {
        let rv = live
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str);
        cluster
            .replace(
                &history::to_config_map(record, env.namespace(), rv),
                FIELD_MANAGER,
            )
            .await?;
        Ok(())
    }

    /// Applies the objects as the environment's ApplySet, prunes what the
    /// previous release had and this one does not, and waits until traffic
    /// reaches the new pods. Returns the load balancer's address.
    async fn apply_and_verify(
        &self,
        env: &Environment,
        cluster: &AppCluster,
        union: &BTreeSet<String>,
        objects: &[Value],
        image: &str,
        timeout: Duration,
    ) -> Result<Option<String>, DeployError> {
        let ns = env.namespace();
        let mut applied: Vec<Applied> = Vec::new();
        for obj in objects {
            self.check_cancel()?;
            let live = cluster.apply(obj, FIELD_MANAGER, false).await?;
            self.report
                .step(&format!("applied {}", render::describe(obj)));
            applied.push((
                applyset::group_kind(s(obj, "/apiVersion"), s(obj, "/kind")),
                s(obj, "/metadata/name").to_string(),
                s(&live, "/metadata/uid").to_string(),
            ));
        }
        // Prune only once traffic reaches the new release (Argo CD's
        // PruneLast): the old objects may still serve until then.
        let address = self.verify(cluster, objects, image, timeout).await?;
        for p in self
            .prune_candidates(cluster, ns, union, &applied, &versions_of(objects))
            .await?
        {
            // Only the very object listed: a namesake made since survives.
            match cluster
                .delete(&p.api_version, &p.kind, &p.name, Some(&p.uid), None)
                .await
            {
                Ok(_) => self.report.step(&format!("pruned {}/{}", p.kind, p.name)),
                Err(e) if e.code == "Conflict" => self.report.step(&format!(
                    "kept {}/{}: it was replaced since it was listed",
                    p.kind, p.name
                )),
                Err(e) => return Err(e.into()),
            }
        }
        // Pruned: the parent lists only what the release holds.
        let current: BTreeSet<String> = objects
            .iter()
            .map(|o| applyset::group_kind(s(o, "/apiVersion"), s(o, "/kind")))
            .collect();
        cluster
            .apply(&applyset::parent(ns, &current), FIELD_MANAGER, false)
            .await?;
        Ok(address)
    }

    /// Members of the ApplySet (by label, in the listed kinds) that this
    /// apply did not write.
    async fn prune_candidates(
        &self,
        cluster: &AppCluster,
        ns: &str,
        kinds: &BTreeSet<String>,
        applied: &[Applied],
        applied_versions: &BTreeMap<String, String>,
    ) -> Result<Vec<Member>, DeployError> {
        let selector = format!("{}={}", applyset::PART_OF_LABEL, applyset::id(ns));
        // Every kind is listed at once; one this release applied, in the
        // version it applied, the others in their group's preferred one.
        let lists = futures::future::try_join_all(kinds.iter().map(|gk| {
            let selector = &selector;
            async move {
                let (group, kind) = applyset::split_group_kind(gk);
                let listed = match applied_versions.get(gk) {
                    Some(v) => (v.clone(), cluster.list(v, &kind, selector).await?),
                    None => cluster.list_group_kind(&group, &kind, selector).await?,
                };
                Ok::<_, ProviderError>((gk, kind, listed))
            }
        }))
        .await?;
        let mut out = Vec::new();
        for (gk, kind, (api_version, items)) in lists {
            for obj in items {
                let name = s(&obj, "/metadata/name");
                let uid = s(&obj, "/metadata/uid");
                let kept = applied
                    .iter()
                    .any(|(g, n, u)| g == gk && n == name && (u.is_empty() || u == uid));
                if !kept && obj.pointer("/metadata/deletionTimestamp").is_none() {
                    out.push(Member {
                        api_version: api_version.clone(),
                        kind: kind.clone(),
                        name: name.to_string(),
                        uid: uid.to_string(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Waits for every Deployment's rollout, then for every `alb` Ingress's
    /// address and healthy targets.
    async fn verify(
        &self,
        cluster: &AppCluster,
        objects: &[Value],
        image: &str,
        timeout: Duration,
    ) -> Result<Option<String>, DeployError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timeout_text = crate::clock::human_duration(timeout.as_secs() as i64);
        for d in objects.iter().filter(|o| s(o, "/kind") == "Deployment") {
            let name = s(d, "/metadata/name");
            let selector = selector_of(
                d.pointer("/spec/selector/matchLabels")
                    .unwrap_or(&Value::Null),
            );
            let watched = vec![
                (
                    "apps/v1",
                    "Deployment",
                    String::new(),
                    format!("metadata.name={name}"),
                ),
                ("v1", "Pod", selector.clone(), String::new()),
            ];
            let mut wake = Wake::new(cluster, watched, deadline).await;
            let stop = || self.check_cancel().is_err();
            loop {
                self.check_cancel()?;
                let (live, pods) = match tokio::try_join!(
                    cluster.get_opt("apps/v1", "Deployment", name),
                    self.new_pods(cluster, &selector, image)
                ) {
                    Ok(v) => v,
                    Err(e) if e.retryable && tokio::time::Instant::now() < deadline => {
                        self.report.waiting(&format!("{e}; asking again"));
                        wake.poll.pause().await;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                let live = live.ok_or_else(|| DeployError::Failed {
                    message: format!("Deployment `{name}` disappeared during the rollout"),
                    hint: "something deleted it; deploy again".into(),
                })?;
                let problems: Vec<String> = pods.iter().filter_map(wait::pod_problem).collect();
                match crate::provider::kube::rollout(&live) {
                    Rollout::Done => {
                        self.report.step(&format!("Deployment `{name}` rolled out"));
                        break;
                    }
                    Rollout::Failed(why) => {
                        return Err(rollout_failed(name, &why, &problems));
                    }
                    Rollout::Waiting(what) => {
                        if let Some(fatal) = problems.iter().find(|p| wait::is_fatal(p)) {
                            return Err(rollout_failed(name, fatal, &problems));
                        }
                        if tokio::time::Instant::now() >= deadline {
                            return Err(rollout_failed(
                                name,
                                &format!("not finished after {timeout_text} ({what})"),
                                &problems,
                            ));
                        }
                        self.report.waiting(&format!(
                            "Deployment `{name}`: {what}{}",
                            problems
                                .first()
                                .map(|p| format!("; {p}"))
                                .unwrap_or_default()
                        ));
                        wake.next(deadline, &stop).await;
                    }
                }
            }
        }
        let mut address = None;
        for ing in objects.iter().filter(|o| s(o, "/kind") == "Ingress") {
            let alb = s(ing, "/spec/ingressClassName") == "alb"
                || ing
                    .pointer("/metadata/annotations/kubernetes.io~1ingress.class")
                    .and_then(Value::as_str)
                    == Some("alb");
            if !alb {
                continue;
            }
            address = Some(
                self.wait_ingress(cluster, ing, image, deadline, &timeout_text)
                    .await?,
            );
        }
        Ok(address)
    }

    /// Pods selected by `selector` that run `image` and are not terminating.
    async fn new_pods(
        &self,
        cluster: &AppCluster,
        selector: &str,
        image: &str,
    ) -> Result<Vec<Value>, ProviderError> {
        Ok(cluster
            .list("v1", "Pod", selector)
            .await?
            .into_iter()
            .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
            .filter(|p| {
                !matches!(
                    p.pointer("/status/phase").and_then(Value::as_str),
                    Some("Failed" | "Succeeded")
                )
            })
            .filter(|p| {
                p.pointer("/spec/containers")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| cs.iter().any(|c| c["image"] == image))
            })
            .collect())
    }

    async fn wait_ingress(
        &self,
        cluster: &AppCluster,
        ing: &Value,
        image: &str,
        deadline: tokio::time::Instant,
        timeout_text: &str,
    ) -> Result<String, DeployError> {
        let name = s(ing, "/metadata/name");
        let backends: BTreeSet<String> = ingress_services(ing);
        let mut poll = Poll::new();
        loop {
            self.check_cancel()?;
            let pending = match self.ingress_pending(cluster, name, &backends, image).await {
                Ok(p) => p,
                Err(DeployError::Provider(e))
                    if e.retryable && tokio::time::Instant::now() < deadline =>
                {
                    Err((None, format!("{e}; asking again")))
                }
                Err(e) => return Err(e),
            };
            let (host, what) = match pending {
                Ok(host) => {
                    self.report.step(&format!(
                        "Ingress `{name}`: {host}, every new pod a healthy target"
                    ));
                    return Ok(host);
                }
                Err(p) => p,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(DeployError::Failed {
                    message: format!(
                        "Ingress `{name}` is not serving the new pods after {timeout_text}: {what}"
                    ),
                    hint: format!(
                        "check the load balancer controller's logs (`kubectl -n kube-system logs deploy/aws-load-balancer-controller`) and the target group's health checks{}",
                        host.map(|h| format!(" of {h}")).unwrap_or_default()
                    ),
                });
            }
            self.report.waiting(&format!("Ingress `{name}`: {what}"));
            poll.pause().await;
        }
    }

    /// `Ok(address)` when the Ingress has one and its target groups hold
    /// every new pod as healthy; else (the address if any, what is missing).
    /// The Ingress, the controller's bindings and each backend's pods are
    /// read at once, then every target group's health at once.
    async fn ingress_pending(
        &self,
        cluster: &AppCluster,
        name: &str,
        backends: &BTreeSet<String>,
        image: &str,
    ) -> Result<Result<String, (Option<String>, String)>, DeployError> {
        let backend_pods = futures::future::try_join_all(backends.iter().map(|svc| async move {
            let Some(service) = cluster.get_opt("v1", "Service", svc).await? else {
                return Ok::<_, ProviderError>(None);
            };
            let selector = selector_of(service.pointer("/spec/selector").unwrap_or(&Value::Null));
            Ok(Some(self.new_pods(cluster, &selector, image).await?))
        }));
        let (live, bindings, backend_pods) = tokio::try_join!(
            cluster.get_opt("networking.k8s.io/v1", "Ingress", name),
            cluster.list("elbv2.k8s.aws/v1beta1", "TargetGroupBinding", ""),
            backend_pods
        )?;
        let Some(live) = live else {
            return Ok(Err((None, "the Ingress is gone".into())));
        };
        let lb = live.pointer("/status/loadBalancer/ingress/0");
        let Some(host) = lb
            .and_then(|l| l.get("hostname").or_else(|| l.get("ip")))
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return Ok(Err((
                None,
                "waiting for the load balancer's address".into(),
            )));
        };
        // The controller's bindings for this Ingress (it labels them with
        // the Ingress's stack), else any for the Service.
        let ns = cluster.namespace();
        let ours = |b: &&Value| {
            let labels = b.pointer("/metadata/labels");
            let stack = labels
                .and_then(|l| l.get("ingress.k8s.aws/stack-name"))
                .and_then(Value::as_str);
            let stack_ns = labels
                .and_then(|l| l.get("ingress.k8s.aws/stack-namespace"))
                .and_then(Value::as_str);
            stack.is_none_or(|n| n == name) && stack_ns.is_none_or(|n| n == ns)
        };
        let checks = backends.iter().zip(&backend_pods).map(|(svc, pods)| {
            let binding = bindings
                .iter()
                .filter(ours)
                .find(|b| s(b, "/spec/serviceRef/name") == svc);
            async move {
                let Some(b) = binding else {
                    return Ok(Some(format!("no target group for Service `{svc}` yet")));
                };
                let Some(pods) = pods else {
                    return Ok(Some(format!("Service `{svc}` does not exist")));
                };
                match self.aws.target_health(s(b, "/spec/targetGroupARN")).await {
                    Ok(targets) => Ok(wait::targets_pending(&wait::pod_ips(pods), &targets)
                        .map(|p| format!("target group of Service `{svc}`: {p}"))),
                    Err(e) if e.code == "TargetGroupNotFound" => Ok(Some(format!(
                        "target group of Service `{svc}` does not exist (yet)"
                    ))),
                    Err(e) => Err(DeployError::from(e)),
                }
            }
        });
        let pending: Vec<String> = futures::future::try_join_all(checks)
            .await?
            .into_iter()
            .flatten()
            .collect();
        Ok(if pending.is_empty() {
            Ok(host)
        } else {
            Err((Some(host), pending.join("; ")))
        })
    }

    /// Server-side dry run: what each object would become, and what would
    /// be pruned. Writes nothing.
    async fn dry_run(
        &self,
        cluster: &AppCluster,
        objects: &[Value],
        digest: String,
    ) -> Result<DryRun, DeployError> {
        let mut changes = Vec::new();
        let mut applied = Vec::new();
        for obj in objects {
            let (av, kind, name) = (
                s(obj, "/apiVersion"),
                s(obj, "/kind"),
                s(obj, "/metadata/name"),
            );
            let before = cluster.get_opt(av, kind, name).await?;
            let after = cluster.apply(obj, FIELD_MANAGER, true).await?;
            let diff = before.as_ref().map_or_else(
                || Some(vec!["(new object)".to_string()]),
                |b| {
                    let d = diff_lines(b, &after);
                    (!d.is_empty()).then_some(d)
                },
            );
            applied.push((
                applyset::group_kind(av, kind),
                name.to_string(),
                s(before.as_ref().unwrap_or(&Value::Null), "/metadata/uid").to_string(),
            ));
            changes.push((render::describe(obj), diff));
        }
        let ns = cluster.namespace().to_string();
        let previous = cluster
            .get_opt("v1", "ConfigMap", applyset::PARENT_NAME)
            .await?
            .map(|p| applyset::listed_group_kinds(&p))
            .unwrap_or_default();
        let prune = self
            .prune_candidates(cluster, &ns, &previous, &applied, &versions_of(objects))
            .await?
            .into_iter()
            .map(|m| format!("{}/{}", m.kind, m.name))
            .collect();
        Ok(DryRun {
            digest,
            changes,
            prune,
        })
    }

    /// `slipway promote`: the digest `from`'s current release runs, re-tagged
    /// in ECR for `to` and deployed there.
    pub async fn promote(
        &self,
        from: &str,
        to: &str,
        mut req: Request,
    ) -> Result<Done, DeployError> {
        let source = self.environment(from)?;
        let target = self.environment(to)?;
        if target.promote_from().is_some_and(|p| p != from) {
            self.report.step(&format!(
                "note: `{to}` promotes from `{}`, not `{from}`; the policy decides",
                target.promote_from().unwrap_or_default()
            ));
        }
        let history = self.history(source).await?;
        let current = history::current(&history).ok_or_else(|| {
            refused(
                format!("environment `{from}` has no succeeded release to promote"),
                format!("deploy to `{from}` first (`slipway deploy --env {from} …`)"),
            )
        })?;
        // What it provably runs: the record must agree with the cluster (a
        // failed deploy may have left another image rolling out).
        self.check_runs(source, current).await?;
        req.kind = Kind::Promote;
        self.check_policy(
            &req,
            target,
            &self.histories().await?.releases,
            &current.digest,
        )?;
        let tag = promotion_tag(target, current);
        if !req.dry_run {
            let how = self
                .aws
                .retag(self.stack.repository_name(), &current.digest, &tag)
                .await?;
            self.report.step(&match how {
                Retag::Tagged => format!(
                    "tagged {} as `{tag}` in ECR (no layer moved)",
                    current.digest
                ),
                Retag::AlreadyThere => format!("`{tag}` already names {}", current.digest),
            });
        }
        req.environment = to.to_string();
        req.image = ImageRef {
            tag: None,
            digest: Some(current.digest.clone()),
        };
        if req.dry_run {
            req.image.tag = None;
        } else {
            req.image.tag = Some(tag);
        }
        req.kind = Kind::Promote;
        req.branch = Some(target.branch().to_string());
        req.commit = req.commit.or_else(|| current.commit.clone());
        req.promoted_from = Some(Source {
            environment: from.to_string(),
            revision: current.revision,
        });
        self.release(&req).await
    }

    /// Refuses when the environment's Deployments run another image than
    /// its current release says.
    async fn check_runs(&self, env: &Environment, current: &Release) -> Result<(), DeployError> {
        let cluster = self.cluster(env).await?;
        let selector = format!(
            "{}={}",
            applyset::PART_OF_LABEL,
            applyset::id(env.namespace())
        );
        let uri = current.image.split('@').next().unwrap_or("");
        for d in cluster.list("apps/v1", "Deployment", &selector).await? {
            let containers = d
                .pointer("/spec/template/spec/containers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for c in containers {
                let image = c["image"].as_str().unwrap_or("");
                if image.starts_with(&format!("{uri}@")) && image != current.image {
                    return Err(refused(
                        format!(
                            "Deployment `{}` in `{}` runs `{image}`, but the current release of `{}` (revision {}) is `{}`: a failed or interrupted deploy left it there",
                            s(&d, "/metadata/name"),
                            env.namespace(),
                            env.name(),
                            current.revision,
                            current.image
                        ),
                        format!(
                            "deploy to `{}` again, or `slipway rollback --env {} --to {}`, so that what runs there is a verified release",
                            env.name(),
                            env.name(),
                            current.revision
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `slipway rollback`: a previous succeeded release's digest, deployed
    /// again through the same path, recorded as a rollback.
    pub async fn rollback(&self, to: Option<u64>, mut req: Request) -> Result<Done, DeployError> {
        let env = self.environment(&req.environment)?;
        let history = self.history(env).await?;
        let target = history::rollback_target(&history, to).map_err(|why| {
            refused(
                format!("cannot roll back `{}`: {why}", env.name()),
                format!("`slipway releases --env {}` lists its releases", env.name()),
            )
        })?;
        req.image = ImageRef {
            tag: None,
            digest: Some(target.digest.clone()),
        };
        req.kind = Kind::Rollback;
        req.branch = target.branch.clone();
        req.commit = target.commit.clone();
        req.rollback_to = Some(target.revision);
        self.report.step(&format!(
            "rolling `{}` back to revision {} ({})",
            env.name(),
            target.revision,
            target.digest
        ));
        self.release(&req).await
    }
}

/// The tag a promotion puts on the digest: `<target branch>-<short commit>`
/// when the source release knows its commit, else
/// `<target branch>-<first 12 hex of the digest>`. Unique per image, so it
/// works in repositories with immutable tags.
pub fn promotion_tag(target: &Environment, source: &Release) -> String {
    let branch: String = target
        .branch()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let suffix: String = match source
        .commit
        .as_deref()
        .filter(|c| c.len() >= 7 && c.chars().all(|x| x.is_ascii_hexdigit()))
    {
        Some(c) => c.chars().take(7).collect(),
        None => source
            .digest
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect(),
    };
    format!("{branch}-{suffix}")
}

fn rollout_failed(name: &str, why: &str, problems: &[String]) -> DeployError {
    let detail = if problems.is_empty() {
        String::new()
    } else {
        format!("\n  {}", problems.join("\n  "))
    };
    DeployError::Failed {
        message: format!("the rollout of Deployment `{name}` failed: {why}{detail}"),
        hint: "the previous pods keep serving; fix the image or the overlay and deploy again, or `slipway rollback`".into(),
    }
}

/// The kinds the namespace's ApplySet is to list: those its parent lists
/// already and those of `objects`; refused when the parent is another
/// tool's.
fn applyset_kinds(
    ns: &str,
    parent: Option<&Value>,
    objects: &[Value],
) -> Result<BTreeSet<String>, DeployError> {
    if let Some(tool) = parent.and_then(applyset::tooling_of)
        && !tool.starts_with("slipway/")
    {
        return Err(refused(
            format!(
                "ConfigMap `{ns}/{}` is the parent of an ApplySet managed by `{tool}`, not slipway",
                applyset::PARENT_NAME
            ),
            "slipway will not take over another tool's ApplySet; remove it or deploy into another namespace",
        ));
    }
    let previous = parent.map(applyset::listed_group_kinds).unwrap_or_default();
    let current: BTreeSet<String> = objects
        .iter()
        .map(|o| applyset::group_kind(s(o, "/apiVersion"), s(o, "/kind")))
        .collect();
    Ok(previous.union(&current).cloned().collect())
}

/// The ConfigMaps holding an environment's release records.
async fn record_config_maps(
    cluster: &AppCluster,
    env: &Environment,
) -> Result<Vec<Value>, ProviderError> {
    cluster
        .list(
            "v1",
            "ConfigMap",
            &format!("{}={}", history::RELEASE_LABEL, env.name()),
        )
        .await
}

/// The Services an Ingress routes to.
fn ingress_services(ing: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(n) = ing
        .pointer("/spec/defaultBackend/service/name")
        .and_then(Value::as_str)
    {
        out.insert(n.to_string());
    }
    for rule in ing
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for path in rule
            .pointer("/http/paths")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = path
                .pointer("/backend/service/name")
                .and_then(Value::as_str)
            {
                out.insert(n.to_string());
            }
        }
    }
    out
}

/// Apply order: what others refer to first (as Helm orders its kinds).
fn apply_order(kind: &str) -> u8 {
    match kind {
        "ServiceAccount" => 0,
        "Secret" | "ConfigMap" => 1,
        "PersistentVolumeClaim" => 2,
        "Role" | "RoleBinding" => 3,
        "Service" => 4,
        "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "CronJob" => 5,
        "HorizontalPodAutoscaler" | "PodDisruptionBudget" => 6,
        "Ingress" => 7,
        _ => 8,
    }
}

/// `path: value` lines that differ between two objects, ignoring what the
/// server maintains (status, managed fields, versions, timestamps).
pub fn diff_lines(before: &Value, after: &Value) -> Vec<String> {
    fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    flatten(&format!("{prefix}.{k}"), x, out);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    flatten(&format!("{prefix}[{i}]"), x, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    fn clean(v: &Value) -> Value {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("status");
        }
        if let Some(labels) = v
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            labels.remove(RELEASE_REVISION_LABEL);
        }
        if let Some(md) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in [
                "managedFields",
                "resourceVersion",
                "generation",
                "uid",
                "creationTimestamp",
            ] {
                md.remove(k);
            }
        }
        v
    }
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &clean(before), &mut a);
    flatten("", &clean(after), &mut b);
    let mut out = Vec::new();
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let k2 = k.trim_start_matches('.');
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => {
                out.push(format!("- {k2}: {x}"));
                out.push(format!("+ {k2}: {y}"));
            }
            (Some(x), None) => out.push(format!("- {k2}: {x}")),
            (None, Some(y)) => out.push(format!("+ {k2}: {y}")),
            (None, None) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_run_diffs_ignore_what_the_server_maintains() {
        let a = json!({"metadata": {"name": "x", "resourceVersion": "1"}, "spec": {"image": "a"}, "status": {"x": 1}});
        let b = json!({"metadata": {"name": "x", "resourceVersion": "2"}, "spec": {"image": "b"}, "status": {"x": 2}});
        assert_eq!(
            diff_lines(&a, &b),
            vec!["- spec.image: \"a\"", "+ spec.image: \"b\""]
        );
        assert!(diff_lines(&a, &a).is_empty());
    }

    #[test]
    fn ingress_backends_are_found() {
        let ing = json!({"spec": {"rules": [{"http": {"paths": [{"backend": {"service": {"name": "app"}}}]}}]}});
        assert_eq!(ingress_services(&ing), ["app".to_string()].into());
    }
}
