//! Certificates made on the spot (rcgen), for `switchyard bench`'s TLS runs and the TLS
//! tests: a CA, and leaf certificates it signs for given names, valid now or expired.
//! ECDSA P-256 keys, as most deployments use.

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};

/// A certificate authority whose files live in one folder.
pub struct Pki {
    dir: PathBuf,
    ca: Certificate,
    ca_key: KeyPair,
    /// The CA certificate's PEM file.
    pub ca_pem: PathBuf,
}

/// When a leaf certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From yesterday for a year.
    Now,
    /// It ended last year.
    Expired,
}

/// A leaf certificate's two files.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// The certificate, DER, to compare with what a peer presents.
    pub der: Vec<u8>,
}

impl Pki {
    /// A new CA named `name`, its certificate written to `dir/NAME-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Result<Pki, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca_key = KeyPair::generate()?;
        let ca = params.self_signed(&ca_key)?;
        let ca_pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_pem, ca.pem()).map_err(|e| rcgen::Error::PemError(e.to_string()))?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca,
            ca_key,
            ca_pem,
        })
    }

    /// A leaf for `names` (DNS names or IP addresses), written as `dir/FILE.pem` and
    /// `dir/FILE.key`.
    pub fn leaf(
        &self,
        file: &str,
        names: &[&str],
        validity: Validity,
    ) -> Result<Leaf, rcgen::Error> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or(file));
        let now = time_now();
        let day = 86_400;
        let (from, to) = match validity {
            Validity::Now => (now - day, now + 365 * day),
            Validity::Expired => (now - 400 * day, now - 30 * day),
        };
        params.not_before = rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(from);
        params.not_after = rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(to);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca, &self.ca_key)?;
        let io = |e: std::io::Error| rcgen::Error::PemError(e.to_string());
        let leaf = Leaf {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
            der: cert.der().to_vec(),
        };
        std::fs::write(&leaf.cert, cert.pem()).map_err(io)?;
        std::fs::write(&leaf.key, key.serialize_pem()).map_err(io)?;
        Ok(leaf)
    }
}

fn time_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A rustls client trusting the CA certificate(s) in `ca` (ring provider, TLS 1.2 and
/// 1.3); `resume`: whether it keeps sessions to resume (off: every handshake is full).
pub fn client_config(
    ca: &Path,
    resume: bool,
) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("{}: {e}", ca.display()))?;
    for c in certs {
        roots
            .add(c.map_err(|e| format!("{}: {e}", ca.display()))?)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(std::sync::Arc::new(config))
}
