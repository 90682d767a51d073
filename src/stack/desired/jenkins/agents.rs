//! How the master finds its agents: a script a systemd timer runs every
//! minute. It lists the stack's running instances tagged
//! [`AGENT_TAG`](super::AGENT_TAG), pins each one's SSH host key the first
//! time it sees it (read from the instance's console output, where the
//! agent printed it at the end of its first boot, through EC2's API, not
//! the network), writes the nodes to a JCasC file of their own and, when
//! that file changed, has Jenkins reload its configuration.
//!
//! Nothing about an agent is in the master's user data: adding, removing or
//! replacing agents never touches the master, and a new master finds the
//! agents that are there (its pins are on the home volume).
//!
//! The first-seen pin is safe because the master cannot launch an agent
//! before it has the key, so no build has run there yet when the key is
//! read; a key that changes later is refused (the node keeps the pinned
//! one and SSH fails) until the instance is replaced.

use super::casc::production_jobs;
use super::{AGENT_TAG, BUILD_LABEL, PRODUCTION_LABEL};
use crate::stack::desired::jenkins::userdata::sq;

/// The line an agent prints on its console, followed by its ed25519 host
/// key (`ssh-ed25519 AAAA…`).
pub(super) const HOST_KEY_MARKER: &str = "slipway-ssh-host-key";

/// Where the script is installed on the master.
pub(super) const SCRIPT_PATH: &str = "/usr/local/libexec/slipway-jenkins-agents";

/// The JCasC file it writes (beside the master's own document).
pub(super) const CASC_FILE: &str = "/etc/jenkins/casc.d/agents.yaml";

/// What the discovery script needs.
pub(super) struct Discovery<'a> {
    pub stack: &'a str,
    pub region: &'a str,
    pub repository_url: &'a str,
    /// May run on the production agent (with the drift job); the build
    /// agents take the rest.
    pub production_branches: &'a [&'a str],
    /// The instance profile names that make an instance a build agent or
    /// the production agent: the pool comes from what the instance runs
    /// as, never from a tag anyone allowed to tag could change.
    pub build_profile: &'a str,
    pub production_profile: &'a str,
}

