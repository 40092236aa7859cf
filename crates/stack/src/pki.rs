//! The local stack's certificates: a CA of its own, one certificate for
//! every server (valid for `localhost`, `127.0.0.1` and `::1`) and one for
//! the worker (named [`WORKER_NAME`], which the services require of their
//! callers). Keys are written readable by their owner only. A deployment
//! uses its own CA instead (cert-manager, Vault, …) with the same names.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The DNS name in the worker's certificate (`keel_server::tls::WORKER_NAME`).
pub const WORKER_NAME: &str = "keel-worker";

/// Where the local certificates are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub worker_cert: PathBuf,
    pub worker_key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot make certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl LocalPki {
    /// The files in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            worker_cert: dir.join("worker.pem"),
            worker_key: dir.join("worker.key"),
        }
    }

    /// The flags of a server presenting the server certificate.
    pub fn server_args(&self) -> Vec<String> {
        tls_args(&self.server_cert, &self.server_key, &self.ca)
    }

    /// The flags of the worker presenting its certificate.
    pub fn worker_args(&self) -> Vec<String> {
        tls_args(&self.worker_cert, &self.worker_key, &self.ca)
    }

    fn all(&self) -> [&PathBuf; 5] {
        [
            &self.ca,
            &self.server_cert,
            &self.server_key,
            &self.worker_cert,
            &self.worker_key,
        ]
    }

    /// The certificates in `dir`, made if any is missing (all of them
    /// again, under a new CA).
    pub fn ensure(dir: &Path) -> Result<Self, PkiError> {
        let pki = Self::in_dir(dir);
        if pki.all().iter().all(|p| p.is_file()) {
            return Ok(pki);
        }
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name
            .push(DnType::CommonName, "Keel local CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let leaf = |names: Vec<String>,
                    usage: ExtendedKeyUsagePurpose|
         -> Result<(String, String), PkiError> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(names.clone())?;
            params
                .distinguished_name
                .push(DnType::CommonName, names[0].clone());
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (server_cert, server_key) = leaf(
            vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let (worker_cert, worker_key) = leaf(
            vec![WORKER_NAME.into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        write(&pki.server_key, &server_key, true)?;
        write(&pki.server_cert, &server_cert, false)?;
        write(&pki.worker_key, &worker_key, true)?;
        write(&pki.worker_cert, &worker_cert, false)?;
        write(&pki.ca, &ca_cert.pem(), false)?;
        Ok(pki)
    }
}

fn tls_args(cert: &Path, key: &Path, ca: &Path) -> Vec<String> {
    [("--tls-cert", cert), ("--tls-key", key), ("--tls-ca", ca)]
        .into_iter()
        .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
        .collect()
}

/// Writes atomically; `private` files are readable by their owner only.
fn write(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_reused_with_private_keys() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let pki = LocalPki::ensure(&dir.path().join("tls")).unwrap();
        let ca = std::fs::read_to_string(&pki.ca).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
        for key in [&pki.server_key, &pki.worker_key] {
            let mode = std::fs::metadata(key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }
        let again = LocalPki::ensure(&dir.path().join("tls")).unwrap();
        assert_eq!(again, pki);
        assert_eq!(
            std::fs::read_to_string(&again.ca).unwrap(),
            ca,
            "reused, not remade"
        );
        // A missing file makes a new set.
        std::fs::remove_file(&pki.worker_key).unwrap();
        LocalPki::ensure(&dir.path().join("tls")).unwrap();
        assert_ne!(std::fs::read_to_string(&pki.ca).unwrap(), ca);
    }
}
