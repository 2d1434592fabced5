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
//! system call that returns once the bytes are on disk.
//!
//! A record is `length: u32 LE`, `crc32: u32 LE` (of the sequence number
//! and the payload), `sequence: u64 LE`, then `length` bytes of payload.
//! Sequence numbers grow by one from record to record, across checkpoints.
//! Reading stops at the first record that is cut short, fails its
//! checksum, or does not continue the sequence: that is where the records
//! of the current round end (zeros, or the older records of the reused
//! file, all numbered lower), where a crash interrupted an append (an
//! unacknowledged batch), or damage.

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

pub(super) struct Wal {
    file: File,
    /// The same file opened with `O_DSYNC` (Unix): an append through it
    /// returns once its bytes are on disk, one system call instead of a
    /// write and an `fdatasync`.
    appends: Option<File>,
    path: PathBuf,
    /// Bytes of records since the log was last emptied: where the next
    /// append goes.
    len: u64,
    /// Bytes written to the file: records, and zeros or old records after
    /// them.
    reserved: u64,
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

/// The readable records at the start of `bytes` (a run of whole records
/// with sequence numbers one apart), and what follows them.
pub(super) fn read_records(bytes: &[u8]) -> Recovered {
    let mut records = Vec::new();
    let mut at = 0;
    let mut expected: Option<u64> = None;
    while let Some((seq, payload)) = record_at(bytes, at, |seq| expected.is_none_or(|e| e == seq)) {
        records.push((seq, payload.to_vec()));
        expected = Some(seq + 1);
        at += HEADER + payload.len();
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

impl Wal {
    /// Opens the log at `path`, creating it (owner-only) if missing, and
    /// reads what it holds.
    pub(super) fn open(path: &Path) -> std::io::Result<(Self, Recovered)> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        #[cfg(unix)]
        let appends = {
            use std::os::unix::fs::OpenOptionsExt;
            let mut synced = std::fs::OpenOptions::new();
            synced.write(true).custom_flags(libc::O_DSYNC);
            Some(synced.open(path)?)
        };
        #[cfg(not(unix))]
        let appends = None;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let found = read_records(&bytes);
        let wal = Self {
            file,
            appends,
            path: path.to_owned(),
            len: found.end,
            reserved: bytes.len() as u64,
        };
        Ok((wal, found))
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
    fn reserve(&mut self, needed: u64) -> std::io::Result<()> {
        if needed <= self.reserved {
            return Ok(());
        }
        let mut target = self.reserved.max(RESERVE_MIN);
        while target < needed {
            target += target.min(RESERVE_STEP_MAX);
        }
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let mut at = self.reserved;
        while at < target {
            let n = (target - at).min(ZEROS.len() as u64);
            write_at(&self.file, &ZEROS[..n as usize], at)?;
            at += n;
        }
        self.reserved = target;
        Ok(())
    }

    /// Appends `records` (made with [`put_record`]) and waits until they
    /// are on disk.
    pub(super) fn append_durably(&mut self, records: &[u8]) -> std::io::Result<()> {
        let n = records.len() as u64;
        self.reserve(self.len + n)?;
        match &self.appends {
            Some(synced) => write_at(synced, records, self.len)?,
            None => {
                write_at(&self.file, records, self.len)?;
                self.file.sync_data()?;
            }
        }
        self.len += n;
        Ok(())
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
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wal");
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.append_durably(&log(&[(1, b"a long first record"), (2, b"b"), (3, b"c")]))
            .unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size >= RESERVE_MIN, "written in zeros ahead: {size}");
        wal.clear();
        assert_eq!(wal.len(), 0);
        wal.append_durably(&log(&[(4, b"d")])).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size, "no new size");
        drop(wal);
        let (mut wal, found) = Wal::open(&path).unwrap();
        assert_eq!(found.records, vec![(4, b"d".to_vec())]);
        assert!(found.unreadable > 0, "the rest of the old records");
        assert!(
            found.stray_seq < Some(4),
            "older records only: {:?}",
            found.stray_seq
        );
        assert_eq!(wal.len(), (HEADER + 1) as u64);
        // A durable emptying empties the file.
        wal.clear_durably().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn an_absurd_length_is_damage() {
        let mut bytes = log(&[(1, b"x")]);
        bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_records(&bytes).records.is_empty());
    }

    #[test]
    fn appends_survive_reopening_and_clearing_empties() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wal");
        let (mut wal, found) = Wal::open(&path).unwrap();
        assert!(found.records.is_empty());
        wal.append_durably(&log(&[(1, b"a")])).unwrap();
        wal.append_durably(&log(&[(2, b"b"), (3, b"c")])).unwrap();
        drop(wal);
        let (mut wal, found) = Wal::open(&path).unwrap();
        assert_eq!(found.records.len(), 3);
        wal.clear();
        wal.append_durably(&log(&[(4, b"d")])).unwrap();
        drop(wal);
        let (_, found) = Wal::open(&path).unwrap();
        assert_eq!(found.records, vec![(4, b"d".to_vec())]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
