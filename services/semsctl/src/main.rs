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

/// Exit code when the output was closed before semsctl finished writing (`semsctl … | head`):
/// 128 + SIGPIPE, what a shell reports for a program that pipe closing stopped.
const OUTPUT_CLOSED: i32 = 141;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    // A reader that stops reading is not an error: stop quietly, as other command-line tools
    // do, instead of the panic of `println!` on a closed pipe.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(OUTPUT_CLOSED);
        }
        default_hook(info);
    }));
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
