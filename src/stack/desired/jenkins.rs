//! The Jenkins servers' user data: shell scripts that run once at first boot.
//!
//! The master installs Java 17 and Jenkins LTS from the Jenkins RPM
//! repository, the plugins it needs, and configures everything as code
//! (JCasC): the local admin user (its password generated at first boot and
//! kept in SSM Parameter Store as a SecureString), one SSH-launched agent node
//! per agent instance, a multibranch pipeline job for the stack's
//! repository that builds the environments' branches with the repository's
//! `Jenkinsfile`, and an hourly job that runs `slipway drift` under the
//! stack's read-only drift role and fails on drift. The agents install Java,
//! git, Docker, kubectl for the cluster's Kubernetes version and, when
//! `jenkins.slipway_url` is set, slipway; they authorize the master's SSH
//! key, which the master publishes in SSM. Values known only after apply (the
//! agents' private IPs, the drift role's ARN) are spliced in as references.

use serde_json::{Value, json};

use crate::resource::Expr;

/// Plugins the master installs (the JCasC keys below need them).
const PLUGINS: &[&str] = &[
    "configuration-as-code",
    "job-dsl",
    "workflow-aggregator",
    "workflow-multibranch",
    "branch-api",
    "git",
    "ssh-slaves",
    "credentials",
    "credentials-binding",
];

/// The plugin installation manager release used to install them.
const PLUGIN_MANAGER: &str = "2.13.2";

/// The drift job's name.
const DRIFT_JOB: &str = "slipway-drift";

/// The AWS profile the drift job runs slipway with.
const DRIFT_PROFILE: &str = "slipway-drift";

/// What the master's script needs.
pub(super) struct Master<'a> {
    pub stack: &'a str,
    pub region: &'a str,
    /// The stack file's path in the repository, as `--stack` takes it.
    pub stack_path: String,
    pub repository_url: &'a str,
    pub branches: Vec<&'a str>,
    /// Each agent's node name and private IP.
    pub agents: Vec<(String, Expr)>,
    /// The ARN of the role the drift job assumes.
    pub drift_role_arn: Expr,
    /// The id of the EBS volume `JENKINS_HOME` lives on.
    pub home_volume: Expr,
    /// The branch the drift job checks out: production's, whose stack file
    /// (and, with the local state backend, state) the platform was applied
    /// from.
    pub drift_branch: &'a str,
}

/// What an agent's script needs.
pub(super) struct Agent<'a> {
    pub stack: &'a str,
    pub region: &'a str,
    pub name: &'a str,
    pub kubernetes_version: &'a str,
    pub slipway_url: Option<&'a str>,
}

fn param_prefix(stack: &str) -> String {
    format!("/slipway/{stack}/jenkins")
}

/// A value for a single-quoted shell string.
fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A value for a single-quoted Groovy string (which cannot span lines).
fn groovy(s: &str) -> String {
    format!(
        "'{}'",
        s.replace('\\', r"\\")
            .replace('\'', r"\'")
            .replace('\n', r"\n")
            .replace('\r', r"\r")
    )
}

/// The job's name: the repository's last path segment without `.git`.
pub(super) fn job_name(repository_url: &str) -> String {
    let last = repository_url
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("app");
    let name: String = last
        .trim_end_matches(".git")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        "app".to_string()
    } else {
        name
    }
}

