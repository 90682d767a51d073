//! The thumbprint of an OIDC issuer's certificate, obtained as the IAM user
//! guide describes ("Obtain the thumbprint for an OpenID Connect identity
//! provider"): fetch `<issuer>/.well-known/openid-configuration`, connect to
//! the host of its `jwks_uri`, and take the SHA-1 of the last certificate in
//! the chain that host presents (its top intermediate CA), as 40 lowercase
//! hex digits.
//!
//! The connection is verified against the system's roots plus the bundle
//! named by `AWS_CA_BUNDLE`, the variable AWS tools read for extra CAs.

use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use http_body_util::{BodyExt, Empty};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sha1::{Digest, Sha1};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long one attempt may take, connection and both requests included.
const ATTEMPT: Duration = Duration::from_secs(20);

/// The largest discovery document read (they are a few hundred bytes).
const MAX_DOCUMENT: usize = 1 << 20;

/// Why the thumbprint could not be obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct ThumbprintError {
    /// What failed, for a message that names the issuer.
    pub message: String,
    /// Whether trying again later may help (a refused connection, a 5xx),
    /// as opposed to an untrusted certificate or a missing document.
    pub retryable: bool,
}

impl std::fmt::Display for ThumbprintError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn final_error(message: String) -> ThumbprintError {
    ThumbprintError {
        message,
        retryable: false,
    }
}

/// The issuer's thumbprint.
pub async fn of_issuer(issuer: &str) -> Result<String, ThumbprintError> {
    let bundle = std::env::var_os("AWS_CA_BUNDLE").filter(|p| !p.is_empty());
    of_issuer_trusting(issuer, bundle.as_deref().map(std::path::Path::new)).await
}

/// As [`of_issuer`], trusting the PEM bundle `extra` besides the system's roots.
pub async fn of_issuer_trusting(
    issuer: &str,
    extra: Option<&std::path::Path>,
) -> Result<String, ThumbprintError> {
    let tls = connector(extra).map_err(final_error)?;
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(2u64.pow(attempt))).await;
        }
        match tokio::time::timeout(ATTEMPT, once(&tls, issuer)).await {
            Ok(Ok(t)) => return Ok(t),
            Ok(Err(Failure::Final(e))) => return Err(final_error(e)),
            Ok(Err(Failure::Transient(e))) => last = e,
            Err(_) => last = format!("no answer within {}s", ATTEMPT.as_secs()),
        }
    }
    Err(ThumbprintError {
        message: last,
        retryable: true,
    })
}

enum Failure {
    /// Worth another attempt (a refused connection, a 5xx).
    Transient(String),
    /// Will not change (a bad URL, an untrusted certificate, a bad document).
    Final(String),
}

async fn once(tls: &TlsConnector, issuer: &str) -> Result<String, Failure> {
    let base = Endpoint::parse(issuer).map_err(Failure::Final)?;
    let path = format!(
        "{}/.well-known/openid-configuration",
        base.path.trim_end_matches('/')
    );
    let stream = base.connect(tls).await?;
    let issuer_chain = chain(&stream);
    let body = get(stream, &base, &path).await?;
    let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        Failure::Final(format!(
            "`{}` is not an OpenID discovery document: {e}",
            base.url(&path)
        ))
    })?;
    let jwks = doc
        .get("jwks_uri")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| {
            Failure::Final(format!(
                "the discovery document at `{}` has no `jwks_uri`",
                base.url(&path)
            ))
        })?;
    let keys = Endpoint::parse(jwks).map_err(Failure::Final)?;
    let chain = if keys.host == base.host && keys.port == base.port {
        issuer_chain
    } else {
        chain(&keys.connect(tls).await?)
    };
    let top = chain.last().ok_or_else(|| {
        Failure::Final(format!("`{}` presented no certificate", keys.authority()))
    })?;
    Ok(hex(&Sha1::digest(top.as_ref())))
}

/// The certificates a server presented, leaf first, in the order it sent them.
fn chain(stream: &TlsStream<TcpStream>) -> Vec<CertificateDer<'static>> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An `https://` URL's parts.
struct Endpoint {
    host: String,
    port: u16,
    path: String,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!("`{url}` is not an https:// URL"));
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("`{url}` has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(Endpoint {
            host,
            port: uri.port_u16().unwrap_or(443),
            path: uri.path().to_string(),
        })
    }

    fn authority(&self) -> String {
        if self.port == 443 {
            self.host.clone()
        } else if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.authority())
    }

    async fn connect(&self, tls: &TlsConnector) -> Result<TlsStream<TcpStream>, Failure> {
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| Failure::Final(format!("`{}` is not a host name: {e}", self.host)))?;
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                Failure::Transient(format!("cannot connect to `{}`: {e}", self.authority()))
            })?;
        tls.connect(name, tcp).await.map_err(|e| {
            let text = format!("TLS with `{}` failed: {e}", self.authority());
            if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
                Failure::Final(format!(
                    "{text} (if the issuer uses a private CA, name its bundle in AWS_CA_BUNDLE)"
                ))
            } else {
                Failure::Transient(text)
            }
        })
    }
}

