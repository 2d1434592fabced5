//! The write-ahead log of the embedded store: `tessera.wal` beside
//! `tessera.redb`.
//!
//! Why: a durable redb commit writes every B-tree page the batch touched,
//! scattered over the file, and waits for all of them; on this project's
//! machines that was 2–3 ms per group commit, most of the time of every
//! durable write. Appending the batch's ops to one file and syncing that
//! writes a few contiguous pages. The redb commits in between are made
//! without a sync, and a periodic checkpoint (one durable redb commit)
//! makes the log up to it redundant, so the next append goes to its
//! start again.
//!
//! The file is reused, and kept written ahead in zeros (see
//! [`Wal::reserve`]): an append that changes no file size syncs its data
//! only (a 2.3 KiB append and `fdatasync` on this project's machines:
//! ≈ 0.14 ms, against 0.19–0.23 ms for one that grows the file). On Unix
//! appends go through a handle opened with `O_DSYNC`, so each is one
//! system call that returns once the bytes are on disk; on Linux also
//! with `O_DIRECT`, which skips the page cache and its writeback (on this
//! project's machines a 4 KiB `O_DSYNC` write took ≈ 176 µs buffered and
//! ≈ 126 µs direct, and the server spent ≈ 7% less CPU per durable
//! write). Where the file system refuses `O_DIRECT`, appends are
//! buffered.
//!
//! Each append (one batch) starts at a [`BLOCK`] boundary and is padded
//! with zeros to the next one, as direct I/O needs, so no write ever
//! rewrites a block that holds acknowledged records.
//!
//! A record is `length: u32 LE`, `crc32: u32 LE` (of the sequence number
//! and the payload), `sequence: u64 LE`, then `length` bytes of payload.
//! Sequence numbers grow by one from record to record, across checkpoints
//! (and never start at 0, so a header of zeros is never a record). Where
//! zeros run from the end of a record to the next block boundary, that is
//! an append's padding and reading goes on at the boundary. Reading stops
//! at the first record that is cut short, fails its checksum, or does not
//! continue the sequence: that is where the records of the current round
//! end (zeros, or the older records of the reused file, all numbered
//! lower), where a crash interrupted an append (an unacknowledged batch),
//! or damage. Logs written before the padding (records back to back)
//! read the same way.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Length, checksum and sequence number.
const HEADER: usize = 16;
/// No op comes near this; a larger length is damage, not a record, and
/// an op that would need more is refused before it is logged.
pub(super) const MAX_RECORD: usize = 64 << 20;
/// The log is kept at least this long, in zeros where it holds no
/// records (see [`Wal::reserve`]).
const RESERVE_MIN: u64 = 1 << 20;
/// It grows by doubling, at most by this much at a time.
const RESERVE_STEP_MAX: u64 = 16 << 20;
/// Appends start at a multiple of this and fill whole blocks: the
/// alignment direct I/O asks of offsets, lengths and memory on every
/// device this runs on (logical blocks of 512 or 4096 bytes).
pub(super) const BLOCK: usize = 4096;

/// Zeros for the reserve.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
/// A staging buffer larger than this is given back once appends need less
/// than a quarter of it.
const STAGING_KEEP: usize = 1 << 20;

fn align_up(n: u64) -> u64 {
    n.div_ceil(BLOCK as u64) * BLOCK as u64
}

