//! The `gpumlp` command-line program's modules, as a library so the integration tests can reach
//! the downloader and the data loading directly.

pub mod bench;
pub mod cli;
pub mod data;
pub mod devices;
pub mod download;
pub mod eval;
pub mod files;
pub mod interrupt;
pub mod plot;
pub mod progress;
pub mod ranks;
pub mod train;
pub mod tuning;
pub mod workload;

use cli::{Cli, Command};
use ranks::Job;

/// Runs one command line's worth of work as `job`'s rank (training alone is data-parallel).
pub fn run(cli: Cli, job: &Job) -> anyhow::Result<()> {
    let verbose = cli.verbose;
    // Notes are the leading rank's to print: the others would repeat them.
    let lead = job.leads();
    let mut notice = |note: &str, details: &str| {
        if lead {
            eprintln!("note: {note}");
            if verbose {
                eprintln!("      {details}");
            }
        }
    };
    match cli.command {
        Command::Train(args) => train::run(args, &mut notice, job),
        Command::Eval(args) => job
            .only_alone("eval")
            .and_then(|()| eval::eval(args, &mut notice)),
        Command::Predict(args) => job.only_alone("predict").and_then(|()| eval::predict(args)),
        Command::Devices(args) => job
            .only_alone("devices")
            .and_then(|()| devices::run(args.json)),
        Command::Bench(args) => job.only_alone("bench").and_then(|()| bench::run(args)),
    }
    .map_err(cli::name_flag)
}
