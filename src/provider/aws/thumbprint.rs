//! The thumbprint of an OIDC issuer's certificate, obtained as the IAM user
//! guide describes ("Obtain the thumbprint for an OpenID Connect identity
//! provider"): fetch `<issuer>/.well-known/openid-configuration`, connect to
//! the host of its `jwks_uri`, and take the SHA-1 of the last certificate in
//! the chain that host presents (its top intermediate CA), as 40 lowercase
//! hex digits.
//!
//! The connection is verified against the system's roots plus the bundle
//! named by `AWS_CA_BUNDLE`, the variable AWS tools read for extra CAs. It
//! goes through the HTTP proxy named by `HTTPS_PROXY` unless `NO_PROXY`
//! exempts the host, as the AWS SDK's own connections do: an HTTP `CONNECT`
//! tunnel with TLS inside.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::Uri;
use http_body_util::{BodyExt, Empty};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long one attempt may take, connection and both requests included.
const ATTEMPT: Duration = Duration::from_secs(20);

/// The largest discovery document read (they are a few hundred bytes).
const MAX_DOCUMENT: usize = 1 << 20;

/// The largest answer head a proxy may give to `CONNECT`.
const MAX_PROXY_HEAD: usize = 16 << 10;

/// Why the thumbprint could not be obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct ThumbprintError {
    /// What failed, for a message that names the issuer.
    pub message: String,
    /// Whether trying again later may help (a refused connection, a 5xx),
    /// as opposed to an untrusted certificate or a missing document.
    pub retryable: bool,
    /// Whether the issuer could not be reached from here at all: no
    /// connection, no tunnel through the proxy, or no answer in time. IAM,
    /// which reaches it from AWS, can still obtain the thumbprint itself.
    pub unreachable: bool,
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
        unreachable: false,
    }
}

/// The issuer's thumbprint, trusting `AWS_CA_BUNDLE` and connecting through
/// `HTTPS_PROXY` as `NO_PROXY` allows.
pub async fn of_issuer(issuer: &str) -> Result<String, ThumbprintError> {
    let bundle = std::env::var_os("AWS_CA_BUNDLE").filter(|p| !p.is_empty());
    let proxies = Proxies::parse(
        crate::env::https_proxy_opt().as_deref(),
        crate::env::no_proxy_opt().as_deref(),
    )
    .map_err(final_error)?;
    of_issuer_via(
        issuer,
        bundle.as_deref().map(std::path::Path::new),
        &proxies,
    )
    .await
}

/// As [`of_issuer`], trusting the PEM bundle `extra` besides the system's
/// roots and connecting as `proxies` say.
pub async fn of_issuer_via(
    issuer: &str,
    extra: Option<&std::path::Path>,
    proxies: &Proxies,
) -> Result<String, ThumbprintError> {
    let tls = connector(extra).map_err(final_error)?;
    let mut last = final_error(String::new());
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(2u64.pow(attempt))).await;
        }
        let (message, unreachable) =
            match tokio::time::timeout(ATTEMPT, once(&tls, issuer, proxies)).await {
                Ok(Ok(t)) => return Ok(t),
                Ok(Err(Failure::Final(e))) => return Err(final_error(e)),
                Ok(Err(Failure::Transient(e))) => (e, false),
                Ok(Err(Failure::Unreachable(e))) => (e, true),
                Err(_) => (format!("no answer within {}s", ATTEMPT.as_secs()), true),
            };
        last = ThumbprintError {
            message,
            retryable: true,
            unreachable,
        };
    }
    Err(last)
}

enum Failure {
    /// No connection to the host, or no tunnel to it through the proxy.
    Unreachable(String),
    /// Reached, but worth another attempt (a dropped connection, a 5xx).
    Transient(String),
    /// Will not change (a bad URL, an untrusted certificate, a bad document).
    Final(String),
}