pub(super) struct Wal {
    file: File,
    /// The same file opened with `O_DSYNC` (Unix), and `O_DIRECT` (Linux,
    /// where the file system allows it): an append through it returns once
    /// its bytes are on disk, one system call instead of a write and an
    /// `fdatasync`.
    appends: Option<File>,
    /// Whether `appends` is direct: offsets, lengths and memory aligned.
    direct: bool,
    /// Where an append is laid out: a buffer with room for a block-aligned
    /// slice of the largest append so far.
    staging: Vec<u8>,
    path: PathBuf,
    /// Bytes of records since the log was last emptied: where the next
    /// append goes.
    len: u64,
    /// Bytes written to the file: records, and zeros or old records after
    /// them.
    reserved: u64,
    /// Where appends go without waiting (Linux, where io_uring is
    /// allowed): see [`Wal::begin_append`].
    #[cfg(target_os = "linux")]
    ring: Option<io_uring::IoUring>,
    /// Whether `ring` is there, for the store (see
    /// [`Wal::appends_in_background`]): cleared when the ring is dropped.
    background: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The append begun and not yet finished.
    pending: Option<Pending>,
}

/// An append between [`Wal::begin_append`] and [`Wal::finish_append`]:
/// its bytes are `staging[start..start + n]`.
struct Pending {
    start: usize,
    n: usize,
    records: usize,
    padded: u64,
    /// `None` while the kernel holds it (in the ring); the outcome of a
    /// write made at once otherwise.
    done: Option<std::io::Result<()>>,
}

fn write_at(file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
    }
    #[cfg(not(unix))]
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = file;
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(bytes)
    }
}

/// What [`Wal::open`] found.
pub(super) struct Recovered {
    /// `(sequence, payload)` of every readable record, in order.
    pub records: Vec<(u64, Vec<u8>)>,
    /// Where the readable records end.
    pub end: u64,
    /// Bytes after the last readable record, up to the zeros that end
    /// the file's reserve.
    pub unreadable: u64,
    /// The highest sequence number of a whole record in those bytes that
    /// is numbered above the readable ones, if any. The log reuses its
    /// file, so those bytes hold older records, numbered below; a higher
    /// number means records were lost in between (damage), or a crash cut
    /// an append short in an unlucky order (never acknowledged).
    pub stray_seq: Option<u64>,
}

/// Appends one record to `buf`.
pub(super) fn put_record(buf: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let seq = seq.to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq);
    crc.update(payload);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc.finalize().to_le_bytes());
    buf.extend_from_slice(&seq);
    buf.extend_from_slice(payload);
}

/// The whole record at `at` whose sequence number `wanted` accepts, if
/// there is one: its sequence number and payload. The number is checked
/// before the checksum, which is the costly part. `u64::MAX` is never a
/// record's: the next number would not exist.
fn record_at(bytes: &[u8], at: usize, wanted: impl Fn(u64) -> bool) -> Option<(u64, &[u8])> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    let word = |from: usize| {
        u32::from_le_bytes([
            header[from],
            header[from + 1],
            header[from + 2],
            header[from + 3],
        ])
    };
    let (len, crc) = (word(0) as usize, word(4));
    let seq_bytes = &header[8..16];
    let seq = u64::from_le_bytes(seq_bytes.try_into().ok()?);
    if len > MAX_RECORD || seq == u64::MAX || !wanted(seq) {
        return None;
    }
    let payload = bytes.get(at + HEADER..at + HEADER + len)?;
    let mut check = crc32fast::Hasher::new();
    check.update(seq_bytes);
    check.update(payload);
    if check.finalize() != crc {
        return None;
    }
    Some((seq, payload))
}

/// Where the next record may start after one that ends at `at`: there, or
/// at the next block boundary if only zeros (an append's padding) lie
/// between.
fn after_padding(bytes: &[u8], at: usize) -> usize {
    let boundary = at.next_multiple_of(BLOCK).min(bytes.len());
    if boundary > at && bytes[at..boundary].iter().all(|&b| b == 0) {
        boundary
    } else {
        at
    }
}

