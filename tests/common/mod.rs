//! Test harness: runs the real binary in a fresh project directory against
//! the file-backed simulated cloud, and dumps everything on failure.
#![allow(dead_code)]

pub mod kubetest;
pub mod localaws;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub struct Project {
    pub dir: tempfile::TempDir,
    /// Extra environment for every slipway run (the local AWS's endpoint).
    pub env: Vec<(&'static str, String)>,
    /// Whether slipway runs with the simulated cloud at all.
    pub simulated: bool,
}

pub struct Run {
    pub cmd: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn dump(&self) -> String {
        format!(
            "$ {}\nexit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.cmd, self.code, self.stdout, self.stderr
        )
    }

    #[track_caller]
    pub fn code(&self, expected: i32) -> &Self {
        assert_eq!(self.code, expected, "unexpected exit code\n{}", self.dump());
        self
    }

    #[track_caller]
    pub fn success(&self) -> &Self {
        self.code(0)
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n{}",
            self.dump()
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n{}",
            self.dump()
        );
        self
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{}", self.dump()))
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

impl Project {
    /// A project holding the reference stack and its overlays.
    pub fn reference() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        copy_dir(&root.join("k8s"), &dir.path().join("k8s"));
        std::fs::create_dir_all(dir.path().join("stacks")).unwrap();
        std::fs::copy(
            root.join("stacks/smallcase.toml"),
            dir.path().join("stacks/smallcase.toml"),
        )
        .unwrap();
        Project {
            dir,
            env: Vec::new(),
            simulated: true,
        }
    }

    /// The whole reference platform against the local AWS and the
    /// Kubernetes test server: no simulated cloud at all. slipway connects
    /// with the test server's kubeconfig.
    pub fn platform_on(aws: &localaws::LocalAws, kube: &kubetest::KubeTest) -> Project {
        let mut p = Project::reference();
        p.env = aws.env();
        p.env
            .push(("SLIPWAY_KUBECONFIG", kube.kubeconfig.display().to_string()));
        p.simulated = false;
        p
    }

    /// The whole platform as above, but slipway connects to Kubernetes as
    /// it does by default: through the EKS cluster (endpoint and CA from
    /// DescribeCluster, which the local AWS points at the test server, and a
    /// token signed in-process that the test server checks with STS).
    pub fn platform_through_eks(aws: &localaws::LocalAws, kube: &kubetest::KubeTest) -> Project {
        aws.configure(serde_json::json!({"eks_api_servers": {"smallcase": {
            "endpoint": kube.endpoint, "ca_pem": kube.ca_pem()}}}));
        let mut p = Project::reference();
        p.env = aws.env();
        p.simulated = false;
        p
    }

    /// The reference stack against the local AWS: the real AWS provider, the
    /// simulated cloud for Kubernetes objects, and the controller's IAM
    /// policy from a file (`[ingress] iam_policy_file`).
    pub fn reference_on(aws: &localaws::LocalAws) -> Project {
        let mut p = Project::reference();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lbc-iam-policy.json"),
            p.path("lbc-iam-policy.json"),
        )
        .unwrap();
        p.edit_stack(
            "controller_version = \"2.8.2\"",
            "controller_version = \"2.8.2\"\niam_policy_file = \"lbc-iam-policy.json\"",
        );
        p.env = aws.env();
        p.env.push(("SLIPWAY_FAKE_KINDS", "k8s.".into()));
        p
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn cloud(&self) -> PathBuf {
        self.path("cloud.json")
    }

    pub fn state_path(&self) -> PathBuf {
        self.path("state/smallcase.json")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_slipway"));
        c.args(args).current_dir(self.dir.path());
        if self.simulated {
            c.env("SLIPWAY_FAKE_CLOUD", self.cloud());
        } else {
            c.env_remove("SLIPWAY_FAKE_CLOUD");
        }
        c.env_remove("SLIPWAY_KUBECONFIG")
            .env_remove("NO_COLOR")
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().unwrap();
        self.finish(args, out)
    }

    pub fn finish(&self, args: &[&str], out: Output) -> Run {
        Run {
            cmd: format!("slipway {}", args.join(" ")),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Rewrites the stack file.
    pub fn edit_stack(&self, from: &str, to: &str) {
        let p = self.path("stacks/smallcase.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "the stack has no {from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    pub fn world(&self) -> Value {
        match std::fs::read_to_string(self.cloud()) {
            Ok(t) => serde_json::from_str(&t).unwrap(),
            Err(_) => serde_json::json!({"objects": {}, "calls": []}),
        }
    }

    /// Changes the simulated cloud between runs.
    pub fn edit_world(&self, f: impl FnOnce(&mut Value)) {
        let mut w = self.world();
        f(&mut w);
        std::fs::write(self.cloud(), serde_json::to_string_pretty(&w).unwrap()).unwrap();
    }

    pub fn state(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.state_path()).unwrap()).unwrap()
    }

    pub fn object_count(&self) -> usize {
        self.world()["objects"].as_object().map_or(0, |o| o.len())
    }

    pub fn state_count(&self) -> usize {
        self.state()["resources"].as_object().map_or(0, |o| o.len())
    }

    /// The id of the object the cloud has for `addr`.
    pub fn object_id(&self, addr: &str) -> Option<String> {
        let w = self.world();
        w["objects"]
            .as_object()?
            .iter()
            .find(|(_, o)| o["addr"] == addr)
            .map(|(id, _)| id.clone())
    }

    /// Where `"OP ADDR"` (e.g. `"create aws.vpc.main"`) is among the
    /// simulated cloud's mutating calls, in order.
    pub fn call_index(&self, call: &str) -> usize {
        let calls: Vec<String> = self.world()["calls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["mutating"] == true)
            .map(|c| {
                format!(
                    "{} {}",
                    c["op"].as_str().unwrap_or(""),
                    c["addr"].as_str().unwrap_or("")
                )
            })
            .collect();
        calls
            .iter()
            .position(|c| c == call)
            .unwrap_or_else(|| panic!("no {call} in {calls:?}"))
    }

    pub fn mutating_calls(&self) -> usize {
        self.world()["calls"]
            .as_array()
            .map_or(0, |c| c.iter().filter(|c| c["mutating"] == true).count())
    }
}

/// Starts `slipway ARGS` with output to files, for signalling it.
pub fn spawn(p: &Project, args: &[&str]) -> std::process::Child {
    let out = std::fs::File::create(p.path("run.out")).unwrap();
    let err = std::fs::File::create(p.path("run.err")).unwrap();
    p.command(args).stdout(out).stderr(err).spawn().unwrap()
}

pub fn finished(p: &Project, args: &[&str], mut child: std::process::Child) -> Run {
    let status = child.wait().unwrap();
    Run {
        cmd: format!("slipway {}", args.join(" ")),
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(p.path("run.out")).unwrap(),
        stderr: std::fs::read_to_string(p.path("run.err")).unwrap(),
    }
}

pub fn send_signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// The reliability runs' seeds (docs/reliability.md):
/// `SLIPWAY_RELIABILITY_RUNS` runs (default 2, the quick tier) from
/// `SLIPWAY_RELIABILITY_SEED` (default 1).
pub fn runs() -> u64 {
    std::env::var("SLIPWAY_RELIABILITY_RUNS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(2)
}

pub fn seeds() -> std::ops::Range<u64> {
    let first = std::env::var("SLIPWAY_RELIABILITY_SEED")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    first..first + runs()
}

/// A small deterministic generator (SplitMix64): the kill points of a seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}
