//! The fleet's certificates (`[tls]` in the hosts file, or `--tls`): a
//! small CA kept on the operator's machine (made on the first deploy, or
//! the operator's own), one certificate per host and role with the host's
//! addresses in its SAN, and a client certificate for the operator (the
//! CLI, and deploy's own calls to the aggregator).
//!
//! ```text
//! PKI/ca.pem, ca-key.pem              the CA deploy made (the key 0600)
//! PKI/operator.pem, operator-key.pem  the operator's client certificate
//! PKI/hosts/NAME-ROLE.pem, -key.pem   what each host was given
//! ```
//!
//! A host's certificate is kept while it is signed by the CA, valid for
//! every name the host needs, and has more than a third of its lifetime
//! left; otherwise (or with `--rotate-certs`) a new one is issued, and the
//! host's service restarts with it (its state, subscriptions included,
//! stays).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{
    client::danger::ServerCertVerifier as _,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject as _},
};

/// Who may change things on the servers (`tls_client_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Any TLS client; the bearer token decides.
    None,
    /// Changes need a certificate from the fleet CA (reads do not).
    Mutating,
    /// Every connection needs one.
    All,
}

/// What the hosts file's `[tls]` says, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the CA and the issued certificates are kept.
    pub pki: PathBuf,
    /// The operator's own CA (certificate and key), instead of one of
    /// deploy's making.
    pub ca: Option<(PathBuf, PathBuf)>,
    pub client_auth: ClientAuth,
    /// Lifetime of the certificates deploy issues.
    pub days: u32,
}

/// `[tls]` as written.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    pub pki: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub ca_key: Option<PathBuf>,
    pub client_auth: Option<ClientAuth>,
    pub days: Option<u32>,
}

impl Section {
    /// Paths relative to `base` (the hosts file's directory).
    pub fn resolve(&self, base: &Path) -> anyhow::Result<Settings> {
        let at = |p: &Path| super::hosts::resolve_path(p, base);
        let ca = match (&self.ca_cert, &self.ca_key) {
            (Some(c), Some(k)) => Some((at(c), at(k))),
            (None, None) => None,
            _ => bail!("[tls] ca_cert and ca_key go together (your own CA), or leave both out (deploy makes one)"),
        };
        let days = self.days.unwrap_or(90);
        if !(2..=3650).contains(&days) {
            bail!("[tls] days = {days}: a certificate's lifetime must be 2 to 3650 days");
        }
        Ok(Settings {
            pki: at(self.pki.as_deref().unwrap_or(Path::new("scaler-pki"))),
            ca,
            client_auth: self.client_auth.unwrap_or(ClientAuth::Mutating),
            days,
        })
    }
}

/// A certificate and its key, as PEM text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert: String,
    pub key: String,
    /// Issued by this run (not kept from an earlier one).
    pub new: bool,
}

/// The open CA: it signs, and clients of this run trust it.
pub struct Pki {
    s: Settings,
    ca_pem: String,
    issuer: rcgen::Certificate,
    issuer_key: KeyPair,
}

impl Pki {
    /// Opens the CA, making one in `pki` on the first run.
    pub fn open(s: &Settings) -> anyhow::Result<Self> {
        let dir = &s.pki;
        let (cert_path, key_path) = match &s.ca {
            Some((c, k)) => (c.clone(), k.clone()),
            None => (dir.join("ca.pem"), dir.join("ca-key.pem")),
        };
        if s.ca.is_none() && !cert_path.exists() {
            make_private_dir(dir)?;
            let key = KeyPair::generate().context("generating the CA key")?;
            let mut p = CertificateParams::new(Vec::<String>::new())?;
            p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            p.distinguished_name.push(DnType::CommonName, format!("scaler fleet CA {}", random_suffix()));
            p.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
            p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
            let cert = p.self_signed(&key)?;
            write_private(&key_path, &key.serialize_pem())?;
            std::fs::write(&cert_path, cert.pem()).with_context(|| format!("writing {}", cert_path.display()))?;
            println!(
                "made a CA for the fleet: {} (its key: {}, keep it safe)",
                cert_path.display(),
                key_path.display()
            );
        }
        let ca_pem =
            std::fs::read_to_string(&cert_path).with_context(|| format!("reading the CA {}", cert_path.display()))?;
        let key_pem =
            std::fs::read_to_string(&key_path).with_context(|| format!("reading the CA key {}", key_path.display()))?;
        let issuer_key = KeyPair::from_pem(&key_pem).with_context(|| format!("the CA key {}", key_path.display()))?;
        let params = CertificateParams::from_ca_cert_pem(&ca_pem)
            .with_context(|| format!("the CA certificate {}", cert_path.display()))?;
        // The same name and key as the CA's certificate: what it signs
        // chains to that certificate.
        let issuer = params.self_signed(&issuer_key).context("the CA certificate and key do not go together")?;
        let pki = Self { s: s.clone(), ca_pem, issuer, issuer_key };
        // A key that is not the certificate's would sign what nobody trusts.
        let probe = pki.sign("probe", &["localhost".to_owned()], 1)?;
        pki.verify(&probe.cert, &["localhost".to_owned()])
            .with_context(|| format!("{} does not sign for {}", key_path.display(), cert_path.display()))?;
        Ok(pki)
    }

