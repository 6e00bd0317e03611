//! `master [-c CONFIG_DIR] [-f] [-v]`: the Postern master process (see the library docs).
#![forbid(unsafe_code)]
fn main() {
    postern_master::master_main(std::env::args().skip(1).collect())
}