/// The readable records at the start of `bytes` (a run of whole records
/// with sequence numbers one apart, each append's padding skipped), and
/// what follows them.
pub(super) fn read_records(bytes: &[u8]) -> Recovered {
    let mut records = Vec::new();
    let mut at = 0;
    let mut expected: Option<u64> = None;
    loop {
        let next = |at| record_at(bytes, at, |seq| expected.is_none_or(|e| e == seq));
        let found = match next(at) {
            Some(found) => Some((at, found)),
            // No record here: padding up to the boundary, then one there?
            None if !records.is_empty() => {
                let skipped = after_padding(bytes, at);
                (skipped != at)
                    .then(|| next(skipped).map(|found| (skipped, found)))
                    .flatten()
            }
            None => None,
        };
        let Some((start, (seq, payload))) = found else {
            break;
        };
        records.push((seq, payload.to_vec()));
        expected = Some(seq + 1);
        at = start + HEADER + payload.len();
    }
    let tail = &bytes[at..];
    // Every offset is tried: a record need not start where the readable
    // ones end. Only numbers above the readable ones count (older records
    // of the reused file are numbered below them), and not absurdly far
    // above, so that random bytes are rarely checksummed. Zeros (the
    // file's reserve) are skipped quickly.
    let floor = records.last().map_or(0, |(seq, _)| *seq);
    let stray = |seq: u64| seq > floor && seq - floor <= 1 << 32;
    let mut stray_seq = None;
    let mut i = 0;
    while i < tail.len() {
        if tail[i] == 0 {
            // A header holds a non-zero byte: go to the first offset whose
            // header reaches the next one.
            match tail[i..].iter().position(|&b| b != 0) {
                None => break,
                Some(n) if n >= HEADER => {
                    i += n + 1 - HEADER;
                    continue;
                }
                Some(_) => {}
            }
        }
        match record_at(tail, i, stray) {
            Some((seq, payload)) => {
                stray_seq = stray_seq.max(Some(seq));
                i += HEADER + payload.len();
            }
            None => i += 1,
        }
    }
    let zeros_at_end = tail.iter().rev().take_while(|&&b| b == 0).count();
    Recovered {
        records,
        end: at as u64,
        unreadable: (tail.len() - zeros_at_end) as u64,
        stray_seq,
    }
}

/// The handle appends go through, and whether it is direct: see [`Wal`].
fn open_appends(path: &Path, direct: bool) -> std::io::Result<(Option<File>, bool)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let open = |flags| {
            let mut synced = std::fs::OpenOptions::new();
            synced.write(true).custom_flags(flags);
            synced.open(path)
        };
        #[cfg(target_os = "linux")]
        if direct {
            match open(libc::O_DSYNC | libc::O_DIRECT) {
                Ok(file) => return Ok((Some(file), true)),
                // The file system does not do direct I/O (tmpfs, some
                // network file systems).
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    tracing::info!(wal = %path.display(), "no direct I/O here; the write-ahead log is appended through the page cache");
                }
                Err(e) => return Err(e),
            }
        }
        let _ = direct;
        Ok((Some(open(libc::O_DSYNC)?), false))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, direct);
        Ok((None, false))
    }
}

