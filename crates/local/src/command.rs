//! Delivery to `|command` targets from aliases, :include: files and .forward.
//!
//! The command text comes from a file written by the administrator or the
//! user (never from mail data) and runs as argv [shell, "-c", COMMAND] in its
//! own process group with a clean environment; the message is its standard
//! input. Exit status 0 = delivered, sysexits are mapped as Postfix does
//! (EX_TEMPFAIL and EX_OSERR defer), a signal or the time limit defers.

use std::io::{self, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::mailbox::{ContentReader, DeliveryError, EnhancedCode};

/// How a command is run: shell, environment and time limit.
#[derive(Clone, Debug)]
pub struct CommandSpec<'a> {
    /// The command text (what followed the '|').
    pub command: &'a str,
    /// The shell: argv is [shell, "-c", command].
    pub shell: &'a str,
    /// Environment: (name, value) pairs; nothing else is inherited.
    pub env: Vec<(&'static str, String)>,
    /// Kill the command (its whole process group) after this long.
    pub time_limit: Duration,
}

/// Most output kept for the bounce/log reason.
const OUTPUT_KEEP: usize = 1024;

/// Runs the command with `prefix` + content on stdin. Ok(()) = exit 0.
pub fn run_command(
    spec: &CommandSpec<'_>,
    prefix: &[u8],
    content: ContentReader<'_>,
) -> Result<(), DeliveryError> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let mut child = Command::new(spec.shell)
        .arg("-c")
        .arg(spec.command)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| {
            DeliveryError::temp(
                EnhancedCode(4, 3, 0),
                format!("cannot run command \"{}\": {e}", spec.command),
            )
        })?;
    let pid = child.id();
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(DeliveryError::temp(
            EnhancedCode(4, 3, 0),
            "command pipes missing",
        ));
    };
    let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let result = std::thread::scope(|s| {
        // Feed stdin; a command that exits without reading gives EPIPE, which is fine.
        let feeder = s.spawn(move || -> io::Result<()> {
            let r = stdin.write_all(prefix).and_then(|_| {
                let mut c = content;
                io::copy(&mut c, &mut stdin).map(|_| ())
            });
            match r {
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                other => other,
            }
        });
        for mut src in [
            Box::new(&mut stdout) as Box<dyn Read + Send>,
            Box::new(&mut stderr),
        ] {
            let out = std::sync::Arc::clone(&output);
            s.spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = src.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut o) = out.lock() {
                        let room = OUTPUT_KEEP.saturating_sub(o.len());
                        o.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
            });
        }
        let deadline = Instant::now() + spec.time_limit;
        let mut delay = Duration::from_millis(2);
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Ok(Some(st)),
                Ok(None) if Instant::now() >= deadline => {
                    kill_group(pid);
                    let _ = child.wait();
                    break Ok(None);
                }
                Ok(None) => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(100));
                }
                Err(e) => {
                    kill_group(pid);
                    let _ = child.wait();
                    break Err(e);
                }
            }
        };
        // Background children of the command may hold the pipes open: end the group.
        kill_group(pid);
        let fed = feeder.join();
        (status, fed)
    });
    let text = output.lock().map(|o| summarize(&o)).unwrap_or_default();
    let with_output = |s: String| {
        if text.is_empty() {
            s
        } else {
            format!("{s}. Command output: {text}")
        }
    };
    match result {
        (Err(e), _) => Err(DeliveryError::temp(
            EnhancedCode(4, 3, 0),
            format!("waiting for command \"{}\": {e}", spec.command),
        )),
        (Ok(None), _) => Err(DeliveryError::temp(
            EnhancedCode(4, 3, 0),
            with_output(format!("command time limit exceeded: \"{}\"", spec.command)),
        )),
        (Ok(Some(st)), fed) => {
            if let Some(sig) = st.signal() {
                return Err(DeliveryError::temp(
                    EnhancedCode(4, 3, 0),
                    with_output(format!(
                        "command died with signal {sig}: \"{}\"",
                        spec.command
                    )),
                ));
            }
            let code = st.code().unwrap_or(-1);
            if code == 0 {
                return match fed {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(DeliveryError::temp(
                        EnhancedCode(4, 3, 0),
                        format!("reading message for command: {e}"),
                    )),
                    Err(_) => Err(DeliveryError::temp(
                        EnhancedCode(4, 3, 0),
                        "message feeder failed",
                    )),
                };
            }
            // The one sysexits(3) table (Postfix's), in postern-status.
            let (dsn, what) = postern_status::sysexits::describe(code);
            let reason = with_output(format!(
                "command died with status {code} ({what}): \"{}\"",
                spec.command
            ));
            if dsn.0 == 4 {
                Err(DeliveryError::temp(dsn, reason))
            } else {
                Err(DeliveryError::perm(dsn, reason))
            }
        }
    }
}

