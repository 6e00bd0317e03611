#![forbid(unsafe_code)]
fn main() {
    postern_local::server::main()
}
