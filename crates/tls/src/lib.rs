//! postern-tls — TLS for Postern's network servers (smtpd now; pop3d and
//! imapd later) and for the smtp client ([`client_config`]: opportunistic
//! or verified against a CA bundle).
//!
//! Loads a server certificate chain and its private key from PEM files named
//! in main.cf, the way Postfix names them:
//!
//! * `smtpd_tls_cert_file` + `smtpd_tls_key_file` (the key file defaults to
//!   the certificate file, so one PEM file can hold both), or
//! * `smtpd_tls_chain_files`: each file holds a private key followed by its
//!   certificate chain (leaf first). Several files (e.g. an RSA and an ECDSA
//!   key) may be given; the first one whose key can sign with a scheme the
//!   client offers is used.
//!
//! and builds an `Arc<rustls::ServerConfig>` that speaks TLS 1.2 and 1.3 only
//! (rustls has no older protocol versions at all). [`describe`] formats the
//! negotiated session for logs and the Received header as Postfix does:
//! `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`.
//!
//! SECURITY: private keys are readable by root only; callers load them in
//! their init step, before the privilege drop, and keep only the parsed
//! config. Every error names the file and what is wrong with it (unreadable,
//! no certificate, no key, key does not match the certificate) and never
//! prints key material. The crypto provider is rustls' `ring` provider; no
//! client certificates are requested. Protocol versions below TLS 1.2 are
//! refused by construction.
#![forbid(unsafe_code)]

use postern_config::MainCf;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, CommonState, ProtocolVersion, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use rustls;
pub use tokio_rustls::TlsAcceptor;
pub use tokio_rustls::TlsConnector;
pub use tokio_rustls::client::TlsStream as ClientTlsStream;
pub use tokio_rustls::server::TlsStream;

