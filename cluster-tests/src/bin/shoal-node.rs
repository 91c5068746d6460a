//! The `shoal` program under another name, so cluster tests can find it through
//! `CARGO_BIN_EXE_shoal-node` (Cargo exposes only a package's own binaries to its tests).

fn main() {
    std::process::exit(shoal::cli::main());
}
