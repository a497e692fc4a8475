//! Backfills: one table read again in chunks while the stream goes on (a table added to
//! `source.tables`, or `driftless backfill --table T`), without ever letting an older read
//! overwrite a newer change (the DBLog watermark algorithm).
//!
//! For each chunk the capture session writes a low watermark into the WAL (a non-transactional
//! logical message), reads the next chunk of the table by primary key, and writes a high
//! watermark. Every change the stream carries between the two watermarks was committed while
//! the chunk was read: its key is dropped from the chunk, because the stream already carries
//! that change (newer than or as new as the read). At the high watermark the rest of the chunk
//! goes out as `r` events, in the stream's order, so a later change comes after it.
//!
//! This module is the pure part: the pending backfills, the window between the watermarks and
//! the chunk buffer. The session does the I/O (`session::Session::backfill_chunk`).
//!
//! Invariants:
//! - at most one chunk (`chunk_rows` rows) is buffered at a time;
//! - a table's progress (the last key read) is stored in the checkpoint only once every event
//!   up to the chunk's high watermark is acknowledged by Kafka, so a restart re-reads at most
//!   the chunks not yet acknowledged (re-sent `r` events, never a gap);
//! - a request for a table already being backfilled is ignored;
//! - a transaction whose commit record precedes the low watermark but that the read did not
//!   see yet (PostgreSQL writes the commit record before the transaction becomes visible; with
//!   synchronous replication the gap lasts a standby round trip) drops its keys as well,
//!   whether the stream carried it before or after the read: the chunk is read in one
//!   snapshot, and the xids of the table's changes streamed since the last read that did not
//!   see them (kept until a read sees them) are checked against it;
//! - a truncate of the table between the read and the high watermark drops the whole chunk;
//! - a change belongs to the running backfill by the schema and table its event names, and by
//!   nothing else: PostgreSQL sends a Relation message ahead of a table's next change after any
//!   invalidation of it (DDL, VACUUM, a reset of the server's caches), at any point of a window,
//!   so no cache that such a message empties may decide it.

use std::collections::HashSet;

use crate::checkpoint::BackfillProgress as Progress;
use crate::lsn::Lsn;

/// Prefix of the logical messages that delimit a chunk's window (never published).
pub(crate) const WATERMARK_PREFIX: &str = "driftless.watermark";
/// Prefix of the logical message `driftless backfill` writes to request one (never published).
pub(crate) const REQUEST_PREFIX: &str = "driftless.backfill";

/// One chunk read between the watermarks, waiting for the high one.
#[derive(Debug)]
pub(crate) struct Chunk<R> {
    /// Watermark id (`low:{id}` / `high:{id}`).
    pub id: u64,
    /// The rows read, each with its canonical key.
    pub rows: Vec<(Vec<u8>, R)>,
    /// The key text of the last row read (the next chunk starts after it).
    pub last_key: Option<Vec<String>>,
    /// Fewer rows than asked: the table is done after this chunk.
    pub last: bool,
    /// The snapshot the chunk was read in.
    pub snapshot: Snapshot,
}

/// Which transactions a chunk's read saw (`pg_current_snapshot()`, xids cut to 32 bits as the
/// WAL carries them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// Every xid before it had finished.
    pub xmin: u32,
    /// No xid from it on had finished.
    pub xmax: u32,
    /// In progress at the read, between the two.
    pub xip: HashSet<u32>,
}

impl Snapshot {
    /// Parses `xmin:xmax:xip,...` (the text of `pg_snapshot`).
    pub(crate) fn parse(text: &str) -> Option<Snapshot> {
        let mut parts = text.split(':');
        let xid = |s: &str| s.parse::<u64>().ok().map(|x| x as u32);
        let xmin = xid(parts.next()?)?;
        let xmax = xid(parts.next()?)?;
        let xip = match parts.next() {
            Some("") | None => HashSet::new(),
            Some(list) => list.split(',').map(xid).collect::<Option<_>>()?,
        };
        Some(Snapshot { xmin, xmax, xip })
    }

    /// Whether the read saw the effects of transaction `xid` (modulo-2^32 order).
    pub(crate) fn sees(&self, xid: u32) -> bool {
        let precedes = |a: u32, b: u32| (a.wrapping_sub(b) as i32) < 0;
        precedes(xid, self.xmin) || (precedes(xid, self.xmax) && !self.xip.contains(&xid))
    }
}

