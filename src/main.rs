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
    /// Load-test a proxy (or, with --direct, the embedded test pool) with many SV1 miners.
    Bench(#[command(flatten)] hashshift::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The bench prints its own progress; per-connection logs of its embedded pool would
    // drown it.
    let default_filter = match cli.command {
        Command::Bench(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Bench(args) => hashshift::bench::main(args),
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
