//! S3 objects as slipway's state store needs them: read with ETag and
//! `Last-Modified`, written only on a precondition (`If-Match` /
//! `If-None-Match: *`), deleted only after a read shows the expected
//! version, and the bucket set up for state. The state backend
//! (`state::s3`) builds its lock and conditional writes on this; every SDK
//! type stays here.
//!
//! Calls run on a small runtime of the store's own, on threads of their
//! own, so the store can be called synchronously from anywhere, inside
//! another runtime included.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;

/// The backend's own runtime. Dropped without blocking: the last owner may
/// be a task of the caller's runtime, where a blocking drop would panic.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for OwnRuntime {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &Self::Target {
        match &self.0 {
            Some(rt) => rt,
            None => unreachable!("the runtime is only taken on drop"),
        }
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs `fut` to completion on `rt`, from a thread that is not inside any
/// runtime (callers may be).
fn run<T: Send>(rt: &tokio::runtime::Runtime, fut: impl Future<Output = T> + Send) -> T {
    std::thread::scope(|s| {
        match s.spawn(|| rt.block_on(fut)).join() {
            Ok(v) => v,
            // The closure only awaits SDK calls, which do not panic; if one
            // did, carry it on.
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// An SDK error, with its code and message (`AccessDenied: …`).
fn describe<E>(e: &aws_sdk_s3::error::SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    if code(e) == Some("NoSuchBucket") {
        return "NoSuchBucket: the state bucket does not exist; check `[state] bucket`, or create it with `slipway state init-backend`".to_string();
    }
    match (e.as_service_error(), status) {
        (Some(se), _) if se.code().is_some() => format!(
            "{}: {}",
            se.code().unwrap_or_default(),
            se.message().unwrap_or("(no message)")
        ),
        // An answer without an error document (S3 sends none to HEAD, and
        // none for some denials).
        (_, Some(403)) => "HTTP 403 Forbidden: access denied (the bucket's policy, this identity's S3 permissions, or the KMS key's)".to_string(),
        (_, Some(s)) => format!("HTTP {s} without an error message"),
        (_, None) => aws_smithy_types::error::display::DisplayErrorContext(e).to_string(),
    }
}

fn code<E: ProvideErrorMetadata>(e: &aws_sdk_s3::error::SdkError<E>) -> Option<&str> {
    e.as_service_error().and_then(|se| se.code())
}

fn status<E>(e: &aws_sdk_s3::error::SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// A failed precondition (`If-Match`, `If-None-Match`): 412.
fn precondition_failed<E: ProvideErrorMetadata>(e: &aws_sdk_s3::error::SdkError<E>) -> bool {
    code(e) == Some("PreconditionFailed") || status(e) == Some(412)
}

/// 409 `ConditionalRequestConflict`: a conditional write raced another on
/// the same key; S3 says to retry.
fn conditional_conflict<E: ProvideErrorMetadata>(e: &aws_sdk_s3::error::SdkError<E>) -> bool {
    code(e) == Some("ConditionalRequestConflict") || (status(e) == Some(409) && code(e).is_none())
}

/// The object does not exist (never "the bucket does not exist": that is
/// an error, not an empty state).
fn not_found<E: ProvideErrorMetadata>(e: &aws_sdk_s3::error::SdkError<E>) -> bool {
    matches!(code(e), Some("NoSuchKey" | "NotFound"))
        || (status(e) == Some(404) && code(e).is_none())
}

/// How long one S3 call may take: well under a lock's renewal period, so a
/// stalled renewal fails (and is retried) rather than outliving the lease.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(8);

/// An object's body and ETag.
pub struct Object {
    pub body: Vec<u8>,
    pub etag: String,
    /// S3's clock, when it was last written.
    pub modified: Option<String>,
}

/// A state bucket's objects.
#[derive(Clone)]
pub struct ObjectStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Objects written with `encrypt` use SSE-KMS with this key.
    kms_key_id: Option<String>,
    runtime: Arc<OwnRuntime>,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("bucket", &self.bucket)
            .finish()
    }
}

/// What `state init-backend` sets a bucket up for.
#[derive(Debug, Clone)]
pub struct BucketSpec {
    pub name: String,
    pub region: String,
    pub kms_key_id: Option<String>,
    /// The lock object, whose old versions the lifecycle rule expires.
    pub lock_key: String,
}

fn new_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("state-s3")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

impl ObjectStore {
    /// Connects with the standard credential chain (and `AWS_ENDPOINT_URL`
    /// or `AWS_ENDPOINT_URL_S3`, as every other client); nothing is called
    /// until it is used.
    pub fn connect(bucket: &str, region: &str, kms_key_id: Option<String>) -> Result<Self, String> {
        let runtime = new_runtime()?;
        let region = region.to_string();
        let config = run(&runtime, async move {
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(region))
                .load()
                .await
        });
        let endpoint = std::env::var("AWS_ENDPOINT_URL_S3").is_ok();
        Ok(Self::on(bucket, kms_key_id, &config, endpoint, runtime))
    }

    /// With an SDK configuration of the caller's (tests, other tools).
    pub fn with_config(
        bucket: &str,
        kms_key_id: Option<String>,
        config: &aws_types::SdkConfig,
    ) -> Result<Self, String> {
        Ok(Self::on(bucket, kms_key_id, config, false, new_runtime()?))
    }

    fn on(
        bucket: &str,
        kms_key_id: Option<String>,
        config: &aws_types::SdkConfig,
        s3_endpoint: bool,
        runtime: tokio::runtime::Runtime,
    ) -> Self {
        let timeouts = aws_smithy_types::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        let mut s3 = aws_sdk_s3::config::Builder::from(config).timeout_config(timeouts);
        // A local or S3-compatible endpoint takes bucket names in the path.
        if config.endpoint_url().is_some() || s3_endpoint {
            s3 = s3.force_path_style(true);
        }
        ObjectStore {
            client: aws_sdk_s3::Client::from_conf(s3.build()),
            bucket: bucket.to_string(),
            kms_key_id,
            runtime: Arc::new(OwnRuntime(Some(runtime))),
        }
    }

    pub fn get(&self, key: &str) -> Result<Option<Object>, String> {
        let client = self.client.clone();
        let bucket = self.bucket.clone();
        let key = key.to_string();
        run(&self.runtime, async move {
            match client.get_object().bucket(&bucket).key(&key).send().await {
                Ok(out) => {
                    let etag = out.e_tag().unwrap_or_default().to_string();
                    let modified = out
                        .last_modified()
                        .and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok());
                    let body = out
                        .body
                        .collect()
                        .await
                        .map_err(|e| format!("reading its body failed: {e}"))?
                        .into_bytes()
                        .to_vec();
                    Ok(Some(Object {
                        body,
                        etag,
                        modified,
                    }))
                }
                Err(e) if not_found(&e) => Ok(None),
                Err(e) => Err(describe(&e)),
            }
        })
    }

    /// Puts `body` at `key` if the object's ETag is `if_match`, or if it
    /// does not exist (`None`). `Ok(None)` when the precondition failed.
    pub fn put_if(
        &self,
        key: &str,
        body: Vec<u8>,
        if_match: Option<&str>,
        encrypt: bool,
    ) -> Result<Option<String>, String> {
        let client = self.client.clone();
        let bucket = self.bucket.clone();
        let key = key.to_string();
        let if_match = if_match.map(str::to_string);
        let kms = self.kms_key_id.clone().filter(|_| encrypt);
        run(&self.runtime, async move {
            let build = || {
                let mut put = client
                    .put_object()
                    .bucket(&bucket)
                    .key(&key)
                    .content_type("application/json")
                    .body(ByteStream::from(body.clone()));
                put = match &if_match {
                    Some(etag) => put.if_match(etag),
                    None => put.if_none_match("*"),
                };
                if let Some(k) = &kms {
                    put = put
                        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
                        .ssekms_key_id(k);
                }
                put
            };
            let mut delay = Duration::from_millis(100);
            for _ in 0..6 {
                match build().send().await {
                    Ok(out) => return Ok(Some(out.e_tag().unwrap_or_default().to_string())),
                    Err(e) if conditional_conflict(&e) => {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Err(e) if precondition_failed(&e) => return Ok(None),
                    // `If-Match` on an object that is gone.
                    Err(e) if if_match.is_some() && not_found(&e) => return Ok(None),
                    Err(e) => return Err(describe(&e)),
                }
            }
            Err(
                "ConditionalRequestConflict: other writes to this key kept racing this one"
                    .to_string(),
            )
        })
    }

    /// Deletes `key` if it is still the version `etag` and `still_ours`
    /// says so of its body. The object is read first (some S3-compatible
    /// servers ignore `If-Match` on a delete), then deleted conditionally;
    /// where the server refuses conditional deletes, unconditionally right
    /// after that check.
    pub fn delete_if(
        &self,
        key: &str,
        etag: &str,
        still_ours: impl Fn(&[u8]) -> bool,
    ) -> Result<bool, String> {
        let Some(now) = self.get(key)? else {
            return Ok(false);
        };
        if now.etag != etag || !still_ours(&now.body) {
            return Ok(false);
        }
        let client = self.client.clone();
        let bucket = self.bucket.clone();
        let key = key.to_string();
        let etag = etag.to_string();
        run(&self.runtime, async move {
            let conditional = client
                .delete_object()
                .bucket(&bucket)
                .key(&key)
                .if_match(&etag)
                .send()
                .await;
            match conditional {
                Ok(_) => Ok(true),
                Err(e) if precondition_failed(&e) || not_found(&e) => Ok(false),
                Err(e)
                    if matches!(
                        code(&e),
                        Some("NotImplemented" | "InvalidArgument" | "InvalidRequest")
                    ) =>
                {
                    client
                        .delete_object()
                        .bucket(&bucket)
                        .key(&key)
                        .send()
                        .await
                        .map(|_| true)
                        .map_err(|e| describe(&e))
                }
                Err(e) => Err(describe(&e)),
            }
        })
    }

    /// Creates or brings up the bucket (`state init-backend`); what it did.
    pub fn init_bucket(&self, spec: &BucketSpec) -> Result<Vec<String>, String> {
        let client = self.client.clone();
        let spec = spec.clone();
        run(&self.runtime, async move { init(&client, &spec).await })
    }
}

/// The statement that refuses every request not made over TLS.
const TLS_ONLY_SID: &str = "SlipwayDenyInsecureTransport";

async fn init(client: &aws_sdk_s3::Client, at: &BucketSpec) -> Result<Vec<String>, String> {
    use aws_sdk_s3::types::{
        BucketLifecycleConfiguration, BucketLocationConstraint, BucketVersioningStatus,
        CreateBucketConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
        LifecycleRuleFilter, NoncurrentVersionExpiration, PublicAccessBlockConfiguration,
        VersioningConfiguration,
    };
    let b = at.name.as_str();
    let mut done = Vec::new();

    let mut create = client.create_bucket().bucket(b);
    if at.region != "us-east-1" {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(at.region.as_str()))
                .build(),
        );
    }
    match create.send().await {
        Ok(_) => done.push(format!("created bucket `{b}` in {}", at.region)),
        Err(e) if code(&e) == Some("BucketAlreadyOwnedByYou") => {
            done.push(format!("bucket `{b}` exists (yours)"));
        }
        Err(e) if code(&e) == Some("BucketAlreadyExists") => {
            return Err(format!(
                "bucket name `{b}` is taken by another AWS account; choose another `[state] bucket`"
            ));
        }
        Err(e) => return Err(format!("CreateBucket: {}", describe(&e))),
    }

    client
        .put_bucket_versioning()
        .bucket(b)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .map_err(|e| format!("PutBucketVersioning: {}", describe(&e)))?;
    done.push("versioning on: every state version is kept".to_string());

    // Without `kms_key_id`, a default encryption the bucket already has (an
    // organisation's KMS key, say) is kept.
    let existing = match client.get_bucket_encryption().bucket(b).send().await {
        Ok(out) => out
            .server_side_encryption_configuration()
            .and_then(|c| c.rules().first())
            .and_then(|r| r.apply_server_side_encryption_by_default())
            .map(|d| {
                format!(
                    "{}{}",
                    d.sse_algorithm().as_str(),
                    d.kms_master_key_id()
                        .map(|k| format!(" with `{k}`"))
                        .unwrap_or_default()
                )
            }),
        Err(e) if code(&e) == Some("ServerSideEncryptionConfigurationNotFoundError") => None,
        Err(e) => return Err(format!("GetBucketEncryption: {}", describe(&e))),
    };
    if let (None, Some(kept)) = (&at.kms_key_id, &existing) {
        done.push(format!("default encryption kept: {kept}"));
    } else {
        put_encryption(client, at, &mut done).await?;
    }

    client
        .put_public_access_block()
        .bucket(b)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(|e| format!("PutPublicAccessBlock: {}", describe(&e)))?;
    done.push("public access blocked".to_string());

    // TLS only, added to whatever policy the bucket has.
    let mut policy = match client.get_bucket_policy().bucket(b).send().await {
        Ok(out) => serde_json::from_str::<serde_json::Value>(out.policy().unwrap_or("{}"))
            .map_err(|e| format!("the bucket's policy is not JSON: {e}"))?,
        Err(e) if code(&e) == Some("NoSuchBucketPolicy") => serde_json::json!({}),
        Err(e) => return Err(format!("GetBucketPolicy: {}", describe(&e))),
    };
    let partition = crate::stack::partition_of(&at.region);
    let statement = serde_json::json!({
        "Sid": TLS_ONLY_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [format!("arn:{partition}:s3:::{b}"), format!("arn:{partition}:s3:::{b}/*")],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    });
    let statements = policy
        .as_object_mut()
        .ok_or("the bucket's policy is not a JSON object")?
        .entry("Statement")
        .or_insert_with(|| serde_json::json!([]));
    if !statements.is_array() {
        *statements = serde_json::json!([statements.clone()]);
    }
    let list = statements
        .as_array_mut()
        .ok_or("the bucket policy's Statement is not a list")?;
    list.retain(|st| st.get("Sid").and_then(|s| s.as_str()) != Some(TLS_ONLY_SID));
    list.push(statement);
    policy["Version"] = serde_json::json!("2012-10-17");
    client
        .put_bucket_policy()
        .bucket(b)
        .policy(policy.to_string())
        .send()
        .await
        .map_err(|e| format!("PutBucketPolicy: {}", describe(&e)))?;
    done.push(format!(
        "bucket policy: requests without TLS are denied (`{TLS_ONLY_SID}`)"
    ));

    // The lock object is rewritten every few seconds; with versioning on,
    // its old versions would pile up. Other rules are kept.
    let lock_key = at.lock_key.clone();
    let id: String = format!("slipway-lock-versions:{lock_key}")
        .chars()
        .take(255)
        .collect();
    let (mut rules, minimum_size): (Vec<LifecycleRule>, _) = match client
        .get_bucket_lifecycle_configuration()
        .bucket(b)
        .send()
        .await
    {
        Ok(out) => (
            out.rules().to_vec(),
            out.transition_default_minimum_object_size().cloned(),
        ),
        Err(e) if code(&e) == Some("NoSuchLifecycleConfiguration") => (Vec::new(), None),
        Err(e) => return Err(format!("GetBucketLifecycleConfiguration: {}", describe(&e))),
    };
    rules.retain(|r| r.id() != Some(id.as_str()));
    rules.push(
        LifecycleRule::builder()
            .id(&id)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix(&lock_key).build())
            .noncurrent_version_expiration(
                NoncurrentVersionExpiration::builder()
                    .noncurrent_days(1)
                    .build(),
            )
            .expiration(
                LifecycleExpiration::builder()
                    .expired_object_delete_marker(true)
                    .build(),
            )
            .build()
            .map_err(|e| format!("lifecycle rule: {e}"))?,
    );
    client
        .put_bucket_lifecycle_configuration()
        .bucket(b)
        .set_transition_default_minimum_object_size(minimum_size)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .set_rules(Some(rules))
                .build()
                .map_err(|e| format!("lifecycle configuration: {e}"))?,
        )
        .send()
        .await
        .map_err(|e| format!("PutBucketLifecycleConfiguration: {}", describe(&e)))?;
    done.push(format!(
        "lifecycle rule `{id}`: old versions of the lock object expire after a day"
    ));
    Ok(done)
}