    pub fn settings(&self) -> &Settings {
        &self.s
    }

    /// The CA certificate (PEM): what hosts and clients trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate's file, for `SCALER_CA`.
    pub fn ca_file(&self) -> PathBuf {
        match &self.s.ca {
            Some((c, _)) => c.clone(),
            None => self.s.pki.join("ca.pem"),
        }
    }

    /// The certificate of `name` (`NAME-ROLE` or `operator`) for `names`
    /// (addresses and DNS names): the kept one while it is good, else a
    /// new one, written to the PKI directory.
    pub fn issue(&self, file: &str, names: &[String], rotate: bool) -> anyhow::Result<Issued> {
        let dir = if file == "operator" { self.s.pki.clone() } else { self.s.pki.join("hosts") };
        let (cert_path, key_path) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}-key.pem")));
        if !rotate
            && let (Ok(cert), Ok(key)) = (std::fs::read_to_string(&cert_path), std::fs::read_to_string(&key_path))
            && self.verify(&cert, names).is_ok()
            && life_left(&cert).is_some_and(|left| left > f64::from(self.s.days) * 86_400.0 / 3.0)
        {
            return Ok(Issued { cert, key, new: false });
        }
        let issued = self.sign(file, names, self.s.days)?;
        make_private_dir(&dir)?;
        write_private(&key_path, &issued.key)?;
        std::fs::write(&cert_path, &issued.cert).with_context(|| format!("writing {}", cert_path.display()))?;
        Ok(issued)
    }

    /// A new certificate for `names`, usable by a server and a client.
    fn sign(&self, cn: &str, names: &[String], days: u32) -> anyhow::Result<Issued> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, format!("scaler {cn}"));
        for n in names {
            p.subject_alt_names.push(match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.as_str().try_into().with_context(|| format!("{n:?} as a DNS name"))?),
            });
        }
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        p.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(i64::from(days));
        let cert = p.signed_by(&key, &self.issuer, &self.issuer_key)?;
        Ok(Issued { cert: cert.pem(), key: key.serialize_pem(), new: true })
    }

    /// Whether `cert` chains to the CA and is valid now for every name.
    pub fn verify(&self, cert: &str, names: &[String]) -> anyhow::Result<()> {
        let ee = CertificateDer::from_pem_slice(cert.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.map_err(|e| anyhow::anyhow!("{e}"))?)?;
        }
        let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()?;
        for n in names {
            let name = ServerName::try_from(n.as_str())?.to_owned();
            v.verify_server_cert(&ee, &[], &name, &[], UnixTime::now()).with_context(|| format!("for {n}"))?;
        }
        Ok(())
    }

    /// A client configuration for this run's own calls: trusts the CA,
    /// presents the operator's certificate (both as written to the PKI
    /// directory by [`Self::issue`]), as the CLI would.
    pub fn client(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let (cert, key) = (self.s.pki.join("operator.pem"), self.s.pki.join("operator-key.pem"));
        let cfg =
            scaler_api::tls::client_config(Some(&self.ca_file()), Some((&cert, &key))).map_err(anyhow::Error::msg)?;
        Ok(Arc::new(cfg))
    }
}

/// Seconds until `cert` (PEM) expires, if it parses.
fn life_left(cert: &str) -> Option<f64> {
    let der = CertificateDer::from_pem_slice(cert.as_bytes()).ok()?;
    let (_, c) = x509_parser::parse_x509_certificate(&der).ok()?;
    let end = c.validity().not_after.timestamp();
    Some((end - time::OffsetDateTime::now_utc().unix_timestamp()) as f64)
}

fn make_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Writes `text` readable by its owner only (from the start: no window
/// where the key is world-readable).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Tells one fleet's CA from another's in a name.
fn random_suffix() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{:x}", t.as_nanos() ^ u128::from(std::process::id()) << 64)
}

