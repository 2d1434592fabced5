//! The writer thread: group commit through the write-ahead log.
//!
//! Every write goes through one thread. It takes what is queued (up to
//! [`MAX_BATCH`] ops), applies the ops in one redb transaction, appends
//! the ones that changed something to the write-ahead log and syncs it,
//! and only then commits the transaction (without a sync of its own: the
//! log holds the ops) and answers. So a write is acknowledged only once
//! it is on disk, and no reader sees it before. Every `checkpoint_every`
//! (default [`DEFAULT_CHECKPOINT_EVERY`]), or [`CHECKPOINT_BYTES`] of log, a
//! durable redb commit takes over what the log holds and the log starts
//! again from its beginning; after a crash, [`super::recover`] replays
//! what the last checkpoint did not take.
//!
//! Each transaction also records the sequence number of its last logged
//! op (`meta`/`wal_seq`), so replay knows where the checkpoint stopped.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::ops::{Outcome, WriteOp};
use super::wal::{put_record, Wal};
use super::*;

/// By default, at most this long between durable redb commits.
pub const DEFAULT_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Or this much log, whichever comes first.
pub(super) const CHECKPOINT_BYTES: u64 = 32 << 20;

/// A queued write: applied inside a shared transaction, answered after the
/// log is synced and the transaction committed (or failed).
pub(super) struct Job {
    pub(super) op: WriteOp,
    /// The op as a log record, encoded by the caller (off this thread).
    record: Vec<u8>,
    result: Option<StoreResult<Outcome>>,
    reply: oneshot::Sender<StoreResult<Outcome>>,
}

impl Job {
    pub(super) fn new(op: WriteOp) -> StoreResult<(Self, oneshot::Receiver<StoreResult<Outcome>>)> {
        let record = op.encode()?;
        let (reply, answer) = oneshot::channel();
        let job = Self {
            op,
            record,
            result: None,
            reply,
        };
        Ok((job, answer))
    }

    /// Runs the op, keeping its answer. `Err` means the op may have changed
    /// the transaction partway, so the transaction must be thrown away.
    fn apply(&mut self, t: &mut Tables<'_>) -> StoreResult<()> {
        match self.op.apply(t) {
            // Ops report a conflict or a missing record before changing anything.
            Err(e) if !matches!(e, StoreError::Conflict(_) | StoreError::Missing(_)) => Err(e),
            outcome => {
                self.result = Some(outcome);
                Ok(())
            }
        }
    }

    /// Whether the op changed anything, and so must be logged.
    fn changed(&self) -> bool {
        matches!(self.result, Some(Ok(_)))
    }

    fn answer(self) {
        let outcome = self
            .result
            .unwrap_or_else(|| Err(StoreError::Unavailable("write was not applied".into())));
        // The caller may have gone away (timeout, disconnect); the write stands.
        let _ = self.reply.send(outcome);
    }

    fn fail(self, err: StoreError) {
        let _ = self.reply.send(Err(err));
    }
}

/// What the writer thread is sent. (Ticks are rare; boxing the job would
/// cost an allocation per write.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Msg {
    Write(Job),
    /// Work a caller handed over ([`crate::store::Store::offload`]), run
    /// while the next log append is on its way to the disk.
    Meanwhile(crate::store::Work),
    /// From the ticker: checkpoint if one is due.
    Tick,
}

pub(super) enum BatchError {
    /// An op failed; the transaction was aborted.
    Op(StoreError),
    /// Nothing was written (no transaction could be opened, or the log
    /// could not be written).
    Storage(StoreError),
}

/// The writer's state.
pub(super) struct Writer {
    db: Arc<Database>,
    pub(super) ends: Arc<EndIndex>,
    /// Deleted sessions whose [`EndIndex`] entries are yet to go.
    pub(super) graveyard: std::collections::VecDeque<(Instant, Id)>,
    wal: Wal,
    /// The sequence number of the next logged op.
    next_seq: u64,
    /// Log bytes that no durable commit holds yet.
    unsaved: u64,
    last_checkpoint: Instant,
    pub(super) checkpoint_every: Duration,
    commits: Arc<AtomicU64>,
    /// Set when the log and the database may disagree (a failed sync or
    /// commit): from then on every write fails until a restart replays the
    /// log.
    broken: Arc<AtomicBool>,
    records: Vec<u8>,
    /// Handed-over work for the next log append's wait.
    meanwhile: Vec<crate::store::Work>,
}

fn broken_error() -> StoreError {
    StoreError::Unavailable(
        "the store stopped writing after a storage error; restart Tessera to recover".into(),
    )
}

impl Writer {
    pub(super) fn new(
        db: Arc<Database>,
        ends: Arc<EndIndex>,
        wal: Wal,
        next_seq: u64,
        commits: Arc<AtomicU64>,
        broken: Arc<AtomicBool>,
    ) -> Self {
        Self {
            db,
            ends,
            graveyard: std::collections::VecDeque::new(),
            wal,
            next_seq,
            unsaved: 0,
            last_checkpoint: Instant::now(),
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            commits,
            broken,
            records: Vec::new(),
            meanwhile: Vec::new(),
        }
    }