/// Why the certificate or key could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    /// The file could not be read (missing, permissions, ...).
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// The file holds no PEM certificate.
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file holds no PEM private key (PKCS#8, PKCS#1 or SEC1).
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The file's PEM is malformed.
    BadPem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// The key is of a type or form the crypto provider cannot use.
    UnsupportedKey {
        /// The file holding the key.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The private key does not belong to the leaf certificate.
    KeyMismatch {
        /// The file holding the key.
        key: PathBuf,
        /// The file holding the certificate.
        cert: PathBuf,
    },
    /// Building the rustls configuration failed otherwise.
    Config(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Unreadable { path, reason } => {
                write!(f, "cannot read TLS file {}: {reason}", path.display())
            }
            TlsError::NoCertificate { path } => {
                write!(f, "no PEM certificate found in {}", path.display())
            }
            TlsError::NoKey { path } => {
                write!(f, "no PEM private key found in {}", path.display())
            }
            TlsError::BadPem { path, reason } => {
                write!(f, "malformed PEM in {}: {reason}", path.display())
            }
            TlsError::UnsupportedKey { path, reason } => {
                write!(f, "unusable private key in {}: {reason}", path.display())
            }
            TlsError::KeyMismatch { key, cert } => write!(
                f,
                "private key in {} does not match the certificate in {}",
                key.display(),
                cert.display()
            ),
            TlsError::Config(why) => write!(f, "TLS configuration error: {why}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// Where the server's certificate(s) and key(s) come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// A certificate chain file and a key file (may be the same file).
    Pair {
        /// PEM certificate chain, leaf first.
        cert: PathBuf,
        /// PEM private key.
        key: PathBuf,
    },
    /// Files each holding a key followed by its chain.
    Chains(Vec<PathBuf>),
}

impl CertSource {
    /// The source configured by `<prefix>_tls_chain_files`, or
    /// `<prefix>_tls_cert_file` + `<prefix>_tls_key_file`; None when no
    /// certificate is configured. `prefix` is e.g. "smtpd".
    pub fn from_config(main: &MainCf, prefix: &str) -> Option<CertSource> {
        let chains = main.list(&format!("{prefix}_tls_chain_files"));
        if !chains.is_empty() {
            return Some(CertSource::Chains(
                chains.into_iter().map(PathBuf::from).collect(),
            ));
        }
        let cert = main.str(&format!("{prefix}_tls_cert_file"));
        if cert.trim().is_empty() {
            return None;
        }
        let mut key = main.str(&format!("{prefix}_tls_key_file"));
        if key.trim().is_empty() {
            key = cert.clone();
        }
        Some(CertSource::Pair {
            cert: PathBuf::from(cert.trim()),
            key: PathBuf::from(key.trim()),
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Parses every certificate in PEM text (other sections are skipped).
pub fn parse_certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut certs = Vec::new();
    for c in CertificateDer::pem_slice_iter(pem) {
        certs.push(c.map_err(|e| TlsError::BadPem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?);
    }
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Parses the first private key in PEM text (PKCS#8, PKCS#1 or SEC1).
pub fn parse_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(k) => Ok(k),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => Err(TlsError::NoKey {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(TlsError::BadPem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a checked `CertifiedKey` (the key must match the leaf).
fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let signing =
        provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::UnsupportedKey {
                path: key_path.to_path_buf(),
                reason: e.to_string(),
            })?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            key: key_path.to_path_buf(),
            cert: cert_path.to_path_buf(),
        }),
        Err(e) => Err(TlsError::UnsupportedKey {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// Loads the certified key(s) a [`CertSource`] names.
fn load_keys(source: &CertSource) -> Result<Vec<Arc<CertifiedKey>>, TlsError> {
    match source {
        CertSource::Pair { cert, key } => {
            let chain = parse_certs(&read(cert)?, cert)?;
            let k = parse_key(&read(key)?, key)?;
            Ok(vec![Arc::new(certified_key(chain, k, cert, key)?)])
        }
        CertSource::Chains(files) => {
            let mut out = Vec::new();
            for f in files {
                let pem = read(f)?;
                let k = parse_key(&pem, f)?;
                let chain = parse_certs(&pem, f)?;
                out.push(Arc::new(certified_key(chain, k, f, f)?));
            }
            if out.is_empty() {
                return Err(TlsError::Config("no chain files given".into()));
            }
            Ok(out)
        }
    }
}

/// Picks the first key that can sign with a scheme the client offers.
#[derive(Debug)]
struct Resolver(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        self.0
            .iter()
            .find(|ck| ck.key.choose_scheme(schemes).is_some())
            .or_else(|| self.0.first())
            .cloned()
    }
}

/// Loads the certificate(s) and key(s) and builds a TLS 1.2/1.3 server
/// configuration (no client authentication).
pub fn server_config(source: &CertSource) -> Result<Arc<ServerConfig>, TlsError> {
    let keys = load_keys(source)?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(keys)));
    Ok(Arc::new(cfg))
}

/// [`server_config`] for the certificate main.cf names for `prefix`
/// ("smtpd"); Ok(None) when none is configured.
pub fn server_config_from_main(
    main: &MainCf,
    prefix: &str,
) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    match CertSource::from_config(main, prefix) {
        None => Ok(None),
        Some(src) => server_config(&src).map(Some),
    }
}

/// OpenSSL's name and the cipher's strength in bits, as Postfix logs them.
fn cipher_name(suite: CipherSuite) -> (String, u32) {
    let (name, bits) = match suite {
        CipherSuite::TLS13_AES_256_GCM_SHA384 => ("TLS_AES_256_GCM_SHA384", 256),
        CipherSuite::TLS13_AES_128_GCM_SHA256 => ("TLS_AES_128_GCM_SHA256", 128),
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => ("TLS_CHACHA20_POLY1305_SHA256", 256),
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => {
            ("ECDHE-ECDSA-AES256-GCM-SHA384", 256)
        }
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => {
            ("ECDHE-ECDSA-AES128-GCM-SHA256", 128)
        }
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => {
            ("ECDHE-ECDSA-CHACHA20-POLY1305", 256)
        }
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => ("ECDHE-RSA-AES256-GCM-SHA384", 256),
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => ("ECDHE-RSA-AES128-GCM-SHA256", 128),
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => {
            ("ECDHE-RSA-CHACHA20-POLY1305", 256)
        }
        other => return (format!("{other:?}"), 0),
    };
    (name.to_string(), bits)
}

fn version_name(v: ProtocolVersion) -> String {
    match v {
        ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        other => format!("{other:?}"),
    }
}

/// The negotiated session as Postfix writes it in logs and Received headers:
/// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`. Call after
/// the handshake; returns "unknown" parts if it has not completed.
pub fn describe(conn: &CommonState) -> String {
    let version = conn
        .protocol_version()
        .map(version_name)
        .unwrap_or_else(|| "unknown".into());
    let (cipher, bits) = conn
        .negotiated_cipher_suite()
        .map(|s| cipher_name(s.suite()))
        .unwrap_or_else(|| ("unknown".into(), 0));
    format!("{version} with cipher {cipher} ({bits}/{bits} bits)")
}

/// How the smtp client judges the server's certificate.
#[derive(Clone, Debug)]
pub enum ClientTrust {
    /// Encrypt without authenticating (Postfix's may and encrypt levels):
    /// any certificate is taken, the handshake signatures are still checked.
    Unauthenticated,
    /// The chain must lead to one of these roots and name the server
    /// (verify and secure).
    Roots(Arc<rustls::RootCertStore>),
}

/// Reads the CA certificates of a PEM bundle (smtp_tls_CAfile, or the
/// system's /etc/ssl/certs/ca-certificates.crt) into a root store.
pub fn load_roots(path: &Path) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in parse_certs(&pem, path)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Config(format!("{}: {e}", path.display())))?;
    }
    Ok(Arc::new(roots))
}

/// A TLS 1.2/1.3 client configuration for the smtp client.
pub fn client_config(trust: &ClientTrust) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let cfg = match trust {
        ClientTrust::Roots(roots) => builder
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
        ClientTrust::Unauthenticated => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// Opportunistic TLS (RFC 7435): any certificate is accepted, since an
/// unauthenticated encrypted session beats plaintext; the server still has
/// to prove it holds the certificate's key (the signatures are verified).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selfsigned(name: &str) -> (String, String) {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("rcgen");
        (ck.cert.pem(), ck.signing_key.serialize_pem())
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn loads_pair_and_combined_and_chain_files() {
        let d = tempfile::tempdir().expect("tmp");
        let (cert, key) = selfsigned("mx.example");
        let c = write(d.path(), "cert.pem", &cert);
        let k = write(d.path(), "key.pem", &key);
        let cfg = server_config(&CertSource::Pair { cert: c, key: k });
        assert!(cfg.is_ok(), "{cfg:?}");
        // One file, certificate then key.
        let both = write(d.path(), "both.pem", &format!("{cert}{key}"));
        assert!(
            server_config(&CertSource::Pair {
                cert: both.clone(),
                key: both
            })
            .is_ok()
        );
        // Postfix chain file: key first, then the chain.
        let chain = write(d.path(), "chain.pem", &format!("{key}{cert}"));
        assert!(server_config(&CertSource::Chains(vec![chain])).is_ok());
    }

    #[test]
    fn refuses_mismatched_key() {
        let d = tempfile::tempdir().expect("tmp");
        let (cert, _) = selfsigned("a.example");
        let (_, other_key) = selfsigned("b.example");
        let c = write(d.path(), "cert.pem", &cert);
        let k = write(d.path(), "key.pem", &other_key);
        let err = server_config(&CertSource::Pair {
            cert: c.clone(),
            key: k.clone(),
        })
        .expect_err("mismatch");
        assert_eq!(
            err,
            TlsError::KeyMismatch {
                key: k.clone(),
                cert: c.clone()
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("does not match"), "{msg}");
        assert!(msg.contains(&k.display().to_string()), "{msg}");
    }

    #[test]
    fn refuses_missing_key_and_missing_cert() {
        let d = tempfile::tempdir().expect("tmp");
        let (cert, key) = selfsigned("a.example");
        let c = write(d.path(), "cert.pem", &cert);
        let k = write(d.path(), "key.pem", &key);
        // Key file defaults to the cert file, which has no key.
        let err = server_config(&CertSource::Pair {
            cert: c.clone(),
            key: c.clone(),
        })
        .expect_err("no key");
        assert_eq!(err, TlsError::NoKey { path: c.clone() });
        assert!(err.to_string().contains("no PEM private key"));
        let err = server_config(&CertSource::Pair {
            cert: k.clone(),
            key: k.clone(),
        })
        .expect_err("no cert");
        assert_eq!(err, TlsError::NoCertificate { path: k.clone() });
        // A chain file without its key.
        let err = server_config(&CertSource::Chains(vec![c.clone()])).expect_err("no key");
        assert_eq!(err, TlsError::NoKey { path: c });
        // Garbage.
        let g = write(d.path(), "junk.pem", "hello world\n");
        let err = server_config(&CertSource::Pair {
            cert: g.clone(),
            key: k,
        })
        .expect_err("junk");
        assert_eq!(err, TlsError::NoCertificate { path: g });
    }

    #[test]
    fn refuses_unreadable_files() {
        let d = tempfile::tempdir().expect("tmp");
        let missing = d.path().join("nope.pem");
        let err = server_config(&CertSource::Pair {
            cert: missing.clone(),
            key: missing.clone(),
        })
        .expect_err("missing");
        assert!(matches!(&err, TlsError::Unreadable { path, .. } if *path == missing));
        assert!(err.to_string().starts_with("cannot read TLS file"), "{err}");
        // A directory is unreadable as a file too (works even as root).
        let err =
            server_config(&CertSource::Chains(vec![d.path().to_path_buf()])).expect_err("dir");
        assert!(matches!(err, TlsError::Unreadable { .. }));
    }

    #[test]
    fn config_source_follows_postfix_names() {
        let mut m = MainCf::defaults();
        assert_eq!(CertSource::from_config(&m, "smtpd"), None);
        m.set("smtpd_tls_cert_file", "/etc/postern/tls/cert.pem");
        assert_eq!(
            CertSource::from_config(&m, "smtpd"),
            Some(CertSource::Pair {
                cert: "/etc/postern/tls/cert.pem".into(),
                key: "/etc/postern/tls/cert.pem".into()
            })
        );
        m.set("smtpd_tls_key_file", "/etc/postern/tls/key.pem");
        assert_eq!(
            CertSource::from_config(&m, "smtpd"),
            Some(CertSource::Pair {
                cert: "/etc/postern/tls/cert.pem".into(),
                key: "/etc/postern/tls/key.pem".into()
            })
        );
        m.set("smtpd_tls_chain_files", "/a.pem, /b.pem");
        assert_eq!(
            CertSource::from_config(&m, "smtpd"),
            Some(CertSource::Chains(vec!["/a.pem".into(), "/b.pem".into()]))
        );
    }

    #[test]
    fn cipher_names_are_openssls() {
        assert_eq!(
            cipher_name(CipherSuite::TLS13_AES_256_GCM_SHA384),
            ("TLS_AES_256_GCM_SHA384".to_string(), 256)
        );
        assert_eq!(
            cipher_name(CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
            ("ECDHE-RSA-AES128-GCM-SHA256".to_string(), 128)
        );
        assert_eq!(version_name(ProtocolVersion::TLSv1_3), "TLSv1.3");
    }

    #[test]
    fn describe_a_real_session() {
        let d = tempfile::tempdir().expect("tmp");
        let ck = rcgen::generate_simple_self_signed(vec!["mx.example".to_string()]).expect("rcgen");
        let c = write(d.path(), "cert.pem", &ck.cert.pem());
        let k = write(d.path(), "key.pem", &ck.signing_key.serialize_pem());
        let server_cfg = server_config(&CertSource::Pair { cert: c, key: k }).expect("cfg");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone()).expect("root");
        let client_cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("mx.example").expect("name");
        let mut client = rustls::ClientConnection::new(Arc::new(client_cfg), name).expect("client");
        let mut server = rustls::ServerConnection::new(server_cfg).expect("server");
        // Shuttle bytes in memory until both sides are done.
        for _ in 0..10 {
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).expect("cw");
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).expect("sr");
            }
            server.process_new_packets().expect("sp");
            let mut buf = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buf).expect("sw");
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).expect("cr");
            }
            client.process_new_packets().expect("cp");
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        let text = describe(&server);
        assert!(
            text.starts_with("TLSv1.3 with cipher TLS_") && text.ends_with(" bits)"),
            "{text}"
        );
    }
}
