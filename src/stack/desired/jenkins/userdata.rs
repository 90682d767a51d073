//! The Jenkins servers' user data: shell scripts that run once at first boot.
//!
//! The master mounts its home volume, installs the pinned Java, Jenkins LTS
//! and plugins (every download checked against its SHA-256 or signature),
//! puts nginx in front of Jenkins for HTTPS (the UI on 443, only the push
//! webhook on 8443; Jenkins itself listens on 127.0.0.1), makes its secrets
//! once (admin password, webhook token: SSM SecureStrings only its role
//! reads), configures everything as code (see [`super::casc`]) and starts
//! the agent discovery timer (see [`super::agents`]). Agents install Java,
//! git, Docker, the pinned kubectl and, when the stack gives one, the
//! pinned slipway; they authorize the master's public key from SSM and
//! print their SSH host key on the console for the master to pin. The
//! values known only after apply (the drift role's ARN, the home volume's
//! id) are spliced in as references.

use super::{
    ADMIN_PASSWORD_PARAM, AGENT_KEY_PARAM, UI_PORT, WEBHOOK_PORT, WEBHOOK_TOKEN_PARAM, agents,
    casc, param_prefix,
};
use crate::resource::Expr;
use crate::stack::Download;
use crate::stack::jenkins_release::{self as release, Kubectl};

/// What the master's script needs.
pub(super) struct Master<'a> {
    pub stack: &'a str,
    pub region: &'a str,
    /// The stack file's path in the repository, as `--stack` takes it.
    pub stack_path: String,
    pub repository_url: &'a str,
    pub branches: Vec<&'a str>,
    /// The branches whose builds may run on the production agent.
    pub production_branches: Vec<&'a str>,
    /// The ARN of the role the drift job assumes.
    pub drift_role_arn: Expr,
    /// The id of the EBS volume `JENKINS_HOME` lives on.
    pub home_volume: Expr,
    /// The master's Elastic IP.
    pub public_ip: Expr,
    /// The branch the drift job checks out: production's, whose stack file
    /// (and, with the local state backend, state) the platform was applied
    /// from.
    pub drift_branch: &'a str,
    /// Whether `webhook_cidrs` opens the webhook port.
    pub webhooks: bool,
    pub scan_interval: &'a str,
    /// SSM path of a configured certificate (`certificate`, `private-key`).
    pub tls_parameter_path: Option<&'a str>,
    /// The instance profile names of the build agents and the production agent.
    pub build_profile: String,
    pub production_profile: String,
}

/// What an agent's script needs.
pub(super) struct Agent<'a> {
    pub stack: &'a str,
    pub region: &'a str,
    pub name: &'a str,
    /// The kubectl for the cluster's version (validation makes sure there is one).
    pub kubectl: Option<&'static Kubectl>,
    pub slipway: Option<&'a Download>,
}

/// A value for a single-quoted shell string.
pub(super) fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
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

/// The markers [`splice`] replaces: the drift role's ARN, the home volume's
/// id, the Elastic IP.
const DRIFT_ROLE: &str = "@@0@@";
const HOME_VOLUME: &str = "@@1@@";
const PUBLIC_IP: &str = "@@2@@";

/// Download `$url` to `$file` and refuse it unless its SHA-256 is `$sha`.
const FETCH: &str = r#"# Downloads a file and keeps it only when its SHA-256 is the pinned one.
fetch() {
  local url="$1" file="$2" sha="$3"
  curl -fsSL --retry 5 -o "$file.part" "$url"
  if ! echo "$sha  $file.part" | sha256sum -c --quiet -; then
    echo "refusing $url: its SHA-256 is not the pinned $sha" >&2
    rm -f "$file.part"
    exit 1
  fi
  mv -f "$file.part" "$file"
}
"#;