/// The discovery script.
pub(super) fn script(d: &Discovery<'_>) -> String {
    // A double-quoted YAML scalar: backslashes doubled.
    let restriction = production_jobs(d.repository_url, d.production_branches)
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!(
        r#"#!/bin/bash
# Jenkins agents of slipway stack {stack}, rendered by slipway; run every minute
# by slipway-jenkins-agents.timer. Every running instance of the stack in this
# VPC tagged {AGENT_TAG} and running as one of the stack's agent instance
# profiles becomes an SSH node, its host key pinned the first time it is seen
# (from the console output the agent wrote at first boot). Writes the nodes
# to {CASC_FILE} and reloads JCasC when they changed.
set -euo pipefail
shopt -s inherit_errexit

REGION={region}
STACK={stack_q}
RESTRICTION={restriction_q}
BUILD_PROFILE={build_profile}
PRODUCTION_PROFILE={production_profile}
VPC_ID="${{VPC_ID:?set VPC_ID, the VPC of the master (/etc/jenkins/agents.env)}}"
# Overridable for tests only.
PINS="${{SLIPWAY_AGENT_PINS:-/var/lib/jenkins/slipway-agents}}"
OUT="${{SLIPWAY_AGENT_CASC:-{CASC_FILE}}}"
ENV_FILE="${{SLIPWAY_CASC_ENV:-/etc/jenkins/casc.env}}"
AWS="${{SLIPWAY_AWS:-aws}}"
CURL="${{SLIPWAY_CURL:-curl}}"

install -d -m 700 "$PINS"
# Not only running instances: a stopped agent keeps its pin and rejoins
# with the same host key when it starts again.
rows="$("$AWS" ec2 describe-instances --region "$REGION" \
  --filters "Name=tag:slipway:stack,Values=$STACK" "Name=tag-key,Values={AGENT_TAG}" \
    "Name=vpc-id,Values=$VPC_ID" "Name=instance-state-name,Values=pending,running,stopping,stopped" \
  --query "Reservations[].Instances[].[Tags[?Key=='{AGENT_TAG}']|[0].Value,InstanceId,PrivateIpAddress,IamInstanceProfile.Arn,LaunchTime,State.Name]" \
  --output text)"

# One node per name: the instance already pinned for it, else the one
# launched first (an agent being replaced keeps its node until it is gone).
ordered="$(while IFS=$'\t' read -r name id ip profile launched state; do
  [ -n "${{name:-}}" ] || continue
  if ! [[ "$id" =~ ^i-[0-9a-f]+$ && "$name" =~ ^[A-Za-z0-9_.-]+$ ]]; then
    echo "skipping instance $id: unexpected id or node name" >&2
    continue
  fi
  if [ -s "$PINS/$id" ]; then pinned=0; else pinned=1; fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$pinned" "$launched" "$id" "$ip" "$profile" "$state"
done <<< "$rows" | sort -t $'\t' -k1,1 -k2,2 -k3,3)"

tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
printf 'jenkins:\n  nodes:\n' > "$tmp"
count=0
seen=" "
names=" "
while IFS=$'\t' read -r name _ _ id ip profile state; do
  [ -n "${{name:-}}" ] || continue
  seen="$seen$id "
  [ "$state" = running ] || continue
  case "$profile" in
    */"$PRODUCTION_PROFILE") pool=production ;;
    */"$BUILD_PROFILE") pool=build ;;
    *)
      echo "skipping instance $id ($name): it runs as ${{profile:-no instance profile}}, not as an agent profile of the stack" >&2
      continue ;;
  esac
  if ! [[ "$ip" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    echo "skipping instance $id ($name): unexpected address $ip" >&2
    continue
  fi
  if [[ "$names" == *" $name "* ]]; then
    echo "agent $name: $id waits until the other instance named $name is gone" >&2
    continue
  fi
  pin="$PINS/$id"
  if [ ! -s "$pin" ]; then
    console="$("$AWS" ec2 get-console-output --region "$REGION" --instance-id "$id" --latest \
        --query Output --output text 2>/dev/null \
      || "$AWS" ec2 get-console-output --region "$REGION" --instance-id "$id" \
        --query Output --output text 2>/dev/null || true)"
    key="$(printf '%s\n' "$console" \
      | sed -n 's|^.*{HOST_KEY_MARKER} \(ssh-ed25519 [A-Za-z0-9+/]*=*\).*$|\1|p' | sed -n 1p)"
    if [ -z "$key" ]; then
      echo "agent $name ($id): no SSH host key on its console yet; it joins when its first boot is done" >&2
      continue
    fi
    printf '%s\n' "$key" > "$pin"
  fi
  key="$(cat "$pin")"
  names="$names$name "
  count=$((count + 1))
  if [ "$pool" = production ]; then
    labels="{PRODUCTION_LABEL} linux docker"
  else
    labels="{BUILD_LABEL} linux docker"
  fi
  cat >> "$tmp" <<NODE
  - permanent:
      name: "$name"
      nodeDescription: "$id, pool $pool"
      labelString: "$labels"
      mode: EXCLUSIVE
      numExecutors: 2
      remoteFS: "/home/jenkins"
      retentionStrategy: "always"
      launcher:
        ssh:
          host: "$ip"
          port: 22
          credentialsId: "slipway-agent-ssh"
          maxNumRetries: 10
          retryWaitTime: 15
          sshHostKeyVerificationStrategy:
            manuallyProvidedKeyVerificationStrategy:
              key: "$key"
NODE
  if [ "$pool" = production ]; then
    cat >> "$tmp" <<NODE
      nodeProperties:
      - jobRestrictionProperty:
          jobRestriction:
            regexNameRestriction:
              regexExpression: "$RESTRICTION"
              checkShortName: false
NODE
  fi
done <<< "$ordered"
if [ "$count" -eq 0 ]; then
  printf 'jenkins:\n  nodes: []\n' > "$tmp"
fi

# Pins of instances that are terminated or gone.
for pin in "$PINS"/i-*; do
  [ -e "$pin" ] || continue
  case "$seen" in
    *" $(basename "$pin") "*) ;;
    *) rm -f "$pin" ;;
  esac
done

# The file is replaced when the nodes changed (a new master starts from an
# empty list); the reload is retried until Jenkins takes it.
if ! cmp -s "$tmp" "$OUT"; then
  install -m 0644 "$tmp" "$OUT.new"
  mv -f "$OUT.new" "$OUT"
  : > "$OUT.pending"
fi
if [ -e "$OUT.pending" ]; then
  token="$(sed -n 's/^CASC_RELOAD_TOKEN=//p' "$ENV_FILE")"
  "$CURL" -fsS -X POST "http://127.0.0.1:8080/reload-configuration-as-code/?casc-reload-token=$token" >/dev/null
  rm -f "$OUT.pending"
  echo "agents: $count node(s) configured"
