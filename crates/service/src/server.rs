//! The two service drivers: [`single_server`] and [`event_server`].
//!
//! Start-up is shared (Postfix's single_server.c order): parse argv, load
//! main.cf from $MAIL_CONFIG and apply the `-o` overrides (a bad setting is
//! a "fatal: FILE:LINE: reason" and exit 1), set up logging, take fd 3/4
//! from master, run the service's `init` with start-up privileges (with
//! `queue_directory = /` when master asked for a chroot), drop privileges
//! ([`privileges`]: user, groups, chroot, capabilities, umask 007), then serve on a current_thread tokio runtime inside a
//! LocalSet.
//!
//! Lifecycle: SIGHUP = Drain (finish the current client, then exit 0),
//! SIGTERM = Stop (exit 0 at once). When master goes away (the status pipe's
//! read end closes) the service drains as on SIGHUP.

use std::fs::File;
use std::future::Future;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use postern_config::{MainCf, ServiceType};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::args::parse_service_args;
use crate::fds::{CONFIG_ENV, GENERATION_ENV, LISTEN_FD, STATUS_FD, take_inherited};
use crate::log::{fatal, init_logging, preinit};
use crate::status::StatusReporter;
use crate::{Connection, Lifecycle, Listener, ServiceContext, privileges};

/// Default configuration directory when MAIL_CONFIG is not set.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/postern";

/// Builds a [`ServiceContext`] from argv (without argv\[0\]) and a
/// configuration directory: loads main.cf, applies `-o` overrides,
/// validates. Errors are "FILE:LINE: reason" or an argv complaint.
pub fn build_context(
    program: &'static str,
    argv: &[String],
    config_dir: PathBuf,
) -> Result<ServiceContext, String> {
    let parsed = parse_service_args(argv)?;
    let mut config = MainCf::load(&config_dir).map_err(|e| e.to_string())?;
    for (name, value) in &parsed.overrides {
        config.set(name, value);
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(ServiceContext {
        program,
        service_name: parsed.service_name.unwrap_or_else(|| program.to_string()),
        service_type: parsed.service_type.unwrap_or(ServiceType::Unix),
        config_dir,
        config,
        args: parsed.args,
        verbose: parsed.verbose,
    })
}

/// Makes a panic leave the same trace as [`fatal`]: a "fatal: panic: ..."
/// log line (a panic's text on stderr would be lost when fd 2 is the log
/// file or /dev/null) and the reason on the status pipe, so `postern
/// status` shows why a service died rather than "exit status 101".
fn install_panic_report() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let text = format!("panic: {what}{place}");
        crate::log::emit(crate::log::Severity::Fatal, &text);
        crate::status::report_fatal(&text);
        default(info);
    }));
}

/// What start-up hands to the drivers.
struct Started {
    ctx: Arc<ServiceContext>,
    listen_fd: std::os::fd::OwnedFd,
    status_pipe: Option<Arc<File>>,
    status: StatusReporter,
}

fn start_up(program: &'static str) -> Started {
    preinit(program);
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let config_dir = std::env::var_os(CONFIG_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR));
    let mut ctx = build_context(program, &argv, config_dir).unwrap_or_else(|e| fatal(e));
    init_logging(program, &ctx.config, ctx.verbose);
    install_panic_report();
    // A chrooted service sees the queue directory as "/": its init must
    // build paths from that (privileges.rs).
    let request = privileges::request_from_env().unwrap_or_else(|e| fatal(e));
    privileges::adjust_config_for_chroot(&mut ctx, request.as_ref());
    let Some(listen_fd) = take_inherited(LISTEN_FD) else {
        fatal("no listening socket on descriptor 3 (services are started by master)");
    };
    let status_pipe = take_inherited(STATUS_FD).map(|fd| Arc::new(File::from(fd)));
    let generation = std::env::var(GENERATION_ENV)
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(0);
    let status = StatusReporter::new(status_pipe.clone(), generation);
    Started {
        ctx: Arc::new(ctx),
        listen_fd,
        status_pipe,
        status,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fatal(format!("cannot create the event loop: {e}")))
}