fn job_dsl(m: &Master<'_>) -> String {
    format!(
        "multibranchPipelineJob({name}) {{\n  displayName({display})\n  branchSources {{\n    branchSource {{\n      source {{\n        git {{\n          id({id})\n          remote({url})\n          traits {{\n            gitBranchDiscovery()\n            headWildcardFilter {{\n              includes({branches})\n              excludes('')\n            }}\n          }}\n        }}\n      }}\n    }}\n  }}\n  factory {{\n    workflowBranchProjectFactory {{\n      scriptPath('Jenkinsfile')\n    }}\n  }}\n  orphanedItemStrategy {{\n    discardOldItems {{\n      numToKeep(20)\n    }}\n  }}\n  triggers {{\n    periodicFolderTrigger {{\n      interval('5m')\n    }}\n  }}\n}}\n",
        name = groovy(&job_name(m.repository_url)),
        display = groovy(&format!(
            "{} (slipway stack {})",
            job_name(m.repository_url),
            m.stack
        )),
        id = groovy(&format!("slipway-{}", m.stack)),
        url = groovy(m.repository_url),
        branches = groovy(&m.branches.join(" ")),
    )
}

/// The marker [`splice`] replaces with the drift role's ARN: the one after
/// the agents' IPs.
fn drift_role_marker(m: &Master<'_>) -> String {
    format!("@@{}@@", m.agents.len())
}

/// The drift job's pipeline: check out the stack's repository, run `slipway
/// drift --json` under the drift role, keep its report, fail on drift or error.
///
/// JCasC would substitute `${…}` anywhere in its document, so the script
/// builds strings by concatenation and lets the shell expand `$VAR`. The
/// role's ARN goes in unquoted: IAM ARNs hold no quote, backslash or `$`.
fn drift_pipeline(m: &Master<'_>) -> String {
    let config = ".slipway-drift-aws-config";
    let profile = format!(
        "[profile {DRIFT_PROFILE}]\nrole_arn = {arn}\ncredential_source = Ec2InstanceMetadata\nregion = {region}\n",
        arn = drift_role_marker(m),
        region = m.region,
    );
    format!(
        r#"// Rendered by slipway for stack {stack}: hourly `slipway drift` under the stack's
// read-only drift role; fails when the platform differs from the state.
pipeline {{
  agent {{ label 'slipway' }}
  options {{
    disableConcurrentBuilds()
    timeout(time: 30, unit: 'MINUTES')
  }}
  environment {{
    AWS_PROFILE   = {profile_name}
    AWS_REGION    = {region}
    SLIPWAY_STACK = {stack_path}
    NO_COLOR      = '1'
  }}
  stages {{
    stage('Checkout') {{
      steps {{
        git(url: {url}, branch: {branch})
      }}
    }}
    stage('Drift') {{
      steps {{
        writeFile(file: {config}, text: {profile})
        script {{
          def status
          withEnv(['AWS_CONFIG_FILE=' + env.WORKSPACE + {config_path}]) {{
            status = sh(script: 'slipway --stack "$SLIPWAY_STACK" drift --json > drift.json', returnStatus: true)
          }}
          archiveArtifacts(artifacts: 'drift.json', allowEmptyArchive: true)
          if (status == 2) {{
            error('slipway drift found drift (exit 2): the platform differs from the state; drift.json, archived with this build, lists what changed')
          }}
          if (status != 0) {{
            error('slipway drift failed (exit ' + status + '): it could not check for drift; its error is in the log above')
          }}
        }}
      }}
    }}
  }}
}}
"#,
        stack = m.stack,
        profile_name = groovy(DRIFT_PROFILE),
        region = groovy(m.region),
        stack_path = groovy(&m.stack_path),
        url = groovy(m.repository_url),
        branch = groovy(m.drift_branch),
        config = groovy(config),
        config_path = groovy(&format!("/{config}")),
        profile = groovy(&profile),
    )
}

fn drift_job_dsl(m: &Master<'_>) -> String {
    format!(
        "pipelineJob({name}) {{\n  displayName({display})\n  description({description})\n  logRotator {{\n    numToKeep(48)\n  }}\n  properties {{\n    pipelineTriggers {{\n      triggers {{\n        cron {{\n          spec('H * * * *')\n        }}\n      }}\n    }}\n  }}\n  definition {{\n    cps {{\n      script({script})\n      sandbox(true)\n    }}\n  }}\n}}\n",
        name = groovy(DRIFT_JOB),
        display = groovy(&format!("slipway drift (stack {})", m.stack)),
        description = groovy(&format!(
            "Every hour: `slipway drift` under the read-only role, on branch {} of {}. Fails when the platform drifted (exit 2) or drift could not be checked (exit 1); each build archives drift.json.",
            m.drift_branch, m.repository_url
        )),
        script = groovy(&drift_pipeline(m)),
    )
}

