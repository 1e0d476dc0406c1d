//! The `tls` tables: a listener's (`[listener.tls]`: certificates chosen by SNI, ALPN,
//! client certificates checked against a CA bundle) and a cluster's (`[cluster.tls]`: the
//! CA bundle backends are checked against, the SNI name, a client certificate), read into
//! rustls configurations. The PEM files are read here, so a reload (SIGHUP) re-reads them:
//! new handshakes use the new certificates, established connections keep theirs.
//!
//! The crypto provider is *ring*: it builds with a C compiler alone (aws-lc-rs, rustls's
//! default, needs CMake and takes minutes to build on this two-core box), it has every
//! suite TLS 1.2 and 1.3 need, and on x86-64 its AES-GCM and ChaCha20 are the same
//! assembly from BoringSSL.

use super::values::{nonzero_duration, size, Invalid};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One certificate and its key, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCert {
    certificate: String,
    key: String,
    /// SNI names it serves (`*.example.com` for one label); none: the default.
    #[serde(default)]
    names: Vec<String>,
}

/// `[listener.tls]`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListenerTls {
    certificate: Option<String>,
    key: Option<String>,
    #[serde(default)]
    certificates: Vec<RawCert>,
    #[serde(default)]
    alpn: Vec<String>,
    client_ca: Option<String>,
    client_auth: Option<String>,
    strict_sni: Option<bool>,
    min_version: Option<String>,
    max_handshakes: Option<u64>,
}

/// `[cluster.tls]`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClusterTls {
    ca: String,
    server_name: Option<String>,
    certificate: Option<String>,
    key: Option<String>,
    #[serde(default)]
    alpn: Vec<String>,
    min_version: Option<String>,
}

/// A listener's TLS, ready for handshakes.
#[derive(Clone)]
pub struct ListenerTls {
    /// The rustls configuration every handshake of this generation uses.
    pub config: Arc<rustls::ServerConfig>,
    /// Handshakes in progress on one worker; connections past it are closed.
    pub max_handshakes: usize,
    /// A digest of the files read, so that a reload can say the certificates changed.
    pub digest: u64,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ListenerTls({:016x})", self.digest)
    }
}

/// A cluster's TLS to its backends.
#[derive(Clone)]
pub struct BackendTls {
    /// The rustls configuration of every connection (its session cache resumes reconnects).
    pub config: Arc<rustls::ClientConfig>,
    /// The name sent as SNI and checked in the backend's certificate; `None`: the
    /// backend's IP address.
    pub server_name: Option<ServerName<'static>>,
    /// A digest of the files read.
    pub digest: u64,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BackendTls({:?}, {:016x})",
            self.server_name, self.digest
        )
    }
}

/// Reads files relative to the config file's folder, keeping a digest of what it read.
struct Files<'a> {
    base: &'a Path,
    label: &'a str,
    digest: std::hash::DefaultHasher,
}

impl<'a> Files<'a> {
    /// The files of the table `label`, whose digest starts from its settings (`raw`).
    fn new(base: &'a Path, label: &'a str, raw: &impl std::fmt::Debug) -> Files<'a> {
        let mut digest = std::hash::DefaultHasher::default();
        std::hash::Hasher::write(&mut digest, format!("{raw:?}").as_bytes());
        Files {
            base,
            label,
            digest,
        }
    }

    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.label)
    }

    fn read(&mut self, k: &str, file: &str) -> Result<Vec<u8>, Invalid> {
        use std::hash::Hasher;
        let path: PathBuf = self.base.join(file);
        let bytes = std::fs::read(&path)
            .map_err(|e| (self.key(k), format!("cannot read {}: {e}", path.display())))?;
        self.digest.write(&bytes);
        Ok(bytes)
    }

    fn certs(&mut self, k: &str, file: &str) -> Result<Vec<CertificateDer<'static>>, Invalid> {
        let pem = self.read(k, file)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| (self.key(k), format!("{file}: not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err((self.key(k), format!("{file} holds no PEM certificate")));
        }
        Ok(certs)
    }

    fn private_key(&mut self, k: &str, file: &str) -> Result<PrivateKeyDer<'static>, Invalid> {
        let pem = self.read(k, file)?;
        PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| (self.key(k), format!("{file}: no PEM private key: {e}")))
    }

    fn certified(&mut self, prefix: &str, cert: &str, key: &str) -> Result<CertifiedKey, Invalid> {
        let chain = self.certs(&format!("{prefix}certificate"), cert)?;
        let der = self.private_key(&format!("{prefix}key"), key)?;
        CertifiedKey::from_der(chain, der, &provider()).map_err(|e| {
            (
                self.key(&format!("{prefix}key")),
                format!("{key} does not fit {cert}: {e}"),
            )
        })
    }

    fn roots(&mut self, k: &str, file: &str) -> Result<rustls::RootCertStore, Invalid> {
        let mut roots = rustls::RootCertStore::empty();
        for c in self.certs(k, file)? {
            roots
                .add(c)
                .map_err(|e| (self.key(k), format!("{file}: not a CA certificate: {e}")))?;
        }
        Ok(roots)
    }

    fn digest(&self) -> u64 {
        std::hash::Hasher::finish(&self.digest)
    }
}

fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn versions(
    key: String,
    v: Option<&str>,
) -> Result<&'static [&'static rustls::SupportedProtocolVersion], Invalid> {
    static BOTH: &[&rustls::SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];
    static TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    match v {
        None | Some("1.2") => Ok(BOTH),
        Some("1.3") => Ok(TLS13),
        Some(o) => Err((key, format!("`{o}` must be \"1.2\" or \"1.3\""))),
    }
}

fn alpn(list: Vec<String>) -> Vec<Vec<u8>> {
    list.into_iter().map(String::into_bytes).collect()
}

/// Validates `[listener.tls]`; `label` is the table's dotted name.
pub(crate) fn listener(
    label: &str,
    raw: RawListenerTls,
    base: &Path,
) -> Result<ListenerTls, Invalid> {
    let mut files = Files::new(base, label, &raw);
    let key = |k: &str| format!("{label}.{k}");
    let mut certs = Vec::new();
    match (raw.certificate, raw.key) {
        (Some(c), Some(k)) => certs.push((files.certified("", &c, &k)?, Vec::new())),
        (None, None) => {}
        (Some(_), None) => return Err((key("key"), "a certificate needs its key".into())),
        (None, Some(_)) => return Err((key("certificate"), "a key needs its certificate".into())),
    }
    for (i, c) in raw.certificates.into_iter().enumerate() {
        let prefix = format!("certificates[{i}].");
        let ck = files.certified(&prefix, &c.certificate, &c.key)?;
        for name in &c.names {
            check_name(&ck, name)
                .map_err(|p| (key(&format!("{prefix}names")), format!("`{name}`: {p}")))?;
        }
        certs.push((ck, c.names.iter().map(|n| n.to_ascii_lowercase()).collect()));
    }
    if certs.is_empty() {
        return Err((
            key("certificate"),
            "TLS needs a certificate and key (or [[…tls.certificates]])".into(),
        ));
    }
    let resolver = Sni::new(certs, raw.strict_sni.unwrap_or(false), label);
    let provider = Arc::new(provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(key("min_version"), raw.min_version.as_deref())?)
        .map_err(|e| (key("min_version"), e.to_string()))?;
    let builder = match raw.client_ca {
        None if raw.client_auth.is_some() => {
            return Err((
                key("client_auth"),
                "needs client_ca, the CA bundle to check client certificates against".into(),
            ))
        }
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = files.roots("client_ca", &ca)?;
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            );
            let v = match raw.client_auth.as_deref() {
                None | Some("required") => v,
                Some("optional") => v.allow_unauthenticated(),
                Some(o) => {
                    return Err((
                        key("client_auth"),
                        format!("`{o}` must be \"required\" or \"optional\""),
                    ))
                }
            };
            builder.with_client_cert_verifier(
                v.build().map_err(|e| (key("client_ca"), e.to_string()))?,
            )
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = alpn(raw.alpn);
    Ok(ListenerTls {
        config: Arc::new(config),
        max_handshakes: size(&key("max_handshakes"), raw.max_handshakes, 256, 1)?,
        digest: files.digest(),
    })
}