/// The master's user data.
pub(super) fn master(m: &Master<'_>) -> Expr {
    let document = casc::document(&casc::Casc {
        stack: m.stack,
        region: m.region,
        stack_path: &m.stack_path,
        repository_url: m.repository_url,
        branches: &m.branches,
        production: !m.production_branches.is_empty(),
        drift_role_arn: DRIFT_ROLE,
        drift_branch: m.drift_branch,
        scan_interval: m.scan_interval,
    });
    let document = serde_json::to_string_pretty(&document).unwrap_or_default();
    let discovery = agents::script(&agents::Discovery {
        stack: m.stack,
        region: m.region,
        repository_url: m.repository_url,
        production_branches: &m.production_branches,
        build_profile: &m.build_profile,
        production_profile: &m.production_profile,
    });
    let plugins: Vec<String> = release::PLUGINS
        .iter()
        .map(|(name, version)| format!("{name}:{version}"))
        .collect();
    let pm = &release::PLUGIN_MANAGER;
    let script = format!(
        r#"#!/bin/bash
# Jenkins master of slipway stack {stack}, rendered by slipway.
# Runs once, at first boot; the log is /var/log/slipway-jenkins-setup.log.
set -euo pipefail
shopt -s inherit_errexit
exec > >(tee -a /var/log/slipway-jenkins-setup.log) 2>&1

REGION={region}
PARAMS={params}
JENKINS_HOME=/var/lib/jenkins
JENKINS_VERSION={jenkins_version}
TLS_PARAMS={tls_params}
{fetch}
# JENKINS_HOME is its own EBS volume (jobs, builds, credentials outlive this
# instance): wait for slipway to attach it, format it only when blank,
# mount it by UUID.
HOME_VOLUME='{home_volume}'
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

dnf install -y java-17-amazon-corretto-headless git fontconfig openssl nginx

# Jenkins LTS {jenkins_version}, pinned, from the Jenkins RPM repository; each
# signing key is imported only if its fingerprint is the pinned one.
import_key() {{
  local url="$1" want="$2" file got
  file="/etc/pki/rpm-gpg/$(basename "$url")"
  curl -fsSL --retry 5 -o "$file" "$url"
  got="$(gpg --show-keys --with-colons "$file" | awk -F: '/^fpr:/ {{print $10; exit}}')"
  if [ "$got" != "$want" ]; then
    echo "refusing the Jenkins repository key $url: fingerprint $got is not the pinned $want" >&2
    exit 1
  fi
  rpm --import "$file"
  printf 'file://%s ' "$file"
}}
GPGKEYS=""
{import_keys}cat > /etc/yum.repos.d/jenkins.repo <<'REPO'
[jenkins]
name=Jenkins LTS
baseurl={repo_url}
gpgcheck=1
REPO
echo "gpgkey=$GPGKEYS" >> /etc/yum.repos.d/jenkins.repo
dnf install -y "jenkins-$JENKINS_VERSION"

# The plugins, each at its pinned version; the plugin manager itself is
# checked against its SHA-256 and checks each plugin against the update
# center's.
fetch {pm_url} /opt/jenkins-plugin-manager.jar {pm_sha}
install -d -o jenkins -g jenkins "$JENKINS_HOME/plugins"
java -jar /opt/jenkins-plugin-manager.jar --war /usr/share/java/jenkins.war \
  --plugin-download-directory "$JENKINS_HOME/plugins" --clean-download-directory \
  --latest false --plugins {plugins}

# Secrets, made once and kept in SSM Parameter Store as SecureStrings only
# this instance's role may read: the admin password and the webhook token.
# Only a parameter that does not exist is made; any other error stops the
# boot rather than replace a secret that exists.
secret() {{
  local name="$1" value err
  err="$(mktemp)"
  if value="$(aws ssm get-parameter --region "$REGION" --name "$PARAMS/$name" \
      --with-decryption --query Parameter.Value --output text 2>"$err")"; then
    rm -f "$err"
    printf '%s' "$value"
    return 0
  fi
  if ! grep -q ParameterNotFound "$err"; then
    cat "$err" >&2
    rm -f "$err"
    return 1
  fi
  rm -f "$err"
  value="$(openssl rand -hex 24)"
  aws ssm put-parameter --region "$REGION" --name "$PARAMS/$name" \
    --type SecureString --value "$value" >/dev/null || return 1
  printf '%s' "$value"
}}
ADMIN_PASSWORD="$(secret {admin_param})"
WEBHOOK_TOKEN="$(secret {webhook_param})"
# Local to this instance, made at its first boot: the account nginx forwards
# webhooks as, and the token the agent discovery reloads JCasC with.
WEBHOOK_PASSWORD="$(openssl rand -hex 24)"
CASC_RELOAD_TOKEN="$(openssl rand -hex 24)"

# The key the master launches agents with (on the home volume, so a new
# master keeps it); agents read its public half from SSM.
install -d -m 700 -o jenkins -g jenkins "$JENKINS_HOME/.ssh"
if [ ! -f "$JENKINS_HOME/.ssh/agent_ed25519" ]; then
  sudo -u jenkins ssh-keygen -q -t ed25519 -N '' -C "jenkins@slipway-{stack}" -f "$JENKINS_HOME/.ssh/agent_ed25519"
fi
aws ssm put-parameter --region "$REGION" --name "$PARAMS/{agent_key_param}" \
  --type String --overwrite --value "$(cat "$JENKINS_HOME/.ssh/agent_ed25519.pub")" >/dev/null

# HTTPS: the configured certificate, or one made here for this instance's
# public name and address.
IMDS_TOKEN="$(curl -fsS -X PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')"
metadata() {{
  curl -fsS -H "X-aws-ec2-metadata-token: $IMDS_TOKEN" "http://169.254.169.254/latest/meta-data/$1" 2>/dev/null || true
}}
# The Elastic IP: slipway associates it right after this instance starts.
PUBLIC_IP='{public_ip}'
for _ in $(seq 1 120); do
  if [ "$(metadata public-ipv4)" = "$PUBLIC_IP" ]; then break; fi
  sleep 5
done
PUBLIC_NAME="$(metadata public-hostname)"
JENKINS_URL="https://${{PUBLIC_NAME:-$PUBLIC_IP}}/"
install -d -m 750 /etc/pki/slipway-jenkins
SELF_SIGNED="$JENKINS_HOME/slipway-tls"
if [ -n "$TLS_PARAMS" ]; then
  aws ssm get-parameter --region "$REGION" --name "$TLS_PARAMS/certificate" --with-decryption \
    --query Parameter.Value --output text > /etc/pki/slipway-jenkins/cert.pem
  (umask 077 && aws ssm get-parameter --region "$REGION" --name "$TLS_PARAMS/private-key" --with-decryption \
    --query Parameter.Value --output text > /etc/pki/slipway-jenkins/key.pem)
else
  # Kept on the home volume: a new master (same Elastic IP, same name)
  # presents the certificate browsers and webhooks already accepted.
  SAN="DNS:localhost"
  if [ -n "$PUBLIC_NAME" ]; then SAN="$SAN,DNS:$PUBLIC_NAME"; fi
  if [ -n "$PUBLIC_IP" ]; then SAN="$SAN,IP:$PUBLIC_IP"; fi
  if [ ! -s "$SELF_SIGNED/cert.pem" ] || [ "$(cat "$SELF_SIGNED/san" 2>/dev/null)" != "$SAN" ]; then
    install -d -m 700 "$SELF_SIGNED"
    (umask 077 && openssl req -x509 -newkey rsa:3072 -sha256 -nodes -days 825 \
      -subj "/CN=${{PUBLIC_NAME:-jenkins-{stack}}}" -addext "subjectAltName=$SAN" \
      -keyout "$SELF_SIGNED/key.pem" -out "$SELF_SIGNED/cert.pem")
    printf '%s' "$SAN" > "$SELF_SIGNED/san"
  fi
  install -m 0644 "$SELF_SIGNED/cert.pem" /etc/pki/slipway-jenkins/cert.pem
  (umask 077 && cp "$SELF_SIGNED/key.pem" /etc/pki/slipway-jenkins/key.pem)
fi
chgrp -R nginx /etc/pki/slipway-jenkins
chmod 640 /etc/pki/slipway-jenkins/key.pem

# nginx: the UI and API on {ui_port}, only the webhook on {webhook_port};
# Jenkins itself listens on 127.0.0.1.
cat > /etc/nginx/conf.d/slipway-jenkins.conf <<'NGINX'
{nginx}NGINX
(umask 027 && printf 'proxy_set_header Authorization "Basic %s";\n' \
  "$(printf 'webhook:%s' "$WEBHOOK_PASSWORD" | base64 -w0)" > /etc/nginx/slipway-webhook-auth.conf)
chgrp nginx /etc/nginx/slipway-webhook-auth.conf

install -d -m 750 -o jenkins -g jenkins /etc/jenkins /etc/jenkins/casc.d
cat > /etc/jenkins/casc.d/jenkins.yaml <<'CASC'
{casc}
CASC
[ -f /etc/jenkins/casc.d/agents.yaml ] || printf 'jenkins:\n  nodes: []\n' > /etc/jenkins/casc.d/agents.yaml
(umask 077 && printf 'ADMIN_PASSWORD=%s\nWEBHOOK_TOKEN=%s\nWEBHOOK_PASSWORD=%s\nCASC_RELOAD_TOKEN=%s\nJENKINS_URL=%s\nJAVA_OPTS="-Djava.awt.headless=true -Djenkins.install.runSetupWizard=false -Dcasc.reload.token=%s"\n' \
  "$ADMIN_PASSWORD" "$WEBHOOK_TOKEN" "$WEBHOOK_PASSWORD" "$CASC_RELOAD_TOKEN" "$JENKINS_URL" "$CASC_RELOAD_TOKEN" > /etc/jenkins/casc.env)
chown -R jenkins:jenkins /etc/jenkins

install -d /etc/systemd/system/jenkins.service.d
cat > /etc/systemd/system/jenkins.service.d/slipway.conf <<'UNIT'
[Unit]
RequiresMountsFor=/var/lib/jenkins

[Service]
# The first start installs and configures everything: give it time.
TimeoutStartSec=15min
EnvironmentFile=/etc/jenkins/casc.env
Environment="CASC_JENKINS_CONFIG=/etc/jenkins/casc.d"
Environment="JENKINS_LISTEN_ADDRESS=127.0.0.1"
Environment="JENKINS_PORT=8080"
UNIT

# Agents: found by their tags every minute (see the script's header), in
# this instance's VPC only.
VPC_ID="$(metadata "network/interfaces/macs/$(metadata mac)/vpc-id")"
if [ -z "$VPC_ID" ]; then
  echo "instance metadata gave no VPC id" >&2
  exit 1
fi
printf 'VPC_ID=%s\n' "$VPC_ID" > /etc/jenkins/agents.env
install -d /usr/local/libexec
cat > {discovery_path} <<'AGENTS'
{discovery}AGENTS
chmod 0755 {discovery_path}
cat > /etc/systemd/system/slipway-jenkins-agents.service <<'UNIT'
[Unit]
Description=Add the Jenkins agents of slipway stack {stack} to Jenkins
After=jenkins.service
RequiresMountsFor=/var/lib/jenkins

[Service]
Type=oneshot
EnvironmentFile=/etc/jenkins/agents.env
ExecStart={discovery_path}
UNIT
cat > /etc/systemd/system/slipway-jenkins-agents.timer <<'UNIT'
[Unit]
Description=Find the Jenkins agents of slipway stack {stack} every minute

[Timer]
OnBootSec=1min
OnUnitActiveSec=1min

[Install]
WantedBy=timers.target
UNIT

chown -R jenkins:jenkins "$JENKINS_HOME"
if [ -d "$SELF_SIGNED" ]; then chown -R root:root "$SELF_SIGNED"; fi
systemctl daemon-reload
systemctl enable --now nginx
systemctl enable --now slipway-jenkins-agents.timer
# Jenkins' first start takes minutes; nothing after it waits.
systemctl enable jenkins
systemctl start --no-block jenkins
"#,
        stack = m.stack,
        region = sq(m.region),
        params = sq(&param_prefix(m.stack)),
        jenkins_version = sq(release::JENKINS_VERSION),
        tls_params = sq(m.tls_parameter_path.unwrap_or("")),
        fetch = FETCH,
        home_volume = HOME_VOLUME,
        public_ip = PUBLIC_IP,
        import_keys = release::JENKINS_REPO_KEYS
            .iter()
            .map(|k| format!(
                "GPGKEYS=\"$GPGKEYS$(import_key {} {})\"\n",
                sq(k.url),
                sq(k.fingerprint)
            ))
            .collect::<String>(),
        repo_url = release::JENKINS_REPO_URL,
        pm_url = sq(&pm.url()),
        pm_sha = sq(pm.sha256),
        plugins = plugins.join(" "),
        admin_param = sq(ADMIN_PASSWORD_PARAM),
        webhook_param = sq(WEBHOOK_TOKEN_PARAM),
        agent_key_param = AGENT_KEY_PARAM,
        ui_port = UI_PORT,
        webhook_port = WEBHOOK_PORT,
        nginx = nginx(m.webhooks),
        casc = document,
        discovery_path = agents::SCRIPT_PATH,
        discovery = discovery,
    );
    splice(
        &script,
        &[
            m.drift_role_arn.clone(),
            m.home_volume.clone(),
            m.public_ip.clone(),
        ],
    )
}