/// Sends SIGKILL to the command's process group (it was made group leader).
fn kill_group(pid: u32) {
    if let Ok(p) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// One line of printable output for logs: controls become spaces, runs collapsed.
fn summarize(out: &[u8]) -> String {
    let s = String::from_utf8_lossy(out);
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cmd: &str, limit: Duration) -> (Result<(), DeliveryError>, tempfile::TempDir) {
        let d = tempfile::tempdir().unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"Subject: t\n\nbody\n").unwrap();
        let spec = CommandSpec {
            command: cmd,
            shell: "/bin/sh",
            env: vec![
                ("OUT", d.path().join("out").display().to_string()),
                ("PATH", "/usr/bin:/bin".into()),
                ("RECIPIENT", "joe@x".into()),
            ],
            time_limit: limit,
        };
        (
            run_command(
                &spec,
                b"Delivered-To: joe@x\n",
                ContentReader::new(f.as_file(), 0, 17),
            ),
            d,
        )
    }

    #[test]
    fn success_gets_message_and_clean_env() {
        let (r, d) = run(
            "cat > \"$OUT\"; env | sort >> \"$OUT\"",
            Duration::from_secs(10),
        );
        r.unwrap();
        let out = std::fs::read_to_string(d.path().join("out")).unwrap();
        assert!(
            out.starts_with("Delivered-To: joe@x\nSubject: t\n\nbody\n"),
            "{out}"
        );
        assert!(out.contains("RECIPIENT=joe@x\n"));
        assert!(
            !out.contains("HOME=") && !out.contains("CARGO"),
            "environment leaked: {out}"
        );
    }

    #[test]
    fn exit_codes_map_like_postfix() {
        let (r, _d) = run("exit 75", Duration::from_secs(10));
        let e = r.unwrap_err();
        assert!(e.temporary && e.dsn == EnhancedCode(4, 3, 0), "{e:?}");
        let (r, _d) = run("echo no such user >&2; exit 67", Duration::from_secs(10));
        let e = r.unwrap_err();
        assert!(!e.temporary && e.dsn == EnhancedCode(5, 1, 1), "{e:?}");
        assert!(e.reason.contains("no such user"), "{e:?}");
        let (r, _d) = run("exit 1", Duration::from_secs(10));
        let e = r.unwrap_err();
        assert!(
            !e.temporary && e.dsn == EnhancedCode(5, 3, 0) && e.reason.contains("status 1"),
            "{e:?}"
        );
        let (r, _d) = run("exit 0", Duration::from_secs(10));
        r.unwrap();
    }

    #[test]
    fn signal_and_timeout_defer() {
        let (r, _d) = run("kill -9 $$", Duration::from_secs(10));
        let e = r.unwrap_err();
        assert!(e.temporary && e.reason.contains("signal 9"), "{e:?}");
        let t = Instant::now();
        let (r, _d) = run("sleep 30 & sleep 30", Duration::from_millis(300));
        let e = r.unwrap_err();
        assert!(e.temporary && e.reason.contains("time limit"), "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn missing_shell_defers() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"x").unwrap();
        let spec = CommandSpec {
            command: "true",
            shell: "/nonexistent/sh",
            env: vec![],
            time_limit: Duration::from_secs(1),
        };
        assert!(
            run_command(&spec, b"", ContentReader::new(f.as_file(), 0, 1))
                .unwrap_err()
                .temporary
        );
    }
}
