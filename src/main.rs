use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = slipway::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            slipway::ui::Printer::new(slipway::ui::Verbosity::Normal, true, false).error(
                &format!("cannot start the async runtime: {e}"),
                &[],
                None,
            );
            return ExitCode::FAILURE;
        }
    };
    let exit = runtime.block_on(slipway::cli::run(cli));
    // A prompt abandoned by Ctrl-C still blocks a thread on stdin: do not
    // wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    ExitCode::from(exit as u8)
}