/// The window of the chunk in flight.
#[derive(Debug)]
enum Window<R> {
    /// No chunk in flight.
    Idle,
    /// The chunk was read; waiting for its low watermark in the stream. A transaction that
    /// committed before the low watermark but that the read did not see yet (its commit
    /// record written, not yet visible) drops its keys too.
    Read(Chunk<R>, HashSet<Vec<u8>>),
    /// The low watermark went by: changes to the table drop keys from the chunk.
    Open(Chunk<R>, HashSet<Vec<u8>>),
}

/// What the stream's watermark means for the session.
#[derive(Debug)]
pub(crate) enum AtWatermark<R> {
    /// Nothing to do (the low watermark, or one of an older session).
    Nothing,
    /// The high watermark: send these rows at `lsn`, then record progress once acknowledged.
    Send {
        /// The table.
        table: String,
        /// Rows still to send (the ones changed in the window are gone).
        rows: Vec<R>,
        /// The high watermark's position.
        lsn: Lsn,
        /// The table's last chunk.
        last: bool,
    },
}

/// The backfills of one capture session.
#[derive(Debug)]
pub(crate) struct Backfills<R> {
    /// Pending and running backfills, the first one running (as stored in the checkpoint).
    queue: Vec<Progress>,
    window: Window<R>,
    /// Where the running backfill reads next (ahead of the stored progress while chunks
    /// await their acknowledgement), and whether its last chunk was sent.
    reading: Option<(Progress, bool)>,
    /// Progress to store once the flushed LSN reaches the position (at most the chunks Kafka's
    /// in-flight window holds).
    acked_at: Vec<(Lsn, Progress, bool)>,
    /// Changes of the running table already streamed, by transactions that the read of the
    /// chunk in flight (if any) did not see: a later read that does not see them either drops
    /// their keys; one that sees them forgets them (every later read sees them too).
    unseen: Vec<(Vec<u8>, u32)>,
    next_id: u64,
}

impl<R> Backfills<R> {
    /// Resumes the backfills the checkpoint holds.
    pub(crate) fn new(stored: Vec<Progress>) -> Self {
        Backfills {
            queue: stored,
            window: Window::Idle,
            reading: None,
            acked_at: Vec::new(),
            unseen: Vec::new(),
            next_id: rand::random::<u32>() as u64,
        }
    }

    /// Requests a backfill of `table` (ignored if it is already queued). Returns true if
    /// queued now.
    pub(crate) fn request(&mut self, table: &str) -> bool {
        if self.queue.iter().any(|p| p.table == table) {
            return false;
        }
        self.queue.push(Progress {
            table: table.to_string(),
            after_key: None,
            rows: 0,
        });
        true
    }

    /// The backfills as the checkpoint stores them.
    pub(crate) fn stored(&self) -> &[Progress] {
        &self.queue
    }

    /// The table and start key of the next chunk to read, if one should be read now (none
    /// while a chunk is between its watermarks, or after the last chunk until Kafka
    /// acknowledged it).
    pub(crate) fn next_chunk(&mut self) -> Option<(u64, &Progress)> {
        if !matches!(self.window, Window::Idle) {
            return None;
        }
        let running = self.queue.first()?;
        if self
            .reading
            .as_ref()
            .is_none_or(|(p, _)| p.table != running.table)
        {
            self.reading = Some((running.clone(), false));
        }
        let (from, all_read) = self.reading.as_ref()?;
        if *all_read {
            return None;
        }
        self.next_id += 1;
        Some((self.next_id, from))
    }

    /// The chunk was read (after its low watermark was written). A change streamed before,
    /// by a transaction the read did not see, drops its key already.
    pub(crate) fn read(&mut self, chunk: Chunk<R>) {
        let mut changed = HashSet::new();
        self.unseen.retain(|(key, xid)| {
            let unseen = !chunk.snapshot.sees(*xid);
            if unseen {
                changed.insert(key.clone());
            }
            unseen
        });
        self.window = Window::Read(chunk, changed);
    }

