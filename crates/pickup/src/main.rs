#![forbid(unsafe_code)]
fn main() {
    postern_pickup::main()
}
