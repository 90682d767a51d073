//! Certificates slipway makes itself: the load balancer controller's webhook
//! serving certificate and the CA that signs it. Nothing is remote: the
//! certificate lives in the state (mode 0600) and in the Kubernetes Secret
//! and webhook configurations that refer to it. A certificate within
//! [`ROTATE_BEFORE`] of expiry reads as gone, so the next plan makes a new one.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use super::{OpContext, Provider, ProviderError};
use crate::addr::Address;
use crate::resource::{Attrs, Live};

/// Certificates are replaced this long before they expire.
pub const ROTATE_BEFORE: Duration = Duration::days(30);

/// The TLS provider.
#[derive(Debug, Default)]
pub struct TlsProvider;

fn err(addr: &Address, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(addr, "CertificateError", e.to_string(), false)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// A CA and a serving certificate for `dns_names`, valid `days`.
fn issue(
    addr: &Address,
    common_name: &str,
    dns_names: &[String],
    days: i64,
    now: OffsetDateTime,
) -> Result<Attrs, ProviderError> {
    let ca_key = KeyPair::generate().map_err(|e| err(addr, e))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| err(addr, e))?;
    ca.distinguished_name
        .push(DnType::CommonName, format!("{common_name} CA (slipway)"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - Duration::hours(1);
    ca.not_after = now + Duration::days(days);
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| err(addr, e))?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().map_err(|e| err(addr, e))?;
    let mut leaf = CertificateParams::new(dns_names.to_vec()).map_err(|e| err(addr, e))?;
    leaf.distinguished_name
        .push(DnType::CommonName, common_name);
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now - Duration::hours(1);
    leaf.not_after = now + Duration::days(days);
    let cert = leaf.signed_by(&key, &issuer).map_err(|e| err(addr, e))?;

    let not_after = leaf
        .not_after
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| err(addr, e))?;
    let (ca_pem, cert_pem, key_pem) = (ca_cert.pem(), cert.pem(), key.serialize_pem());
    Ok([
        ("ca_pem", json!(ca_pem)),
        ("cert_pem", json!(cert_pem)),
        ("key_pem", json!(key_pem)),
        ("ca_pem_base64", json!(b64(&ca_pem))),
        ("cert_pem_base64", json!(b64(&cert_pem))),
        ("key_pem_base64", json!(b64(&key_pem))),
        ("not_after", json!(not_after)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect())
}

fn due(prior: &Live, now: OffsetDateTime) -> bool {
    prior
        .attrs
        .get("not_after")
        .and_then(Value::as_str)
        .and_then(|t| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
        .is_none_or(|t| now + ROTATE_BEFORE >= t)
}

#[async_trait]
impl Provider for TlsProvider {
    async fn read(&self, _addr: &Address, prior: &Live) -> Result<Option<Live>, ProviderError> {
        Ok((!due(prior, OffsetDateTime::now_utc())).then(|| prior.clone()))
    }

    async fn discover(
        &self,
        _stack: &str,
        _known: &BTreeSet<String>,
    ) -> Result<BTreeMap<Address, Live>, ProviderError> {
        Ok(BTreeMap::new())
    }

    async fn create(
        &self,
        addr: &Address,
        desired: &Attrs,
        _ctx: &OpContext<'_>,
    ) -> Result<Live, ProviderError> {
        let cn = desired
            .get("common_name")
            .and_then(Value::as_str)
            .ok_or_else(|| err(addr, "attribute `common_name` is missing"))?;
        let names: Vec<String> = desired
            .get("dns_names")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let days = desired
            .get("validity_days")
            .and_then(Value::as_i64)
            .unwrap_or(365);
        let mut attrs = desired.clone();
        attrs.extend(issue(addr, cn, &names, days, OffsetDateTime::now_utc())?);
        let id = format!(
            "{cn}@{}",
            attrs.get("not_after").and_then(Value::as_str).unwrap_or("")
        );
        attrs.insert("id".into(), json!(id));
        Ok(Live { id, attrs })
    }

    async fn update(
        &self,
        addr: &Address,
        prior: &Live,
        desired: &Attrs,
        _ctx: &OpContext<'_>,
    ) -> Result<Live, ProviderError> {
        // Every input forces a new certificate; nothing else can change.
        let mut l = prior.clone();
        for (k, v) in desired {
            l.attrs.insert(k.clone(), v.clone());
        }
        let _ = addr;
        Ok(l)
    }

    async fn delete(
        &self,
        _addr: &Address,
        _prior: &Live,
        _ctx: &OpContext<'_>,
    ) -> Result<(), ProviderError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a() -> Address {
        "tls.certificate.lb_webhook".parse().unwrap()
    }

    #[tokio::test]
    async fn issues_a_ca_signed_serving_certificate_and_rotates_before_expiry() {
        let desired: Attrs = [
            (
                "common_name".to_string(),
                json!("aws-load-balancer-webhook-service.kube-system.svc"),
            ),
            (
                "dns_names".to_string(),
                json!(["aws-load-balancer-webhook-service.kube-system.svc"]),
            ),
            ("validity_days".to_string(), json!(365)),
        ]
        .into();
        let live = TlsProvider
            .create(&a(), &desired, &OpContext::silent())
            .await
            .unwrap();
        let cert = live.attrs["cert_pem"].as_str().unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            live.attrs["key_pem"]
                .as_str()
                .unwrap()
                .contains("PRIVATE KEY")
        );
        assert_ne!(live.attrs["ca_pem"], live.attrs["cert_pem"]);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(live.attrs["ca_pem_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            live.attrs["ca_pem"].as_str().unwrap()
        );
        // Fresh: read keeps it. Close to expiry: it reads as gone.
        assert!(TlsProvider.read(&a(), &live).await.unwrap().is_some());
        let mut old = live.clone();
        old.attrs
            .insert("not_after".into(), json!("2026-01-01T00:00:00Z"));
        assert!(TlsProvider.read(&a(), &old).await.unwrap().is_none());
    }
}