/// Validates `[cluster.tls]`.
pub(crate) fn cluster(label: &str, raw: RawClusterTls, base: &Path) -> Result<BackendTls, Invalid> {
    let mut files = Files::new(base, label, &raw);
    let key = |k: &str| format!("{label}.{k}");
    let roots = files.roots("ca", &raw.ca)?;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(versions(key("min_version"), raw.min_version.as_deref())?)
        .map_err(|e| (key("min_version"), e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (raw.certificate, raw.key) {
        (Some(c), Some(k)) => {
            let chain = files.certs("certificate", &c)?;
            let der = files.private_key("key", &k)?;
            builder
                .with_client_auth_cert(chain, der)
                .map_err(|e| (key("key"), format!("{k} does not fit {c}: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => return Err((key("key"), "a certificate needs its key".into())),
        (None, Some(_)) => return Err((key("certificate"), "a key needs its certificate".into())),
    };
    config.alpn_protocols = alpn(raw.alpn);
    let server_name = raw
        .server_name
        .map(|n| {
            ServerName::try_from(n.clone()).map_err(|e| (key("server_name"), format!("`{n}`: {e}")))
        })
        .transpose()?;
    Ok(BackendTls {
        config: Arc::new(config),
        server_name,
        digest: files.digest(),
    })
}

/// The listener's handshake timeout: the PROXY header and the TLS handshake must be done
/// within it.
pub(crate) fn handshake_timeout(key: &str, raw: Option<&String>) -> Result<Duration, Invalid> {
    nonzero_duration(key, raw, Duration::from_secs(10))
}

/// Whether `ck`'s certificate is valid for `name` (a wildcard: for a name under it).
fn check_name(ck: &CertifiedKey, name: &str) -> Result<(), String> {
    let probe = match name.strip_prefix("*.") {
        Some(rest) => format!("sni-probe.{rest}"),
        None => name.to_string(),
    };
    let server = ServerName::try_from(probe).map_err(|e| e.to_string())?;
    let cert = ck.end_entity_cert().map_err(|e| e.to_string())?;
    let parsed = rustls::server::ParsedCertificate::try_from(cert).map_err(|e| e.to_string())?;
    rustls::client::verify_server_name(&parsed, &server)
        .map_err(|_| "the certificate is not valid for this name".to_string())
}

/// Chooses a listener's certificate by the client's SNI name.
#[derive(Debug)]
struct Sni {
    /// Each certificate with the names it serves; the first without names (or else the
    /// first) is the default.
    certs: Vec<(Arc<CertifiedKey>, Vec<String>)>,
    default: usize,
    /// An SNI name no certificate serves is refused (else the default answers).
    strict: bool,
    listener: String,
}

impl Sni {
    fn new(certs: Vec<(CertifiedKey, Vec<String>)>, strict: bool, label: &str) -> Sni {
        let default = certs.iter().position(|(_, n)| n.is_empty()).unwrap_or(0);
        Sni {
            certs: certs.into_iter().map(|(c, n)| (Arc::new(c), n)).collect(),
            default,
            strict,
            listener: label.to_string(),
        }
    }

    fn lookup(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        let exact = self.certs.iter().find(|(_, ns)| ns.contains(&name));
        exact
            .or_else(|| {
                let parent = name.split_once('.')?.1;
                self.certs
                    .iter()
                    .find(|(_, ns)| ns.iter().any(|n| n.strip_prefix("*.") == Some(parent)))
            })
            .map(|(c, _)| c)
    }
}

impl rustls::server::ResolvesServerCert for Sni {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.certs[self.default].0.clone());
        };
        if let Some(c) = self.lookup(name) {
            return Some(c.clone());
        }
        if !self.strict {
            return Some(self.certs[self.default].0.clone());
        }
        if let Some(suppressed) = crate::throttle::admit(&[&self.listener, "sni", name]) {
            tracing::warn!(listener = %self.listener, sni = %name, suppressed, "TLS handshake refused: no certificate serves this SNI name (strict_sni)");
        }
        None
    }
}