/// Creates the lifecycle channel: a local task turns SIGHUP into Drain and
/// SIGTERM into Stop; a thread turns "master went away" into Drain. Must be
/// called inside the LocalSet.
fn lifecycle(status_pipe: Option<Arc<File>>) -> watch::Receiver<Lifecycle> {
    let (tx, rx) = watch::channel(Lifecycle::Running);
    let tx = Arc::new(tx);
    let mut hup =
        signal(SignalKind::hangup()).unwrap_or_else(|e| fatal(format!("signal setup: {e}")));
    let mut term =
        signal(SignalKind::terminate()).unwrap_or_else(|e| fatal(format!("signal setup: {e}")));
    let sig_tx = tx.clone();
    tokio::task::spawn_local(async move {
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    sig_tx.send_if_modified(|l| if *l == Lifecycle::Running { *l = Lifecycle::Drain; true } else { false });
                }
                _ = term.recv() => {
                    sig_tx.send_replace(Lifecycle::Stop);
                }
            }
        }
    });
    if let Some(pipe) = status_pipe {
        std::thread::spawn(move || {
            // The write end of a pipe polls POLLERR once the read end (held
            // only by master) is closed: master exited.
            loop {
                let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::empty())];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {
                        let gone = fds[0]
                            .revents()
                            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP));
                        if gone {
                            break;
                        }
                    }
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return,
                }
            }
            tracing::debug!("master went away; finishing");
            tx.send_if_modified(|l| {
                if *l == Lifecycle::Running {
                    *l = Lifecycle::Drain;
                    true
                } else {
                    false
                }
            });
        });
    }
    rx
}

fn limits(ctx: &ServiceContext) -> (u64, Duration) {
    let max_use = ctx
        .config
        .bounded::<u64>("max_use")
        .unwrap_or_else(|e| fatal(e));
    let max_idle = ctx.config.time("max_idle").unwrap_or_else(|e| fatal(e));
    (max_use, max_idle)
}

/// Entry point of a one-client-at-a-time service (smtpd, cleanup, local), like
/// Postfix's single_server. Parses argv, loads config (exits with "fatal: FILE:LINE:
/// reason" on error), init logging, then calls `init` (still with start-up privileges:
/// load keys/tables here), then [`privileges::drop_privileges`], then builds a tokio
/// current_thread runtime and loops: accept → report busy → `handler(state.clone(),
/// conn).await` → report idle. Exits 0 after max_use clients or after max_idle with no
/// client, on SIGHUP once the current client is done, at once on SIGTERM.
/// A service whose config is bad exits non-zero with a fatal: log line.
pub fn single_server<S, I, H, Fut>(program: &'static str, init: I, handler: H) -> !
where
    S: 'static,
    I: FnOnce(&Arc<ServiceContext>) -> Result<S, String>,
    H: Fn(Rc<S>, Connection) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let Started {
        ctx,
        listen_fd,
        status_pipe,
        status,
    } = start_up(program);
    let state = Rc::new(init(&ctx).unwrap_or_else(|e| fatal(e)));
    privileges::drop_privileges(&ctx).unwrap_or_else(|e| fatal(e));
    let (max_use, max_idle) = limits(&ctx);
    let rt = runtime();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener =
            Listener::from_fd(listen_fd).unwrap_or_else(|e| fatal(format!("descriptor 3: {e}")));
        let mut life = lifecycle(status_pipe);
        serve_loop(&listener, &mut life, &status, max_use, max_idle, |conn| {
            handler(state.clone(), conn)
        })
        .await;
    });
    std::process::exit(0)
}

/// The accept/serve loop of [`single_server`], separate so it stays small
/// and testable: returns when the process should exit.
pub(crate) async fn serve_loop<F, Fut>(
    listener: &Listener,
    life: &mut watch::Receiver<Lifecycle>,
    status: &StatusReporter,
    max_use: u64,
    max_idle: Duration,
    mut serve: F,
) where
    F: FnMut(Connection) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut served: u64 = 0;
    loop {
        let accepted = tokio::select! {
            biased;
            Ok(_) = life.wait_for(|l| *l != Lifecycle::Running) => return,
            r = listener.accept() => r,
            _ = tokio::time::sleep(max_idle), if !max_idle.is_zero() => return,
        };
        let conn = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        status.busy();
        tokio::select! {
            biased;
            Ok(_) = life.wait_for(|l| *l == Lifecycle::Stop) => return,
            _ = serve(conn) => {}
        }
        served += 1;
        if (max_use > 0 && served >= max_use) || *life.borrow() != Lifecycle::Running {
            return;
        }
        status.idle();
    }
}

