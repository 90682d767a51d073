//! The master's configuration as code (JCasC): the admin user, no inbound
//! agent port, the multibranch job triggered by the push webhook, and the
//! hourly drift job. The agents are not in it: the master's discovery
//! ([`super::agents`]) writes them to a file of their own beside it.
//!
//! JCasC substitutes `${NAME}` anywhere in its documents from the
//! environment; the only ones used are the secrets made at first boot
//! (`${ADMIN_PASSWORD}`, `${WEBHOOK_TOKEN}`, `${WEBHOOK_PASSWORD}`) and the address it learns
//! then (`${JENKINS_URL}`). Everything else is spelled without `${`.

use serde_json::{Value, json};

use super::{BUILD_LABEL, PRODUCTION_LABEL};

/// The drift job's name.
pub(super) const DRIFT_JOB: &str = "slipway-drift";

/// The AWS profile the drift job runs slipway with.
const DRIFT_PROFILE: &str = "slipway-drift";

/// What the JCasC documents need.
pub(super) struct Casc<'a> {
    pub stack: &'a str,
    pub region: &'a str,
    pub stack_path: &'a str,
    pub repository_url: &'a str,
    pub branches: &'a [&'a str],
    /// Whether a production agent exists (the drift job runs there).
    pub production: bool,
    /// Stands for the drift role's ARN (spliced in after apply).
    pub drift_role_arn: &'a str,
    pub drift_branch: &'a str,
    /// The multibranch job's fallback scan interval.
    pub scan_interval: &'a str,
}

/// A value for a single-quoted Groovy string (which cannot span lines).
pub(super) fn groovy(s: &str) -> String {
    format!(
        "'{}'",
        s.replace('\\', r"\\")
            .replace('\'', r"\'")
            .replace('\n', r"\n")
            .replace('\r', r"\r")
    )
}

