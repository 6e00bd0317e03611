#![forbid(unsafe_code)]
fn main() {
    postern_smtpd::main()
}
