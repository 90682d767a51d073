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
use super::{AGENT_TAG, BUILD_LABEL, POOL_TAG, PRODUCTION_LABEL};
use crate::stack::desired::jenkins::userdata::sq;

/// The line an agent prints on its console, followed by its ed25519 host
/// key (`ssh-ed25519 AAAA…`).
pub(super) const HOST_KEY_MARKER: &str = "slipway-ssh-host-key";

/// Where the script is installed on the master.
pub(super) const SCRIPT_PATH: &str = "/usr/local/libexec/slipway-jenkins-agents";

/// The JCasC file it writes (beside the master's own document).
pub(super) const CASC_FILE: &str = "/etc/jenkins/casc.d/agents.yaml";

/// The discovery script. `production_branches` may run on the production
/// agent (with the drift job); the build agents take the rest.
pub(super) fn script(
    stack: &str,
    region: &str,
    repository_url: &str,
    production_branches: &[&str],
) -> String {
    // A double-quoted YAML scalar: backslashes doubled.
    let restriction = production_jobs(repository_url, production_branches)
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!(
        r#"#!/bin/bash
# Jenkins agents of slipway stack {stack}, rendered by slipway; run every minute
# by slipway-jenkins-agents.timer. Every running instance of the stack tagged
# {AGENT_TAG} becomes an SSH node, its host key pinned the first time it is
# seen (from the console output the agent wrote at first boot). Writes the
# nodes to {CASC_FILE} and reloads JCasC when they changed.
set -euo pipefail

REGION={region}
STACK={stack_q}
RESTRICTION={restriction_q}
# Overridable for tests only.
PINS="${{SLIPWAY_AGENT_PINS:-/var/lib/jenkins/slipway-agents}}"
OUT="${{SLIPWAY_AGENT_CASC:-{CASC_FILE}}}"
ENV_FILE="${{SLIPWAY_CASC_ENV:-/etc/jenkins/casc.env}}"
AWS="${{SLIPWAY_AWS:-aws}}"
CURL="${{SLIPWAY_CURL:-curl}}"

install -d -m 700 "$PINS"
rows="$("$AWS" ec2 describe-instances --region "$REGION" \
  --filters "Name=tag:slipway:stack,Values=$STACK" "Name=tag-key,Values={AGENT_TAG}" \
    "Name=instance-state-name,Values=running" \
  --query "Reservations[].Instances[].[Tags[?Key=='{AGENT_TAG}']|[0].Value,InstanceId,PrivateIpAddress,Tags[?Key=='{POOL_TAG}']|[0].Value]" \
  --output text | sort)"

tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
printf 'jenkins:\n  nodes:\n' > "$tmp"
count=0
seen=" "
names=" "
while IFS=$'\t' read -r name id ip pool; do
  [ -n "${{name:-}}" ] || continue
  if ! [[ "$id" =~ ^i-[0-9a-f]+$ && "$ip" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ && "$name" =~ ^[A-Za-z0-9_.-]+$ ]]; then
    echo "skipping instance $id: unexpected node name, id or address ($name, $ip)" >&2
    continue
  fi
  seen="$seen$id "
  if [[ "$names" == *" $name "* ]]; then
    # An agent being replaced: the old instance keeps the name until it is gone.
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
      nodeDescription: "$id, pool ${{pool:-build}}"
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
done <<< "$rows"
if [ "$count" -eq 0 ]; then
  printf 'jenkins:\n  nodes: []\n' > "$tmp"
fi

# Pins of instances that are gone.
for pin in "$PINS"/i-*; do
  [ -e "$pin" ] || continue
  case "$seen" in
    *" $(basename "$pin") "*) ;;
    *) rm -f "$pin" ;;
  esac
done

if cmp -s "$tmp" "$PINS/applied.yaml"; then
  exit 0
