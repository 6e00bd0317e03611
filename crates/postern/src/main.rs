fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(f) = postern_postern::run(&args) {
        if !f.message.is_empty() {
            eprintln!("{}", f.message);
        }
        std::process::exit(f.status);
    }
}
