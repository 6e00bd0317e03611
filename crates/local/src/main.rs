fn main() {
    postern_local::server::main()
}