fi
install -m 0644 "$tmp" "$OUT.new"
mv -f "$OUT.new" "$OUT"
token="$(sed -n 's/^CASC_RELOAD_TOKEN=//p' "$ENV_FILE")"
"$CURL" -fsS -X POST "http://127.0.0.1:8080/reload-configuration-as-code/?casc-reload-token=$token" >/dev/null
cp "$tmp" "$PINS/applied.yaml"
echo "agents: $count node(s) configured"
"#,
        region = sq(region),
        stack_q = sq(stack),
        restriction_q = sq(&restriction),
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

    fn run(dir: &Path) -> (bool, String) {
        let script = script(
            "smallcase",
            "ap-south-1",
            "https://github.com/example/app.git",
            &["master", "release/1.x"],
        );
        std::fs::write(dir.join("discover"), &script).unwrap();
        let out = std::process::Command::new("bash")
            .arg(dir.join("discover"))
            .env("SLIPWAY_AGENT_PINS", dir.join("pins"))
            .env("SLIPWAY_AGENT_CASC", dir.join("agents.yaml"))
            .env("SLIPWAY_CASC_ENV", dir.join("casc.env"))
            .env("SLIPWAY_AWS", dir.join("aws"))
            .env("SLIPWAY_CURL", dir.join("curl"))
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

    #[test]
    fn discovery_passes_shellcheck() {
        super::super::userdata::tests::shellcheck(&script(
            "smallcase",
            "ap-south-1",
            "https://github.com/example/app.git",
            &["master"],
        ));
    }

    #[test]
    fn agents_join_by_tag_with_their_console_host_key_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fakes(
            d,
            "agent-1\ti-0aa\t10.0.32.11\tbuild\nproduction\ti-0bb\t10.0.32.12\tproduction\nagent-2\ti-0cc\t10.0.48.9\tbuild\n",
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
        assert_eq!(
            agent["launcher"]["ssh"]["sshHostKeyVerificationStrategy"]
                ["manuallyProvidedKeyVerificationStrategy"]["key"]
                .as_str(),
            Some(KEY1)
        );
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
        assert_eq!(
            prod["launcher"]["ssh"]["sshHostKeyVerificationStrategy"]
                ["manuallyProvidedKeyVerificationStrategy"]["key"]
                .as_str(),
            Some(KEY2)
        );
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
        assert_eq!(
            n[0]["permanent"]["launcher"]["ssh"]["sshHostKeyVerificationStrategy"]
                ["manuallyProvidedKeyVerificationStrategy"]["key"]
                .as_str(),
            Some(KEY1)
        );
        assert_eq!(reloads(d), 2);

        // agent-1 is replaced: the old instance is still running, so the
        // new one waits; once the old is gone, the new one takes the name
        // and the old pin is dropped.
        std::fs::write(
            d.join("rows"),
            "agent-1\ti-0aa\t10.0.32.11\tbuild\nagent-1\ti-0dd\t10.0.32.40\tbuild\nproduction\ti-0bb\t10.0.32.12\tproduction\n",
        )
        .unwrap();
        std::fs::write(
            d.join("console-i-0dd"),
            format!("{HOST_KEY_MARKER} {KEY2}\n"),
        )
        .unwrap();
        let (ok, err) = run(d);
        assert!(ok, "{err}");
        assert!(err.contains("agent agent-1: i-0dd waits"), "{err}");
        assert!(!d.join("pins/i-0cc").exists(), "agent-2's pin went with it");
        std::fs::write(
            d.join("rows"),
            "agent-1\ti-0dd\t10.0.32.40\tbuild\nproduction\ti-0bb\t10.0.32.12\tproduction\n",
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
        assert!(!d.join("pins/i-0aa").exists());

        // No agents at all: an empty node list, not a stale one.
        std::fs::write(d.join("rows"), "").unwrap();
        let (ok, err) = run(d);
        assert!(ok, "{err}");
        assert!(nodes(d).is_empty());

        // Hostile tag values never reach the YAML.
        std::fs::write(d.join("rows"), "bad\"name\ti-0ee\t10.0.0.1\tbuild\n").unwrap();
        let (ok, err) = run(d);
        assert!(ok, "{err}");
        assert!(err.contains("skipping instance i-0ee"), "{err}");
        assert!(nodes(d).is_empty());
    }

    #[test]
    fn a_jenkins_not_yet_up_is_reloaded_on_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fakes(
            d,
            "agent-1\ti-0aa\t10.0.32.11\tbuild\n",
            &[("i-0aa", &format!("{HOST_KEY_MARKER} {KEY1}\n"))],
        );
        std::fs::write(
            d.join("curl"),
            "#!/bin/bash\necho \"$*\" >> \"$(dirname \"$0\")/curl.log\"\nexit 7\n",
        )
        .unwrap();
        let (ok, _) = run(d);
        assert!(!ok, "a failed reload fails the run");
        assert_eq!(nodes(d).len(), 1, "the file is in place for Jenkins' start");
        std::fs::write(
            d.join("curl"),
            "#!/bin/bash\necho \"$*\" >> \"$(dirname \"$0\")/curl.log\"\n",
        )
        .unwrap();
        let (ok, err) = run(d);
        assert!(ok, "{err}");
        assert_eq!(reloads(d), 2, "retried, since the first did not take");
    }
}