/// The names a host's certificate holds: its SSH address, where it listens
/// (unless everywhere), its name when that is a DNS name, and loopback
/// (deploy checks loopback listeners through SSH).
pub fn host_names(name: &str, address: &str, listen: std::net::SocketAddr) -> Vec<String> {
    let mut v: Vec<String> = vec![address.to_owned()];
    if !listen.ip().is_unspecified() {
        v.push(listen.ip().to_string());
    }
    let dns = |s: &str| {
        !s.is_empty()
            && s.parse::<std::net::IpAddr>().is_err()
            && s.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    };
    if dns(name) {
        v.push(name.to_owned());
    }
    v.extend(["127.0.0.1".to_owned(), "::1".to_owned(), "localhost".to_owned()]);
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|n| seen.insert(n.clone()));
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> Settings {
        Settings { pki: dir.join("pki"), ca: None, client_auth: ClientAuth::Mutating, days: 90 }
    }

    #[test]
    fn a_made_ca_signs_host_certificates_that_are_kept_until_rotated() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let pki = Pki::open(&s).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&s.pki.join("ca-key.pem")), 0o600);
        assert_eq!(mode(&s.pki), 0o700);
        let names = host_names("node1", "10.0.0.2", "0.0.0.0:8470".parse().unwrap());
        assert_eq!(names, ["10.0.0.2", "node1", "127.0.0.1", "::1", "localhost"]);
        let a = pki.issue("node1-agent", &names, false).unwrap();
        assert!(a.new);
        assert_eq!(mode(&s.pki.join("hosts/node1-agent-key.pem")), 0o600);
        pki.verify(&a.cert, &names).unwrap();
        assert!(pki.verify(&a.cert, &["10.0.0.3".into()]).is_err(), "not valid for another address");

        // Reopened (a later deploy): the same CA, the same certificate.
        let pki = Pki::open(&s).unwrap();
        let b = pki.issue("node1-agent", &names, false).unwrap();
        assert_eq!((b.new, &b.cert), (false, &a.cert));
        // A new address, or --rotate-certs: a new one.
        let moved = host_names("node1", "10.0.0.9", "0.0.0.0:8470".parse().unwrap());
        assert!(pki.issue("node1-agent", &moved, false).unwrap().new);
        let c = pki.issue("node1-agent", &moved, true).unwrap();
        assert!(c.new && c.cert != a.cert);
        // One with less than a third of its life left (20 of 90 days) is
        // renewed; one with more is kept.
        let d = pki.sign("node1-agent", &moved, 31).unwrap();
        std::fs::write(s.pki.join("hosts/node1-agent.pem"), &d.cert).unwrap();
        std::fs::write(s.pki.join("hosts/node1-agent-key.pem"), &d.key).unwrap();
        assert!(!pki.issue("node1-agent", &moved, false).unwrap().new);
        let d = pki.sign("node1-agent", &moved, 20).unwrap();
        std::fs::write(s.pki.join("hosts/node1-agent.pem"), &d.cert).unwrap();
        assert!(pki.issue("node1-agent", &moved, false).unwrap().new);
    }

    #[test]
    fn an_operators_ca_is_used_and_a_foreign_one_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let own = Pki::open(&settings(&dir.path().join("own"))).unwrap();
        let s = Settings {
            ca: Some((dir.path().join("own/pki/ca.pem"), dir.path().join("own/pki/ca-key.pem"))),
            ..settings(dir.path())
        };
        let theirs = Pki::open(&s).unwrap();
        assert!(!s.pki.join("ca.pem").exists(), "no CA of deploy's own when one is given");
        let names = vec!["10.0.0.2".to_owned()];
        let c = theirs.issue("n-agent", &names, false).unwrap();
        own.verify(&c.cert, &names).unwrap();
        let other = Pki::open(&settings(&dir.path().join("other"))).unwrap();
        assert!(other.verify(&c.cert, &names).is_err());
        // A key that is not the CA's is refused with both files named.
        let bad = Settings {
            ca: Some((dir.path().join("own/pki/ca.pem"), dir.path().join("other/pki/ca-key.pem"))),
            ..settings(dir.path())
        };
        let err = format!("{:#}", Pki::open(&bad).err().unwrap());
        assert!(err.contains("ca-key.pem") && err.contains("ca.pem"), "{err}");
    }

    #[test]
    fn the_section_is_checked() {
        let s: Section = toml::from_str("ca_cert = \"c.pem\"\n").unwrap();
        assert!(s.resolve(Path::new("/h")).unwrap_err().to_string().contains("ca_key"));
        let s: Section = toml::from_str("days = 1\n").unwrap();
        assert!(s.resolve(Path::new("/h")).is_err());
        let s: Section = toml::from_str("client_auth = \"all\"\n").unwrap();
        let r = s.resolve(Path::new("/h")).unwrap();
        assert_eq!((r.pki, r.client_auth, r.days), (PathBuf::from("/h/scaler-pki"), ClientAuth::All, 90));
        assert!(toml::from_str::<Section>("client_auth = \"some\"\n").is_err());
    }
}
