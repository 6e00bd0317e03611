fn main() {
    postern_qmgr::main()
}