/// The JCasC document, with `@@N@@` standing for agent N's private IP and
/// the drift role's ARN after them.
fn casc(m: &Master<'_>) -> Value {
    let nodes: Vec<Value> = m
        .agents
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            json!({"permanent": {
                "name": name,
                "labelString": "slipway linux docker",
                "mode": "NORMAL",
                "numExecutors": 2,
                "remoteFS": "/home/jenkins",
                "retentionStrategy": "always",
                "launcher": {"ssh": {
                    "host": format!("@@{i}@@"),
                    "port": 22,
                    "credentialsId": "slipway-agent-ssh",
                    // Agents are reached over the VPC's private addresses only.
                    "sshHostKeyVerificationStrategy": "nonVerifyingKeyVerificationStrategy",
                }},
            }})
        })
        .collect();
    json!({
        "jenkins": {
            "systemMessage": format!("Jenkins of slipway stack {}, configured as code: changes made here are replaced at the next restart.", m.stack),
            "numExecutors": 0,
            "mode": "EXCLUSIVE",
            "securityRealm": {"local": {"allowsSignup": false, "users": [{"id": "admin", "password": "${ADMIN_PASSWORD}"}]}},
            "authorizationStrategy": {"loggedInUsersCanDo": {"allowAnonymousRead": false}},
            "nodes": nodes,
        },
        "credentials": {"system": {"domainCredentials": [{"credentials": [{"basicSSHUserPrivateKey": {
            "scope": "SYSTEM",
            "id": "slipway-agent-ssh",
            "username": "jenkins",
            "description": "SSH key the master launches agents with",
            "privateKeySource": {"directEntry": {"privateKey": "${readFile:/var/lib/jenkins/.ssh/agent_ed25519}"}},
        }}]}]}},
        "jobs": [{"script": job_dsl(m)}, {"script": drift_job_dsl(m)}],
    })
}

/// Splits `text` at `@@N@@` markers into literal parts and `values[N]`.
fn splice(text: &str, values: &[Expr]) -> Expr {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("@@") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("@@") else { break };
        let Some(value) = after[..end]
            .parse::<usize>()
            .ok()
            .and_then(|n| values.get(n))
        else {
            parts.push(Expr::str(&rest[..start + 2]));
            rest = after;
            continue;
        };
        parts.push(Expr::str(&rest[..start]));
        parts.push(value.clone());
        rest = &after[end + 2..];
    }
    parts.push(Expr::str(rest));
    parts.retain(|p| p != &Expr::str(""));
    match parts.len() {
        1 => parts.remove(0),
        _ => Expr::Concat(parts),
    }
}

