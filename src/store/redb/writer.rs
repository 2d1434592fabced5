//! The writer thread and its group commit.

use super::*;

// ---------------------------------------------------------------------------
// the writer thread and its group commit

/// A queued write: applied inside a shared transaction, answered after the
/// commit (or failed if the commit fails).
pub(super) trait PendingOp: Send {
    fn name(&self) -> &'static str;
    /// Runs the op, keeping its answer. `Err` means the op may have changed
    /// the transaction partway, so the transaction must be thrown away.
    fn apply(&mut self, t: &mut Tables<'_>) -> StoreResult<()>;
    fn answer(self: Box<Self>);
    fn fail(self: Box<Self>, err: StoreError);
}

pub(super) struct Op<T, F> {
    name: &'static str,
    run: F,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> PendingOp for Op<T, F>
where
    T: Send,
    F: FnMut(&mut Tables<'_>) -> StoreResult<T> + Send,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn apply(&mut self, t: &mut Tables<'_>) -> StoreResult<()> {
        match (self.run)(t) {
            // Ops report a conflict or a missing record before changing anything.
            Err(e) if !matches!(e, StoreError::Conflict(_) | StoreError::Missing(_)) => Err(e),
            outcome => {
                self.result = Some(outcome);
                Ok(())
            }
        }
    }

    fn answer(self: Box<Self>) {
        let outcome = self
            .result
            .unwrap_or_else(|| Err(StoreError::Unavailable("write was not applied".into())));
        // The caller may have gone away (timeout, disconnect); the write stands.
        let _ = self.reply.send(outcome);
    }

    fn fail(self: Box<Self>, err: StoreError) {
        let _ = self.reply.send(Err(err));
    }
}

pub(super) type Job = Box<dyn PendingOp>;

/// Packages `run` as a job for the writer, with the receiver of its answer.
pub(super) fn job<T, F>(name: &'static str, run: F) -> (Job, oneshot::Receiver<StoreResult<T>>)
where
    T: Send + 'static,
    F: FnMut(&mut Tables<'_>) -> StoreResult<T> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    (
        Box::new(Op {
            name,
            run,
            result: None,
            reply,
        }),
        answer,
    )
}

pub(super) enum BatchError {
    /// An op failed; the transaction was aborted.
    Op(StoreError),
    /// No transaction could be opened or committed: nothing was written.
    Storage(StoreError),
}

/// Applies every op in one transaction and commits it durably once.
pub(super) fn apply_and_commit(
    db: &Database,
    batch: &mut [Job],
    commits: &AtomicU64,
) -> Result<(), BatchError> {
    let mut txn = db
        .begin_write()
        .ctx("begin write")
        .map_err(BatchError::Storage)?;
    txn.set_durability(Durability::Immediate)
        .ctx("set durability")
        .map_err(BatchError::Storage)?;
    let applied = apply_all(&txn, batch);
    if let Err(e) = applied {
        if let Err(abort) = txn.abort().ctx("abort write") {
            tracing::warn!(error = %abort, "abort after a failed op failed");
        }
        return Err(e);
    }
    let started = std::time::Instant::now();
    txn.commit().ctx("commit").map_err(BatchError::Storage)?;
    metrics::histogram!("tessera_store_commit_seconds").record(started.elapsed().as_secs_f64());
    commits.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

pub(super) fn apply_all(txn: &WriteTransaction, batch: &mut [Job]) -> Result<(), BatchError> {
    let mut tables = Tables::open(txn).map_err(BatchError::Storage)?;
    for op in batch.iter_mut() {
        if let Err(e) = op.apply(&mut tables) {
            tracing::warn!(op = op.name(), error = %e, "write op failed; transaction aborted");
            return Err(BatchError::Op(e));
        }
    }
    Ok(())
}

/// Runs a batch; if one op fails, the others are retried one per
/// transaction so that a single bad op cannot fail its neighbours.
pub(super) fn run_batch(db: &Database, mut batch: Vec<Job>, commits: &AtomicU64) {
    match apply_and_commit(db, &mut batch, commits) {
        Ok(()) => batch.into_iter().for_each(|op| op.answer()),
        Err(BatchError::Op(e)) if batch.len() == 1 => {
            if let Some(op) = batch.pop() {
                op.fail(e);
            }
        }
        Err(BatchError::Op(_)) => {
            for op in batch {
                run_batch(db, vec![op], commits);
            }
        }
        Err(BatchError::Storage(e)) => {
            let msg = e.to_string();
            for op in batch {
                op.fail(StoreError::Unavailable(msg.clone()));
            }
        }
    }
}

pub(super) fn writer_loop(db: Arc<Database>, mut rx: mpsc::Receiver<Job>, commits: Arc<AtomicU64>) {
    // For operators: how full the group commits are and how long each
    // takes (apply, write and fsync), which bound every durable write.
    let batch_ops = metrics::histogram!("tessera_store_batch_ops");
    let batch_seconds = metrics::histogram!("tessera_store_batch_seconds");
    // Ends once every sender is dropped and the queue is drained.
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        batch_ops.record(batch.len() as f64);
        run_batch(&db, batch, &commits);
        batch_seconds.record(started.elapsed().as_secs_f64());
    }
}
