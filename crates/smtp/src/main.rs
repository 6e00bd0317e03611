#![forbid(unsafe_code)]
fn main() {
    postern_smtp::main()
}