/// The master's user data.
pub(super) fn master(m: &Master<'_>) -> Expr {
    let casc = serde_json::to_string_pretty(&casc(m)).unwrap_or_default();
    let script = format!(
        r#"#!/bin/bash
# Jenkins master of slipway stack {stack}, rendered by slipway.
# Runs once, at first boot; the log is /var/log/slipway-jenkins-setup.log.
set -euo pipefail
exec > >(tee -a /var/log/slipway-jenkins-setup.log) 2>&1

REGION={region}
PARAMS={params}
JENKINS_HOME=/var/lib/jenkins

# JENKINS_HOME is its own EBS volume (jobs, builds, credentials outlive this
# instance): wait for slipway to attach it, format it only when blank,
# mount it by UUID.
HOME_VOLUME='@@{home_volume}@@'
DEVICE=""
for _ in $(seq 1 180); do
  for d in "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${{HOME_VOLUME//-/}}" /dev/sdf /dev/xvdf; do
    if [ -b "$d" ]; then DEVICE="$(readlink -f "$d")"; break 2; fi
  done
  sleep 5
done
if [ -z "$DEVICE" ]; then
  echo "the JENKINS_HOME volume $HOME_VOLUME was not attached within 15 minutes" >&2
  exit 1
fi
if ! blkid "$DEVICE" >/dev/null 2>&1; then
  mkfs.xfs -L jenkins-home "$DEVICE"
fi
UUID="$(blkid -s UUID -o value "$DEVICE")"
install -d "$JENKINS_HOME"
grep -q "UUID=$UUID" /etc/fstab || echo "UUID=$UUID $JENKINS_HOME xfs defaults,nofail 0 2" >> /etc/fstab
mountpoint -q "$JENKINS_HOME" || mount "$JENKINS_HOME"

dnf install -y java-17-amazon-corretto-headless git fontconfig openssl
curl -fsSL -o /etc/yum.repos.d/jenkins.repo https://pkg.jenkins.io/redhat-stable/jenkins.repo
rpm --import https://pkg.jenkins.io/redhat-stable/jenkins.io-2023.key
dnf install -y jenkins

curl -fsSL -o /opt/jenkins-plugin-manager.jar \
  https://github.com/jenkinsci/plugin-installation-manager-tool/releases/download/{pm}/jenkins-plugin-manager-{pm}.jar
install -d -o jenkins -g jenkins "$JENKINS_HOME/plugins"
java -jar /opt/jenkins-plugin-manager.jar --war /usr/share/java/jenkins.war \
  --plugin-download-directory "$JENKINS_HOME/plugins" --plugins {plugins}

# The admin password: made once, kept in SSM Parameter Store.
if ! ADMIN_PASSWORD="$(aws ssm get-parameter --region "$REGION" --name "$PARAMS/admin-password" \
    --with-decryption --query Parameter.Value --output text 2>/dev/null)"; then
  ADMIN_PASSWORD="$(openssl rand -base64 24)"
  aws ssm put-parameter --region "$REGION" --name "$PARAMS/admin-password" \
    --type SecureString --value "$ADMIN_PASSWORD" --overwrite
fi

# The key the master launches agents with; agents read its public half from SSM.
install -d -m 700 -o jenkins -g jenkins "$JENKINS_HOME/.ssh"
if [ ! -f "$JENKINS_HOME/.ssh/agent_ed25519" ]; then
  sudo -u jenkins ssh-keygen -q -t ed25519 -N '' -C "jenkins@slipway-{stack}" -f "$JENKINS_HOME/.ssh/agent_ed25519"
fi
aws ssm put-parameter --region "$REGION" --name "$PARAMS/agent-ssh-public-key" \
  --type String --overwrite --value "$(cat "$JENKINS_HOME/.ssh/agent_ed25519.pub")"

install -d -m 750 -o jenkins -g jenkins /etc/jenkins
cat > /etc/jenkins/casc.yaml <<'CASC'
{casc}
CASC
(umask 077 && printf 'ADMIN_PASSWORD=%s\n' "$ADMIN_PASSWORD" > /etc/jenkins/casc.env)
chown jenkins:jenkins /etc/jenkins/casc.yaml /etc/jenkins/casc.env

install -d /etc/systemd/system/jenkins.service.d
cat > /etc/systemd/system/jenkins.service.d/slipway.conf <<'UNIT'
[Service]
EnvironmentFile=/etc/jenkins/casc.env
Environment="CASC_JENKINS_CONFIG=/etc/jenkins/casc.yaml"
Environment="JAVA_OPTS=-Djava.awt.headless=true -Djenkins.install.runSetupWizard=false"
UNIT
chown -R jenkins:jenkins "$JENKINS_HOME"
systemctl daemon-reload
systemctl enable --now jenkins
"#,
        stack = m.stack,
        region = sq(m.region),
        params = sq(&param_prefix(m.stack)),
        pm = PLUGIN_MANAGER,
        plugins = PLUGINS.join(" "),
        casc = casc,
        home_volume = m.agents.len() + 1,
    );
    let mut values: Vec<Expr> = m.agents.iter().map(|(_, ip)| ip.clone()).collect();
    values.push(m.drift_role_arn.clone());
    values.push(m.home_volume.clone());
    splice(&script, &values)
}

