#![forbid(unsafe_code)]
fn main() {
    postern_qmgr::main()
}
