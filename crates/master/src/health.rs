//! What master tells the `postern` command about its services: the status
//! file `QUEUE_DIR/pid/master.status`.
//!
//! master rewrites it (temporary file + rename, so a reader never sees half
//! of one) when it starts, after a reload, and whenever a service starts or
//! stops failing at start-up or fails again; it removes it when it stops.
//! The content is one [`MasterStatus`] frame in the format of every internal
//! message (postern-ipc: length, version byte, kind, fields in a fixed
//! order; a decoder that does not use the whole frame fails), so a
//! `postern` of another version refuses it instead of misreading it.
//!
//! `postern status` and `postern check` read it through [`read_status`],
//! which trusts it only while the master that wrote it still runs (its pid
//! is in the file and must be the locked pid file's).
//!
//! SECURITY: the file holds the last `fatal:` text of failing services,
//! which a (possibly compromised) service process sent; it is stored as
//! data, made one line and bounded (postern-service `FatalReport`), never
//! interpreted. Mode 0640, like the mail log.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_ipc::DecodeError;
use postern_ipc::codec::{Decoder, Encoder, Message, decode_frame};

/// Frame kind of [`MasterStatus`].
const KIND_MASTER_STATUS: u8 = 1;

/// Where the status file lives below the queue directory.
pub fn status_file_path(queue_dir: &Path) -> PathBuf {
    queue_dir.join("pid").join("master.status")
}

/// master's view of its services at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterStatus {
    /// The master that wrote it.
    pub master_pid: u32,
    /// When it was written (seconds since the epoch).
    pub written: u64,
    /// Every service master runs, in master.cf order.
    pub services: Vec<ServiceHealth>,
}

/// One master.cf service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceHealth {
    /// `name/type`, as master logs it (e.g. `smtp/inet`).
    pub service: String,
    /// Its master.cf line.
    pub line: u32,
    /// The program master runs for it.
    pub program: String,
    /// Set while its processes fail at start-up.
    pub failure: Option<StartupFailure>,
}

/// A service whose processes exit at start-up, so master throttles it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartupFailure {
    /// The last reason: `fatal: ...` as the process logged it, else how it
    /// ended (`exit status 1`, `killed by signal 11`, `cannot start ...`).
    pub reason: String,
    /// Failed start-ups in a row.
    pub failures: u32,
    /// When the first of them happened (seconds since the epoch).
    pub since: u64,
    /// Until when master starts no process for it (seconds since the
    /// epoch); 0 = not throttled now (the next process starts when a client
    /// or trigger needs one).
    pub throttled_until: u64,
}

/// Seconds since the epoch.
pub(crate) fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Message for MasterStatus {
    fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(KIND_MASTER_STATUS);
        e.u32(self.master_pid).u64(self.written);
        e.u32(self.services.len() as u32);
        for s in &self.services {
            e.str(&s.service).u32(s.line).str(&s.program);
            match &s.failure {
                None => {
                    e.u8(0);
                }
                Some(f) => {
                    e.u8(1)
                        .str(&f.reason)
                        .u32(f.failures)
                        .u64(f.since)
                        .u64(f.throttled_until);
                }
            }
        }
        e.finish()
    }

    fn decode(kind: u8, d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        if kind != KIND_MASTER_STATUS {
            return Err(DecodeError::UnknownKind(kind));
        }
        let master_pid = d.u32()?;
        let written = d.u64()?;
        let n = d.u32()?;
        let mut services = Vec::new();
        for _ in 0..n {
            let service = d.str()?;
            let line = d.u32()?;
            let program = d.str()?;
            let failure = match d.u8()? {
                0 => None,
                1 => Some(StartupFailure {
                    reason: d.str()?,
                    failures: d.u32()?,
                    since: d.u64()?,
                    throttled_until: d.u64()?,
                }),
                _ => return Err(DecodeError::BadValue("service state")),
            };
            services.push(ServiceHealth {
                service,
                line,
                program,
                failure,
            });
        }
        Ok(MasterStatus {
            master_pid,
            written,
            services,
        })
    }
}

impl MasterStatus {
    /// The services that fail at start-up.
    pub fn failing(&self) -> impl Iterator<Item = &ServiceHealth> {
        self.services.iter().filter(|s| s.failure.is_some())
    }
}

impl ServiceHealth {
    /// One line for `postern status`, or None for a healthy service:
    /// `service smtp/inet (master.cf line 12) is failing at start-up:
    /// fatal: ...; throttled, next try in 55s`. `now`: seconds since the epoch.
    pub fn describe(&self, now: u64) -> Option<String> {
        let f = self.failure.as_ref()?;
        let when = if f.throttled_until > now {
            format!("throttled, next try in {}s", f.throttled_until - now)
        } else {
            "next try when a client or wakeup needs it".to_string()
        };
        let times = if f.failures == 1 {
            String::new()
        } else {
            format!(" ({} times in a row)", f.failures)
        };
        Some(format!(
            "service {} (master.cf line {}) is failing at start-up{times}: {}; {when}",
            self.service, self.line, f.reason
        ))
    }
}

