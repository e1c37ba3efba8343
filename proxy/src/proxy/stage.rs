//! A stage of the proxy: the tasks that start together and stop together, under one child
//! of the proxy's root [`CancellationToken`].
//!
//! The proxy has three stages (miners, pools, control); [`super::Proxy::shutdown`] stops them
//! one after the other, in the reverse of the order they depend on each other. Each stage's
//! token is a child of the root, so a start that fails half way stops everything by cancelling
//! the root alone.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A cancellation token and the tasks that watch it.
#[derive(Debug)]
pub(super) struct Stage {
    /// Cancelled when this stage stops (or the root does).
    pub(super) stop: CancellationToken,
    /// Every task of the stage, so a stop can wait for them.
    pub(super) tasks: TaskTracker,
}

impl Stage {
    /// A stage under `root`.
    pub(super) fn child_of(root: &CancellationToken) -> Stage {
        Stage {
            stop: root.child_token(),
            tasks: TaskTracker::new(),
        }
    }

    /// Tells the stage's tasks to stop and waits for them at most `within`. Returns whether
    /// they all ended in time (those still running are left to the runtime's shutdown).
    pub(super) async fn stop(&self, within: Duration) -> bool {
        self.stop.cancel();
        self.tasks.close();
        tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stage_stops_its_tasks_and_the_root_stops_every_stage() {
        let root = CancellationToken::new();
        let (a, b) = (Stage::child_of(&root), Stage::child_of(&root));
        let stop = a.stop.clone();
        a.tasks.spawn(async move { stop.cancelled().await });
        assert!(
            a.stop(Duration::from_secs(1)).await,
            "a task that obeys ends"
        );
        assert!(
            !b.stop.is_cancelled(),
            "stopping one stage leaves the others"
        );

        // A task that ignores its token is waited for only `within`.
        b.tasks.spawn(std::future::pending::<()>());
        assert!(!b.stop(Duration::from_secs(1)).await);

        let c = Stage::child_of(&root);
        root.cancel();
        assert!(c.stop.is_cancelled());
    }
}