    /// A watermark message went by in the stream at `lsn`.
    pub(crate) fn watermark(&mut self, content: &str, lsn: Lsn) -> AtWatermark<R> {
        let Some((kind, id)) = content.split_once(':') else {
            return AtWatermark::Nothing;
        };
        let Ok(id) = id.parse::<u64>() else {
            return AtWatermark::Nothing;
        };
        match (kind, std::mem::replace(&mut self.window, Window::Idle)) {
            ("low", Window::Read(chunk, changed)) if chunk.id == id => {
                self.window = Window::Open(chunk, changed);
                AtWatermark::Nothing
            }
            ("high", Window::Open(chunk, changed)) if chunk.id == id => {
                let Some((from, _)) = &self.reading else {
                    return AtWatermark::Nothing;
                };
                let table = from.table.clone();
                let rows: Vec<R> = chunk
                    .rows
                    .into_iter()
                    .filter(|(key, _)| !changed.contains(key))
                    .map(|(_, row)| row)
                    .collect();
                let progress = Progress {
                    table: table.clone(),
                    after_key: chunk.last_key.or_else(|| from.after_key.clone()),
                    rows: from.rows + rows.len() as u64,
                };
                self.reading = Some((progress.clone(), chunk.last));
                self.acked_at.push((lsn, progress, chunk.last));
                AtWatermark::Send {
                    table,
                    rows,
                    lsn,
                    last: chunk.last,
                }
            }
            (_, window) => {
                // Another session's watermark (or ours out of order): leave ours as it was.
                self.window = window;
                AtWatermark::Nothing
            }
        }
    }

    /// Whether the running backfill's table is `schema`.`table` (as a change event names it).
    pub(crate) fn runs(&self, schema: &str, table: &str) -> bool {
        self.queue.first().is_some_and(|running| {
            running
                .table
                .strip_prefix(schema)
                .and_then(|rest| rest.strip_prefix('.'))
                == Some(table)
        })
    }

    /// A change of `schema`.`table` with this canonical key, by transaction `xid`, went by in
    /// the stream.
    pub(crate) fn changed(&mut self, schema: &str, table: &str, key: Vec<u8>, xid: Option<u32>) {
        if !self.runs(schema, table) {
            return;
        }
        let unseen = match (&self.window, xid) {
            (_, None) => None,
            (Window::Read(chunk, _) | Window::Open(chunk, _), Some(x))
                if chunk.snapshot.sees(x) =>
            {
                None
            }
            (_, Some(x)) => Some(x),
        };
        if let Some(x) = unseen {
            self.unseen.push((key.clone(), x));
        }
        match &mut self.window {
            Window::Open(_, changed) => {
                changed.insert(key);
            }
            Window::Read(_, changed) if unseen.is_some() => {
                changed.insert(key);
            }
            _ => {}
        }
    }

    /// `schema`.`table` was truncated in the stream: inside the window every row of the chunk
    /// may be gone, so none of it is sent (the next chunk reads what is left).
    pub(crate) fn truncated(&mut self, schema: &str, table: &str) {
        if !self.runs(schema, table) {
            return;
        }
        if let Window::Open(chunk, _) | Window::Read(chunk, _) = &mut self.window {
            chunk.rows.clear();
        }
    }

    /// The table of the running backfill, if any.
    pub(crate) fn running(&self) -> Option<&str> {
        self.queue.first().map(|p| p.table.as_str())
    }

