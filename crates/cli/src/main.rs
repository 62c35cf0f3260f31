//! The `ferrolite` command.

use std::process::ExitCode;

fn main() -> ExitCode {
    ferrolite_cli::main()
}
