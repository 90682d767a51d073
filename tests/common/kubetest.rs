//! The Kubernetes test server, started through `kubetest/launch`, one per
//! test, stopped when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Controller delays short enough for tests, long enough to be waited on.
pub const QUICK: &[&str] = &[
    "--deployment-delay",
    "0.2",
    "--ingress-delay",
    "0.2",
    "--namespace-delay",
    "0.1",
];

pub struct KubeTest {
    child: Child,
    pub endpoint: String,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl KubeTest {
    /// Starts it; ALBs for `alb` Ingresses are made in the local AWS at `aws_endpoint`.
    pub fn start(aws_endpoint: &str) -> KubeTest {
        let mut args = vec!["--aws-endpoint", aws_endpoint];
        args.extend_from_slice(QUICK);
        KubeTest::start_with(&args)
    }

    /// Starts it with these launcher flags (besides `--kubeconfig`).
    pub fn start_with(args: &[&str]) -> KubeTest {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let mut child = Command::new(root.join("kubetest/launch"))
            .args(["--kubeconfig", kubeconfig.to_str().unwrap()])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kubetest/launch must start");
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
        KubeTest {
            child,
            endpoint,
            kubeconfig,
            _dir: dir,
        }
    }

    /// A server that authenticates EKS tokens for `cluster` (checked with
    /// the local AWS's STS, signatures for the test key), with EKS's
    /// CoreDNS in place.
    pub fn for_eks_cluster(aws_endpoint: &str, cluster: &str) -> KubeTest {
        let kube = KubeTest::start_with(
            &[
                "--aws-endpoint",
                aws_endpoint,
                "--eks-cluster-name",
                cluster,
                "--eks-secret-key",
                "testing:testing",
            ]
            .into_iter()
            .chain(QUICK.iter().copied())
            .collect::<Vec<_>>(),
        );
        kube.seed_eks_defaults();
        kube
    }

    /// Runs the real kubectl against it.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl must be installed")
    }

    /// `kubectl get -o json` of one object, or `None` when it does not exist.
    pub fn get(&self, args: &[&str]) -> Option<serde_json::Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl(&all);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// The server's CA certificate, PEM, from its kubeconfig.
    pub fn ca_pem(&self) -> String {
        use base64::Engine as _;
        let text = std::fs::read_to_string(&self.kubeconfig).unwrap();
        let data = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
            .expect("the kubeconfig has the CA");
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim().trim_matches('"'))
            .unwrap();
        String::from_utf8(pem).unwrap()
    }

    /// What its EKS token authentication saw (`/_kubetest/auth`).
    pub fn auth(&self) -> serde_json::Value {
        let out = self.kubectl(&["get", "--raw", "/_kubetest/auth"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The API requests clients made since the last reset, by method, and
    /// how many of them write (`mutating`).
    pub fn requests(&self) -> serde_json::Value {
        let out = self.kubectl(&["get", "--raw", "/_kubetest/requests"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The request log since the last reset (`/_kubetest/requests?log=1`):
    /// each request's times under `log`, each watch under `watches`.
    pub fn request_log(&self) -> serde_json::Value {
        let out = self.kubectl(&["get", "--raw", "/_kubetest/requests?log=1"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The longest chain of API requests each sent after the one before it
    /// was answered, from the request log: how many round trips one after
    /// another a command made.
    pub fn longest_request_chain(&self) -> usize {
        let log = self.request_log();
        let mut calls: Vec<(f64, f64)> = log["log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["arrived"].as_f64().unwrap(),
                    e["answered"].as_f64().unwrap(),
                )
            })
            .collect();
        calls.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut depth = vec![0usize; calls.len()];
        for i in 0..calls.len() {
            depth[i] = 1
                + (0..i)
                    .filter(|&j| calls[j].1 <= calls[i].0)
                    .map(|j| depth[j])
                    .max()
                    .unwrap_or(0);
        }
        depth.into_iter().max().unwrap_or(0)
    }

    /// Merges settings into the server's live configuration (`/_kubetest/config`).
    pub fn configure(&self, settings: serde_json::Value) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), settings.to_string()).unwrap();
        let out = self.kubectl(&[
            "create",
            "--raw",
            "/_kubetest/config",
            "-f",
            file.path().to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn reset_requests(&self) {
        let out = self.kubectl(&["delete", "--raw", "/_kubetest/requests"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// What EKS puts in a new cluster (the CoreDNS Deployment slipway patches).
    pub fn seed_eks_defaults(&self) {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eks-coredns.yaml");
        let out = self.kubectl(&[
            "apply",
            "--server-side",
            "--field-manager",
            "eks",
            "-f",
            fixture.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for KubeTest {
    fn drop(&mut self) {
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