    /// Every event up to `flushed` is acknowledged: record the chunks' progress. Returns true
    /// when the stored backfills changed (the checkpoint is to be written).
    pub(crate) fn flushed(&mut self, flushed: Lsn) -> bool {
        let mut changed = false;
        while let Some((lsn, _, _)) = self.acked_at.first()
            && *lsn <= flushed
        {
            let (_, progress, last) = self.acked_at.remove(0);
            if let Some(running) = self.queue.first_mut()
                && running.table == progress.table
            {
                if last {
                    tracing::info!(table = %progress.table, rows = progress.rows,
                        "backfill complete and acknowledged by kafka");
                    self.queue.remove(0);
                    self.reading = None;
                    self.unseen.clear();
                } else {
                    *running = progress;
                }
                changed = true;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: u64, keys: &[&str], last: bool) -> Chunk<String> {
        Chunk {
            id,
            rows: keys
                .iter()
                .map(|k| (k.as_bytes().to_vec(), k.to_string()))
                .collect(),
            last_key: keys.last().map(|k| vec![k.to_string()]),
            last,
            snapshot: Snapshot::parse("100:105:102").unwrap(),
        }
    }

    #[test]
    fn a_row_changed_between_the_watermarks_is_left_to_the_stream() {
        let mut b = Backfills::new(Vec::new());
        assert!(b.request("public.t"));
        assert!(!b.request("public.t"), "a second request is ignored");
        let (id, p) = b.next_chunk().unwrap();
        assert_eq!((p.table.as_str(), p.after_key.clone()), ("public.t", None));
        b.read(chunk(id, &["1", "2", "3"], false));
        assert!(b.next_chunk().is_none(), "one chunk at a time");
        // A change before the low watermark does not drop the row (the read is newer).
        b.changed("public", "t", b"1".to_vec(), Some(99));
        assert!(matches!(
            b.watermark(&format!("low:{id}"), Lsn(10)),
            AtWatermark::Nothing
        ));
        b.changed("public", "t", b"2".to_vec(), Some(200));
        b.changed("public", "other", b"3".to_vec(), Some(200));
        let AtWatermark::Send {
            table, rows, lsn, ..
        } = b.watermark(&format!("high:{id}"), Lsn(20))
        else {
            panic!("the high watermark sends the chunk");
        };
        assert_eq!(
            (table.as_str(), rows, lsn),
            ("public.t", vec!["1".to_string(), "3".into()], Lsn(20))
        );
        // The next chunk is read at once; stored progress waits for the acknowledgement of
        // everything up to the high watermark.
        let (id, p) = b.next_chunk().unwrap();
        assert_eq!(p.after_key, Some(vec!["3".to_string()]));
        assert!(!b.flushed(Lsn(19)));
        assert_eq!(b.stored()[0].after_key, None);
        assert!(b.flushed(Lsn(20)));
        assert_eq!(b.stored()[0].after_key, Some(vec!["3".to_string()]));
        assert_eq!(b.stored()[0].rows, 2);
        // The last chunk ends the backfill once acknowledged.
        b.read(chunk(id, &["4"], true));
        b.watermark(&format!("low:{id}"), Lsn(30));
        b.watermark(&format!("high:{id}"), Lsn(40));
        assert!(b.next_chunk().is_none(), "everything is read");
        assert_eq!(b.running(), Some("public.t"));
        assert!(b.flushed(Lsn(40)));
        assert!(b.stored().is_empty());
        assert!(b.next_chunk().is_none());
    }

    #[test]
    fn a_commit_before_the_low_watermark_that_the_read_did_not_see_drops_the_row() {
        let mut b = Backfills::new(Vec::new());
        b.request("public.t");
        let (id, _) = b.next_chunk().unwrap();
        b.read(chunk(id, &["1", "2", "3", "4"], false));
        // Streamed before the low watermark: 101 and 104 were seen by the read (finished
        // before it), 102 was in progress, 105 began after it.
        b.changed("public", "t", b"1".to_vec(), Some(101));
        b.changed("public", "t", b"2".to_vec(), Some(102));
        b.changed("public", "t", b"3".to_vec(), Some(105));
        b.changed("public", "t", b"4".to_vec(), Some(104));
        b.watermark(&format!("low:{id}"), Lsn(10));
        let AtWatermark::Send { rows, .. } = b.watermark(&format!("high:{id}"), Lsn(20)) else {
            panic!("the high watermark closes the chunk");
        };
        assert_eq!(rows, ["1", "4"]);
    }

    #[test]
    fn a_change_is_matched_to_the_running_backfill_by_the_names_its_event_carries() {
        let mut b = Backfills::new(Vec::new());
        b.request("public.t");
        assert!(b.runs("public", "t"));
        let (id, _) = b.next_chunk().unwrap();
        b.read(chunk(id, &["1", "2", "3", "4", "5"], false));
        b.watermark(&format!("low:{id}"), Lsn(10));
        // Only the schema and table of the change decide; a Relation message before it (which
        // the session sees, not this window) changes nothing.
        b.changed("public", "t", b"1".to_vec(), Some(200));
        b.changed("public", "tt", b"2".to_vec(), Some(200));
        b.changed("publi", "c.t", b"3".to_vec(), Some(200));
        b.changed("other", "t", b"4".to_vec(), Some(200));
        b.changed("public", "t", b"5".to_vec(), Some(201));
        b.truncated("public", "tt");
        let AtWatermark::Send { rows, .. } = b.watermark(&format!("high:{id}"), Lsn(20)) else {
            panic!("the high watermark closes the chunk");
        };
        assert_eq!(rows, ["2", "3", "4"]);
        assert!(!b.runs("public", "tt") && !b.runs("", "public.t"));
    }

    #[test]
    fn a_change_streamed_before_the_read_by_a_transaction_it_did_not_see_drops_the_row() {
        let mut b = Backfills::new(Vec::new());
        b.request("public.t");
        // Streamed while no chunk was in flight: the read sees 101, not 102 (its commit
        // record was written, the transaction not yet visible).
        b.changed("public", "t", b"1".to_vec(), Some(101));
        b.changed("public", "t", b"2".to_vec(), Some(102));
        fn send(b: &mut Backfills<String>, keys: &[&str], snapshot: &str) -> Vec<String> {
            let (id, _) = b.next_chunk().unwrap();
            let mut c = chunk(id, keys, false);
            c.snapshot = Snapshot::parse(snapshot).unwrap();
            b.read(c);
            b.watermark(&format!("low:{id}"), Lsn(10));
            let AtWatermark::Send { rows, .. } = b.watermark(&format!("high:{id}"), Lsn(20)) else {
                panic!("the high watermark closes the chunk");
            };
            rows
        }
        assert_eq!(send(&mut b, &["1", "2", "3"], "100:105:102"), ["1", "3"]);
        // A later read that still does not see 102 drops the row again; one that sees it
        // sends it, and every read after forgets it.
        assert!(send(&mut b, &["2"], "102:106:102").is_empty());
        assert_eq!(send(&mut b, &["2"], "103:107:"), ["2"]);
        assert!(b.unseen.is_empty());
        // A change in a window by a transaction its read saw is not kept for the next read.
        let (id, _) = b.next_chunk().unwrap();
        b.read(chunk(id, &["5"], false));
        b.changed("public", "t", b"5".to_vec(), Some(101));
        b.changed("public", "t", b"6".to_vec(), Some(102));
        assert_eq!(b.unseen, [(b"6".to_vec(), 102)]);
    }

    #[test]
    fn snapshots_parse_and_order_xids_modulo_2_32() {
        let s = Snapshot::parse("4294967290:5:4294967295,3").unwrap();
        assert!(s.sees(4294967289) && s.sees(4294967291) && s.sees(2));
        assert!(!s.sees(4294967295) && !s.sees(3) && !s.sees(5) && !s.sees(6));
        assert_eq!(Snapshot::parse("7:7:").unwrap().xip.len(), 0);
        assert!(Snapshot::parse("x:1:").is_none());
    }

    #[test]
    fn a_truncate_between_the_watermarks_sends_nothing_of_the_chunk() {
        let mut b = Backfills::new(Vec::new());
        b.request("public.t");
        let (id, _) = b.next_chunk().unwrap();
        b.read(chunk(id, &["1", "2"], false));
        b.watermark(&format!("low:{id}"), Lsn(10));
        b.truncated("public", "other");
        b.truncated("public", "t");
        let AtWatermark::Send { rows, .. } = b.watermark(&format!("high:{id}"), Lsn(20)) else {
            panic!("the high watermark closes the chunk");
        };
        assert!(rows.is_empty());
        assert!(b.flushed(Lsn(20)));
        assert_eq!(b.stored()[0].after_key, Some(vec!["2".to_string()]));
    }

    #[test]
    fn watermarks_of_another_chunk_are_ignored_and_a_restart_rereads() {
        let mut b = Backfills::new(vec![Progress {
            table: "public.t".into(),
            after_key: Some(vec!["7".into()]),
            rows: 7,
        }]);
        let (id, p) = b.next_chunk().unwrap();
        assert_eq!(
            p.after_key,
            Some(vec!["7".to_string()]),
            "resumes after the stored key"
        );
        b.read(chunk(id, &["8"], false));
        assert!(matches!(
            b.watermark("low:999", Lsn(5)),
            AtWatermark::Nothing
        ));
        assert!(matches!(
            b.watermark(&format!("high:{id}"), Lsn(6)),
            AtWatermark::Nothing
        ));
        // The next session starts from what the checkpoint stored.
        let mut b: Backfills<String> = Backfills::new(b.stored().to_vec());
        let (_, p) = b.next_chunk().unwrap();
        assert_eq!(p.after_key, Some(vec!["7".to_string()]));
    }
}
