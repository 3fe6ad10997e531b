//! The `vigia` binary: parses the command line, runs the command, and maps the outcome
//! to the documented exit codes (0 success, 1 runtime failure, 2 usage or configuration).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    vigia::ops::bound_allocator_arenas();
    let args = match vigia::cli::Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    match vigia::cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`vigia feeds | head`): nothing to report.
        Err(err) if vigia::cli::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let code = vigia::cli::exit_code(&err);
            eprintln!("vigia: {}", vigia::cli::describe(&err));
            ExitCode::from(code)
        }
    }
}