fi
"#,
        stack = d.stack,
        region = sq(d.region),
        stack_q = sq(d.stack),
        restriction_q = sq(&restriction),
        build_profile = sq(d.build_profile),
        production_profile = sq(d.production_profile),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A fake `aws` CLI answering from files, and a fake `curl` that logs.
    fn fakes(dir: &Path, rows: &str, consoles: &[(&str, &str)]) {
        std::fs::write(dir.join("rows"), rows).unwrap();
        for (id, out) in consoles {
            std::fs::write(dir.join(format!("console-{id}")), out).unwrap();
        }
        let aws = format!(
            r#"#!/bin/bash
echo "$*" >> {d}/aws.log
case "$2" in
  describe-instances) cat {d}/rows ;;
  get-console-output)
    while [ $# -gt 0 ]; do
      if [ "$1" = --instance-id ]; then id="$2"; fi
      if [ "$1" = --latest ]; then exit 254; fi
      shift
    done
    cat "{d}/console-$id" 2>/dev/null || echo None ;;
esac
"#,
            d = dir.display()
        );
        let curl = format!("#!/bin/bash\necho \"$*\" >> {}/curl.log\n", dir.display());
        for (name, text) in [("aws", aws), ("curl", curl)] {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            std::process::Command::new("chmod")
                .arg("+x")
                .arg(&p)
                .status()
                .unwrap();
        }
        std::fs::write(
            dir.join("casc.env"),
            "ADMIN_PASSWORD=x\nCASC_RELOAD_TOKEN=tok123\n",
        )
        .unwrap();
    }

    fn discovery(branches: &'static [&'static str]) -> String {
        script(&Discovery {
            stack: "smallcase",
            region: "ap-south-1",
            repository_url: "https://github.com/example/app.git",
            production_branches: branches,
            build_profile: "smallcase-jenkins-agent",
            production_profile: "smallcase-jenkins-production",
        })
    }

    fn run(dir: &Path) -> (bool, String) {
        let script = discovery(&["master", "release/1.x"]);
        std::fs::write(dir.join("discover"), &script).unwrap();
        let out = std::process::Command::new("bash")
            .arg(dir.join("discover"))
            .env("SLIPWAY_AGENT_PINS", dir.join("pins"))
            .env("SLIPWAY_AGENT_CASC", dir.join("agents.yaml"))
            .env("SLIPWAY_CASC_ENV", dir.join("casc.env"))
            .env("SLIPWAY_AWS", dir.join("aws"))
            .env("SLIPWAY_CURL", dir.join("curl"))
            .env("VPC_ID", "vpc-0123")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn nodes(dir: &Path) -> Vec<serde_yaml::Value> {
        let text = std::fs::read_to_string(dir.join("agents.yaml")).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("agents.yaml is YAML");
        doc["jenkins"]["nodes"].as_sequence().unwrap().clone()
    }

    fn reloads(dir: &Path) -> usize {
        std::fs::read_to_string(dir.join("curl.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("reload-configuration-as-code/?casc-reload-token=tok123"))
            .count()
    }

    const KEY1: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAgentOneKey+/x1";
    const KEY2: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAgentProdKey=";
    const BUILD: &str = "arn:aws:iam::123456789012:instance-profile/smallcase-jenkins-agent";
    const PRODUCTION: &str =
        "arn:aws:iam::123456789012:instance-profile/smallcase-jenkins-production";

    /// describe-instances' text output: one instance per line.
    fn rows(instances: &[(&str, &str, &str, &str, &str, &str)]) -> String {
        instances
            .iter()
            .map(|(name, id, ip, profile, launched, state)| {
                format!("{name}\t{id}\t{ip}\t{profile}\t{launched}\t{state}\n")
            })
            .collect()
    }

    fn key_of(node: &serde_yaml::Value) -> Option<&str> {
        node["permanent"]["launcher"]["ssh"]["sshHostKeyVerificationStrategy"]
            ["manuallyProvidedKeyVerificationStrategy"]["key"]
            .as_str()
    }

    const T0: &str = "2026-12-01T10:00:00+00:00";
    const T1: &str = "2026-12-01T11:00:00+00:00";

    #[test]
    fn discovery_passes_shellcheck() {
        super::super::userdata::tests::shellcheck(&discovery(&["master"]));
    }

    #[test]
    fn agents_join_by_tag_with_their_console_host_key_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fakes(
            d,
            &rows(&[
                ("agent-1", "i-0aa", "10.0.32.11", BUILD, T0, "running"),
                (
                    "production",
                    "i-0bb",
                    "10.0.32.12",
                    PRODUCTION,
                    T0,
                    "running",
                ),
                ("agent-2", "i-0cc", "10.0.48.9", BUILD, T0, "running"),
            ]),
            &[
                (
                    "i-0aa",
                    &format!("[  OK  ] Started sshd\n{HOST_KEY_MARKER} {KEY1}\n"),
                ),
                ("i-0bb", &format!("cloud-init: {HOST_KEY_MARKER} {KEY2} \n")),
                // agent-2 is still booting: no key yet.
                ("i-0cc", "[  OK  ] Reached target network\n"),
            ],
        );
        let (ok, err) = run(d);
        assert!(ok, "{err}");
        assert!(
            err.contains("agent agent-2 (i-0cc): no SSH host key"),
            "{err}"
        );
        let n = nodes(d);
        assert_eq!(n.len(), 2, "{n:?}");
        let agent = &n[0]["permanent"];
        assert_eq!(agent["name"].as_str(), Some("agent-1"));
        assert_eq!(
            agent["labelString"].as_str(),
            Some("slipway-build linux docker")
        );
        assert_eq!(
            agent["launcher"]["ssh"]["host"].as_str(),
            Some("10.0.32.11")
        );
        assert_eq!(key_of(&n[0]), Some(KEY1));
        assert!(
            agent["nodeProperties"].is_null(),
            "build agents take any job"
        );
        let prod = &n[1]["permanent"];
        assert_eq!(prod["name"].as_str(), Some("production"));
        assert_eq!(
            prod["labelString"].as_str(),
            Some("slipway-production linux docker")
        );
        assert_eq!(key_of(&n[1]), Some(KEY2));
        let regex = prod["nodeProperties"][0]["jobRestrictionProperty"]["jobRestriction"]
            ["regexNameRestriction"]["regexExpression"]
            .as_str()
            .unwrap();
        assert_eq!(
            regex,
            r"^(app/(master|release%2F1\.x)|slipway-drift)(/.*)?$"
        );
        // Java's `String.matches` and this engine agree on this syntax.
        let compiled = regex_lite::Regex::new(regex).unwrap();
        let re = |name: &str| compiled.is_match(name);
        assert!(re("app/master"));
        assert!(re("app/master/part of app » master #5"));
        assert!(re("app/release%2F1.x"));
        assert!(re("slipway-drift"));
        assert!(!re("app/develop"));
        assert!(!re("app/masterx"));
        assert!(!re("app/release%2F1Xx"));
        assert!(!re("evil/app/master"));
        assert_eq!(reloads(d), 1);
        let aws_log = std::fs::read_to_string(d.join("aws.log")).unwrap();
        assert!(aws_log.contains("Name=vpc-id,Values=vpc-0123"), "{aws_log}");

        // The same agents again: nothing to reload.
        let (ok, err) = run(d);
        assert!(ok, "{err}");
        assert_eq!(reloads(d), 1);

        // agent-2 finishes booting; a console now claiming another key for
        // agent-1 does not move its pin.
        std::fs::write(
            d.join("console-i-0cc"),
            format!("{HOST_KEY_MARKER} {KEY1}\n"),
        )
        .unwrap();
        std::fs::write(
            d.join("console-i-0aa"),
            format!("{HOST_KEY_MARKER} ssh-ed25519 AAAAforged\n"),
        )
        .unwrap();
        let (ok, err) = run(d);
        assert!(ok, "{err}");
        let n = nodes(d);
        assert_eq!(n.len(), 3);
        assert_eq!(key_of(&n[0]), Some(KEY1));
        assert_eq!(reloads(d), 2);

        // agent-1 is replaced: the pinned old instance keeps the node while
        // it runs, even though the new one sorts first; a stopped agent keeps
        // its pin but is no node. Once the old agent-1 is gone, the new one
        // takes the name and the old pin is dropped.
        std::fs::write(
            d.join("console-i-00d"),
            format!("{HOST_KEY_MARKER} {KEY2}\n"),
        )
        .unwrap();
        std::fs::write(
            d.join("rows"),
            rows(&[
                ("agent-1", "i-0aa", "10.0.32.11", BUILD, T0, "running"),
                ("agent-1", "i-00d", "10.0.32.40", BUILD, T1, "running"),
                (
                    "production",
                    "i-0bb",
                    "10.0.32.12",
                    PRODUCTION,
                    T0,
                    "running",
                ),
                ("agent-2", "i-0cc", "10.0.48.9", BUILD, T0, "stopped"),
            ]),
        )
        .unwrap();
        let (ok, err) = run(d);
        assert!(ok, "{err}");
        assert!(err.contains("agent agent-1: i-00d waits"), "{err}");
        let n = nodes(d);
        assert_eq!(n.len(), 2);
        assert_eq!(
            n[0]["permanent"]["launcher"]["ssh"]["host"].as_str(),
            Some("10.0.32.11")
        );
        assert!(
            d.join("pins/i-0cc").exists(),
            "a stopped agent keeps its pin"
        );
        std::fs::write(
            d.join("rows"),
            rows(&[
                ("agent-1", "i-00d", "10.0.32.40", BUILD, T1, "running"),
                (
                    "production",
                    "i-0bb",
                    "10.0.32.12",
                    PRODUCTION,
                    T0,
                    "running",
                ),
            ]),
        )
        .unwrap();
        let (ok, err) = run(d);
        assert!(ok, "{err}");
        let n = nodes(d);
        assert_eq!(n.len(), 2);
        assert_eq!(
            n[0]["permanent"]["launcher"]["ssh"]["host"].as_str(),
            Some("10.0.32.40")
        );
        assert!(!d.join("pins/i-0aa").exists() && !d.join("pins/i-0cc").exists());

        // No agents at all: an empty node list, not a stale one.
        std::fs::write(d.join("rows"), "").unwrap();
        let (ok, err) = run(d);
        assert!(ok, "{err}");
        assert!(nodes(d).is_empty());
    }

    #[test]
    fn the_pool_comes_from_the_instance_profile_and_hostile_tags_never_reach_the_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fakes(
            d,
            &rows(&[
                // Retagged to look like the production agent, running as
                // something else: refused.
                (
                    "production",
                    "i-0a1",
                    "10.0.32.5",
                    "arn:aws:iam::123456789012:instance-profile/someone-else",
                    T0,
                    "running",
                ),
                // The production agent retagged to look like a build agent:
                // still the production agent, restriction and all.
                ("agent-9", "i-0b2", "10.0.32.6", PRODUCTION, T0, "running"),
                ("no-profile", "i-0c3", "10.0.32.7", "None", T0, "running"),
                ("bad\"name", "i-0d4", "10.0.0.1", BUILD, T0, "running"),
            ]),
            &[
                ("i-0a1", &format!("{HOST_KEY_MARKER} {KEY1}\n")),
                ("i-0b2", &format!("{HOST_KEY_MARKER} {KEY2}\n")),
                ("i-0c3", &format!("{HOST_KEY_MARKER} {KEY1}\n")),
            ],
        );
        let (ok, err) = run(d);
        assert!(ok, "{err}");
        assert!(err.contains("skipping instance i-0a1 (production): it runs as arn:aws:iam::123456789012:instance-profile/someone-else"), "{err}");
        assert!(
            err.contains("skipping instance i-0c3 (no-profile)"),
            "{err}"
        );
        assert!(
            err.contains("skipping instance i-0d4: unexpected id or node name"),
            "{err}"
        );
        let n = nodes(d);
        assert_eq!(n.len(), 1, "{n:?}");
        assert_eq!(n[0]["permanent"]["name"].as_str(), Some("agent-9"));
        assert_eq!(
            n[0]["permanent"]["labelString"].as_str(),
            Some("slipway-production linux docker")
        );
        assert!(!n[0]["permanent"]["nodeProperties"].is_null());
    }

    #[test]
    fn a_new_master_or_a_jenkins_not_yet_up_gets_the_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fakes(
            d,
            &rows(&[("agent-1", "i-0aa", "10.0.32.11", BUILD, T0, "running")]),
            &[("i-0aa", &format!("{HOST_KEY_MARKER} {KEY1}\n"))],
        );
        let failing = "#!/bin/bash\necho \"$*\" >> \"$(dirname \"$0\")/curl.log\"\nexit 7\n";
        let working = "#!/bin/bash\necho \"$*\" >> \"$(dirname \"$0\")/curl.log\"\n";
        std::fs::write(d.join("curl"), failing).unwrap();
        let (ok, _) = run(d);
        assert!(!ok, "a failed reload fails the run");
        assert_eq!(nodes(d).len(), 1, "the file is in place for Jenkins' start");
        std::fs::write(d.join("curl"), working).unwrap();
        let (ok, err) = run(d);
        assert!(ok, "{err}");
        assert_eq!(reloads(d), 2, "retried, since the first did not take");
        let (ok, _) = run(d);
        assert!(ok);
        assert_eq!(reloads(d), 2, "then left alone");

        // A new master: its first boot wrote an empty node list, the pins
        // on the home volume are the old master's. It gets the nodes.
        std::fs::write(d.join("agents.yaml"), "jenkins:\n  nodes: []\n").unwrap();
        let (ok, err) = run(d);
        assert!(ok, "{err}");
        assert_eq!(nodes(d).len(), 1);
        assert_eq!(reloads(d), 3);
    }
}
