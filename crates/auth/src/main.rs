#![forbid(unsafe_code)]
fn main() {
    postern_auth::main()
}
