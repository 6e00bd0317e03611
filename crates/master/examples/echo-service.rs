//! A test service on the single_server skeleton: echoes each line back
//! prefixed with its pid ("1234 hello"), so tests can see which process
//! served them. With the argument `crash` it fails in init (exit 1), for
//! the throttling tests; with `crash-unless=PATH` it fails in init while
//! PATH does not exist (a missing file an administrator then creates). The line `?config NAME` is answered with the
//! service's value of main.cf parameter NAME (the privilege tests check
//! that a chrooted service sees `queue_directory = /`).
use std::rc::Rc;
use std::sync::Arc;

use postern_service::{Connection, ServiceContext, single_server};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn main() {
    single_server(
        "echo",
        |ctx: &Arc<ServiceContext>| {
            if ctx.args.iter().any(|a| a == "crash") {
                return Err("told to crash at start-up".to_string());
            }
            for a in &ctx.args {
                if let Some(path) = a.strip_prefix("crash-unless=")
                    && let Err(e) = std::fs::metadata(path)
                {
                    return Err(format!("{path}: cannot stat: {e}"));
                }
            }
            Ok(ctx.clone())
        },
        |ctx: Rc<Arc<ServiceContext>>, conn: Connection| async move {
            let pid = std::process::id();
            let (r, mut w) = tokio::io::split(conn);
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let line = match line.strip_prefix("?config ") {
                    Some(name) => ctx.config.str(name),
                    None => line,
                };
                if w.write_all(format!("{pid} {line}\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        },
    )
}
