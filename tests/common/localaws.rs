//! The local AWS (moto + realism layer), started through `localaws/launch`
//! exactly as a user would, one per test, stopped when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub struct LocalAws {
    child: Child,
    pub endpoint: String,
    /// The root CA of the local EKS OIDC issuer, for `AWS_CA_BUNDLE`.
    pub oidc_ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl LocalAws {
    /// Starts it with extra launcher flags (e.g. `--time-scale 0.001`).
    pub fn start(args: &[&str]) -> LocalAws {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        let oidc_ca = dir.path().join("oidc-ca.pem");
        let mut child = Command::new(root.join("localaws/launch"))
            .args(args)
            .arg("--oidc-ca-file")
            .arg(&oidc_ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("localaws/launch must start");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the launcher prints its endpoint");
        let endpoint = line
            .trim()
            .strip_prefix("endpoint=")
            .unwrap_or_else(|| panic!("unexpected launcher output {line:?}"))
            .to_string();
        LocalAws {
            child,
            endpoint,
            oidc_ca,
            _dir: dir,
        }
    }

    fn request(&self, method: &str, path: &str, body: &str) -> Value {
        let hostport = self.endpoint.trim_start_matches("http://");
        let mut s = TcpStream::connect(hostport).expect("connect to the local AWS");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str(body).unwrap_or(Value::Null)
    }

    /// Merges `config` into the layer's configuration.
    pub fn configure(&self, config: Value) {
        let answer = self.request("POST", "/_realism/config", &config.to_string());
        assert!(answer.get("error").is_none(), "{answer}");
    }

    pub fn calls(&self) -> Value {
        self.request("GET", "/_realism/calls", "")
    }

    /// Every call in arrival order, as `(service, operation)`.
    pub fn call_log(&self) -> Vec<(String, String)> {
        self.request("GET", "/_realism/calls?log=1", "")["log"]
            .as_array()
            .map(|log| {
                log.iter()
                    .map(|c| {
                        (
                            c["service"].as_str().unwrap_or_default().to_string(),
                            c["operation"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every call in arrival order, whole: `service`, `operation`,
    /// `arrived` and `answered` (the machine's monotonic seconds, as the
    /// Kubernetes test server's request log).
    pub fn timed_call_log(&self) -> Vec<Value> {
        self.request("GET", "/_realism/calls?log=1", "")["log"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// How many calls of `operation` (e.g. `CreateFargateProfile`) it served.
    pub fn calls_of(&self, operation: &str) -> u64 {
        self.calls()["calls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["operation"] == operation)
            .map(|c| c["count"].as_u64().unwrap_or(0))
            .sum()
    }

    /// The local OIDC issuer: `ca_pem`, `thumbprint`, `port`.
    pub fn oidc(&self) -> Value {
        self.request("GET", "/_realism/oidc", "")
    }

    pub fn reset_calls(&self) {
        self.request("DELETE", "/_realism/calls", "");
    }

    /// Environment for a slipway process talking to it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "ap-south-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", "/nonexistent".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".into()),
            ("AWS_CA_BUNDLE", self.oidc_ca.display().to_string()),
        ]
    }

    /// The SDK configuration of a client acting on the local AWS the way
    /// someone else would (independently of slipway).
    pub fn sdk_config(&self) -> aws_types::SdkConfig {
        let creds =
            aws_credential_types::Credentials::new("testing", "testing", None, None, "tests");
        aws_types::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_types::region::Region::new("ap-south-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(creds),
            )
            .build()
    }

    pub async fn eks(&self) -> aws_sdk_eks::Client {
        aws_sdk_eks::Client::new(&self.sdk_config())
    }

    pub async fn elbv2(&self) -> aws_sdk_elasticloadbalancingv2::Client {
        aws_sdk_elasticloadbalancingv2::Client::new(&self.sdk_config())
    }

    pub async fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk_config())
    }

    pub async fn iam(&self) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.sdk_config())
    }

    pub async fn ecr(&self) -> aws_sdk_ecr::Client {
        aws_sdk_ecr::Client::new(&self.sdk_config())
    }

    /// Every live cloud object carrying a `slipway:address` tag, by that
    /// address: EC2 (instances and NAT gateways that are going or gone
    /// left out), IAM roles, instance profiles, policies and OIDC
    /// providers, ECR repositories, and EKS clusters, Fargate profiles and
    /// access entries (those being deleted left out). An instance's root
    /// volume, tagged as its instance, is part of it. Read with the SDK,
    /// independently of slipway.
    pub fn objects_by_address(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(self.read_objects_by_address())
    }

    async fn read_objects_by_address(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        use aws_sdk_ec2::types::Filter;
        const KEY: &str = "slipway:address";
        let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        let mut add = |addr: &str, id: &str| {
            let ids = out.entry(addr.to_string()).or_default();
            if !ids.iter().any(|i| i == id) {
                ids.push(id.to_string());
            }
        };
        let of = |tags: Option<&std::collections::HashMap<String, String>>| {
            tags.and_then(|t| t.get(KEY)).cloned()
        };

        let ec2 = self.ec2().await;
        let gone: std::collections::BTreeSet<String> = {
            let mut gone = std::collections::BTreeSet::new();
            let r = ec2.describe_instances().send().await.unwrap();
            for i in r.reservations().iter().flat_map(|r| r.instances()) {
                let state = i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string());
                if matches!(state.as_deref(), Some("terminated" | "shutting-down")) {
                    gone.insert(i.instance_id().unwrap_or_default().to_string());
                }
            }
            let n = ec2.describe_nat_gateways().send().await.unwrap();
            for g in n.nat_gateways() {
                let state = g.state().map(|s| s.as_str().to_string());
                let id = g.nat_gateway_id().unwrap_or_default().to_string();
                if matches!(state.as_deref(), Some("deleted" | "deleting")) {
                    gone.insert(id);
                } else if let Some(addr) = g.tags().iter().find(|t| t.key() == Some(KEY)) {
                    add(addr.value().unwrap_or_default(), &id);
                }
            }
            gone
        };
        let mut token = None;
        loop {
            let r = ec2
                .describe_tags()
                .filters(Filter::builder().name("key").values(KEY).build())
                .set_next_token(token)
                .send()
                .await
                .unwrap();
            for t in r.tags() {
                let id = t.resource_id().unwrap_or_default();
                let addr = t.value().unwrap_or_default();
                // An instance's root volume carries its instance's tags.
                let root_volume = t.resource_type().map(|k| k.as_str()) == Some("volume")
                    && addr.starts_with("aws.instance.");
                if !gone.contains(id) && !root_volume {
                    add(addr, id);
                }
            }
            token = r.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }

        let iam = self.iam().await;
        let tag_of = |tags: &[aws_sdk_iam::types::Tag]| {
            tags.iter()
                .find(|t| t.key() == KEY)
                .map(|t| t.value().to_string())
        };
        for r in iam
            .list_roles()
            .max_items(1000)
            .send()
            .await
            .unwrap()
            .roles()
        {
            let tags = iam
                .list_role_tags()
                .role_name(r.role_name())
                .send()
                .await
                .unwrap();
            if let Some(a) = tag_of(tags.tags()) {
                add(&a, r.arn());
            }
        }
        for ip in iam
            .list_instance_profiles()
            .max_items(1000)
            .send()
            .await
            .unwrap()
            .instance_profiles()
        {
            let tags = iam
                .list_instance_profile_tags()
                .instance_profile_name(ip.instance_profile_name())
                .send()
                .await
                .unwrap();
            if let Some(a) = tag_of(tags.tags()) {
                add(&a, ip.arn());
            }
        }
        for pol in iam
            .list_policies()
            .scope(aws_sdk_iam::types::PolicyScopeType::Local)
            .max_items(1000)
            .send()
            .await
            .unwrap()
            .policies()
        {
            let arn = pol.arn().unwrap_or_default();
            let tags = iam.list_policy_tags().policy_arn(arn).send().await.unwrap();
            if let Some(a) = tag_of(tags.tags()) {
                add(&a, arn);
            }
        }
        for o in iam
            .list_open_id_connect_providers()
            .send()
            .await
            .unwrap()
            .open_id_connect_provider_list()
        {
            let arn = o.arn().unwrap_or_default();
            let tags = iam
                .list_open_id_connect_provider_tags()
                .open_id_connect_provider_arn(arn)
                .send()
                .await
                .unwrap();
            if let Some(a) = tag_of(tags.tags()) {
                add(&a, arn);
            }
        }

        let ecr = self.ecr().await;
        for repo in ecr
            .describe_repositories()
            .send()
            .await
            .unwrap()
            .repositories()
        {
            let arn = repo.repository_arn().unwrap_or_default();
            let tags = ecr
                .list_tags_for_resource()
                .resource_arn(arn)
                .send()
                .await
                .unwrap();
            if let Some(t) = tags.tags().iter().find(|t| t.key() == KEY) {
                add(t.value(), arn);
            }
        }

        let eks = self.eks().await;
        let deleting = |s: Option<&str>| s == Some("DELETING");
        for name in eks.list_clusters().send().await.unwrap().clusters() {
            let c = eks.describe_cluster().name(name).send().await.unwrap();
            let Some(c) = c.cluster() else { continue };
            if deleting(c.status().map(|s| s.as_str())) {
                continue;
            }
            if let Some(a) = of(c.tags()) {
                add(&a, c.arn().unwrap_or_default());
            }
            let profiles = eks
                .list_fargate_profiles()
                .cluster_name(name)
                .send()
                .await
                .unwrap();
            for pn in profiles.fargate_profile_names() {
                let fp = eks
                    .describe_fargate_profile()
                    .cluster_name(name)
                    .fargate_profile_name(pn)
                    .send()
                    .await
                    .unwrap();
                let Some(fp) = fp.fargate_profile() else {
                    continue;
                };
                if deleting(fp.status().map(|s| s.as_str())) {
                    continue;
                }
                if let Some(a) = of(fp.tags()) {
                    add(&a, fp.fargate_profile_arn().unwrap_or_default());
                }
            }
            let entries = eks
                .list_access_entries()
                .cluster_name(name)
                .send()
                .await
                .unwrap();
            for principal in entries.access_entries() {
                let e = eks
                    .describe_access_entry()
                    .cluster_name(name)
                    .principal_arn(principal)
                    .send()
                    .await
                    .unwrap();
                if let Some(e) = e.access_entry()
                    && let Some(a) = of(e.tags())
                {
                    add(&a, e.access_entry_arn().unwrap_or_default());
                }
            }
        }
        out
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::from(&self.sdk_config())
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }
}

impl Drop for LocalAws {
    fn drop(&mut self) {
        // Closing stdin stops the launcher; kill is the fallback.
        drop(self.child.stdin.take());
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
