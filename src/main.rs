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
    /// A whole mining site on this machine: test pools, the proxy, simulated rigs.
    Demo(hashshift::demo::DemoArgs),
    /// Run the proxy.
    Run {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Move an unusable (or any) power.json aside as power.json.bad-<unix> (kept, and
        /// recorded in the audit log) and start with every rig unknown and GPU grant 0.
        /// Without it, a power.json that cannot be read or parsed stops the start.
        #[arg(long)]
        reset_power_state: bool,
    },
    /// Validate a configuration file and print the effective configuration.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Write a new SV2 authority key pair to FILE (mode 0600, never overwritten) and print its
    /// public key, the string SV2 miners and translators pin (SRI: `authority_pubkey`).
    Keygen {
        /// The key file to create; point a `[[downstream]]` `authority_key_file` at it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Talk to a running proxy's admin socket: rigs, pools, drain/resume, power, events.
    Ctl(#[command(flatten)] hashshift::control::admin::ctl::CtlArgs),
    /// Load-test a proxy (or, with --direct, the embedded test pool) with many SV1 miners.
    Bench(#[command(flatten)] hashshift::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The bench and the demo print their own progress; per-connection logs of their embedded
    // pools would drown it.
    let default_filter = match cli.command {
        Command::Bench(_) | Command::Demo(_) | Command::Ctl(_) => "warn",
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
        Command::Ctl(args) => hashshift::control::admin::ctl::main(args),
        Command::Demo(args) => {
            match runtime().and_then(|rt| rt.block_on(hashshift::demo::run(args))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hashshift demo: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            config,
            reset_power_state,
        } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("hashshift: {}: {e}", config.display());
                    return ExitCode::from(2);
                }
            };
            let options = hashshift::proxy::StartOptions { reset_power_state };
            match runtime().and_then(|rt| rt.block_on(run(config, options))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hashshift: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Keygen { out } => match hashshift::keyfile::generate(&out) {
            Ok(public) => {
                println!("{public}");
                eprintln!(
                    "hashshift: wrote {}; give miners the public key above",
                    out.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hashshift keygen: {e}");
                ExitCode::FAILURE
            }
        },
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs the proxy until SIGINT or SIGTERM, then shuts down gracefully.
async fn run(config: Config, options: hashshift::proxy::StartOptions) -> anyhow::Result<()> {
    use anyhow::Context;
    hashshift::sys::raise_fd_limit();
    let settings = hashshift::upstream::manager::ManagerSettings::from_config(&config);
    let proxy = hashshift::proxy::Proxy::start_with_options(&config, settings, options)
        .await
        .context("starting the proxy")?;
    for addr in proxy.listen_addrs() {
        tracing::info!(%addr, "hashshift is up");
    }
    hashshift::sys::shutdown_signal().await;
    proxy.shutdown(std::time::Duration::from_secs(10)).await;
    Ok(())
}