/// The job's name: the repository's last path segment without `.git`.
pub(crate) fn job_name(repository_url: &str) -> String {
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

/// The full names of the jobs allowed on the production agent, as a
/// regular expression: the protected branches' jobs of the multibranch
/// project (Jenkins encodes `/` in a branch's job name as `%2F`) and the
/// drift job.
pub(super) fn production_jobs(repository_url: &str, production_branches: &[&str]) -> String {
    let escape = |s: &str| {
        let mut out = String::new();
        for c in s.chars() {
            if "\\^$.|?*+()[]{}".contains(c) {
                out.push('\\');
            }
            out.push(c);
        }
        out
    };
    let branches: Vec<String> = production_branches
        .iter()
        .map(|b| escape(&b.replace('/', "%2F")))
        .collect();
    // A Pipeline's `node` or `agent` block is queued as a task named
    // `<job>/<something>`: the suffix must be allowed.
    format!(
        "^({}/({})|{})(/.*)?$",
        escape(&job_name(repository_url)),
        branches.join("|"),
        escape(DRIFT_JOB)
    )
}

fn job_dsl(c: &Casc<'_>) -> String {
    format!(
        "multibranchPipelineJob({name}) {{\n  displayName({display})\n  branchSources {{\n    branchSource {{\n      source {{\n        git {{\n          id({id})\n          remote({url})\n          traits {{\n            gitBranchDiscovery()\n            headWildcardFilter {{\n              includes({branches})\n              excludes('')\n            }}\n          }}\n        }}\n      }}\n    }}\n  }}\n  factory {{\n    workflowBranchProjectFactory {{\n      scriptPath('Jenkinsfile')\n    }}\n  }}\n  orphanedItemStrategy {{\n    discardOldItems {{\n      numToKeep(20)\n    }}\n  }}\n  triggers {{\n    computedFolderWebHookTrigger {{\n      token('${{WEBHOOK_TOKEN}}')\n    }}\n    periodicFolderTrigger {{\n      interval({interval})\n    }}\n  }}\n}}\n",
        name = groovy(&job_name(c.repository_url)),
        display = groovy(&format!(
            "{} (slipway stack {})",
            job_name(c.repository_url),
            c.stack
        )),
        id = groovy(&format!("slipway-{}", c.stack)),
        url = groovy(c.repository_url),
        branches = groovy(&c.branches.join(" ")),
        interval = groovy(c.scan_interval),
    )
}

/// The drift job's pipeline: check out the stack's repository, run `slipway
/// drift --json` under the drift role, keep its report, fail on drift or error.
///
/// The script builds strings by concatenation and lets the shell expand
/// `$VAR` (JCasC would expand `${…}`). The role's ARN goes in unquoted: IAM
/// ARNs hold no quote, backslash or `$`.
fn drift_pipeline(c: &Casc<'_>) -> String {
    let config = ".slipway-drift-aws-config";
    let profile = format!(
        "[profile {DRIFT_PROFILE}]\nrole_arn = {arn}\ncredential_source = Ec2InstanceMetadata\nregion = {region}\n",
        arn = c.drift_role_arn,
        region = c.region,
    );
    format!(
        r#"// Rendered by slipway for stack {stack}: hourly `slipway drift` under the stack's
// read-only drift role; fails when the platform differs from the state.
pipeline {{
  agent {{ label {label} }}
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
        stack = c.stack,
        label = groovy(if c.production {
            PRODUCTION_LABEL
        } else {
            BUILD_LABEL
        }),
        profile_name = groovy(DRIFT_PROFILE),
        region = groovy(c.region),
        stack_path = groovy(c.stack_path),
        url = groovy(c.repository_url),
        branch = groovy(c.drift_branch),
        config = groovy(config),
        config_path = groovy(&format!("/{config}")),
        profile = groovy(&profile),
    )
}

fn drift_job_dsl(c: &Casc<'_>) -> String {
    format!(
        "pipelineJob({name}) {{\n  displayName({display})\n  description({description})\n  logRotator {{\n    numToKeep(48)\n  }}\n  properties {{\n    pipelineTriggers {{\n      triggers {{\n        cron {{\n          spec('H * * * *')\n        }}\n      }}\n    }}\n  }}\n  definition {{\n    cps {{\n      script({script})\n      sandbox(true)\n    }}\n  }}\n}}\n",
        name = groovy(DRIFT_JOB),
        display = groovy(&format!("slipway drift (stack {})", c.stack)),
        description = groovy(&format!(
            "Every hour: `slipway drift` under the read-only role, on branch {} of {}. Fails when the platform drifted (exit 2) or drift could not be checked (exit 1); each build archives drift.json.",
            c.drift_branch, c.repository_url
        )),
        script = groovy(&drift_pipeline(c)),
    )
}

/// The master's JCasC document (the agents' nodes are in another file).
pub(super) fn document(c: &Casc<'_>) -> Value {
    json!({
        "jenkins": {
            "systemMessage": format!("Jenkins of slipway stack {}, configured as code: changes made here are replaced at the next restart.", c.stack),
            "numExecutors": 0,
            "mode": "EXCLUSIVE",
            // Agents are launched over SSH by the master; nothing connects in.
            "slaveAgentPort": -1,
            "securityRealm": {"local": {"allowsSignup": false, "users": [
                {"id": "admin", "password": "${ADMIN_PASSWORD}"},
                // The account nginx forwards the push webhook as (the
                // trigger finds the job only for a user who may read it).
                {"id": "webhook", "password": "${WEBHOOK_PASSWORD}"},
            ]}},
            "authorizationStrategy": {"loggedInUsersCanDo": {"allowAnonymousRead": false}},
        },
        "unclassified": {
            "location": {"url": "${JENKINS_URL}"},
        },
        "credentials": {"system": {"domainCredentials": [{"credentials": [{"basicSSHUserPrivateKey": {
            "scope": "SYSTEM",
            "id": "slipway-agent-ssh",
            "username": "jenkins",
            "description": "SSH key the master launches agents with",
            "privateKeySource": {"directEntry": {"privateKey": "${readFile:/var/lib/jenkins/.ssh/agent_ed25519}"}},
        }}]}]}},
        "jobs": [{"script": job_dsl(c)}, {"script": drift_job_dsl(c)}],
    })
}
