//! Kubernetes bearer tokens for EKS, made in-process from AWS credentials
//! exactly as `aws eks get-token` makes them: a presigned STS
//! `GetCallerIdentity` URL (query-parameter SigV4, valid 60 seconds) that
//! also signs the header `x-k8s-aws-id: <cluster>`, base64url-encoded without
//! padding, prefixed `k8s-aws-v1.`.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// How long a presigned token is valid; EKS accepts it for 15 minutes after
/// signing regardless, and slipway refreshes well before.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// SigV4's encoding: everything but unreserved characters.
const AWS_QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign an EKS token: {0}")]
pub struct TokenError(String);

/// The STS endpoint the token is presigned for.
pub fn sts_endpoint(region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://sts.{region}.{suffix}/")
}

/// A token for `cluster`, signed at `now` with `credentials`.
pub fn eks_token(
    cluster: &str,
    region: &str,
    credentials: &Credentials,
    now: SystemTime,
) -> Result<String, TokenError> {
    let base = format!(
        "{}?Action=GetCallerIdentity&Version=2011-06-15",
        sts_endpoint(region)
    );
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| TokenError(e.to_string()))?
        .into();
    let host = base
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let headers = [("host", host.as_str()), ("x-k8s-aws-id", cluster)];
    let request = SignableRequest::new(
        "GET",
        base.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| TokenError(e.to_string()))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| TokenError(e.to_string()))?
        .into_parts();
    let mut url = base;
    for (k, v) in instructions.params() {
        url.push('&');
        url.push_str(&utf8_percent_encode(k, AWS_QUERY).to_string());
        url.push('=');
        url.push_str(&utf8_percent_encode(v, AWS_QUERY).to_string());
    }
    Ok(format!(
        "k8s-aws-v1.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url.as_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by botocore (`RequestSigner.generate_presigned_url` with the
    /// `x-k8s-aws-id` header and 60 s expiry, as `aws eks get-token` does) for
    /// these credentials at 2026-11-27T12:00:00Z.
    const BOTOCORE: &str = "k8s-aws-v1.aHR0cHM6Ly9zdHMuYXAtc291dGgtMS5hbWF6b25hd3MuY29tLz9BY3Rpb249R2V0Q2FsbGVySWRlbnRpdHkmVmVyc2lvbj0yMDExLTA2LTE1JlgtQW16LUFsZ29yaXRobT1BV1M0LUhNQUMtU0hBMjU2JlgtQW16LUNyZWRlbnRpYWw9QUtJREVYQU1QTEUlMkYyMDI2MTEyNyUyRmFwLXNvdXRoLTElMkZzdHMlMkZhd3M0X3JlcXVlc3QmWC1BbXotRGF0ZT0yMDI2MTEyN1QxMjAwMDBaJlgtQW16LUV4cGlyZXM9NjAmWC1BbXotU2lnbmVkSGVhZGVycz1ob3N0JTNCeC1rOHMtYXdzLWlkJlgtQW16LVNpZ25hdHVyZT05MzNkZGMxZGY5NDljM2ZiNjMxZGI1ZjkwZjY3NjExMTZhMWZiODY2Y2Y0ZWIyOGI0NTMwM2Q1ZmU0YWJmYjJm";

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn is_byte_identical_to_aws_eks_get_token() {
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        // 2026-11-27T12:00:00Z
        let token = eks_token("smallcase", "ap-south-1", &creds, at(1_795_780_800)).unwrap();
        assert_eq!(token, BOTOCORE);
    }

    #[test]
    fn has_the_documented_shape() {
        let creds = Credentials::new("AKID", "SECRET", Some("SESSION/TOKEN".into()), None, "test");
        let token = eks_token("c1", "eu-west-1", &creds, at(1_700_000_000)).unwrap();
        let body = token.strip_prefix("k8s-aws-v1.").unwrap();
        assert!(!body.contains('='), "no padding");
        let url = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(body)
                .unwrap(),
        )
        .unwrap();
        assert!(url.starts_with(
            "https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&"
        ));
        assert!(url.contains("X-Amz-Expires=60"));
        assert!(url.contains("X-Amz-SignedHeaders=host%3Bx-k8s-aws-id"));
        assert!(url.contains("X-Amz-Security-Token=SESSION%2FTOKEN"));
        // Another cluster signs differently.
        assert_ne!(
            eks_token("c2", "eu-west-1", &creds, at(1_700_000_000)).unwrap(),
            token
        );
    }
}
