//! The `sitewatch` command: parse the arguments, then hand over to the
//! library, where every command lives (`sitewatch::cli`).

use clap::Parser;

fn main() -> std::process::ExitCode {
    sitewatch::cli::main(sitewatch::cli::Cli::parse())
}
