//! The `kup` binary: everything lives in the library; this only maps its outcome to an exit code.

fn main() -> std::process::ExitCode {
    kup::cli::main()
}