/// nginx in front of Jenkins: TLS on both ports; the webhook port passes
/// only the multibranch webhook's path.
fn nginx(webhooks: bool) -> String {
    let proxy = "    proxy_pass http://127.0.0.1:8080;\n    proxy_set_header Host $host;\n    proxy_set_header X-Forwarded-Proto https;\n    proxy_set_header X-Forwarded-Port $server_port;\n    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    proxy_http_version 1.1;\n    proxy_request_buffering off;\n";
    let tls = "  ssl_certificate /etc/pki/slipway-jenkins/cert.pem;\n  ssl_certificate_key /etc/pki/slipway-jenkins/key.pem;\n  ssl_protocols TLSv1.2 TLSv1.3;\n";
    let mut out = format!(
        "# Rendered by slipway. The UI: reachable from [jenkins.master] allowed_cidrs.\nserver {{\n  listen {UI_PORT} ssl;\n  server_name _;\n{tls}  client_max_body_size 256m;\n  location / {{\n{proxy}  }}\n}}\n"
    );
    if webhooks {
        // The exact path, whatever the client sent (the query is kept).
        let webhook_proxy = proxy.replace(
            "proxy_pass http://127.0.0.1:8080;",
            "proxy_pass http://127.0.0.1:8080/multibranch-webhook-trigger/invoke;",
        );
        out.push_str(&format!(
            "# The push webhook only: reachable from [jenkins] webhook_cidrs.\nserver {{\n  listen {WEBHOOK_PORT} ssl;\n  server_name _;\n{tls}  client_max_body_size 25m;\n  location = /multibranch-webhook-trigger/invoke {{\n{webhook_proxy}    include /etc/nginx/slipway-webhook-auth.conf;\n  }}\n  location / {{\n    return 404;\n  }}\n}}\n"
        ));
    }
    out
}

