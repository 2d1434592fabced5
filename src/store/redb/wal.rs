//! The write-ahead log of the embedded store: `tessera.wal` beside
//! `tessera.redb`.
//!
//! Why: a durable redb commit writes every B-tree page the batch touched,
//! scattered over the file, and waits for all of them; on this project's
//! machines that was 2–3 ms per group commit, most of the time of every
//! durable write. Appending the batch's ops to one file and syncing that
//! writes a few contiguous pages (≈ 0.3 ms). The redb commits in between
//! are made without a sync, and a periodic checkpoint (one durable redb
//! commit) makes the log up to it redundant, so it is emptied.
//!
//! A record is `length: u32 LE`, `crc32: u32 LE` (of the sequence number
//! and the payload), `sequence: u64 LE`, then `length` bytes of payload.
//! Sequence numbers grow by one from record to record, across checkpoints.
//! Reading stops at the first record that is cut short, fails its
//! checksum, or does not continue the sequence: that is where a crash
//! interrupted an append (an unacknowledged batch), or damage.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Length, checksum and sequence number.
const HEADER: usize = 16;
/// No op comes near this; a larger length is damage, not a record, and
/// an op that would need more is refused before it is logged.
pub(super) const MAX_RECORD: usize = 64 << 20;

pub(super) struct Wal {
    file: File,
    path: PathBuf,
    /// Bytes in the file: where the next append goes.
    len: u64,
}

/// What [`Wal::open`] found.
pub(super) struct Recovered {
    /// `(sequence, payload)` of every readable record, in order.
    pub records: Vec<(u64, Vec<u8>)>,
    /// Bytes after the last readable record.
    pub unreadable: u64,
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

/// The readable records at the start of `bytes`, and how many bytes follow
/// them.
pub(super) fn read_records(bytes: &[u8]) -> Recovered {
    let mut records = Vec::new();
    let mut at = 0;
    let mut expected: Option<u64> = None;
    while bytes.len() - at >= HEADER {
        let field = |from: usize, n: usize| &bytes[at + from..at + from + n];
        let len = u32::from_le_bytes(field(0, 4).try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(field(4, 4).try_into().unwrap_or_default());
        let seq_bytes = field(8, 8);
        let seq = u64::from_le_bytes(seq_bytes.try_into().unwrap_or_default());
        if len > MAX_RECORD || bytes.len() - at - HEADER < len {
            break;
        }
        let payload = &bytes[at + HEADER..at + HEADER + len];
        let mut check = crc32fast::Hasher::new();
        check.update(seq_bytes);
        check.update(payload);
        if check.finalize() != crc || expected.is_some_and(|e| e != seq) {
            break;
        }
        records.push((seq, payload.to_vec()));
        expected = seq.checked_add(1);
        at += HEADER + len;
    }
    Recovered {
        records,
        unreadable: (bytes.len() - at) as u64,
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
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let len = bytes.len() as u64;
        let wal = Self {
            file,
            path: path.to_owned(),
            len,
        };
        Ok((wal, read_records(&bytes)))
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes appended since the log was last emptied.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Appends `records` (made with [`put_record`]) and waits until they
    /// are on disk.
    pub(super) fn append_durably(&mut self, records: &[u8]) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(self.len))?;
        self.file.write_all(records)?;
        self.file.sync_data()?;
        self.len += records.len() as u64;
        Ok(())
    }

    /// Empties the log, once a durable commit holds everything in it. Not
    /// synced: should the emptying be lost in a crash, the old records are
    /// all at or below the sequence number the store recorded, and are
    /// skipped; records appended after it start at offset 0, so a stale
    /// tail behind them breaks the sequence and is not read.
    pub(super) fn clear(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.len = 0;
        Ok(())
    }

    /// [`Wal::clear`], then waits until the emptying is on disk.
    pub(super) fn clear_durably(&mut self) -> std::io::Result<()> {
        self.clear()?;
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
            let r = read_records(&whole[..whole.len() - cut]);
            assert_eq!(r.records.len(), 1, "cut {cut}");
            assert_eq!(r.unreadable as usize, whole.len() - cut - (HEADER + 5));
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
        wal.clear().unwrap();
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
