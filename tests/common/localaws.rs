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
