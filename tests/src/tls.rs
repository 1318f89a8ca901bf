//! A small certificate authority for the TLS tests: a CA and certificates
//! it signs (for given names and addresses, valid now or expired), written
//! as PEM files into a directory of the test's.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate (PEM), what clients trust.
    pub pem: PathBuf,
    dir: PathBuf,
}

/// A certificate and its key, as files.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA, its certificate written to `dir/ca.pem`.
    pub fn new(dir: &Path) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "scaler test CA");
        let cert = p.self_signed(&key).unwrap();
        let pem = dir.join("ca.pem");
        std::fs::write(&pem, cert.pem()).unwrap();
        Self { cert, key, pem, dir: dir.to_path_buf() }
    }

    /// The CA's key, written (0600) to `dir/ca-key.pem`: for a tool given
    /// this CA to sign with (`cargo xtask deploy`'s `[tls] ca_key`).
    pub fn write_key(&self) -> PathBuf {
        use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
        let p = self.dir.join("ca-key.pem");
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&p).unwrap();
        f.write_all(self.key.serialize_pem().as_bytes()).unwrap();
        p
    }

    /// A server certificate for `names` (DNS names or IP addresses),
    /// expired when `expired`, written as `dir/NAME.pem` and `NAME.key`.
    pub fn issue(&self, file: &str, names: &[&str], expired: bool) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("server"));
        for n in names {
            p.subject_alt_names.push(match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().unwrap()),
            });
        }
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let issued = Issued { cert: self.dir.join(format!("{file}.pem")), key: self.dir.join(format!("{file}.key")) };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }
}
