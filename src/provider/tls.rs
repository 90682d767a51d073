//! Certificates slipway makes itself: the load balancer controller's webhook
//! serving certificate and the CA that signs it. Nothing is remote: the
//! certificate lives in the state (mode 0600) and in the Kubernetes Secret
//! and webhook configurations that refer to it.
//!
//! Renewal: within [`RENEW_BEFORE`] of the serving certificate's expiry a
//! read reports `renewal_due = true`; the stack wants `false`, so the plan
//! shows an update, which issues a new serving certificate from the same CA
//! (the CA lives twice as long, and no serving certificate outlives it), so
//! the webhooks' `caBundle` stays valid
//! while the controller's pods pick up the new certificate. When the CA
//! itself is near its end, a new one is made and the bundle holds both, the
//! new and the old, so the certificate still served is trusted too.

use async_trait::async_trait;
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use super::{DiscoverScope, Discovery, OpContext, Provider, ProviderError};
use crate::addr::Address;
use crate::resource::{Attrs, Live};

/// Certificates are renewed this long before they expire.
pub const RENEW_BEFORE: Duration = Duration::days(30);

/// The TLS provider.
#[derive(Debug, Default)]
pub struct TlsProvider;

fn err(addr: &Address, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(addr, "CertificateError", e.to_string(), false)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

fn parse_time(v: Option<&Value>) -> Option<OffsetDateTime> {
    v.and_then(Value::as_str)
        .and_then(|t| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
}

/// The CA's parameters; the same name and key rebuild the issuer of a CA
/// made earlier.
fn ca_params(
    addr: &Address,
    name: &str,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<CertificateParams, ProviderError> {
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| err(addr, e))?;
    ca.distinguished_name.push(DnType::CommonName, name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - Duration::hours(1);
    ca.not_after = not_after;
    Ok(ca)
}

fn ca_name(common_name: &str) -> String {
    format!("{common_name} CA (slipway)")
}

/// A CA: its attributes and the issuer that signs with it.
struct Ca {
    pem: String,
    key_pem: String,
    not_after: OffsetDateTime,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(
    addr: &Address,
    common_name: &str,
    days: i64,
    now: OffsetDateTime,
) -> Result<Ca, ProviderError> {
    let key = KeyPair::generate().map_err(|e| err(addr, e))?;
    let not_after = now + Duration::days(days);
    let params = ca_params(addr, &ca_name(common_name), not_after, now)?;
    let cert = params.self_signed(&key).map_err(|e| err(addr, e))?;
    let key_pem = key.serialize_pem();
    Ok(Ca {
        pem: cert.pem(),
        key_pem,
        not_after,
        issuer: Issuer::new(params, key),
    })
}

/// The CA of an earlier certificate, if its key was kept and it is good for
/// longer than twice the renewal margin (a serving certificate never
/// outlives its CA, so it is renewed before the CA ends).
fn kept_ca(
    addr: &Address,
    common_name: &str,
    prior: &Attrs,
    now: OffsetDateTime,
) -> Result<Option<Ca>, ProviderError> {
    let (Some(pem), Some(key_pem), Some(not_after)) = (
        prior.get("ca_pem").and_then(Value::as_str),
        prior.get("ca_key_pem").and_then(Value::as_str),
        parse_time(prior.get("ca_not_after")),
    ) else {
        return Ok(None);
    };
    if not_after <= now + RENEW_BEFORE * 2 {
        return Ok(None);
    }
    let key = KeyPair::from_pem(key_pem).map_err(|e| err(addr, e))?;
    let params = ca_params(addr, &ca_name(common_name), not_after, now)?;
    Ok(Some(Ca {
        pem: pem.to_string(),
        key_pem: key_pem.to_string(),
        not_after,
        issuer: Issuer::new(params, key),
    }))
}

/// A serving certificate for `dns_names` signed by `ca`, valid `days`, and
/// every attribute of the resource. `bundle` is what clients trust.
fn issue(
    addr: &Address,
    ca: &Ca,
    bundle: &str,
    common_name: &str,
    dns_names: &[String],
    days: i64,
    now: OffsetDateTime,
) -> Result<Attrs, ProviderError> {
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
    leaf.not_after = (now + Duration::days(days)).min(ca.not_after);
    let cert = leaf.signed_by(&key, &ca.issuer).map_err(|e| err(addr, e))?;
    let not_after = rfc3339(leaf.not_after);
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    Ok([
        ("id", json!(format!("{common_name}@{not_after}"))),
        ("ca_pem", json!(ca.pem)),
        ("ca_key_pem", json!(ca.key_pem)),
        ("ca_not_after", json!(rfc3339(ca.not_after))),
        ("ca_bundle_pem", json!(bundle)),
        ("cert_pem", json!(cert_pem)),
        ("key_pem", json!(key_pem)),
        ("ca_pem_base64", json!(b64(&ca.pem))),
        ("ca_bundle_base64", json!(b64(bundle))),
        ("cert_pem_base64", json!(b64(&cert_pem))),
        ("key_pem_base64", json!(b64(&key_pem))),
        ("not_after", json!(not_after)),
        ("renewal_due", json!(false)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect())
}

/// The inputs: common name, DNS names, validity of the serving certificate.
fn inputs(addr: &Address, desired: &Attrs) -> Result<(String, Vec<String>, i64), ProviderError> {
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
    Ok((cn.to_string(), names, days))
}

fn due(attrs: &Attrs, now: OffsetDateTime) -> bool {
    parse_time(attrs.get("not_after")).is_none_or(|t| now + RENEW_BEFORE >= t)
}

fn with_desired(mut attrs: Attrs, desired: &Attrs) -> Attrs {
    for (k, v) in desired {
        attrs.entry(k.clone()).or_insert_with(|| v.clone());
    }
    attrs
}

impl TlsProvider {
    /// A new CA and serving certificate.
    fn create_at(
        addr: &Address,
        desired: &Attrs,
        now: OffsetDateTime,
    ) -> Result<Live, ProviderError> {
        let (cn, names, days) = inputs(addr, desired)?;
        let ca = new_ca(addr, &cn, days.saturating_mul(2), now)?;
        let attrs = issue(addr, &ca, &ca.pem, &cn, &names, days, now)?;
        let attrs = with_desired(attrs, desired);
        let id = attrs
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(Live { id, attrs })
    }

    /// Renews the serving certificate if it is due: from the same CA while
    /// that outlives it, else from a new CA trusted next to the old one.
    fn update_at(
        addr: &Address,
        prior: &Live,
        desired: &Attrs,
        now: OffsetDateTime,
    ) -> Result<Live, ProviderError> {
        if !due(&prior.attrs, now) {
            let mut l = prior.clone();
            for (k, v) in desired {
                l.attrs.insert(k.clone(), v.clone());
            }
            return Ok(l);
        }
        let (cn, names, days) = inputs(addr, desired)?;
        let (ca, bundle) = match kept_ca(addr, &cn, &prior.attrs, now)? {
            Some(ca) => {
                let bundle = ca.pem.clone();
                (ca, bundle)
            }
            None => {
                let ca = new_ca(addr, &cn, days.saturating_mul(2), now)?;
                let old = prior
                    .attrs
                    .get("ca_pem")
                    .and_then(Value::as_str)
                    .filter(|_| parse_time(prior.attrs.get("ca_not_after")).is_none_or(|t| t > now))
                    .unwrap_or_default();
                let bundle = format!("{}{old}", ca.pem);
                (ca, bundle)
            }
        };
        let attrs = with_desired(issue(addr, &ca, &bundle, &cn, &names, days, now)?, desired);
        let id = attrs
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(Live { id, attrs })
    }

    fn read_at(prior: &Live, now: OffsetDateTime) -> Live {
        let mut l = prior.clone();
        l.attrs
            .insert("renewal_due".into(), json!(due(&prior.attrs, now)));
        // State written before bundles were kept: the bundle is the CA.
        if !l.attrs.contains_key("ca_bundle_pem")
            && let Some(ca) = prior.attrs.get("ca_pem").and_then(Value::as_str)
        {
            let ca = ca.to_string();
            l.attrs.insert("ca_bundle_base64".into(), json!(b64(&ca)));
            l.attrs.insert("ca_bundle_pem".into(), json!(ca));
        }
        l
    }
}

#[async_trait]
impl Provider for TlsProvider {
    async fn read(&self, _addr: &Address, prior: &Live) -> Result<Option<Live>, ProviderError> {
        Ok(Some(Self::read_at(prior, OffsetDateTime::now_utc())))
    }

    async fn discover(&self, _scope: &DiscoverScope<'_>) -> Result<Discovery, ProviderError> {
        Ok(Discovery::default())
    }

    async fn create(
        &self,
        addr: &Address,
        desired: &Attrs,
        _ctx: &OpContext<'_>,
    ) -> Result<Live, ProviderError> {
        Self::create_at(addr, desired, OffsetDateTime::now_utc())
    }

    async fn update(
        &self,
        addr: &Address,
        prior: &Live,
        desired: &Attrs,
        _ctx: &OpContext<'_>,
    ) -> Result<Live, ProviderError> {
        Self::update_at(addr, prior, desired, OffsetDateTime::now_utc())
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
        "tls.certificate.lb_webhook"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    const HOST: &str = "aws-load-balancer-webhook-service.kube-system.svc";

    fn desired(days: i64) -> Attrs {
        [
            ("common_name".to_string(), json!(HOST)),
            ("dns_names".to_string(), json!([HOST])),
            ("validity_days".to_string(), json!(days)),
            ("renewal_due".to_string(), json!(false)),
        ]
        .into()
    }

    fn pem_der(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// Whether a TLS client trusting `bundle` accepts `cert` for HOST at `at`.
    fn trusted(bundle: &str, cert: &str, at: OffsetDateTime) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(pem_der(bundle));
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let Ok(verifier) =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                .build()
        else {
            return false;
        };
        let leaf = pem_der(cert).remove(0);
        let name = rustls::pki_types::ServerName::try_from(HOST).unwrap_or_else(|e| panic!("{e}"));
        let now = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            at.unix_timestamp().max(0).unsigned_abs(),
        ));
        use rustls::client::danger::ServerCertVerifier as _;
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], now)
            .is_ok()
    }

    fn s<'a>(l: &'a Live, k: &str) -> &'a str {
        l.attrs.get(k).and_then(Value::as_str).unwrap_or_default()
    }

    #[tokio::test]
    async fn issues_a_ca_signed_serving_certificate() {
        let live = TlsProvider
            .create(&a(), &desired(365), &OpContext::silent())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(s(&live, "cert_pem").starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(s(&live, "key_pem").contains("PRIVATE KEY"));
        assert_ne!(s(&live, "ca_pem"), s(&live, "cert_pem"));
        assert_eq!(s(&live, "ca_bundle_pem"), s(&live, "ca_pem"));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(s(&live, "ca_bundle_base64"))
            .unwrap_or_default();
        assert_eq!(String::from_utf8_lossy(&decoded), s(&live, "ca_pem"));
        let now = OffsetDateTime::now_utc();
        assert!(trusted(
            s(&live, "ca_bundle_pem"),
            s(&live, "cert_pem"),
            now
        ));
        // Fresh: nothing to renew.
        let read = TlsProvider
            .read(&a(), &live)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("gone"));
        assert_eq!(read.attrs["renewal_due"], json!(false));
    }

    #[test]
    fn renewal_keeps_the_ca_so_the_webhooks_bundle_stays_valid() {
        let t0 = OffsetDateTime::now_utc();
        let first =
            TlsProvider::create_at(&a(), &desired(365), t0).unwrap_or_else(|e| panic!("{e}"));
        // 340 days on, within the renewal margin.
        let t1 = t0 + Duration::days(340);
        let read = TlsProvider::read_at(&first, t1);
        assert_eq!(read.attrs["renewal_due"], json!(true));
        let renewed = TlsProvider::update_at(&a(), &read, &desired(365), t1)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(s(&renewed, "cert_pem"), s(&first, "cert_pem"));
        assert_eq!(s(&renewed, "ca_pem"), s(&first, "ca_pem"), "same CA");
        assert_eq!(s(&renewed, "ca_bundle_pem"), s(&first, "ca_bundle_pem"));
        assert_eq!(
            TlsProvider::read_at(&renewed, t1).attrs["renewal_due"],
            json!(false)
        );
        // The new certificate is trusted by the bundle the webhooks already have.
        assert!(trusted(
            s(&first, "ca_bundle_pem"),
            s(&renewed, "cert_pem"),
            t1
        ));
    }

    #[test]
    fn a_new_ca_is_trusted_next_to_the_old_one() {
        let t0 = OffsetDateTime::now_utc();
        let first =
            TlsProvider::create_at(&a(), &desired(365), t0).unwrap_or_else(|e| panic!("{e}"));
        // Near the CA's own end (it lives 730 days): a new CA.
        let t1 = t0 + Duration::days(690);
        let renewed =
            TlsProvider::update_at(&a(), &TlsProvider::read_at(&first, t1), &desired(365), t1)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(s(&renewed, "ca_pem"), s(&first, "ca_pem"));
        let bundle = s(&renewed, "ca_bundle_pem");
        assert!(bundle.contains(s(&renewed, "ca_pem")) && bundle.contains(s(&first, "ca_pem")));
        // Both what the pods serve until they reload and what they will
        // serve are trusted.
        assert!(trusted(bundle, s(&renewed, "cert_pem"), t1));
        assert!(trusted(
            bundle,
            s(&first, "cert_pem"),
            t0 + Duration::days(10)
        ));
    }

    #[test]
    fn state_from_before_bundles_reads_with_its_ca_as_the_bundle() {
        let t0 = OffsetDateTime::now_utc();
        let mut old =
            TlsProvider::create_at(&a(), &desired(365), t0).unwrap_or_else(|e| panic!("{e}"));
        for k in [
            "ca_bundle_pem",
            "ca_bundle_base64",
            "ca_key_pem",
            "ca_not_after",
            "renewal_due",
        ] {
            old.attrs.remove(k);
        }
        let read = TlsProvider::read_at(&old, t0);
        assert_eq!(s(&read, "ca_bundle_pem"), s(&old, "ca_pem"));
        assert_eq!(read.attrs["renewal_due"], json!(false));
        // Renewing without the CA's key: a new CA, the old one still trusted.
        let t1 = t0 + Duration::days(340);
        let renewed =
            TlsProvider::update_at(&a(), &TlsProvider::read_at(&old, t1), &desired(365), t1)
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(s(&renewed, "ca_bundle_pem").contains(s(&old, "ca_pem")));
    }
}