/// An agent's user data.
pub(super) fn agent(a: &Agent<'_>) -> Expr {
    let kubectl = match a.kubectl {
        Some(k) => format!(
            "# kubectl {version}\ncase \"$(uname -m)\" in\n  aarch64) fetch {arm_url} /usr/local/bin/kubectl {arm_sha} ;;\n  *) fetch {amd_url} /usr/local/bin/kubectl {amd_sha} ;;\nesac\nchmod 0755 /usr/local/bin/kubectl\n",
            version = k.version,
            arm_url = sq(&k.url("arm64")),
            arm_sha = sq(k.arm64_sha256),
            amd_url = sq(&k.url("amd64")),
            amd_sha = sq(k.amd64_sha256),
        ),
        None => "echo \"slipway pins no kubectl for this cluster's version; install one yourself\" >&2\n".to_string(),
    };
    let slipway = match a.slipway {
        Some(d) => format!(
            "fetch {} /usr/local/bin/slipway {}\nchmod 0755 /usr/local/bin/slipway\n",
            sq(&d.url),
            sq(&d.sha256)
        ),
        None => "echo \"slipway: [jenkins] slipway_url is not set in the stack; install slipway on this agent yourself\" >&2\n".to_string(),
    };
    Expr::str(format!(
        r#"#!/bin/bash
# Jenkins agent {name} of slipway stack {stack}, rendered by slipway.
# Runs once, at first boot; the log is /var/log/slipway-jenkins-setup.log.
set -euo pipefail
exec > >(tee -a /var/log/slipway-jenkins-setup.log) 2>&1

REGION={region}
PARAMS={params}
{fetch}
dnf install -y java-17-amazon-corretto-headless git docker jq
systemctl enable --now docker
id jenkins >/dev/null 2>&1 || useradd -m -d /home/jenkins -s /bin/bash jenkins
usermod -aG docker jenkins

# kubectl, pinned for the cluster's Kubernetes version.
{kubectl}
{slipway}
# Let the master in: it publishes its public key in SSM at its own first boot.
install -d -m 700 -o jenkins -g jenkins /home/jenkins/.ssh
KEY=""
for _ in $(seq 1 180); do
  if KEY="$(aws ssm get-parameter --region "$REGION" --name "$PARAMS/{agent_key_param}" \
      --query Parameter.Value --output text 2>/dev/null)"; then
    break
  fi
  KEY=""
  sleep 10
done
if [ -z "$KEY" ]; then
  echo "the Jenkins master did not publish its agent key within 30 minutes" >&2
  exit 1
fi
printf '%s\n' "$KEY" > /home/jenkins/.ssh/authorized_keys
chown jenkins:jenkins /home/jenkins/.ssh/authorized_keys
chmod 600 /home/jenkins/.ssh/authorized_keys

# Ready: tell the master which host key is ours, through the console that
# only this boot writes (the master reads it with ec2:GetConsoleOutput).
[ -f /etc/ssh/ssh_host_ed25519_key.pub ] || ssh-keygen -A
printf '%s %s\n' {marker} "$(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)" > /dev/console
"#,
        name = a.name,
        stack = a.stack,
        region = sq(a.region),
        params = sq(&param_prefix(a.stack)),
        fetch = FETCH,
        agent_key_param = AGENT_KEY_PARAM,
        marker = agents::HOST_KEY_MARKER,
    ))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write as _;

    fn master_input() -> Master<'static> {
        Master {
            stack: "smallcase",
            region: "ap-south-1",
            stack_path: "stacks/smallcase.toml".into(),
            drift_branch: "master",
            repository_url: "https://github.com/example/app.git",
            branches: vec!["master", "staging", "develop"],
            production_branches: vec!["master"],
            drift_role_arn: Expr::reference(&"aws.iam_role.drift".parse().unwrap(), "arn"),
            home_volume: Expr::reference(&"aws.ebs_volume.jenkins_home".parse().unwrap(), "id"),
            public_ip: Expr::reference(&"aws.eip.jenkins_master".parse().unwrap(), "public_ip"),
            webhooks: true,
            scan_interval: "1h",
            tls_parameter_path: None,
            build_profile: "smallcase-jenkins-agent".into(),
            production_profile: "smallcase-jenkins-production".into(),
        }
    }

    const DRIFT_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/smallcase-drift";

    fn render(m: &Master<'_>) -> String {
        let e = master(m);
        assert!(
            e.known().is_none(),
            "the drift role's ARN and the volume's id are known only after apply"
        );
        let v = e
            .resolve(&|r| match r.attr.as_str() {
                "arn" => Some(json!(DRIFT_ROLE_ARN)),
                "public_ip" => Some(json!("198.51.100.7")),
                _ => Some(json!("vol-0123456789abcdef0")),
            })
            .unwrap();
        v.as_str().unwrap().to_string()
    }

    fn rendered_master() -> String {
        render(&master_input())
    }

    /// The value of the single-quoted Groovy string `quoted` (as
    /// [`casc::groovy`] writes them).
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

    pub(in crate::stack::desired::jenkins) fn shellcheck(script: &str) {
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

    /// The body of the quoted here-document `<<'TAG'` in `script`.
    fn heredoc<'s>(script: &'s str, tag: &str) -> &'s str {
        let open = format!("<<'{tag}'\n");
        let start = script
            .find(&open)
            .unwrap_or_else(|| panic!("no {tag} here-document"))
            + open.len();
        let end = script[start..]
            .find(&format!("\n{tag}\n"))
            .map(|e| e + 1)
            .or_else(|| script[start..].find(&format!("{tag}\n")))
            .unwrap()
            + start;
        &script[start..end]
    }

    fn casc_of(script: &str) -> serde_yaml::Value {
        serde_yaml::from_str(heredoc(script, "CASC")).expect("the JCasC document is YAML")
    }

    #[test]
    fn master_script_passes_shellcheck_and_its_casc_parses() {
        let script = rendered_master();
        shellcheck(&script);
        shellcheck(heredoc(&script, "AGENTS"));
        let casc = casc_of(&script);
        assert!(
            casc["jenkins"]["nodes"].is_null(),
            "agents are not in the master's document"
        );
        assert_eq!(casc["jenkins"]["slaveAgentPort"].as_i64(), Some(-1));
        assert_eq!(
            casc["unclassified"]["location"]["url"].as_str(),
            Some("${JENKINS_URL}")
        );
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
        assert!(script.contains("Environment=\"CASC_JENKINS_CONFIG=/etc/jenkins/casc.d\""));
        // The agent mechanism: the discovery script, run every minute, writes
        // the nodes beside the master's document.
        assert!(script.contains(&format!("cat > {} <<'AGENTS'", agents::SCRIPT_PATH)));
        assert!(script.contains("OnUnitActiveSec=1min"));
        assert!(script.contains("systemctl enable --now slipway-jenkins-agents.timer"));
        assert!(
            script.contains("printf 'jenkins:\\n  nodes: []\\n' > /etc/jenkins/casc.d/agents.yaml")
        );
    }

    #[test]
    fn the_job_is_triggered_by_the_push_webhook_and_scans_only_as_a_fallback() {
        let casc = casc_of(&rendered_master());
        let job = casc["jobs"][0]["script"].as_str().unwrap();
        assert!(
            job.contains("computedFolderWebHookTrigger {\n      token('${WEBHOOK_TOKEN}')\n    }"),
            "{job}"
        );
        assert!(
            job.contains("periodicFolderTrigger {\n      interval('1h')"),
            "{job}"
        );
        assert!(!job.contains("interval('5m')"));
        // The token is a secret made at first boot, never in the user data.
        let script = rendered_master();
        assert!(
            script.contains("WEBHOOK_TOKEN=\"$(secret 'webhook-token')\""),
            "{script}"
        );
    }

    #[test]
    fn jenkins_is_served_over_https_and_the_webhook_port_passes_only_the_webhook() {
        let script = rendered_master();
        let nginx = heredoc(&script, "NGINX");
        assert!(nginx.contains("listen 443 ssl;"), "{nginx}");
        assert!(nginx.contains("listen 8443 ssl;"), "{nginx}");
        let webhook = &nginx[nginx.find("listen 8443").unwrap()..];
        assert!(webhook.contains("location = /multibranch-webhook-trigger/invoke {"));
        assert!(
            webhook
                .contains("proxy_pass http://127.0.0.1:8080/multibranch-webhook-trigger/invoke;")
        );
        assert!(
            webhook.contains("location / {\n    return 404;"),
            "{webhook}"
        );
        assert!(script.contains("Environment=\"JENKINS_LISTEN_ADDRESS=127.0.0.1\""));
        assert!(
            script.contains("openssl req -x509"),
            "a certificate made at first boot"
        );

        let without = render(&Master {
            webhooks: false,
            tls_parameter_path: Some("/org/jenkins-tls"),
            ..master_input()
        });
        shellcheck(&without);
        let nginx = heredoc(&without, "NGINX");
        assert!(nginx.contains("listen 443 ssl;"));
        assert!(!nginx.contains("8443"), "{nginx}");
        assert!(without.contains("TLS_PARAMS='/org/jenkins-tls'"));
    }

    #[test]
    fn every_download_is_pinned_and_checked() {
        let script = rendered_master();
        assert!(script.contains(&format!("JENKINS_VERSION='{}'", release::JENKINS_VERSION)));
        assert!(script.contains("dnf install -y \"jenkins-$JENKINS_VERSION\""));
        for key in release::JENKINS_REPO_KEYS {
            assert!(script.contains(&format!("import_key '{}' '{}'", key.url, key.fingerprint)));
        }
        assert!(script.contains(&format!(
            "fetch '{}' /opt/jenkins-plugin-manager.jar '{}'",
            release::PLUGIN_MANAGER.url(),
            release::PLUGIN_MANAGER.sha256
        )));
        for (name, version) in release::PLUGINS {
            assert!(script.contains(&format!(" {name}:{version}")), "{name}");
        }
        assert!(
            !script.contains("curl -fsSL -o /opt"),
            "no unchecked download"
        );

        let k = release::kubectl("1.31").unwrap();
        let d = Download {
            url: "https://example.com/slipway".into(),
            sha256: "ab".repeat(32),
        };
        let a = agent(&Agent {
            stack: "smallcase",
            region: "ap-south-1",
            name: "agent-1",
            kubectl: Some(k),
            slipway: Some(&d),
        })
        .known()
        .unwrap();
        let a = a.as_str().unwrap();
        assert!(a.contains(&format!("'{}'", k.amd64_sha256)), "{a}");
        assert!(a.contains(&format!("'{}'", k.arm64_sha256)), "{a}");
        assert!(a.contains(&format!(
            "fetch 'https://example.com/slipway' /usr/local/bin/slipway '{}'",
            "ab".repeat(32)
        )));
        assert!(!a.contains("stable-"), "no floating kubectl version");
    }

    #[test]
    fn the_fetch_helper_refuses_a_file_whose_digest_differs() {
        let dir = tempfile::tempdir().unwrap();
        let served = dir.path().join("served");
        std::fs::write(&served, "payload").unwrap();
        let good = "239f59ed55e737c77147cf55ad0c1b030b6d7ee748a7426952f9b852d5a935e5";
        let run = |sha: &str| {
            std::process::Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "set -euo pipefail\n{FETCH}\nfetch \"file://$1\" \"$2\" {sha}\n",
                ))
                .arg("fetch")
                .arg(&served)
                .arg(dir.path().join("out"))
                .output()
                .unwrap()
        };
        let bad = run(&"0".repeat(64));
        assert!(!bad.status.success());
        assert!(String::from_utf8_lossy(&bad.stderr).contains("is not the pinned"));
        assert!(!dir.path().join("out").exists() && !dir.path().join("out.part").exists());
        let ok = run(good);
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out")).unwrap(),
            "payload"
        );
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
        // JCasC substitutes `${…}` in its whole document: only the webhook
        // token is meant.
        for job in jobs {
            let text = job["script"]
                .as_str()
                .unwrap()
                .replace("${WEBHOOK_TOKEN}", "");
            assert!(!text.contains("${"), "JCasC would expand this: {text}");
        }

        let pipeline = cps_script(dsl);
        for want in [
            "agent { label 'slipway-production' }",
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

        // Without a production agent, the drift job runs on the build agents.
        let casc = casc_of(&render(&Master {
            production_branches: vec![],
            ..master_input()
        }));
        let pipeline = cps_script(casc["jobs"][1]["script"].as_str().unwrap());
        assert!(
            pipeline.contains("agent { label 'slipway-build' }"),
            "{pipeline}"
        );
    }

    #[test]
    fn agent_script_passes_shellcheck_and_prints_its_host_key() {
        let a = Agent {
            stack: "smallcase",
            region: "ap-south-1",
            name: "agent-1",
            kubectl: release::kubectl("1.31"),
            slipway: None,
        };
        let script = agent(&a).known().unwrap();
        let script = script.as_str().unwrap();
        shellcheck(script);
        assert!(script.contains("dnf install -y java-17-amazon-corretto-headless git docker"));
        assert!(script.contains("install slipway on this agent yourself"));
        assert!(script.contains(&format!(
            "printf '%s %s\\n' {} \"$(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)\" > /dev/console",
            agents::HOST_KEY_MARKER
        )));
    }

    #[test]
    fn quoting_survives_hostile_values() {
        assert_eq!(sq("it's"), r"'it'\''s'");
        assert_eq!(casc::groovy(r"a'b\c"), r"'a\'b\\c'");
        assert_eq!(casc::groovy("a\nb"), r"'a\nb'");
        assert_eq!(ungroovy(&casc::groovy("it's\n\\n")), "it's\n\\n");
        assert_eq!(casc::job_name("git@github.com:org/my.repo.git"), "my-repo");
        assert_eq!(casc::job_name("https://example.com/x/"), "x");
    }

    #[test]
    fn splice_keeps_unknown_markers_literal() {
        let e = splice("a @@0@@ b @@9@@ c", &[Expr::str("X")]);
        assert_eq!(e.known(), Some(json!("a X b @@9@@ c")));
    }
}