/// An agent's user data.
pub(super) fn agent(a: &Agent<'_>) -> Expr {
    let minor: String = a
        .kubernetes_version
        .split('.')
        .take(2)
        .collect::<Vec<_>>()
        .join(".");
    Expr::str(format!(
        r#"#!/bin/bash
# Jenkins agent {name} of slipway stack {stack}, rendered by slipway.
# Runs once, at first boot; the log is /var/log/slipway-jenkins-setup.log.
set -euo pipefail
exec > >(tee -a /var/log/slipway-jenkins-setup.log) 2>&1

REGION={region}
PARAMS={params}
KUBERNETES_MINOR={minor}
SLIPWAY_URL={slipway}

dnf install -y java-17-amazon-corretto-headless git docker jq
systemctl enable --now docker
id jenkins >/dev/null 2>&1 || useradd -m -d /home/jenkins -s /bin/bash jenkins
usermod -aG docker jenkins

case "$(uname -m)" in
  aarch64) ARCH=arm64 ;;
  *) ARCH=amd64 ;;
esac
KUBECTL_VERSION="$(curl -fsSL "https://dl.k8s.io/release/stable-$KUBERNETES_MINOR.txt")"
curl -fsSL -o /usr/local/bin/kubectl "https://dl.k8s.io/release/$KUBECTL_VERSION/bin/linux/$ARCH/kubectl"
chmod 0755 /usr/local/bin/kubectl

if [ -n "$SLIPWAY_URL" ]; then
  curl -fsSL -o /usr/local/bin/slipway "$SLIPWAY_URL"
  chmod 0755 /usr/local/bin/slipway
else
  echo "slipway: [jenkins] slipway_url is not set in the stack; install slipway on this agent yourself" >&2
fi

# Let the master in: it publishes its public key in SSM at its own first boot.
install -d -m 700 -o jenkins -g jenkins /home/jenkins/.ssh
for _ in $(seq 1 180); do
  if KEY="$(aws ssm get-parameter --region "$REGION" --name "$PARAMS/agent-ssh-public-key" \
      --query Parameter.Value --output text 2>/dev/null)"; then
    printf '%s\n' "$KEY" > /home/jenkins/.ssh/authorized_keys
    chown jenkins:jenkins /home/jenkins/.ssh/authorized_keys
    chmod 600 /home/jenkins/.ssh/authorized_keys
    exit 0
  fi
  sleep 10
done
echo "the Jenkins master did not publish its agent key within 30 minutes" >&2
exit 1
"#,
        name = a.name,
        stack = a.stack,
        region = sq(a.region),
        params = sq(&param_prefix(a.stack)),
        minor = sq(&minor),
        slipway = sq(a.slipway_url.unwrap_or("")),
    ))
}