async fn once(tls: &TlsConnector, issuer: &str, proxies: &Proxies) -> Result<String, Failure> {
    let base = Endpoint::parse(issuer).map_err(Failure::Final)?;
    let path = format!(
        "{}/.well-known/openid-configuration",
        base.path.trim_end_matches('/')
    );
    let stream = base.connect(tls, proxies).await?;
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
        chain(&keys.connect(tls, proxies).await?)
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

/// `host:port`, the host bracketed when it is an IPv6 address.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT`; a bare IPv6 address is a
/// host without port. `None` when the host is empty or the port no number.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match s.split_once(':') {
            Some((host, port)) if !port.contains(':') => (host, Some(port)),
            _ => (s, None),
        }
    };
    let port = port.map(str::parse::<u16>).transpose().ok()?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// Which connections go through an HTTP proxy: all of them when a proxy is
/// set, except to the hosts its exemptions (`NO_PROXY`) name.
#[derive(Clone, Default)]
pub struct Proxies {
    proxy: Option<Proxy>,
    exempt: Vec<Exempt>,
}

/// An `http://` proxy that tunnels with `CONNECT`.
#[derive(Clone)]
struct Proxy {
    host: String,
    port: u16,
    /// `Basic …` from the URL's `user:password@`.
    authorization: Option<String>,
}

/// One `NO_PROXY` entry, read as the AWS SDK reads it for the AWS API
/// calls (hyper-util's proxy matcher), so that one value serves both.
#[derive(Clone)]
enum Exempt {
    /// `*`.
    Every,
    /// An IP address or network (`10.0.0.1`, `10.0.0.0/8`, `::1`).
    Ip(ipnet::IpNet),
    /// A domain and its subdomains, written with or without a leading dot.
    Domain(String),
}

impl Proxies {
    /// Every connection direct.
    pub fn direct() -> Proxies {
        Proxies::default()
    }

    /// From the values of `HTTPS_PROXY` (an `http://[user:password@]host[:port]`
    /// URL; without a scheme, `http://`) and `NO_PROXY`. Empty values count
    /// as unset.
    pub fn parse(https_proxy: Option<&str>, no_proxy: Option<&str>) -> Result<Proxies, String> {
        let proxy = match https_proxy.map(str::trim).filter(|v| !v.is_empty()) {
            None => None,
            Some(url) => Some(Proxy::parse(url)?),
        };
        let exempt = no_proxy
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                let bare = e.trim_start_matches('[').trim_end_matches(']');
                if e == "*" {
                    Exempt::Every
                } else if let Ok(net) = e.parse::<ipnet::IpNet>() {
                    Exempt::Ip(net)
                } else if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
                    Exempt::Ip(ip.into())
                } else {
                    Exempt::Domain(e.trim_start_matches('.').to_ascii_lowercase())
                }
            })
            .collect();
        Ok(Proxies { proxy, exempt })
    }

    /// The proxy to reach `host` through; `None`: connect directly.
    fn for_host(&self, host: &str) -> Option<&Proxy> {
        let proxy = self.proxy.as_ref()?;
        let ip = host.parse::<std::net::IpAddr>().ok();
        let host = host.to_ascii_lowercase();
        let exempt = self.exempt.iter().any(|e| match (e, ip) {
            (Exempt::Every, _) => true,
            (Exempt::Ip(net), Some(ip)) => net.contains(&ip),
            (Exempt::Domain(name), None) => {
                host == *name
                    || host
                        .strip_suffix(name.as_str())
                        .is_some_and(|sub| sub.ends_with('.'))
            }
            _ => false,
        });
        (!exempt).then_some(proxy)
    }
}

