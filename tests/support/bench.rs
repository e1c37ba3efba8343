//! The load generator (`hashshift_tools::bench`) run in this process, bounded.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use hashshift_tools::bench::{BenchArgs, Report, run};
use tokio::time::timeout;

/// Parses `args` as `hashshift bench` would (`args[0]` is the command name) and runs it, for a
/// minute at most.
pub async fn bench(args: &[&str]) -> Result<Report> {
    let args = BenchArgs::try_parse_from(args)?;
    timeout(Duration::from_secs(60), run(args))
        .await
        .context("bench did not finish")?
}