    fn poison(&self, what: &str, e: &dyn std::fmt::Display) {
        tracing::error!(
            error = %e,
            wal = %self.wal.path().display(),
            "{what}; the store accepts no more writes until Tessera restarts and replays its write-ahead log"
        );
        self.broken.store(true, Ordering::SeqCst);
    }

    /// Applies every op in one transaction, logs the ones that changed
    /// something, then commits.
    fn apply_and_commit(&mut self, batch: &mut [Job]) -> Result<(), BatchError> {
        let mut txn = self
            .db
            .begin_write()
            .ctx("begin write")
            .map_err(BatchError::Storage)?;
        txn.set_durability(Durability::None)
            .ctx("set durability")
            .map_err(BatchError::Storage)?;
        let end_changes = match self.apply_all(&txn, batch) {
            Ok(changes) => changes,
            Err(e) => {
                if let Err(abort) = txn.abort().ctx("abort write") {
                    tracing::warn!(error = %abort, "abort after a failed op failed");
                }
                return Err(e);
            }
        };
        self.records.clear();
        let mut seq = self.next_seq;
        for job in batch.iter().filter(|j| j.changed()) {
            put_record(&mut self.records, seq, &job.record);
            seq += 1;
        }
        if seq > self.next_seq {
            let started = Instant::now();
            // With an append that runs in the background, the handed-over
            // work (signing the batch's tokens) runs while the disk writes.
            let took = match self.wal.begin_append(&self.records).and_then(|()| {
                self.work_while_appending();
                self.wal.finish_append()
            }) {
                Ok(took) => took,
                Err(e) => {
                    // What reached the disk is unknown: stop, and let a
                    // restart replay whatever the log holds.
                    self.poison("writing the write-ahead log failed", &e);
                    let _ = txn.abort();
                    return Err(BatchError::Storage(broken_error()));
                }
            };
            metrics::histogram!("tessera_store_log_sync_seconds")
                .record(started.elapsed().as_secs_f64());
            self.next_seq = seq;
            self.unsaved += took;
        }
        // Logged: from here the ops stand, whatever happens to this commit.
        // The new ends are published before the commit, so that no
        // snapshot holds an end's other rows without the end (readers
        // take an entry whose row their snapshot lacks as no end yet).
        let removed = publish_ends(&self.ends, end_changes);
        if let Err(e) = txn.commit() {
            self.poison("committing a logged batch failed", &e);
            return Err(BatchError::Storage(broken_error()));
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        self.graveyard
            .extend(removed.into_iter().map(|id| (now, id)));
        Ok(())
    }

    /// Sorts a message into the batch being gathered.
    fn take(&mut self, msg: Msg, batch: &mut Vec<Job>) {
        match msg {
            Msg::Write(job) => batch.push(job),
            Msg::Meanwhile(work) => self.meanwhile.push(work),
            // Checkpoints are looked at after every batch anyway.
            Msg::Tick => {}
        }
    }

    /// Runs handed-over work until the log append under way is on disk;
    /// what is left goes back to its callers, who run it themselves once
    /// their writes are done. A panic in the work is caught: the writer
    /// must go on (the caller sees its answer's channel closed).
    fn work_while_appending(&mut self) {
        for work in self.meanwhile.drain(..) {
            if self.wal.append_settled() {
                break;
            }
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work.run())).is_err() {
                tracing::error!("handed-over work panicked on the store's writer thread");
            }
        }
    }

    /// Drops the [`EndIndex`] entries of sessions deleted more than
    /// [`END_INDEX_GRACE`] ago.
    pub(super) fn bury(&mut self) {
        let due = |g: &std::collections::VecDeque<(Instant, Id)>| {
            g.front()
                .is_some_and(|(at, _)| at.elapsed() >= END_INDEX_GRACE)
        };
        if !due(&self.graveyard) {
            return;
        }
        let mut map = self
            .ends
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while due(&self.graveyard) {
            if let Some((_, id)) = self.graveyard.pop_front() {
                map.remove(&id);
            }
        }
        // A hash table keeps its largest size: give back what a wave of
        // ends left behind.
        if map.capacity() > 1024 && map.len() < map.capacity() / 4 {
            map.shrink_to_fit();
        }
    }

    fn apply_all(
        &self,
        txn: &WriteTransaction,
        batch: &mut [Job],
    ) -> Result<EndChanges, BatchError> {
        let mut tables = Tables::open(txn, &self.ends).map_err(BatchError::Storage)?;
        for job in batch.iter_mut() {
            if let Err(e) = job.apply(&mut tables) {
                tracing::warn!(op = job.op.name(), error = %e, "write op failed; transaction aborted");
                return Err(BatchError::Op(e));
            }
        }
        let logged = batch.iter().filter(|j| j.changed()).count() as u64;
        if logged > 0 {
            tables
                .meta()
                .and_then(|meta| {
                    meta.insert(WAL_SEQ, self.next_seq + logged - 1)
                        .ctx("write log position")
                })
                .map_err(BatchError::Storage)?;
        }
        Ok(std::mem::take(&mut tables.end_changes))
    }

    /// Runs a batch; if one op fails, the others are retried one per
    /// transaction so that a single bad op cannot fail its neighbours.
    pub(super) fn run_batch(&mut self, mut batch: Vec<Job>) {
        if self.broken.load(Ordering::SeqCst) {
            batch.into_iter().for_each(|j| j.fail(broken_error()));
            return;
        }
        match self.apply_and_commit(&mut batch) {
            Ok(()) => batch.into_iter().for_each(Job::answer),
            Err(BatchError::Op(e)) if batch.len() == 1 => {
                if let Some(job) = batch.pop() {
                    job.fail(e);
                }
            }
            Err(BatchError::Op(_)) => {
                for job in batch {
                    self.run_batch(vec![job]);
                }
            }
            Err(BatchError::Storage(e)) => {
                let msg = e.to_string();
                for job in batch {
                    job.fail(StoreError::Unavailable(msg.clone()));
                }
            }
        }
    }

    fn checkpoint_due(&self) -> bool {
        self.unsaved > 0
            && (self.last_checkpoint.elapsed() >= self.checkpoint_every
                || self.unsaved >= CHECKPOINT_BYTES)
    }

    /// A durable redb commit, which holds every op logged so far; then the
    /// log is emptied.
    pub(super) fn checkpoint(&mut self) {
        if self.unsaved == 0 || self.broken.load(Ordering::SeqCst) {
            return;
        }
        let started = Instant::now();
        let durable = (|| -> Result<(), redb::Error> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            txn.commit()?;
            Ok(())
        })();
        if let Err(e) = durable {
            // Not fatal for what is logged, but the database may need
            // the recovery a restart gives it.
            self.poison("a checkpoint (durable commit) failed", &e);
            return;
        }
        metrics::histogram!("tessera_store_checkpoint_seconds")
            .record(started.elapsed().as_secs_f64());
        tracing::debug!(
            wal_seq = self.next_seq - 1,
            log_bytes = self.unsaved,
            took_ms = started.elapsed().as_secs_f64() * 1e3,
            "checkpoint: the database holds every logged write"
        );
        self.unsaved = 0;
        self.last_checkpoint = Instant::now();
        // The records are all at or below the recorded position: the next
        // append goes to the start of the log again.
        self.wal.clear();
    }

    /// The thread's loop. Ends once every sender is dropped and the queue
    /// is drained, with a last checkpoint, so a clean stop leaves an
    /// empty log.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        // For operators: how full the group commits are and how long each
        // takes (apply, log sync, commit), which bound every durable write.
        let batch_ops = metrics::histogram!("tessera_store_batch_ops");
        let batch_seconds = metrics::histogram!("tessera_store_batch_seconds");
        while let Some(first) = rx.blocking_recv() {
            let mut batch = Vec::new();
            self.take(first, &mut batch);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(msg) => self.take(msg, &mut batch),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                let started = Instant::now();
                batch_ops.record(batch.len() as f64);
                self.run_batch(batch);
                batch_seconds.record(started.elapsed().as_secs_f64());
                // Work no append waited for (a batch that logged nothing)
                // stays with its callers.
                self.meanwhile.clear();
            } else if self.meanwhile.len() > MAX_BATCH {
                // Work that came without its write (which comes next, as
                // a rule) waits for the next append; its callers run it
                // themselves if it waits too long.
                self.meanwhile.clear();
            }
            if self.checkpoint_due() {
                self.checkpoint();
            }
            self.bury();
        }
        self.checkpoint();
        // A clean stop leaves an empty file.
        if self.unsaved == 0 && !self.broken.load(Ordering::SeqCst) {
            if let Err(e) = self.wal.clear_durably() {
                tracing::warn!(error = %e, "emptying the write-ahead log at stop failed");
            }
        }
    }
}

/// Sends a [`Msg::Tick`] every `every` (at least every second, so that it
/// notices soon that the store is gone), so writes that stop coming are
/// still checkpointed; ends with the store.
pub(super) fn spawn_ticker(
    queue: mpsc::WeakSender<Msg>,
    every: Duration,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tessera-redb-tick".into())
        .spawn(move || loop {
            std::thread::sleep(every.min(Duration::from_secs(1)));
            let Some(queue) = queue.upgrade() else { return };
            // Full queue: the writer is busy and checkpoints as it goes.
            let _ = queue.try_send(Msg::Tick);
        })
}
