//! The `dna` binary: see `dna --help`.

#![forbid(unsafe_code)]

mod cli;
mod control;

use clap::Parser;

fn main() -> std::process::ExitCode {
    cli::run(cli::Cli::parse())
}