/// The SSM parameters the Jenkins instances read and write, for the role's policy.
pub(super) fn parameter_arn(partition: &str, region: &str, stack: &str) -> String {
    format!(
        "arn:{partition}:ssm:{region}:*:parameter{}/*",
        param_prefix(stack)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn master_input() -> Master<'static> {
        Master {
            stack: "smallcase",
            region: "ap-south-1",
            stack_path: "stacks/smallcase.toml".into(),
            drift_branch: "master",
            repository_url: "https://github.com/example/app.git",
            branches: vec!["master", "staging", "develop"],
            agents: vec![
                (
                    "agent-1".into(),
                    Expr::reference(
                        &"aws.instance.jenkins_agent_1".parse().unwrap(),
                        "private_ip",
                    ),
                ),
                (
                    "agent-2".into(),
                    Expr::reference(
                        &"aws.instance.jenkins_agent_2".parse().unwrap(),
                        "private_ip",
                    ),
                ),
            ],
            drift_role_arn: Expr::reference(&"aws.iam_role.drift".parse().unwrap(), "arn"),
            home_volume: Expr::reference(&"aws.ebs_volume.jenkins_home".parse().unwrap(), "id"),
        }
    }

    const DRIFT_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/smallcase-drift";

    fn rendered_master() -> String {
        let e = master(&master_input());
        assert!(
            e.known().is_none(),
            "agent IPs and the drift role's ARN are known only after apply"
        );
        let v = e
            .resolve(&|r| match r.attr.as_str() {
                "arn" => Some(json!(DRIFT_ROLE_ARN)),
                _ => Some(json!(format!(
                    "10.0.32.{}",
                    if r.addr.name().ends_with('1') { 11 } else { 12 }
                ))),
            })
            .unwrap();
        v.as_str().unwrap().to_string()
    }

    /// The value of the single-quoted Groovy string `quoted` (as [`groovy`]
    /// writes them).
    fn ungroovy(quoted: &str) -> String {
        let inner = quoted
            .strip_prefix('\'')
            .and_then(|q| q.strip_suffix('\''))
            .unwrap_or_else(|| panic!("not a single-quoted Groovy string: {quoted}"));
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some(other) => out.push(other),
                None => panic!("a trailing backslash in {quoted}"),
            }
        }
        out
    }

    /// The pipeline a job-DSL `cps { script('…') }` holds.
    fn cps_script(dsl: &str) -> String {
        let start = dsl.find("script('").expect("a cps script") + "script(".len();
        let end = dsl[start..]
            .find("')\n      sandbox(true)")
            .expect("the sandboxed script's end")
            + start
            + 1;
        ungroovy(&dsl[start..end])
    }

    fn shellcheck(script: &str) {
        let mut child = std::process::Command::new("shellcheck")
            .args(["--shell=bash", "--severity=style", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("shellcheck is needed for these tests (apt-get install shellcheck; .ci/run installs it)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "shellcheck:\n{}\n{script}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    fn casc_of(script: &str) -> serde_yaml::Value {
        let start = script.find("<<'CASC'\n").unwrap() + "<<'CASC'\n".len();
        let end = script[start..].find("\nCASC\n").unwrap() + start;
        serde_yaml::from_str(&script[start..end]).expect("the JCasC document is YAML")
    }

    #[test]
    fn master_script_passes_shellcheck_and_its_casc_parses() {
        let script = rendered_master();
        shellcheck(&script);
        let casc = casc_of(&script);
        let nodes = casc["jenkins"]["nodes"].as_sequence().unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(
            nodes[0]["permanent"]["launcher"]["ssh"]["host"].as_str(),
            Some("10.0.32.11")
        );
        assert_eq!(nodes[1]["permanent"]["name"].as_str(), Some("agent-2"));
        assert_eq!(
            casc["jenkins"]["securityRealm"]["local"]["users"][0]["password"].as_str(),
            Some("${ADMIN_PASSWORD}")
        );
        let job = casc["jobs"][0]["script"].as_str().unwrap();
        assert!(job.contains("multibranchPipelineJob('app')"), "{job}");
        assert!(job.contains("remote('https://github.com/example/app.git')"));
        assert!(job.contains("includes('master staging develop')"));
        assert!(job.contains("scriptPath('Jenkinsfile')"));
        assert!(script.contains("runSetupWizard=false"));
    }

    #[test]
    fn drift_job_runs_hourly_under_the_drift_role_and_fails_on_drift() {
        let script = rendered_master();
        let casc = casc_of(&script);
        let jobs = casc["jobs"].as_sequence().unwrap();
        assert_eq!(jobs.len(), 2, "the multibranch job and the drift job");
        let dsl = jobs[1]["script"].as_str().unwrap();
        assert!(dsl.starts_with("pipelineJob('slipway-drift') {"), "{dsl}");
        assert!(dsl.contains("cron {\n          spec('H * * * *')"), "{dsl}");
        assert!(dsl.contains("numToKeep(48)"), "{dsl}");
        assert!(dsl.contains("sandbox(true)"), "{dsl}");
        // JCasC substitutes `${…}` in its whole document.
        for job in jobs {
            let text = job["script"].as_str().unwrap();
            assert!(!text.contains("${"), "JCasC would expand this: {text}");
        }

        let pipeline = cps_script(dsl);
        for want in [
            "agent { label 'slipway' }",
            "git(url: 'https://github.com/example/app.git', branch: 'master')",
            "SLIPWAY_STACK = 'stacks/smallcase.toml'",
            "AWS_PROFILE   = 'slipway-drift'",
            "NO_COLOR      = '1'",
            "withEnv(['AWS_CONFIG_FILE=' + env.WORKSPACE + '/.slipway-drift-aws-config'])",
            "status = sh(script: 'slipway --stack \"$SLIPWAY_STACK\" drift --json > drift.json', returnStatus: true)",
            "archiveArtifacts(artifacts: 'drift.json'",
            "if (status == 2) {\n            error('slipway drift found drift (exit 2)",
            "if (status != 0) {\n            error('slipway drift failed (exit ' + status",
        ] {
            assert!(pipeline.contains(want), "want `{want}` in:\n{pipeline}");
        }
        let file = ".slipway-drift-aws-config";
        let start = pipeline
            .find(&format!("writeFile(file: '{file}', text: '"))
            .expect("the AWS config is written")
            + format!("writeFile(file: '{file}', text: ").len();
        let end = pipeline[start..].find("')\n").unwrap() + start + 1;
        assert_eq!(
            ungroovy(&pipeline[start..end]),
            format!(
                "[profile slipway-drift]\nrole_arn = {DRIFT_ROLE_ARN}\ncredential_source = Ec2InstanceMetadata\nregion = ap-south-1\n"
            )
        );
    }

    #[test]
    fn agent_script_passes_shellcheck() {
        let a = Agent {
            stack: "smallcase",
            region: "ap-south-1",
            name: "agent-1",
            kubernetes_version: "1.31",
            slipway_url: Some("https://example.com/slipway"),
        };
        let script = agent(&a).known().unwrap();
        let script = script.as_str().unwrap();
        shellcheck(script);
        assert!(script.contains("KUBERNETES_MINOR='1.31'"));
        assert!(script.contains("dnf install -y java-17-amazon-corretto-headless git docker"));
        let without = agent(&Agent {
            slipway_url: None,
            ..a
        })
        .known()
        .unwrap();
        assert!(without.as_str().unwrap().contains("SLIPWAY_URL=''"));
    }

    #[test]
    fn quoting_survives_hostile_values() {
        assert_eq!(sq("it's"), r"'it'\''s'");
        assert_eq!(groovy(r"a'b\c"), r"'a\'b\\c'");
        assert_eq!(groovy("a\nb"), r"'a\nb'");
        assert_eq!(ungroovy(&groovy("it's\n\\n")), "it's\n\\n");
        assert_eq!(job_name("git@github.com:org/my.repo.git"), "my-repo");
        assert_eq!(job_name("https://example.com/x/"), "x");
    }

    #[test]
    fn splice_keeps_unknown_markers_literal() {
        let e = splice("a @@0@@ b @@9@@ c", &[Expr::str("X")]);
        assert_eq!(e.known(), Some(json!("a X b @@9@@ c")));
    }
}
