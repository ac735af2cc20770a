//! `gpumlp`: every failure ends in one line on stderr naming what is wrong, and exit status 2.

use clap::Parser;
use gpumlp_native::cli::Cli;
use gpumlp_native::ranks::Job;
use std::process::ExitCode;

fn main() -> ExitCode {
    quiet_wayland();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.use_stderr() {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            eprintln!("{}", one_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    let job = match Job::start() {
        Ok(job) => job,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            return ExitCode::from(2);
        }
    };
    match gpumlp_native::run(cli, &job) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A run a signal stopped says where, and exits with 128 + the signal's number.
            if let Some(stopped) = e.downcast_ref::<gpumlp_native::interrupt::Interrupted>() {
                eprintln!("{stopped}");
                return ExitCode::from((128 + stopped.signal.number()) as u8);
            }
            let rank = if job.ranks > 1 {
                format!("rank {}: ", job.rank)
            } else {
                String::new()
            };
            // `{:#}` joins the chain of causes into one line.
            job.fail(&format!(
                "error: {rank}{}",
                format!("{e:#}").replace('\n', " ")
            ))
        }
    }
}

/// clap's message as one line: what is wrong, the argument it names and any tip, without the
/// usage and help pointer that follow (`--help` shows those).
fn one_line(message: &str) -> String {
    let mut parts = Vec::new();
    for line in message.lines().map(str::trim) {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if let Some(tip) = line.strip_prefix("tip:") {
            parts.push(format!("(tip:{tip})"));
        } else if !line.is_empty() {
            parts.push(line.to_string());
        }
    }
    let mut text = parts.join(" ");
    if text.is_empty() {
        text = "error: invalid command line".into();
    }
    text
}

/// Mesa's Vulkan drivers print a line on adapter enumeration when XDG_RUNTIME_DIR is unset,
/// which would break the one-line-error contract: point it at a private folder.
fn quiet_wayland() {
    if let Some(dir) = gpumlp::backend::gpu::runtime_dir_for_mesa() {
        // SAFETY: called first thing in main, before any other thread exists.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", dir) };
    }
}
