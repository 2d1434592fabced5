//! The `tessera` binary: parses the command line and hands it to
//! [`tessera::cli::run`].

use std::process::ExitCode;

use clap::Parser;

// glibc's malloc was 13% of the server's CPU under introspection load
// (bench/profile); mimalloc's thread-local free lists make the many small,
// short-lived allocations of a request much cheaper.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = tessera::cli::Cli::parse();
    match tessera::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
