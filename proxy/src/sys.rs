//! Operating-system glue: signals and file-descriptor limits.

use tracing::{info, warn};

/// Resolves on SIGINT or SIGTERM (or Ctrl-C where only that exists).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
                    _ = term.recv() => info!("SIGTERM received"),
                }
            }
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the proxy");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        info!("Ctrl-C received");
    }
}

/// Raises the soft limit on open files to the hard limit: every miner is a socket, and the
/// usual default of 1024 would cap a farm at about a thousand rigs.
pub fn raise_fd_limit() {
    #[cfg(unix)]
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => info!(limit, "open-file limit"),
        Err(error) => warn!(%error, "cannot raise the open-file limit"),
    }
}
