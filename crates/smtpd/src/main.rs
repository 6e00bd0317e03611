fn main() {
    postern_smtpd::main()
}
