#![forbid(unsafe_code)]
fn main() {
    postern_postdrop::main()
}