/// Entry point of a long-running service that drives its own listener (qmgr):
/// same start-up, then runs `main(ctx, listener, lifecycle)` on a current_thread
/// runtime (with a LocalSet so spawn_local works), reports busy once at start (so master never
/// counts it idle and never spawns a second), exits 0 when `main` returns Ok, logs
/// "fatal: ..." and exits 1 on Err. SIGHUP/SIGTERM are only reported through the watch.
pub fn event_server<I, M, Fut>(program: &'static str, init: I, main: M) -> !
where
    I: FnOnce(&Arc<ServiceContext>) -> Result<(), String>,
    M: FnOnce(Arc<ServiceContext>, Listener, watch::Receiver<Lifecycle>) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let Started {
        ctx,
        listen_fd,
        status_pipe,
        status,
    } = start_up(program);
    init(&ctx).unwrap_or_else(|e| fatal(e));
    privileges::drop_privileges(&ctx).unwrap_or_else(|e| fatal(e));
    status.busy();
    let rt = runtime();
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, async move {
        let listener =
            Listener::from_fd(listen_fd).unwrap_or_else(|e| fatal(format!("descriptor 3: {e}")));
        let life = lifecycle(status_pipe);
        main(ctx, listener, life).await
    });
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => fatal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{StatusRecord, drain_records};
    use std::io::Read;
    use std::os::fd::OwnedFd;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn config_dir(main_cf: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("main.cf"), main_cf).unwrap();
        d
    }

    #[test]
    fn context_from_argv_and_config() {
        let d = config_dir("max_use = 7\n");
        let argv: Vec<String> = ["-n", "submission", "-t", "inet", "-o", "max_use=9", "x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let ctx = build_context("smtpd", &argv, d.path().to_path_buf()).unwrap();
        assert_eq!(ctx.service_name, "submission");
        assert!(matches!(ctx.service_type, ServiceType::Inet));
        assert_eq!(ctx.config.int("max_use").unwrap(), 9);
        assert_eq!(ctx.args, vec!["x".to_string()]);
        assert_eq!(ctx.queue_dir(), ctx.config.path("queue_directory"));
        let ctx = build_context("smtpd", &[], d.path().to_path_buf()).unwrap();
        assert_eq!(ctx.service_name, "smtpd");
        assert!(matches!(ctx.service_type, ServiceType::Unix));
        assert_eq!(ctx.config.int("max_use").unwrap(), 7);
    }

    #[test]
    fn context_errors_name_file_and_line() {
        let d = config_dir("max_use = 7\nthis is bad\n");
        let e = build_context("smtpd", &[], d.path().to_path_buf()).unwrap_err();
        assert!(e.contains("main.cf:2"), "{e}");
        let d = config_dir("");
        let argv = vec!["-o".to_string(), "max_use=abc".to_string()];
        let e = build_context("smtpd", &argv, d.path().to_path_buf()).unwrap_err();
        assert!(e.contains("max_use"), "{e}");
        let e = build_context(
            "smtpd",
            &["-t".into(), "bogus".into()],
            d.path().to_path_buf(),
        )
        .unwrap_err();
        assert!(e.contains("unknown service type"), "{e}");
        let nowhere = d.path().join("missing");
        assert!(build_context("smtpd", &[], nowhere).is_err());
    }

    /// Drives serve_loop with a real TCP listener and status pipe.
    fn run_loop(
        max_use: u64,
        max_idle: Duration,
        clients: usize,
        hup_after: Option<usize>,
    ) -> (Vec<StatusRecord>, usize) {
        let (r, w) = nix::unistd::pipe().unwrap();
        let status = StatusReporter::new(Some(Arc::new(File::from(w))), 2);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let served = rt.block_on(async {
            let std_l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = std_l.local_addr().unwrap();
            let listener = Listener::from_fd(OwnedFd::from(std_l)).unwrap();
            let (tx, mut rx) = watch::channel(Lifecycle::Running);
            let clients_task = tokio::spawn(async move {
                let mut answered = 0;
                for i in 0..clients {
                    if hup_after == Some(i) {
                        tx.send_replace(Lifecycle::Drain);
                    }
                    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                        break;
                    };
                    let _ = s.write_all(b"x").await;
                    let mut b = [0u8; 1];
                    if matches!(
                        tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await,
                        Ok(Ok(1))
                    ) {
                        answered += 1;
                    }
                }
                answered
            });
            serve_loop(
                &listener,
                &mut rx,
                &status,
                max_use,
                max_idle,
                |mut c| async move {
                    let mut b = [0u8; 1];
                    let _ = c.read(&mut b).await;
                    let _ = c.write_all(b"y").await;
                },
            )
            .await;
            drop(listener);
            clients_task.await.unwrap()
        });
        drop(status);
        let mut buf = Vec::new();
        File::from(r).read_to_end(&mut buf).unwrap();
        (
            drain_records(&mut buf)
                .into_iter()
                .map(|r| r.unwrap())
                .collect(),
            served,
        )
    }

    #[test]
    fn exits_after_max_use_with_busy_idle_reports() {
        let (recs, answered) = run_loop(2, Duration::from_secs(10), 3, None);
        assert_eq!(answered, 2);
        let avail: Vec<bool> = recs.iter().map(|r| r.available).collect();
        assert_eq!(avail, vec![false, true, false]);
        assert!(
            recs.iter()
                .all(|r| r.generation == 2 && r.pid == std::process::id())
        );
    }

    #[test]
    fn exits_after_max_idle() {
        let t = std::time::Instant::now();
        let (recs, answered) = run_loop(0, Duration::from_millis(200), 0, None);
        assert!(recs.is_empty() && answered == 0);
        assert!(t.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn drain_stops_accepting() {
        let (recs, answered) = run_loop(0, Duration::from_secs(10), 3, Some(1));
        assert_eq!(answered, 1);
        assert_eq!(recs.len(), 2);
    }
}
