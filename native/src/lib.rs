//! The `gpumlp` command-line program's modules, as a library so the integration tests can reach
//! the downloader and the data loading directly.

pub mod bench;
pub mod cli;
pub mod data;
pub mod devices;
pub mod download;
pub mod eval;
pub mod files;
pub mod plot;
pub mod progress;
pub mod train;
pub mod tuning;
pub mod workload;

use cli::{Cli, Command};

/// Runs one command line's worth of work.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let verbose = cli.verbose;
    let mut notice = |note: &str, details: &str| {
        eprintln!("note: {note}");
        if verbose {
            eprintln!("      {details}");
        }
    };
    match cli.command {
        Command::Train(args) => train::run(args, &mut notice),
        Command::Eval(args) => eval::eval(args, &mut notice),
        Command::Predict(args) => eval::predict(args),
        Command::Devices(args) => devices::run(args.json),
        Command::Bench(args) => bench::run(args),
    }
    .map_err(cli::name_flag)
}