/// One HTTP/1.1 GET on an established connection; the body of a 200.
async fn get(stream: TlsStream<TcpStream>, at: &Endpoint, path: &str) -> Result<Vec<u8>, Failure> {
    let url = at.url(path);
    let transient = |e: hyper::Error| Failure::Transient(format!("GET `{url}`: {e}"));
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(transient)?;
    let driver = tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, at.authority())
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| Failure::Final(format!("GET `{url}`: {e}")))?;
    let response = sender.send_request(request).await.map_err(transient)?;
    let status = response.status();
    let body = http_body_util::Limited::new(response.into_body(), MAX_DOCUMENT)
        .collect()
        .await
        .map_err(|e| {
            let text = format!("GET `{url}`: {e}");
            if e.is::<http_body_util::LengthLimitError>() {
                Failure::Final(format!("{text} (larger than {MAX_DOCUMENT} bytes)"))
            } else {
                Failure::Transient(text)
            }
        })?
        .to_bytes();
    driver.abort();
    if status.is_server_error()
        || status == http::StatusCode::REQUEST_TIMEOUT
        || status == http::StatusCode::TOO_MANY_REQUESTS
    {
        return Err(Failure::Transient(format!("GET `{url}`: HTTP {status}")));
    }
    if !status.is_success() {
        return Err(Failure::Final(format!("GET `{url}`: HTTP {status}")));
    }
    Ok(body.to_vec())
}

/// TLS trusting the system's roots and the bundle `extra` (`AWS_CA_BUNDLE`).
fn connector(extra: Option<&std::path::Path>) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra {
        let shown = path.display().to_string();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("AWS_CA_BUNDLE `{shown}` cannot be read: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("AWS_CA_BUNDLE `{shown}` is not a PEM bundle: {e}"))?;
        if certs.is_empty() {
            return Err(format!("AWS_CA_BUNDLE `{shown}` holds no certificate"));
        }
        let (_, bad) = roots.add_parsable_certificates(certs);
        if bad > 0 {
            return Err(format!(
                "AWS_CA_BUNDLE `{shown}`: {bad} certificate(s) are not valid CA certificates"
            ));
        }
    }
    if roots.is_empty() {
        return Err(
            "no trusted CA certificates: the system has none and AWS_CA_BUNDLE is not set".into(),
        );
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_path() {
        let e = Endpoint::parse("https://oidc.eks.eu-west-1.amazonaws.com/id/ABC")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("oidc.eks.eu-west-1.amazonaws.com", 443, "/id/ABC")
        );
        assert_eq!(e.authority(), "oidc.eks.eu-west-1.amazonaws.com");
        let e =
            Endpoint::parse("https://localhost:8443/id/X/keys").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.authority(), "localhost:8443");
        assert_eq!(e.url("/a"), "https://localhost:8443/a");
        assert!(Endpoint::parse("http://example.com/").is_err());
        assert!(Endpoint::parse("not a url").is_err());
    }

    #[test]
    fn thumbprints_are_lowercase_sha1_hex() {
        // SHA-1 of "abc", from FIPS 180-2's examples.
        assert_eq!(
            hex(&Sha1::digest(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    /// A root, an intermediate it signs, and a leaf for `localhost` the
    /// intermediate signs: (root PEM, intermediate DER, leaf DER, leaf key DER).
    fn pki() -> (String, Vec<u8>, Vec<u8>, Vec<u8>) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca = |name: &str| {
            let mut p =
                CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
            p.distinguished_name.push(rcgen::DnType::CommonName, name);
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p
        };
        let key = || KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let (root_key, mid_key, leaf_key) = (key(), key(), key());
        let root = ca("test root")
            .self_signed(&root_key)
            .unwrap_or_else(|e| panic!("{e}"));
        let root_issuer = Issuer::new(ca("test root"), root_key);
        let mid = ca("test intermediate")
            .signed_by(&mid_key, &root_issuer)
            .unwrap_or_else(|e| panic!("{e}"));
        let mid_issuer = Issuer::new(ca("test intermediate"), mid_key);
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap_or_else(|e| panic!("{e}"))
            .signed_by(&leaf_key, &mid_issuer)
            .unwrap_or_else(|e| panic!("{e}"));
        (
            root.pem(),
            mid.der().to_vec(),
            leaf.der().to_vec(),
            leaf_key.serialize_der(),
        )
    }

    /// Serves the discovery document on `localhost` over TLS, presenting
    /// leaf + intermediate; returns the port.
    async fn issuer_server(leaf: Vec<u8>, mid: Vec<u8>, key: Vec<u8>) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("{e}"))
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf), CertificateDer::from(mid)],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let (status, body) = if text
                    .starts_with("GET /id/T/.well-known/openid-configuration ")
                {
                    (
                        "200 OK",
                        format!(
                            r#"{{"issuer":"https://localhost:{port}/id/T","jwks_uri":"https://localhost:{port}/id/T/keys"}}"#
                        ),
                    )
                } else {
                    ("404 Not Found", String::new())
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
        port
    }

    #[tokio::test]
    async fn the_thumbprint_is_the_sha1_of_the_top_certificate_presented() {
        let (root_pem, mid, leaf, key) = pki();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let bundle = dir.path().join("ca.pem");
        std::fs::write(&bundle, root_pem).unwrap_or_else(|e| panic!("{e}"));
        let want = hex(&Sha1::digest(&mid));
        let port = issuer_server(leaf, mid, key).await;
        let issuer = format!("https://localhost:{port}/id/T");

        let got = of_issuer_trusting(&issuer, Some(&bundle)).await;
        assert_eq!(got.as_ref().ok(), Some(&want));

        // Without the private root the issuer is not trusted, and the error says where to put it.
        let untrusted = of_issuer_trusting(&issuer, None).await;
        assert!(
            untrusted
                .as_ref()
                .is_err_and(|e| e.message.contains("AWS_CA_BUNDLE") && !e.retryable),
            "{untrusted:?}"
        );

        // An issuer without a discovery document.
        let missing =
            of_issuer_trusting(&format!("https://localhost:{port}/id/NONE"), Some(&bundle)).await;
        assert!(
            missing
                .as_ref()
                .is_err_and(|e| e.message.contains("HTTP 404") && !e.retryable),
            "{missing:?}"
        );
    }
}
