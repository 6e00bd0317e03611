#![forbid(unsafe_code)]
fn main() {
    postern_cleanup::main()
}
