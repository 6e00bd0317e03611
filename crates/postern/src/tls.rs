//! `postern tls selfsigned`: a self-signed server certificate for smtpd.
//!
//! Writes CONFIG_DIR/tls/cert.pem (0644) and CONFIG_DIR/tls/key.pem (0600)
//! made with rcgen (an ECDSA P-256 key; subjectAltName = the host name,
//! default myhostname) and prints the two main.cf lines that use them.
//!
//! SECURITY: the key file is created with mode 0600 from the start (never
//! world-readable, not even briefly) and existing files are never
//! overwritten without --force. A self-signed certificate gives encryption
//! against passive listeners, not authentication; docs/tls.md says how to
//! use a CA-issued certificate instead.

use crate::{Failure, fail, usage};
use postern_config::MainCf;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The default validity of a self-signed certificate, in days.
pub const DEFAULT_DAYS: u32 = 3650;

/// `postern tls SUBCOMMAND ...`.
pub fn command(config_dir: &Path, args: &[String]) -> Result<(), Failure> {
    match args.first().map(String::as_str) {
        Some("selfsigned") => {}
        Some(other) => return Err(usage(format!("postern: unknown tls command {other}"))),
        None => return Err(usage("postern: tls needs a command (selfsigned)")),
    }
    let mut hostname: Option<String> = None;
    let mut days = DEFAULT_DAYS;
    let mut force = false;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--hostname" => {
                let Some(h) = args.get(i + 1) else {
                    return Err(usage("postern: --hostname needs a name"));
                };
                hostname = Some(h.clone());
                i += 2;
            }
            "--days" => {
                let Some(d) = args.get(i + 1).and_then(|d| d.parse::<u32>().ok()) else {
                    return Err(usage("postern: --days needs a number of days"));
                };
                if d == 0 || d > 36500 {
                    return Err(usage("postern: --days must be between 1 and 36500"));
                }
                days = d;
                i += 2;
            }
            "--force" => {
                force = true;
                i += 1;
            }
            other => {
                return Err(usage(format!(
                    "postern: tls selfsigned: unknown argument {other}"
                )));
            }
        }
    }
    let hostname = match hostname {
        Some(h) => h,
        None => MainCf::load(config_dir)
            .unwrap_or_else(|_| MainCf::defaults())
            .str("myhostname"),
    };
    let (cert, key) = selfsigned(config_dir, &hostname, days, force).map_err(fail)?;
    println!(
        "postern: wrote a self-signed certificate for {hostname}, valid {days} days:\n  {}\n  {}\nAdd to main.cf:\nsmtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}",
        cert.display(),
        key.display(),
        cert.display(),
        key.display()
    );
    Ok(())
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    ((if m <= 2 { y + 1 } else { y }) as i32, m, d)
}

/// Makes the certificate and key, writes them to CONFIG_DIR/tls, returns
/// their paths. Refuses to replace existing files unless `force`.
pub fn selfsigned(
    config_dir: &Path,
    hostname: &str,
    days: u32,
    force: bool,
) -> Result<(PathBuf, PathBuf), String> {
    let dir = config_dir.join("tls");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if !force {
        for p in [&cert_path, &key_path] {
            if p.exists() {
                return Err(format!(
                    "postern: {} exists; use --force to replace it",
                    p.display()
                ));
            }
        }
    }
    let (cert, key) = generate(hostname, days)?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("postern: cannot create {}: {e}", dir.display()))?;
    write_file(&key_path, key.as_bytes(), 0o600)?;
    write_file(&cert_path, cert.as_bytes(), 0o644)?;
    Ok((cert_path, key_path))
}

/// A new ECDSA P-256 key and a certificate for `hostname` signed by it,
/// valid from yesterday for `days` days: (certificate PEM, private key PEM).
/// Writes nothing; `postern install` uses it for its own file handling.
pub fn generate(hostname: &str, days: u32) -> Result<(String, String), String> {
    let hostname = hostname.trim().trim_end_matches('.');
    if hostname.is_empty()
        || !hostname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(format!(
            "postern: bad host name for a certificate: {hostname:?}"
        ));
    }
    let mut params = rcgen::CertificateParams::new(vec![hostname.to_string()])
        .map_err(|e| format!("postern: certificate parameters: {e}"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname);
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| (d.as_secs() / 86_400) as i64)
        .map_err(|e| format!("postern: system clock: {e}"))?;
    let (y, m, d) = civil_from_days(today - 1);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_from_days(today + i64::from(days));
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let key = rcgen::KeyPair::generate().map_err(|e| format!("postern: key generation: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("postern: certificate: {e}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes a file created with `mode` (replacing any old one via a
/// temporary file, so the old file stays whole until the new one is).
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let tmp = path.with_extension("pem.tmp");
    let _ = std::fs::remove_file(&tmp);
    let err = |e: std::io::Error| format!("postern: cannot write {}: {e}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    // The umask may have narrowed a 0644 request; set it exactly.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn writes_cert_and_key_with_modes_and_refuses_to_overwrite() {
        let d = tempfile::tempdir().expect("tmp");
        let (c, k) = selfsigned(d.path(), "mx.example.test", 30, false).expect("selfsigned");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&c), 0o644);
        assert_eq!(mode(&k), 0o600);
        let cert = std::fs::read_to_string(&c).expect("cert");
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            std::fs::read_to_string(&k)
                .expect("key")
                .contains("PRIVATE KEY")
        );
        // They load as a server certificate, key matching.
        let src = postern_tls::CertSource::Pair {
            cert: c.clone(),
            key: k.clone(),
        };
        assert!(postern_tls::server_config(&src).is_ok());
        let err = selfsigned(d.path(), "mx.example.test", 30, false).expect_err("exists");
        assert!(err.contains("use --force"), "{err}");
        assert_eq!(std::fs::read_to_string(&c).expect("cert"), cert);
        selfsigned(d.path(), "mx.example.test", 30, true).expect("force");
        assert_ne!(std::fs::read_to_string(&c).expect("cert"), cert);
        assert!(selfsigned(d.path(), "bad name", 30, true).is_err());
    }
}
