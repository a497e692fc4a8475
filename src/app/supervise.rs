//! Supervision of a group of tasks: a process's stages, or the loops of one two-way worker.
//!
//! Owns the rule every group follows. Invariants: every task is joined (nothing is
//! fire-and-forget); the first task to fail, or to end on its own before a stop was asked,
//! stops the others through the group's stop signal; the group reports the first failure; a
//! panic is a bug and is re-raised, never swallowed; an outer shutdown (a signal) stops the
//! group cleanly.

use std::future::Future;

use tokio::sync::watch;
use tokio::task::JoinSet;

/// A group of tasks sharing one stop signal.
pub(crate) struct Supervisor<E> {
    tasks: JoinSet<(String, Result<(), E>)>,
    stop: watch::Sender<bool>,
    outer: watch::Receiver<bool>,
}

impl<E: std::fmt::Display + Send + 'static> Supervisor<E> {
    /// A group that also stops when `outer` turns true.
    pub(crate) fn new(outer: watch::Receiver<bool>) -> Self {
        Supervisor {
            tasks: JoinSet::new(),
            stop: watch::channel(false).0,
            outer,
        }
    }

    /// The signal the group's tasks must watch: true once the group stops.
    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Asks every task of the group to stop.
    pub(crate) fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }

    /// Runs `task` as a member of the group.
    pub(crate) fn spawn(
        &mut self,
        name: String,
        task: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        self.tasks.spawn(async move { (name, task.await) });
    }

    /// Waits until the group stops (a task failed or ended, the outer shutdown came, or
    /// [`Self::stopper`] was used) and every task has ended; returns the first failure. A group
    /// without tasks still carries the outer shutdown to [`Self::stop_signal`] until stopped.
    pub(crate) async fn join(mut self) -> Result<(), E> {
        let mut first = None;
        let mut outer_open = true;
        let mut stopped = self.stop.subscribe();
        if *self.outer.borrow_and_update() {
            let _ = self.stop.send(true);
        }
        loop {
            if self.tasks.is_empty() && *stopped.borrow_and_update() {
                break;
            }
            let joined = tokio::select! {
                changed = self.outer.changed(), if outer_open => {
                    match changed {
                        Ok(()) if *self.outer.borrow() => {
                            let _ = self.stop.send(true);
                        }
                        Ok(()) => {}
                        Err(_) => outer_open = false,
                    }
                    continue;
                }
                _ = stopped.changed() => continue,
                Some(joined) = self.tasks.join_next() => joined,
            };
            let (task, result) = match joined {
                Ok(done) => done,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("a supervised task was cancelled: {e}"),
            };
            let stopping = *self.stop.borrow();
            match result {
                Err(e) => {
                    tracing::error!(task, error = %e, "task stopped; stopping the others");
                    first.get_or_insert(e);
                }
                Ok(()) if !stopping => {
                    tracing::warn!(task, "task ended on its own; stopping the others");
                }
                Ok(()) => {}
            }
            let _ = self.stop.send(true);
        }
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spawns a task that runs until the group's stop signal.
    fn spawn_waiting(group: &mut Supervisor<String>, name: String) {
        let mut stop = group.stop_signal();
        group.spawn(name, async move {
            let _ = stop.wait_for(|s| *s).await;
            Ok(())
        });
    }

    /// What a group of a waiting task and a task ending with `end` reports.
    async fn join_with_an_ending_task(end: Result<(), String>) -> Result<(), String> {
        let (_outer_tx, outer) = watch::channel(false);
        let mut group: Supervisor<String> = Supervisor::new(outer);
        spawn_waiting(&mut group, "waits".into());
        group.spawn("ends".into(), async { end });
        group.join().await
    }

    #[tokio::test]
    async fn the_first_failure_stops_the_others_and_is_reported() {
        assert_eq!(
            join_with_an_ending_task(Err("boom".to_string())).await,
            Err("boom".to_string())
        );
    }

    #[tokio::test]
    async fn an_outer_shutdown_stops_the_group_cleanly() {
        let (outer_tx, outer) = watch::channel(false);
        let mut group: Supervisor<String> = Supervisor::new(outer);
        for n in 0..3 {
            spawn_waiting(&mut group, format!("worker {n}"));
        }
        outer_tx.send(true).unwrap();
        assert_eq!(group.join().await, Ok(()));
    }

    #[tokio::test]
    async fn an_empty_group_carries_the_outer_shutdown_to_its_stop_signal() {
        let (outer_tx, outer) = watch::channel(false);
        let group: Supervisor<String> = Supervisor::new(outer);
        let mut stop = group.stop_signal();
        let runner = async move {
            let _ = stop.wait_for(|s| *s).await;
            "runner stopped"
        };
        outer_tx.send(true).unwrap();
        let (ran, joined) = tokio::join!(runner, group.join());
        assert_eq!((ran, joined), ("runner stopped", Ok(())));
    }

    #[tokio::test]
    async fn a_task_ending_on_its_own_stops_the_others() {
        assert_eq!(join_with_an_ending_task(Ok(())).await, Ok(()));
    }
}
