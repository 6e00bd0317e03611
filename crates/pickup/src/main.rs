fn main() {
    postern_pickup::main()
}
