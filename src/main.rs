//! The `hashshift` binary: command line, tracing, runtime and exit code. Everything else is in
//! the library so tests can drive it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use hashshift::config::Config;

#[derive(Parser)]
#[command(
    name = "hashshift",
    version,
    about = "Stratum mining proxy with workload switching"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and print the effective configuration.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => match toml::to_string_pretty(&config) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hashshift: cannot print the effective config: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("hashshift: {}: {e}", file.display());
                ExitCode::from(2)
            }
        },
    }
}