/// Writes the status file atomically (QUEUE_DIR/pid/master.status.tmp, then
/// rename).
pub(crate) fn write_status(queue_dir: &Path, status: &MasterStatus) -> Result<(), String> {
    let path = status_file_path(queue_dir);
    let tmp = path.with_extension("status.tmp");
    let done = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&status.encode()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    done.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

/// Removes the status file (master stops).
pub(crate) fn remove_status(queue_dir: &Path) {
    let _ = std::fs::remove_file(status_file_path(queue_dir));
}

/// The running master's status, read from `queue_dir`: Ok(None) when there
/// is no file yet, or it is a stale one of a master that is gone (its pid is
/// not `running_pid`).
pub fn read_status_file(
    queue_dir: &Path,
    running_pid: u32,
) -> Result<Option<MasterStatus>, String> {
    let path = status_file_path(queue_dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let status: MasterStatus =
        decode_frame(&bytes).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok((status.master_pid == running_pid).then_some(status))
}

/// The throttle end as seconds since the epoch (0 when it is over).
pub(crate) fn wall_clock(until: Option<std::time::Instant>) -> u64 {
    let now = std::time::Instant::now();
    match until {
        Some(t) if t > now => {
            // Round up so "next try in 0s" never shows while still throttled.
            let left = t - now + Duration::from_millis(999);
            epoch_secs(SystemTime::now() + left)
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MasterStatus {
        MasterStatus {
            master_pid: 4321,
            written: 1_700_000_000,
            services: vec![
                ServiceHealth {
                    service: "smtp/inet".into(),
                    line: 12,
                    program: "/usr/libexec/postern/smtpd".into(),
                    failure: Some(StartupFailure {
                        reason: "fatal: /etc/aliases: cannot stat: No such file or directory"
                            .into(),
                        failures: 1,
                        since: 1_699_999_990,
                        throttled_until: 1_700_000_055,
                    }),
                },
                ServiceHealth {
                    service: "qmgr/unix".into(),
                    line: 14,
                    program: "/usr/libexec/postern/qmgr".into(),
                    failure: None,
                },
            ],
        }
    }

    #[test]
    fn round_trip_and_strict_decoding() {
        let s = sample();
        let wire = s.encode();
        assert_eq!(decode_frame::<MasterStatus>(&wire).unwrap(), s);
        // A frame with a byte too many, or cut short, is refused.
        let mut long = wire.clone();
        long.push(0);
        assert!(decode_frame::<MasterStatus>(&long).is_err());
        assert!(decode_frame::<MasterStatus>(&wire[..wire.len() - 1]).is_err());
    }

    #[test]
    fn describe_says_what_failed_and_when_master_tries_again() {
        let s = sample();
        let lines: Vec<String> = s
            .failing()
            .filter_map(|h| h.describe(1_700_000_000))
            .collect();
        assert_eq!(
            lines,
            vec![
                "service smtp/inet (master.cf line 12) is failing at start-up: \
                 fatal: /etc/aliases: cannot stat: No such file or directory; \
                 throttled, next try in 55s"
            ]
        );
        let mut h = s.services[0].clone();
        if let Some(f) = h.failure.as_mut() {
            f.failures = 3;
            f.throttled_until = 0;
        }
        assert_eq!(
            h.describe(1_700_000_000).unwrap(),
            "service smtp/inet (master.cf line 12) is failing at start-up (3 times in a row): \
             fatal: /etc/aliases: cannot stat: No such file or directory; \
             next try when a client or wakeup needs it"
        );
        assert_eq!(s.services[1].describe(0), None);
    }

    #[test]
    fn file_is_replaced_atomically_and_stale_files_are_ignored() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("pid")).unwrap();
        assert_eq!(read_status_file(d.path(), 4321).unwrap(), None);
        write_status(d.path(), &sample()).unwrap();
        assert_eq!(read_status_file(d.path(), 4321).unwrap(), Some(sample()));
        assert!(!d.path().join("pid/master.status.tmp").exists());
        // Another master runs now: the file is not its.
        assert_eq!(read_status_file(d.path(), 99).unwrap(), None);
        std::fs::write(status_file_path(d.path()), b"garbage").unwrap();
        assert!(read_status_file(d.path(), 4321).is_err());
        remove_status(d.path());
        assert!(!status_file_path(d.path()).exists());
    }
}
