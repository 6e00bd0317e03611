fn main() {
    postern_postdrop::main()
}