impl Proxy {
    fn parse(url: &str) -> Result<Proxy, String> {
        let rest = match url.split_once("://") {
            None => url,
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "HTTPS_PROXY `{}`: slipway tunnels through http:// proxies, not {scheme}://",
                    redacted(url)
                ));
            }
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((user, host)) => (Some(user), host),
            None => (None, authority),
        };
        let (host, port) = split_host_port(host).ok_or_else(|| {
            format!(
                "HTTPS_PROXY `{}` is not a proxy URL (http://HOST:PORT)",
                redacted(url)
            )
        })?;
        let authorization = userinfo.map(|u| {
            let (user, password) = u.split_once(':').unwrap_or((u, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            let credentials = format!("{}:{}", decode(user), decode(password));
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            )
        });
        Ok(Proxy {
            host,
            port: port.unwrap_or(80),
            authorization,
        })
    }

    fn authority(&self) -> String {
        host_port(&self.host, self.port)
    }

    /// A connection to `target` (`host:port`) through the proxy.
    async fn tunnel(&self, target: &str) -> Result<TcpStream, Failure> {
        let proxy = format!("`{}` (HTTPS_PROXY)", self.authority());
        let mut tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                Failure::Unreachable(format!("cannot connect to the proxy {proxy}: {e}"))
            })?;
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(auth) = &self.authorization {
            request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| Failure::Unreachable(format!("the proxy {proxy}: {e}")))?;
        // Byte by byte: what follows the head is the server's TLS, which
        // must stay in the socket.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_PROXY_HEAD {
                return Err(Failure::Unreachable(format!(
                    "the proxy {proxy} answered CONNECT `{target}` with more than {MAX_PROXY_HEAD} bytes of headers"
                )));
            }
            match tcp.read_u8().await {
                Ok(b) => head.push(b),
                Err(e) => {
                    return Err(Failure::Unreachable(format!(
                        "the proxy {proxy} gave no answer to CONNECT `{target}`: {e}"
                    )));
                }
            }
        }
        let head = String::from_utf8_lossy(&head);
        let status_line = head.lines().next().unwrap_or_default().trim();
        let code = status_line
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|c| c.parse::<u16>().ok());
        match code {
            Some(200..=299) => Ok(tcp),
            Some(407) => Err(Failure::Unreachable(format!(
                "the proxy {proxy} wants credentials for CONNECT `{target}` (`{status_line}`): {}",
                if self.authorization.is_some() {
                    "it refused those in the URL"
                } else {
                    "give them in the URL, http://USER:PASSWORD@HOST:PORT"
                }
            ))),
            Some(_) => Err(Failure::Unreachable(format!(
                "the proxy {proxy} refused CONNECT `{target}`: `{status_line}`"
            ))),
            None => Err(Failure::Unreachable(format!(
                "the proxy {proxy} answered CONNECT `{target}` with `{status_line}`, not HTTP"
            ))),
        }
    }
}

