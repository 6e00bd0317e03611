fn main() {
    postern_cleanup::main()
}
