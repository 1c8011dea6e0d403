//! `semsctl`: the command-line client of SeMS Response, for people and scripts. Talks gRPC to
//! `semsd`; readable tables by default, `--output json` for scripts; reads with
//! `min_position` after its own writes, so what it prints is never stale.

mod cli;
mod cmc;
mod decisions;
mod demo;
mod error;
mod output;
mod session;

use clap::Parser;

use crate::cli::Cli;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("semsctl: {e}");
            if let Some(hint) = e.hint() {
                eprintln!("  hint: {hint}");
            }
            std::process::ExitCode::from(e.exit_code())
        }
    }
}
