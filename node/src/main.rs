//! The `shoal` binary: everything happens in [`shoal::cli`].

fn main() {
    std::process::exit(shoal::cli::main());
}
