//! The pool manager's commands to one miner session: a latest-wins mailbox.
//!
//! A session only ever needs the newest command (a newer reassignment supersedes an older
//! one; a kick supersedes everything), so one slot and a `Notify` do the job of a channel at
//! a fraction of its memory: a tokio `mpsc` allocates a block of 32 slots per channel, which
//! at 10k idle miners is tens of megabytes for messages that almost never come.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use super::Control;

#[derive(Debug, Default)]
struct Slot {
    next: Mutex<SlotState>,
    notify: Notify,
}

#[derive(Debug, Default)]
struct SlotState {
    command: Option<Control>,
    /// The session is gone.
    closed: bool,
    /// Live senders; at zero, `recv` reports the end.
    senders: usize,
}

/// The manager's side; cheap to clone.
#[derive(Debug)]
pub struct MailboxSender(Arc<Slot>);

impl Clone for MailboxSender {
    fn clone(&self) -> Self {
        lock(&self.0).senders += 1;
        MailboxSender(self.0.clone())
    }
}

impl Drop for MailboxSender {
    fn drop(&mut self) {
        let last = {
            let mut state = lock(&self.0);
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.0.notify.notify_one();
        }
    }
}

fn lock(slot: &Slot) -> std::sync::MutexGuard<'_, SlotState> {
    slot.next.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The session's side. Dropping it closes the mailbox.
#[derive(Debug)]
pub struct Mailbox(Arc<Slot>);

/// The session is gone: the command was not delivered.
#[derive(Debug, thiserror::Error)]
#[error("miner session has ended")]
pub struct Closed;

/// A new mailbox.
pub fn mailbox() -> (MailboxSender, Mailbox) {
    let slot = Arc::new(Slot::default());
    lock(&slot).senders = 1;
    (MailboxSender(slot.clone()), Mailbox(slot))
}

impl MailboxSender {
    /// Leaves `command` for the session, replacing an undelivered one unless that was a
    /// kick (a kick is final). Never blocks.
    pub fn send(&self, command: Control) -> Result<(), Closed> {
        {
            let mut state = lock(&self.0);
            if state.closed {
                return Err(Closed);
            }
            if !matches!(state.command, Some(Control::Kick)) {
                state.command = Some(command);
            }
        }
        // Stores a permit if the session is not waiting right now: no lost wake-up.
        self.0.notify.notify_one();
        Ok(())
    }
}

impl Mailbox {
    /// The next command; `None` once every sender is gone and nothing is pending.
    /// Cancel-safe: a command is only taken out of the slot by the call that returns it.
    pub async fn recv(&mut self) -> Option<Control> {
        loop {
            {
                let mut state = lock(&self.0);
                if let Some(c) = state.command.take() {
                    return Some(c);
                }
                if state.senders == 0 {
                    return None;
                }
            }
            self.0.notify.notified().await;
        }
    }

    /// The pending command, if any.
    pub fn try_recv(&mut self) -> Option<Control> {
        lock(&self.0).command.take()
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        lock(&self.0).closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn latest_wins_and_kick_is_final() {
        let (tx, mut rx) = mailbox();
        assert!(rx.try_recv().is_none());
        tx.send(Control::Kick).unwrap();
        // A later command cannot replace a pending kick.
        tx.send(Control::Kick).unwrap();
        assert!(matches!(rx.recv().await, Some(Control::Kick)));
        assert!(rx.try_recv().is_none());
        drop(rx);
        assert!(tx.send(Control::Kick).is_err());
    }

    #[tokio::test]
    async fn a_command_sent_before_waiting_is_not_lost() {
        let (tx, mut rx) = mailbox();
        tx.send(Control::Kick).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(1), rx.recv()).await;
        assert!(matches!(got, Ok(Some(Control::Kick))));
    }

    #[tokio::test]
    async fn recv_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = mailbox();
        let tx2 = tx.clone();
        drop(tx);
        tx2.send(Control::Kick).unwrap();
        drop(tx2);
        // A command sent before the last sender went is still delivered, then the end.
        assert!(matches!(rx.recv().await, Some(Control::Kick)));
        let end = tokio::time::timeout(std::time::Duration::from_secs(1), rx.recv()).await;
        assert!(matches!(end, Ok(None)));
    }
}