/// A proxy URL for messages: without its credentials.
fn redacted(url: &str) -> String {
    match url.rsplit_once('@') {
        None => url.to_string(),
        Some((before, after)) => {
            let scheme = before
                .split_once("://")
                .map(|(s, _)| format!("{s}://"))
                .unwrap_or_default();
            format!("{scheme}…@{after}")
        }
    }
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
        } else {
            host_port(&self.host, self.port)
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.authority())
    }

    async fn connect(
        &self,
        tls: &TlsConnector,
        proxies: &Proxies,
    ) -> Result<TlsStream<TcpStream>, Failure> {
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| Failure::Final(format!("`{}` is not a host name: {e}", self.host)))?;
        let tcp = match proxies.for_host(&self.host) {
            Some(proxy) => proxy.tunnel(&host_port(&self.host, self.port)).await?,
            None => TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| {
                    Failure::Unreachable(format!("cannot connect to `{}`: {e}", self.authority()))
                })?,
        };
        tls.connect(name, tcp).await.map_err(|e| {
            let text = format!("TLS with `{}` failed: {e}", self.authority());
            if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
                Failure::Final(format!(
                    "{text} (if the issuer uses a private CA, name its bundle in AWS_CA_BUNDLE)"
                ))
            } else {
                // Closed or reset before the handshake finished: a firewall,
                // or a proxy that could not reach the host after all.
                Failure::Unreachable(text)
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

        let got = of_issuer_via(&issuer, Some(&bundle), &Proxies::direct()).await;
        assert_eq!(got.as_ref().ok(), Some(&want));

        // Without the private root the issuer is not trusted, and the error says where to put it.
        let untrusted = of_issuer_via(&issuer, None, &Proxies::direct()).await;
        assert!(
            untrusted
                .as_ref()
                .is_err_and(|e| e.message.contains("AWS_CA_BUNDLE")
                    && !e.retryable
                    && !e.unreachable),
            "{untrusted:?}"
        );

        // An issuer without a discovery document.
        let missing = of_issuer_via(
            &format!("https://localhost:{port}/id/NONE"),
            Some(&bundle),
            &Proxies::direct(),
        )
        .await;
        assert!(
            missing
                .as_ref()
                .is_err_and(|e| e.message.contains("HTTP 404") && !e.retryable && !e.unreachable),
            "{missing:?}"
        );
    }

    fn proxies(https_proxy: &str, no_proxy: &str) -> Proxies {
        Proxies::parse(Some(https_proxy), Some(no_proxy)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn proxy_urls_give_host_port_and_basic_credentials() {
        let at = |url: &str| {
            let p = proxies(url, "");
            let proxy = p.proxy.unwrap_or_else(|| panic!("{url}: no proxy"));
            (proxy.host, proxy.port, proxy.authorization)
        };
        assert_eq!(
            at("http://proxy.corp:3128"),
            ("proxy.corp".into(), 3128, None)
        );
        assert_eq!(at(" proxy.corp:3128 "), ("proxy.corp".into(), 3128, None));
        assert_eq!(at("HTTP://proxy.corp/"), ("proxy.corp".into(), 80, None));
        // Credentials are percent-decoded, then sent as Basic.
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("u@corp:p:ss")
        );
        assert_eq!(
            at("http://u%40corp:p%3Ass@[::1]:8080"),
            ("::1".into(), 8080, Some(basic))
        );
        assert!(Proxies::parse(Some(""), None).is_ok_and(|p| p.proxy.is_none()));
        assert!(Proxies::parse(None, Some("*")).is_ok_and(|p| p.proxy.is_none()));

        let refused = Proxies::parse(Some("https://user:secret@proxy.corp:3128"), None).err();
        assert!(
            refused
                .as_ref()
                .is_some_and(|e| e.contains("http://") && !e.contains("secret")),
            "{refused:?}"
        );
        assert!(Proxies::parse(Some("socks5://proxy.corp:1080"), None).is_err());
        assert!(Proxies::parse(Some("http://proxy.corp:port"), None).is_err());
        assert!(Proxies::parse(Some("http://"), None).is_err());
    }

    #[test]
    fn no_proxy_exempts_domains_with_their_subdomains_addresses_networks_and_star_all() {
        let p = proxies(
            "http://proxy.corp:3128",
            "example.com, .corp.internal ,Localhost,10.1.0.0/16,192.168.0.7,[::1],,",
        );
        for host in [
            "example.com",
            "oidc.example.com",
            "OIDC.Example.COM",
            "corp.internal",
            "a.b.corp.internal",
            "localhost",
            "10.1.2.3",
            "192.168.0.7",
            "::1",
        ] {
            assert!(p.for_host(host).is_none(), "{host} goes through the proxy");
        }
        for host in [
            "notexample.com",
            "example.com.evil",
            "10.2.0.1",
            "192.168.0.70",
            "::2",
            "oidc.eks.eu-west-1.amazonaws.com",
        ] {
            assert!(
                p.for_host(host).is_some(),
                "{host} does not go through the proxy"
            );
        }
        let everything = proxies("http://proxy.corp:3128", "*");
        assert!(
            everything
                .for_host("oidc.eks.eu-west-1.amazonaws.com")
                .is_none()
        );
        assert!(everything.for_host("10.0.0.1").is_none());
        assert!(
            Proxies::direct()
                .for_host("oidc.eks.eu-west-1.amazonaws.com")
                .is_none()
        );
    }

    /// What a proxy was asked: the head of each request, in order.
    type Asked = Arc<std::sync::Mutex<Vec<String>>>;

    /// An HTTP proxy on 127.0.0.1 that answers every `CONNECT` with
    /// `status`, and on `200` pipes bytes both ways; returns the port.
    async fn proxy_server(status: &'static str) -> (u16, Asked) {
        let asked = Asked::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let record = asked.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        match client.read_u8().await {
                            Ok(b) => head.push(b),
                            Err(_) => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let target = head
                        .strip_prefix("CONNECT ")
                        .and_then(|r| r.split_whitespace().next())
                        .unwrap_or_default()
                        .to_string();
                    if let Ok(mut r) = record.lock() {
                        r.push(head);
                    }
                    if !status.starts_with("200") {
                        let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                        let _ = client.write_all(reply.as_bytes()).await;
                        return;
                    }
                    let Ok(mut upstream) = TcpStream::connect(target.as_str()).await else {
                        return;
                    };
                    let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
                    if client.write_all(established).await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        (port, asked)
    }

    fn heads(asked: &Asked) -> Vec<String> {
        asked.lock().map(|a| a.clone()).unwrap_or_default()
    }

    #[tokio::test]
    async fn the_fetch_tunnels_through_https_proxy_unless_no_proxy_names_the_issuer() {
        let (root_pem, mid, leaf, key) = pki();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let bundle = dir.path().join("ca.pem");
        std::fs::write(&bundle, root_pem).unwrap_or_else(|e| panic!("{e}"));
        let want = hex(&Sha1::digest(&mid));
        let port = issuer_server(leaf, mid, key).await;
        let issuer = format!("https://localhost:{port}/id/T");
        let (proxy_port, asked) = proxy_server("200 Connection established").await;
        let proxy = format!("http://slipway:p%40ss@127.0.0.1:{proxy_port}");

        // One tunnel: the keys are on the issuer's host, whose chain is reused.
        let got = of_issuer_via(&issuer, Some(&bundle), &proxies(&proxy, "")).await;
        assert_eq!(got.as_ref().ok(), Some(&want), "{got:?}");
        let seen = heads(&asked);
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(
            seen[0].starts_with(&format!(
                "CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n"
            )),
            "{seen:?}"
        );
        let basic = base64::engine::general_purpose::STANDARD.encode("slipway:p@ss");
        assert!(
            seen[0].contains(&format!("\r\nProxy-Authorization: Basic {basic}\r\n")),
            "{seen:?}"
        );

        // Exempt by name, or all: straight to the issuer.
        for no_proxy in ["example.com,localhost", ".localhost", "*"] {
            let got = of_issuer_via(&issuer, Some(&bundle), &proxies(&proxy, no_proxy)).await;
            assert_eq!(
                got.as_ref().ok(),
                Some(&want),
                "NO_PROXY={no_proxy}: {got:?}"
            );
        }
        assert_eq!(heads(&asked).len(), 1, "NO_PROXY was not honoured");
    }

    #[tokio::test]
    async fn an_issuer_out_of_reach_directly_or_through_the_proxy_is_unreachable() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
            l.local_addr().map(|a| a.port()).unwrap_or_default()
        };
        let (refusing, asked) = proxy_server("403 Forbidden").await;
        let (wanting, _) = proxy_server("407 Proxy Authentication Required").await;
        let issuer = "https://oidc.eks.eu-west-1.amazonaws.com/id/T";
        let via = |port: u16| proxies(&format!("http://127.0.0.1:{port}"), "");
        let (none, no_proxy, refusing, wanting) =
            (Proxies::direct(), via(closed), via(refusing), via(wanting));
        let direct = format!("https://127.0.0.1:{closed}/id/T");
        let (direct, no_proxy, refused, no_credentials) = tokio::join!(
            of_issuer_via(&direct, None, &none),
            of_issuer_via(issuer, None, &no_proxy),
            of_issuer_via(issuer, None, &refusing),
            of_issuer_via(issuer, None, &wanting),
        );
        for (got, says) in [
            (&direct, format!("cannot connect to `127.0.0.1:{closed}`")),
            (
                &no_proxy,
                format!("cannot connect to the proxy `127.0.0.1:{closed}` (HTTPS_PROXY)"),
            ),
            (
                &refused,
                "refused CONNECT `oidc.eks.eu-west-1.amazonaws.com:443`: `HTTP/1.1 403 Forbidden`"
                    .to_string(),
            ),
            (
                &no_credentials,
                "http://USER:PASSWORD@HOST:PORT".to_string(),
            ),
        ] {
            assert!(
                got.as_ref()
                    .is_err_and(|e| e.unreachable && e.retryable && e.message.contains(&says)),
                "want an unreachable error saying {says:?}: {got:?}"
            );
        }
        // Three attempts, each through the proxy.
        assert_eq!(heads(&asked).len(), 3);
    }
}
