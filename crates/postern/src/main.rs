#![forbid(unsafe_code)]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Called as sendmail, mailq or newaliases (or `postern sendmail ...`):
    // the local submission commands (src/sendmail.rs).
    let argv0 = std::env::args().next().unwrap_or_default();
    if let Some(status) = postern::sendmail::dispatch(&argv0, &args) {
        std::process::exit(status);
    }
    if let Err(f) = postern::run(&args) {
        if !f.message.is_empty() {
            eprintln!("{}", f.message);
        }
        std::process::exit(f.status);
    }
}
