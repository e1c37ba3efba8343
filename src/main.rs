//! The `hashshift` binary: command line, tracing, runtime and exit code. Everything else is in
//! the library so tests can drive it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use hashshift_proxy::config::Config;

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
    Demo(hashshift_tools::demo::DemoArgs),
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
    Ctl(#[command(flatten)] hashshift_proxy::control::admin::ctl::CtlArgs),
    /// Load-test a proxy (or, with --direct, the embedded test pool) with many SV1 miners.
    Bench(#[command(flatten)] hashshift_tools::bench::BenchArgs),
}

/// Logs go to stderr: human text, coloured only when stderr is a terminal (journald, files
/// and `docker logs` get plain text; `NO_COLOR` turns colour off anyway), or one JSON object
/// per line with `HASHSHIFT_LOG_FORMAT=json`, for log shippers. `RUST_LOG` filters.
fn init_logging(default_filter: &str) -> Result<(), String> {
    use std::io::IsTerminal;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let format = std::env::var("HASHSHIFT_LOG_FORMAT").unwrap_or_default();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format.as_str() {
        "" | "text" => {
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(colour).init();
        }
        "json" => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        other => {
            return Err(format!(
                "HASHSHIFT_LOG_FORMAT={other:?}: must be \"text\" or \"json\""
            ));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The bench and the demo print their own progress; per-connection logs of their embedded
    // pools would drown it.
    let default_filter = match cli.command {
        Command::Bench(_) | Command::Demo(_) | Command::Ctl(_) => "warn",
        _ => "info",
    };
    if let Err(e) = init_logging(default_filter) {
        eprintln!("hashshift: {e}");
        return ExitCode::from(2);
    }
    match cli.command {
        Command::Bench(args) => hashshift_tools::bench::main(args),
        Command::Ctl(args) => hashshift_proxy::control::admin::ctl::main(args),
        Command::Demo(args) => {
            // The demo's rigs and PDU get fresh secrets, which its in-process proxy reads from
            // the environment (`password_env`, `community_env`) as a real one does.
            for (var, value) in hashshift_tools::demo::secrets() {
                // SAFETY: `set_var` is unsound only while another thread may read or write
                // the environment. None exists yet: the process is still on its main thread
                // (argument parsing and the tracing subscriber start none; the tokio runtime,
                // the first to spawn threads, is built on the next line, after this loop).
                unsafe { std::env::set_var(var, value) };
            }
            match runtime().and_then(|rt| rt.block_on(hashshift_tools::demo::run(args))) {
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
            hashshift_proxy::supervisor::install_panic_hook();
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("hashshift: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            let options = hashshift_proxy::proxy::StartOptions { reset_power_state };
            let outcome = rt.block_on(run(config, options));
            // A blocking task (a file write, a hook command) must not hold the exit up.
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
            match outcome {
                Ok(None) => ExitCode::SUCCESS,
                Ok(Some(failure)) => {
                    eprintln!(
                        "hashshift: {failure}; exiting with status {} for a restart",
                        hashshift_proxy::supervisor::EXIT_TASK_FAILED
                    );
                    ExitCode::from(hashshift_proxy::supervisor::EXIT_TASK_FAILED)
                }
                Err(e) => {
                    eprintln!("hashshift: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Keygen { out } => match hashshift_proxy::keyfile::generate(&out) {
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
            Ok(config) => match toml::to_string_pretty(&config.redacted()) {
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

/// Sessions' grace period when the proxy stops after a critical task failed: shorter than on
/// SIGTERM, since power control may be down until the restart.
const FAILURE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// After a failure the process exits by then even if the shutdown hangs.
const FAILURE_EXIT_WITHIN: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs the proxy until SIGINT or SIGTERM, or until a critical task fails, then shuts down
/// gracefully. Returns the failure, if any (the exit status is then
/// [`hashshift_proxy::supervisor::EXIT_TASK_FAILED`]).
async fn run(
    config: Config,
    options: hashshift_proxy::proxy::StartOptions,
) -> anyhow::Result<Option<hashshift_proxy::supervisor::TaskFailure>> {
    use anyhow::Context;
    hashshift_proxy::sys::raise_fd_limit();
    let settings = hashshift_proxy::upstream::manager::ManagerSettings::from_config(&config);
    let proxy = hashshift_proxy::proxy::Proxy::start_with_options(&config, settings, options)
        .await
        .context("starting the proxy")?;
    for addr in proxy.listen_addrs() {
        tracing::info!(%addr, "hashshift is up");
    }
    let supervisor = proxy.supervisor().clone();
    let failed = tokio::select! {
        () = hashshift_proxy::sys::shutdown_signal() => None,
        failure = proxy.failed() => Some(failure),
    };
    let grace = match &failed {
        None => std::time::Duration::from_secs(config.limits.shutdown_grace_secs),
        Some(failure) => {
            tracing::error!(task = %failure.task, why = %failure.why, "stopping: a critical task failed");
            // A watchdog outside the runtime: a wedged shutdown must not keep a process
            // without, say, power control alive.
            std::thread::spawn(|| {
                std::thread::sleep(FAILURE_EXIT_WITHIN);
                eprintln!("hashshift: shutdown after a task failure took too long; exiting");
                std::process::exit(i32::from(hashshift_proxy::supervisor::EXIT_TASK_FAILED));
            });
            FAILURE_GRACE
        }
    };
    proxy.shutdown(grace).await;
    // A panic during the shutdown also fails the run.
    Ok(failed.or_else(|| supervisor.failure()))
}