async fn put_encryption(
    client: &aws_sdk_s3::Client,
    at: &BucketSpec,
    done: &mut Vec<String>,
) -> Result<(), String> {
    use aws_sdk_s3::types::{
        ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
        ServerSideEncryptionRule,
    };
    let b = at.name.as_str();
    let mut default = ServerSideEncryptionByDefault::builder();
    default = match &at.kms_key_id {
        Some(k) => default
            .sse_algorithm(ServerSideEncryption::AwsKms)
            .kms_master_key_id(k),
        None => default.sse_algorithm(ServerSideEncryption::Aes256),
    };
    let rule = ServerSideEncryptionRule::builder()
        .apply_server_side_encryption_by_default(
            default
                .build()
                .map_err(|e| format!("encryption settings: {e}"))?,
        )
        .bucket_key_enabled(at.kms_key_id.is_some())
        .build();
    client
        .put_bucket_encryption()
        .bucket(b)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(rule)
                .build()
                .map_err(|e| format!("encryption settings: {e}"))?,
        )
        .send()
        .await
        .map_err(|e| format!("PutBucketEncryption: {}", describe(&e)))?;
    done.push(match &at.kms_key_id {
        Some(k) => format!("default encryption: SSE-KMS with `{k}`"),
        None => "default encryption: SSE-S3 (AES-256)".to_string(),
    });

    Ok(())
}