/// The io_uring that appends go through without waiting, where the
/// kernel allows one (containers may forbid io_uring).
#[cfg(target_os = "linux")]
fn open_ring(path: &Path) -> Option<io_uring::IoUring> {
    let not_here = |why: &dyn std::fmt::Display| {
        tracing::info!(wal = %path.display(), reason = %why, "io_uring is not available; the writer waits for each write-ahead log append");
    };
    let ring = match io_uring::IoUring::new(4) {
        Ok(ring) => ring,
        Err(e) => {
            not_here(&e);
            return None;
        }
    };
    // Kernels before 5.6 have io_uring but not its plain write, and
    // cannot say so (no probe either).
    let mut probe = io_uring::Probe::new();
    match ring.submitter().register_probe(&mut probe) {
        Ok(()) if probe.is_supported(io_uring::opcode::Write::CODE) => Some(ring),
        Ok(()) => {
            not_here(&"the kernel's io_uring has no write operation");
            None
        }
        Err(e) => {
            not_here(&e);
            None
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // The kernel may still be reading the staging buffer: wait for it
        // before the buffer is freed.
        if let Some(pending) = self.pending.take() {
            if pending.done.is_none() {
                let _ = self.reap(&pending);
            }
        }
    }
}

impl Wal {
    /// Opens the log at `path`, creating it (owner-only) if missing, and
    /// reads what it holds.
    pub(super) fn open(path: &Path) -> std::io::Result<(Self, Recovered)> {
        Self::open_with(path, true)
    }

    /// [`Wal::open`], with direct I/O for appends only if `direct` (and
    /// the platform and file system allow it).
    pub(super) fn open_with(path: &Path, direct: bool) -> std::io::Result<(Self, Recovered)> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        let (appends, direct) = open_appends(path, direct)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let found = read_records(&bytes);
        #[cfg(target_os = "linux")]
        let ring = match &appends {
            Some(_) => open_ring(path),
            None => None,
        };
        let wal = Self {
            file,
            appends,
            direct,
            staging: Vec::new(),
            path: path.to_owned(),
            len: align_up(found.end),
            reserved: bytes.len() as u64,
            #[cfg(target_os = "linux")]
            background: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(ring.is_some())),
            #[cfg(not(target_os = "linux"))]
            background: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
            #[cfg(target_os = "linux")]
            ring,
            pending: None,
        };
        Ok((wal, found))
    }

    /// Whether appends go around the page cache.
    #[cfg(test)]
    pub(super) fn is_direct(&self) -> bool {
        self.direct
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes appended since the log was last emptied.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Makes sure the file is written (in zeros, where it holds nothing
    /// else) at least `needed` bytes far. An append inside written space
    /// changes no file size, so its sync writes the data and nothing else.
    /// Grows by doubling. The zeros are not synced: an append syncs its
    /// own bytes (and the file's size), and whatever a crash leaves after
    /// the last record is not read as records.
    ///
    /// With direct appends the zeros are synced once, as they are written
    /// (buffered: 64 KiB direct writes, each waited for, took 40 times as
    /// long here): the pages are then clean, so a direct append over them
    /// only drops them from the page cache, and it changes nothing but
    /// data on disk.
    fn reserve(&mut self, needed: u64) -> std::io::Result<()> {
        if needed <= self.reserved {
            return Ok(());
        }
        let mut target = align_up(self.reserved.max(RESERVE_MIN));
        while target < needed {
            target += target.min(RESERVE_STEP_MAX);
        }
        let mut at = self.reserved;
        while at < target {
            let n = (target - at).min(ZEROS.len() as u64);
            write_at(&self.file, &ZEROS[..n as usize], at)?;
            at += n;
        }
        if self.direct {
            self.file.sync_data()?;
        }
        self.reserved = target;
        Ok(())
    }

    /// Appends `records` (made with [`put_record`]) at the next block
    /// boundary, padded with zeros to the one after, and waits until they
    /// are on disk. Returns the bytes the append took in the file.
    pub(super) fn append_durably(&mut self, records: &[u8]) -> std::io::Result<u64> {
        self.begin_append(records)?;
        self.finish_append()
    }

    /// Whether [`Wal::begin_append`] returns before the disk is done, so
    /// that the caller can work meanwhile: a flag that stays true while it
    /// does (it goes false for good if the ring is dropped).
    pub(super) fn appends_in_background(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        self.background.clone()
    }

    /// Appends are made synchronously from now on.
    #[cfg(target_os = "linux")]
    fn drop_ring(&mut self) {
        self.ring = None;
        self.background
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts [`Wal::append_durably`]: with io_uring the write is handed
    /// to the kernel and this returns at once; otherwise it is made here.
    /// Either way [`Wal::finish_append`] says how it went, and nothing
    /// else may be appended before it.
    pub(super) fn begin_append(&mut self, records: &[u8]) -> std::io::Result<()> {
        if self.pending.is_some() {
            return Err(std::io::Error::other(
                "an append to the write-ahead log is already under way",
            ));
        }
        let padded = align_up(records.len() as u64);
        self.reserve(self.len + padded)?;
        let n = padded as usize;
        // Room for `n` bytes from a block-aligned start, whatever the
        // allocator gave.
        let room = n + BLOCK;
        if self.staging.len() < room
            || (self.staging.len() > STAGING_KEEP && room < self.staging.len() / 4)
        {
            self.staging = vec![0; room.next_power_of_two()];
        }
        let start = self.staging.as_ptr().align_offset(BLOCK);
        let out = self
            .staging
            .get_mut(start..start + n)
            .ok_or_else(|| std::io::Error::other("no aligned buffer for the write-ahead log"))?;
        out[..records.len()].copy_from_slice(records);
        out[records.len()..].fill(0);
        let mut pending = Pending {
            start,
            n,
            records: records.len(),
            padded,
            done: None,
        };
        #[cfg(target_os = "linux")]
        if let (Some(ring), Some(synced)) = (&mut self.ring, &self.appends) {
            use std::os::unix::io::AsRawFd;
            let write = io_uring::opcode::Write::new(
                io_uring::types::Fd(synced.as_raw_fd()),
                out.as_ptr(),
                n as u32,
            )
            .offset(self.len)
            .build();
            // SAFETY: the kernel reads `staging[start..start + n]` until the
            // write completes. Nothing writes to or frees `staging` before
            // that completion is reaped: the next append refuses to start
            // while this one is pending, `finish_append` reaps it first,
            // and dropping the log reaps it too (`Drop for Wal`).
            let pushed = unsafe { ring.submission().push(&write) };
            if pushed.is_ok() && ring.submit().is_ok() {
                self.pending = Some(pending);
                return Ok(());
            }
            // The ring is full or refused the submission: nothing is in
            // flight (a failed submit leaves the entry unconsumed, and it
            // is dropped with the ring); appends are made here from now on.
            tracing::warn!(wal = %self.path.display(), "io_uring refused a write-ahead log append; appending synchronously");
            // Not `drop_ring`: `out` still borrows the staging buffer.
            self.ring = None;
            self.background
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        pending.done = Some(match &self.appends {
            Some(synced) => write_at(synced, out, self.len),
            None => write_at(&self.file, out, self.len).and_then(|()| self.file.sync_data()),
        });
        self.pending = Some(pending);
        Ok(())
    }

    /// Whether the append under way, if any, is done (without waiting).
    pub(super) fn append_settled(&mut self) -> bool {
        match &self.pending {
            Some(Pending { done: None, .. }) => {
                #[cfg(target_os = "linux")]
                {
                    self.ring
                        .as_mut()
                        .is_none_or(|ring| !ring.completion().is_empty())
                }
                #[cfg(not(target_os = "linux"))]
                {
                    true
                }
            }
            _ => true,
        }
    }

    /// Waits for the append [`Wal::begin_append`] started to be on disk.
    /// Returns the bytes it took in the file.
    pub(super) fn finish_append(&mut self) -> std::io::Result<u64> {
        let Some(mut pending) = self.pending.take() else {
            return Err(std::io::Error::other(
                "no append to the write-ahead log is under way",
            ));
        };
        let written = match pending.done.take() {
            Some(done) => done,
            None => self.reap(&pending),
        };
        match written {
            // EINVAL: direct I/O refused after all (an alignment this
            // device wants and this code does not give): nothing was
            // written; from now on appends are buffered.
            Err(e) if self.direct && e.kind() == std::io::ErrorKind::InvalidInput => {
                tracing::warn!(
                    wal = %self.path.display(),
                    error = %e,
                    "direct writes to the write-ahead log were refused; appending through the page cache"
                );
                let (appends, _) = open_appends(&self.path, false)?;
                self.appends = appends;
                self.direct = false;
                #[cfg(target_os = "linux")]
                self.drop_ring();
                let records = self.staging[pending.start..pending.start + pending.records].to_vec();
                self.append_durably(&records)
            }
            Err(e) => Err(e),
            Ok(()) => {
                self.len += pending.padded;
                Ok(pending.padded)
            }
        }
    }

    /// Waits for the kernel to finish `pending`'s write.
    #[cfg(target_os = "linux")]
    fn reap(&mut self, pending: &Pending) -> std::io::Result<()> {
        let ring = self
            .ring
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the write-ahead log's ring is gone"))?;
        let waited = loop {
            if let Some(c) = ring.completion().next() {
                break Ok(c);
            }
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        let completion = match waited {
            Ok(c) => c,
            Err(e) => {
                // The kernel may still be reading the staging buffer: it
                // and the ring are leaked rather than freed or reused (the
                // writer stops writing after this error).
                std::mem::forget(std::mem::take(&mut self.staging));
                if let Some(ring) = self.ring.take() {
                    std::mem::forget(ring);
                }
                self.drop_ring();
                return Err(std::io::Error::other(format!(
                    "waiting for a write-ahead log append failed: {e}"
                )));
            }
        };
        let result = completion.result();
        if result < 0 {
            return Err(std::io::Error::from_raw_os_error(-result));
        }
        // A short write (not seen with direct I/O to a file): the rest is
        // written here.
        let done = (result as usize).min(pending.n);
        if done < pending.n {
            let synced = self
                .appends
                .as_ref()
                .ok_or_else(|| std::io::Error::other("no append handle"))?;
            let rest = &self.staging[pending.start + done..pending.start + pending.n];
            write_at(synced, rest, self.len + done as u64)?;
        }
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn reap(&mut self, _pending: &Pending) -> std::io::Result<()> {
        Err(std::io::Error::other("no asynchronous appends here"))
    }

    /// Empties the log, once a durable commit holds everything in it: the
    /// next append goes to its start, over the old records, and the file
    /// keeps its size. Nothing is written: should a crash come before the
    /// next sync, the old records are all at or below the sequence number
    /// the store recorded, and are skipped; records appended after it
    /// start at offset 0, so the old ones behind them break the sequence
    /// and are not read.
    pub(super) fn clear(&mut self) {
        self.len = 0;
    }

    /// Empties the file itself, and waits until that is on disk: for a
    /// clean stop, and after recovery, so that no old record is left
    /// behind the new ones.
    pub(super) fn clear_durably(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.len = 0;
        self.reserved = 0;
        self.file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut buf = Vec::new();
        for (seq, p) in records {
            put_record(&mut buf, *seq, p);
        }
        buf
    }

    #[test]
    fn records_read_back_in_order() {
        let bytes = log(&[(7, b"a"), (8, b""), (9, b"ccc")]);
        let r = read_records(&bytes);
        assert_eq!(
            r.records,
            vec![(7, b"a".to_vec()), (8, Vec::new()), (9, b"ccc".to_vec())]
        );
        assert_eq!(r.unreadable, 0);
    }

    #[test]
    fn reading_stops_at_a_torn_or_damaged_record() {
        let whole = log(&[(1, b"first"), (2, b"second")]);
        for cut in 1..(whole.len() - HEADER - 5) {
            let torn = &whole[..whole.len() - cut];
            let r = read_records(torn);
            assert_eq!(r.records.len(), 1, "cut {cut}");
            let rest = &torn[HEADER + 5..];
            let trailing_zeros = rest.iter().rev().take_while(|&&b| b == 0).count();
            assert_eq!(r.unreadable as usize, rest.len() - trailing_zeros);
            assert_eq!(r.stray_seq, None, "a torn record is not whole");
            // The same behind the file's reserve of zeros.
            let mut reserved = torn.to_vec();
            reserved.resize(torn.len() + 4096, 0);
            let r = read_records(&reserved);
            assert_eq!(r.records.len(), 1);
            assert_eq!(r.unreadable as usize, rest.len() - trailing_zeros);
        }
        let mut flipped = whole.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(read_records(&flipped).records.len(), 1);
        let mut bad_seq = whole.clone();
        bad_seq[HEADER + 5 + 8] ^= 1;
        assert_eq!(read_records(&bad_seq).records.len(), 1);
    }

    #[test]
    fn reading_stops_where_the_sequence_breaks() {
        // A stale tail behind records appended after an emptying that a
        // crash undid: its sequence numbers do not continue the new ones.
        let mut bytes = log(&[(10, b"new"), (11, b"new")]);
        bytes.extend(log(&[(5, b"old"), (6, b"old")]));
        let r = read_records(&bytes);
        assert_eq!(
            r.records.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![10, 11]
        );
        assert!(r.unreadable > 0);
    }

    #[test]
    fn a_whole_record_after_a_break_is_found() {
        // Damage in the middle: record 2 is unreadable, 3 is whole.
        let mut bytes = log(&[(1, b"one"), (2, b"two"), (3, b"three")]);
        bytes[HEADER + 3 + HEADER] ^= 1;
        bytes.resize(bytes.len() + 100, 0);
        let r = read_records(&bytes);
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.stray_seq, Some(3));
        // Zeros alone are the reserve: nothing unreadable, nothing stray.
        let mut clean = log(&[(1, b"one")]);
        clean.resize(clean.len() + (1 << 16), 0);
        let r = read_records(&clean);
        assert_eq!((r.records.len(), r.unreadable, r.stray_seq), (1, 0, None));
    }

    #[test]
    fn the_file_is_reused_and_older_records_behind_new_ones_are_not_read() {
        for direct in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.wal");
            let (mut wal, _) = Wal::open_with(&path, direct).unwrap();
            assert_eq!(wal.is_direct(), direct && cfg!(target_os = "linux"));
            // Two blocks: the first record runs into the second.
            let long = vec![7u8; BLOCK + 100];
            wal.append_durably(&log(&[(1, &long), (2, b"b"), (3, b"c")]))
                .unwrap();
            let size = std::fs::metadata(&path).unwrap().len();
            assert!(size >= RESERVE_MIN, "written in zeros ahead: {size}");
            wal.clear();
            assert_eq!(wal.len(), 0);
            wal.append_durably(&log(&[(4, b"d")])).unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().len(), size, "no new size");
            drop(wal);
            let (mut wal, found) = Wal::open_with(&path, direct).unwrap();
            assert_eq!(found.records, vec![(4, b"d".to_vec())]);
            assert!(found.unreadable > 0, "the rest of the old records");
            assert!(
                found.stray_seq < Some(4),
                "older records only: {:?}",
                found.stray_seq
            );
            assert_eq!(wal.len(), BLOCK as u64, "the next append's boundary");
            // A durable emptying empties the file.
            wal.clear_durably().unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        }
    }

    #[test]
    fn appends_start_at_block_boundaries_and_their_padding_is_read_over() {
        for direct in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.wal");
            let (mut wal, _) = Wal::open_with(&path, direct).unwrap();
            let first = log(&[(1, b"one"), (2, b"two")]);
            assert_eq!(wal.append_durably(&first).unwrap(), BLOCK as u64);
            let big = vec![9u8; 2 * BLOCK];
            assert_eq!(
                wal.append_durably(&log(&[(3, &big)])).unwrap(),
                3 * BLOCK as u64,
                "a record and its header take three blocks"
            );
            assert_eq!(
                wal.append_durably(&log(&[(4, b"four")])).unwrap(),
                BLOCK as u64
            );
            drop(wal);
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(&bytes[..first.len()], &first[..]);
            assert!(bytes[first.len()..BLOCK].iter().all(|&b| b == 0), "padding");
            assert_eq!(&bytes[4 * BLOCK + HEADER..4 * BLOCK + HEADER + 4], b"four");
            let (wal, found) = Wal::open_with(&path, direct).unwrap();
            let seqs: Vec<u64> = found.records.iter().map(|(s, _)| *s).collect();
            assert_eq!(seqs, vec![1, 2, 3, 4]);
            assert_eq!(found.records[2].1, big);
            assert_eq!((found.unreadable, found.stray_seq), (0, None));
            assert_eq!(wal.len(), 5 * BLOCK as u64);
        }
    }

    #[test]
    fn an_append_cut_short_after_its_first_block_is_not_read() {
        // A crash in the middle of a two-block append: the second block
        // still holds zeros (or anything older).
        let mut bytes = log(&[(1, b"one")]);
        bytes.resize(BLOCK, 0);
        let mut second = log(&[(2, &vec![5u8; BLOCK])]);
        second.truncate(BLOCK);
        bytes.extend_from_slice(&second);
        bytes.resize(4 * BLOCK, 0);
        let r = read_records(&bytes);
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.end, (HEADER + 3) as u64);
        assert!(r.unreadable > 0);
        assert_eq!(r.stray_seq, None, "a torn record is not whole");
    }

    #[test]
    fn an_absurd_length_is_damage() {
        let mut bytes = log(&[(1, b"x")]);
        bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_records(&bytes).records.is_empty());
    }

    #[test]
    fn appends_survive_reopening_and_clearing_empties() {
        for direct in [true, false] {
            appends_survive_reopening_and_clearing_empties_in(direct);
        }
    }

    /// An append begun is finished before the next, and one left in
    /// flight when the log is dropped still reaches the file.
    #[test]
    fn an_append_is_begun_then_finished_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wal");
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.begin_append(&log(&[(1, b"a")])).unwrap();
        assert!(wal.begin_append(&log(&[(2, b"b")])).is_err());
        assert_eq!(wal.finish_append().unwrap(), BLOCK as u64);
        assert!(wal.append_settled());
        assert!(wal.finish_append().is_err(), "nothing is under way");
        wal.begin_append(&log(&[(2, b"b")])).unwrap();
        drop(wal);
        let (_, found) = Wal::open(&path).unwrap();
        assert_eq!(found.records, vec![(1, b"a".to_vec()), (2, b"b".to_vec())]);
    }

    /// Without io_uring (a kernel or container that forbids it) an append
    /// is made at once and the writer is told so.
    #[test]
    fn without_a_ring_appends_are_made_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wal");
        let (mut wal, _) = Wal::open(&path).unwrap();
        let background = wal.appends_in_background();
        #[cfg(target_os = "linux")]
        wal.drop_ring();
        assert!(!background.load(std::sync::atomic::Ordering::SeqCst));
        wal.begin_append(&log(&[(1, b"a")])).unwrap();
        assert!(wal.append_settled());
        wal.finish_append().unwrap();
        drop(wal);
        let (_, found) = Wal::open(&path).unwrap();
        assert_eq!(found.records, vec![(1, b"a".to_vec())]);
    }

    fn appends_survive_reopening_and_clearing_empties_in(direct: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wal");
        let (mut wal, found) = Wal::open_with(&path, direct).unwrap();
        assert!(found.records.is_empty());
        wal.append_durably(&log(&[(1, b"a")])).unwrap();
        wal.append_durably(&log(&[(2, b"b"), (3, b"c")])).unwrap();
        drop(wal);
        let (mut wal, found) = Wal::open_with(&path, direct).unwrap();
        assert_eq!(found.records.len(), 3);
        wal.clear();
        wal.append_durably(&log(&[(4, b"d")])).unwrap();
        drop(wal);
        let (_, found) = Wal::open_with(&path, direct).unwrap();
        assert_eq!(found.records, vec![(4, b"d".to_vec())]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
