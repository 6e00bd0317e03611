fn main() {
    postern_auth::main()
}
