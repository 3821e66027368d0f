fn main() {
    std::process::exit(shoal_cli::main_with_args(std::env::args().collect()));
}
