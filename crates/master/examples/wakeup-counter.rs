//! A test service on the event_server skeleton: accepts connections on
//! its own listener, counts the wakeup triggers ("W") master sends and
//! logs "wakeup N" for each, until SIGHUP/SIGTERM.
use std::sync::Arc;

use postern_service::{Lifecycle, Listener, ServiceContext, event_server};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

async fn run(
    _ctx: Arc<ServiceContext>,
    listener: Listener,
    mut life: watch::Receiver<Lifecycle>,
) -> Result<(), String> {
    let mut count = 0u64;
    loop {
        tokio::select! {
            _ = life.wait_for(|l| *l != Lifecycle::Running) => return Ok(()),
            conn = listener.accept() => {
                let mut conn = conn.map_err(|e| format!("accept: {e}"))?;
                let mut buf = Vec::new();
                let _ = conn.read_to_end(&mut buf).await;
                if buf.first() == Some(&b'W') {
                    count += 1;
                    tracing::info!("wakeup {count}");
                }
            }
        }
    }
}

fn main() {
    event_server("wakeup-counter", |_ctx| Ok(()), run)
}
