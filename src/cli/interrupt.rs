//! Ctrl-C and SIGTERM for the mutating verbs, from the moment the lock is
//! taken: before any change (refresh, planning, the approval prompt) a
//! signal ends the run at once — the lock released, exit 130; during apply
//! the first stops new work and lets calls in flight finish, a second
//! abandons the waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::ui::Printer;

/// Counts the signals received; dropped, it stops listening.
pub struct Interrupts {
    count: Arc<AtomicUsize>,
    notify: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Interrupts {
    /// Listens for SIGINT and SIGTERM; each one is announced on stderr.
    pub fn install(printer: &Printer) -> Interrupts {
        let count = Arc::new(AtomicUsize::new(0));
        let notify = Arc::new(Notify::new());
        let (c, n, printer) = (count.clone(), notify.clone(), printer.clone());
        // Registered here, before this returns: a signal arriving at once
        // (while the lock is being taken) is counted, never the default
        // handler's immediate exit.
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        let task = tokio::spawn(async move {
            let (Ok(mut term), Ok(mut int)) = (term, int) else {
                return;
            };
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                let seen = c.fetch_add(1, Ordering::SeqCst) + 1;
                printer.warn(match seen {
                    1 => {
                        "interrupted: stopping (a second signal abandons operations still waiting)"
                    }
                    _ => "interrupted again: abandoning the operations still waiting",
                });
                n.notify_waiters();
            }
        });
        Interrupts {
            count,
            notify,
            task,
        }
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Returns once `n` signals have arrived.
    pub async fn at_least(&self, n: usize) {
        loop {
            let notified = self.notify.notified();
            if self.count() >= n {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        self.task.abort();
    }
}
