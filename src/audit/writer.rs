//! The handle callers submit through, and the single thread that owns the log file.
//!
//! Durable mode: callers never touch the file: `submit` formats nothing and takes no lock
//! beyond the channel's, so the request path cannot be slowed by the disk except through a full
//! queue. The writer thread blocks for the first message, drains up to `max_batch` more, formats
//! them into one buffer, writes it with one `write_all`, syncs it once and then answers every
//! receipt.
//!
//! Buffered mode has no `fdatasync` to share, so there is nothing to batch for: `submit` formats
//! and writes the record itself, under the writer's lock, and returns a receipt that is already
//! answered. A `write` to the page cache costs less than the two thread wake-ups a hand-off
//! takes (to the writer and back), and those were most of what a decision's record cost.

use crate::sync::lock;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::audit::record::{self, GENESIS, MAX_BATCH_BYTES};
use crate::audit::{AuditConfig, AuditError, Durability, Entry, Recovery, TornTail};

/// A handle to an open audit log. Clones share one writer thread.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Handle>,
}

/// A counter snapshot, for metrics and readiness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Records submitted and not yet taken into a batch by the writer.
    pub queue_depth: u64,
    /// Records written (and synced, in durable mode) and acknowledged.
    pub records_written: u64,
    /// Batches written successfully.
    pub batches: u64,
    /// Duration of the last `fdatasync`, in microseconds.
    pub last_fsync_us: u64,
    /// Batches that failed; their records were rejected.
    pub failures: u64,
    /// Submissions refused because the queue was full.
    pub queue_full: u64,
    /// The last batch failed and no batch has succeeded since.
    pub failed: bool,
}

/// The promise of one record: resolves to its `seq` once it is durable (see
/// [`crate::audit::Durability`]), or to the reason it was not written.
#[derive(Debug)]
pub struct Receipt {
    rx: oneshot::Receiver<Result<u64, AuditError>>,
}

/// What every clone of an [`AuditLog`] shares.
struct Handle {
    /// Unbounded, so that no slot is allocated before it is needed (a bounded channel of the
    /// default 65 536 slots was 2.6 MB of resident memory in every process with a log);
    /// `capacity` bounds it through `State::queued` instead.
    tx: Sender<Msg>,
    capacity: usize,
    state: Arc<State>,
    closing: AtomicBool,
    thread: Mutex<Option<JoinHandle<Result<(), AuditError>>>>,
    /// The log's state and file, shared with the writer thread.
    writer: Arc<Mutex<Writer>>,
    /// Buffered: `submit` writes on the caller's thread.
    inline: bool,
}

/// Shared by the handles and the writer thread. Kept apart from `Handle` so that the thread does
/// not hold a sender: when the last handle goes, the channel disconnects and the thread ends.
#[derive(Default)]
struct State {
    queue_depth: AtomicU64,
    /// Appends in the channel (or being taken from it): counted up before a send, down when
    /// the writer takes one, so it is never below the channel's length.
    queued: AtomicUsize,
    records: AtomicU64,
    batches: AtomicU64,
    last_fsync_us: AtomicU64,
    failures: AtomicU64,
    queue_full: AtomicU64,
    failed: AtomicBool,
    reason: Mutex<Option<String>>,
}

enum Msg {
    Append(Job),
    Close,
}

struct Job {
    entry: Entry,
    reply: oneshot::Sender<Result<u64, AuditError>>,
}

/// The writer thread's state. `seq`, `prev` and `good_len` describe the last acknowledged
/// record and move only when a batch is durable.
struct Writer {
    path: PathBuf,
    durability: Durability,
    max_batch: usize,
    rotate_bytes: Option<u64>,
    state: Arc<State>,
    /// `None` after a failure: the next batch reopens the file first.
    file: Option<Active>,
    /// Offset just past the last acknowledged record in the active file.
    good_len: u64,
    seq: u64,
    prev: String,
    next_segment: u64,
    batch: Batch,
    hooks: TestHooks,
    /// Set by `finish`: nothing more is written.
    closed: bool,
}

/// The open, locked active file and who it is on disk.
struct Active {
    file: File,
    id: Option<FileId>,
}

/// Device and inode, to notice that the path was replaced under an open handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

/// Records formatted but not yet durable; `seq` and `prev` are those of its last record.
struct Batch {
    buf: Vec<u8>,
    replies: Vec<(u64, oneshot::Sender<Result<u64, AuditError>>)>,
    seq: u64,
    prev: String,
}

/// Where the chain stands when the log is opened.
struct Resume {
    active: Active,
    good_len: u64,
    seq: u64,
    prev: String,
    next_segment: u64,
    torn: Option<TornTail>,
}

#[derive(Debug, Clone, Copy)]
enum Create {
    No,
    IfMissing,
    New,
}

/// Test-only controls of the writer thread; empty and free outside `cfg(test)`.
#[derive(Default)]
pub(crate) struct TestHooks {
    /// Before each batch: report on the first channel, then wait on the second.
    #[cfg(test)]
    pause: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
    /// Fail this many writes, after writing half of the batch.
    #[cfg(test)]
    fail_writes: Arc<AtomicU64>,
    /// Fail this many `fdatasync` calls.
    #[cfg(test)]
    fail_syncs: Arc<AtomicU64>,
}

// === impl AuditLog ===

impl AuditLog {
    /// Opens (or creates) the log, repairs a torn tail, and starts the writer thread.
    ///
    /// Fails with [`AuditError::Locked`] if another writer has the file open.
    pub fn open(cfg: AuditConfig) -> Result<(AuditLog, Recovery), AuditError> {
        Self::start(cfg, TestHooks::default())
    }

    #[cfg(test)]
    pub(crate) fn open_with_hooks(
        cfg: AuditConfig,
        hooks: TestHooks,
    ) -> Result<(AuditLog, Recovery), AuditError> {
        Self::start(cfg, hooks)
    }

    fn start(cfg: AuditConfig, hooks: TestHooks) -> Result<(AuditLog, Recovery), AuditError> {
        cfg.validate()?;
        let resume = resume(&cfg.path)?;
        let recovery = Recovery {
            last_seq: resume.seq,
            truncated: resume.torn.clone(),
        };
        let state = Arc::new(State::default());
        let (tx, rx) = mpsc::channel();
        let writer = Arc::new(Mutex::new(Writer::new(
            &cfg,
            resume,
            Arc::clone(&state),
            hooks,
        )));
        let shared = Arc::clone(&writer);
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || Writer::run(&shared, rx))
            .map_err(AuditError::io("start the writer thread for", &cfg.path))?;
        let inner = Handle {
            tx,
            capacity: cfg.queue_capacity,
            state,
            closing: AtomicBool::new(false),
            thread: Mutex::new(Some(thread)),
            writer,
            inline: cfg.durability == Durability::Buffered,
        };
        Ok((
            AuditLog {
                inner: Arc::new(inner),
            },
            recovery,
        ))
    }

    /// Queues `entry` without blocking. The record is written unless the receipt says otherwise.
    ///
    /// Fails with [`AuditError::QueueFull`] when the queue is full, with
    /// [`AuditError::Unavailable`] if the writer thread is gone, and with [`AuditError::Closed`]
    /// after [`AuditLog::close`]. While the writer is in the failed state the entry is still
    /// queued: the writer retries the file for it, and its receipt fails fast if that fails.
    pub fn submit(&self, entry: Entry) -> Result<Receipt, AuditError> {
        let (reply, rx) = oneshot::channel();
        let state = &self.inner.state;
        if self.inner.inline {
            let mut writer = lock(&self.inner.writer);
            if writer.closed || self.inner.closing.load(Ordering::SeqCst) {
                return Err(AuditError::Closed);
            }
            writer.hooks.before_batch();
            state.queue_depth.fetch_add(1, Ordering::Relaxed);
            writer.stage(Job { entry, reply });
            writer.commit();
            return Ok(Receipt { rx });
        }
        // Count before sending so the writer's decrement can never run first.
        state.queue_depth.fetch_add(1, Ordering::Relaxed);
        if state.queued.fetch_add(1, Ordering::AcqRel) >= self.inner.capacity {
            state.queued.fetch_sub(1, Ordering::AcqRel);
            state.queue_depth.fetch_sub(1, Ordering::Relaxed);
            state.queue_full.fetch_add(1, Ordering::Relaxed);
            return Err(AuditError::QueueFull);
        }
        match self.inner.tx.send(Msg::Append(Job { entry, reply })) {
            Ok(()) => Ok(Receipt { rx }),
            Err(_) => {
                state.queued.fetch_sub(1, Ordering::AcqRel);
                state.queue_depth.fetch_sub(1, Ordering::Relaxed);
                Err(self.inner.gone())
            }
        }
    }

    /// The current counters.
    pub fn stats(&self) -> AuditStats {
        let s = &self.inner.state;
        AuditStats {
            queue_depth: s.queue_depth.load(Ordering::Relaxed),
            records_written: s.records.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            last_fsync_us: s.last_fsync_us.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            queue_full: s.queue_full.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
        }
    }

    /// Why the last batch failed, while the writer is in the failed state.
    pub fn failure(&self) -> Option<String> {
        lock(&self.inner.state.reason).clone()
    }

    /// Writes everything queued before this call, syncs, and stops the writer thread.
    ///
    /// A close request is queued even when the queue is full (it is not a record). Other clones
    /// of this handle get [`AuditError::Closed`] afterwards; records they queue after this call
    /// are refused with it.
    pub fn close(self) -> Result<(), AuditError> {
        let inner = &self.inner;
        inner.closing.store(true, Ordering::SeqCst);
        // Fails only if the thread is gone already; joining it says why.
        let _ = inner.tx.send(Msg::Close);
        let Some(thread) = lock(&inner.thread).take() else {
            return Err(AuditError::Closed);
        };
        thread.join().unwrap_or_else(|_| {
            Err(AuditError::Unavailable {
                reason: "the audit writer thread panicked".into(),
            })
        })
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

// === impl Handle ===

impl Handle {
    fn gone(&self) -> AuditError {
        if self.closing.load(Ordering::SeqCst) {
            AuditError::Closed
        } else {
            AuditError::Unavailable {
                reason: "the audit writer thread has stopped".into(),
            }
        }
    }
}

// === impl Receipt ===

impl Receipt {
    /// Blocks the calling thread until the record is durable or has failed.
    ///
    /// # Panics
    ///
    /// Panics (inside tokio) if called from an asynchronous context; use
    /// [`Receipt::durable`] there.
    pub fn wait(self) -> Result<u64, AuditError> {
        self.rx.blocking_recv().unwrap_or_else(|_| Err(stopped()))
    }

    /// The outcome if it is already known, without waiting.
    pub fn try_durable(&mut self) -> Option<Result<u64, AuditError>> {
        match self.rx.try_recv() {
            Ok(r) => Some(r),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(stopped())),
        }
    }

    /// Waits until the record is durable or has failed.
    pub async fn durable(self) -> Result<u64, AuditError> {
        self.rx.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> AuditError {
    AuditError::Unavailable {
        reason: "the audit writer stopped before writing the record".into(),
    }
}

// === impl Writer ===

impl Writer {
    fn new(cfg: &AuditConfig, resume: Resume, state: Arc<State>, hooks: TestHooks) -> Self {
        Writer {
            path: cfg.path.clone(),
            durability: cfg.durability,
            max_batch: cfg.max_batch,
            rotate_bytes: cfg.rotate_bytes,
            state,
            file: Some(resume.active),
            good_len: resume.good_len,
            batch: Batch {
                buf: Vec::new(),
                replies: Vec::new(),
                seq: resume.seq,
                prev: resume.prev.clone(),
            },
            seq: resume.seq,
            prev: resume.prev,
            next_segment: resume.next_segment,
            hooks,
            closed: false,
        }
    }

    /// The thread's body. Returns when closed or when every handle is gone.
    fn run(writer: &Mutex<Writer>, rx: Receiver<Msg>) -> Result<(), AuditError> {
        while let Ok(first) = rx.recv() {
            let mut w = lock(writer);
            w.taken(&first);
            w.hooks.before_batch();
            let close = w.collect(first, &rx);
            w.commit();
            if close {
                w.refuse_rest(&rx);
                return w.finish();
            }
        }
        lock(writer).finish()
    }

    /// Stages `first` and whatever else is queued, up to the batch limits. Returns whether a
    /// close request was reached.
    fn collect(&mut self, first: Msg, rx: &Receiver<Msg>) -> bool {
        let mut msg = first;
        loop {
            match msg {
                Msg::Close => return true,
                Msg::Append(job) => self.stage(job),
            }
            if self.batch.replies.len() >= self.max_batch || self.batch.buf.len() >= MAX_BATCH_BYTES
            {
                return false;
            }
            match rx.try_recv() {
                Ok(next) => {
                    self.taken(&next);
                    msg = next;
                }
                Err(_) => return false,
            }
        }
    }

    /// `msg` has left the channel: it no longer counts against the queue's capacity.
    fn taken(&self, msg: &Msg) {
        if matches!(msg, Msg::Append(_)) {
            self.state.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn stage(&mut self, job: Job) {
        self.state.queue_depth.fetch_sub(1, Ordering::Relaxed);
        let Some(seq) = self.batch.seq.checked_add(1) else {
            let reason = "the sequence number space is exhausted".to_owned();
            let _ = job.reply.send(Err(AuditError::Unavailable { reason }));
            return;
        };
        let time = record::format_time(Utc::now());
        let hash = record::append_line(
            &mut self.batch.buf,
            seq,
            &time,
            &self.batch.prev,
            &job.entry,
        );
        self.batch.seq = seq;
        self.batch.prev = hash;
        self.batch.replies.push((seq, job.reply));
    }

    /// Makes the staged batch durable and answers its receipts, or fails all of them.
    fn commit(&mut self) {
        if !self.batch.replies.is_empty() {
            match self.write_batch() {
                Ok(()) => self.acknowledge(),
                Err(err) => self.reject(&err),
            }
        }
        self.batch.buf.clear();
        self.batch.replies.clear();
        self.batch.seq = self.seq;
        self.batch.prev.clone_from(&self.prev);
    }

    fn write_batch(&mut self) -> Result<(), AuditError> {
        if self.file.is_none() {
            self.reopen()?;
        }
        let Some(active) = self.file.as_mut() else {
            return Err(AuditError::Unavailable {
                reason: "no audit file is open".into(),
            });
        };
        let write = AuditError::io("write", &self.path);
        self.hooks
            .write_fault(&mut active.file, &self.batch.buf)
            .map_err(write)?;
        let write = AuditError::io("write", &self.path);
        active.file.write_all(&self.batch.buf).map_err(write)?;
        if self.durability == Durability::Durable {
            let started = Instant::now();
            let sync = AuditError::io("fdatasync", &self.path);
            self.hooks.sync_fault().map_err(sync)?;
            let sync = AuditError::io("fdatasync", &self.path);
            active.file.sync_data().map_err(sync)?;
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.state.last_fsync_us.store(micros, Ordering::Relaxed);
        }
        // Bytes written to a file that was renamed or unlinked are not in the log: check that
        // the path still names our file before acknowledging anything.
        check_identity(&self.path, active.id)
    }

    fn acknowledge(&mut self) {
        let count = self.batch.replies.len() as u64;
        self.seq = self.batch.seq;
        self.prev.clone_from(&self.batch.prev);
        self.good_len += self.batch.buf.len() as u64;
        self.state.records.fetch_add(count, Ordering::Relaxed);
        self.state.batches.fetch_add(1, Ordering::Relaxed);
        if self.state.failed.swap(false, Ordering::SeqCst) {
            *lock(&self.state.reason) = None;
            info!(audit.path = %self.path.display(), audit.seq = self.seq, "audit log writable again");
        }
        for (seq, reply) in self.batch.replies.drain(..) {
            // A dropped receipt only means nobody waits; the record is written all the same.
            let _ = reply.send(Ok(seq));
        }
        self.rotate_if_needed();
    }

    fn reject(&mut self, err: &AuditError) {
        let reason = err.to_string();
        self.abandon_file();
        self.state.failures.fetch_add(1, Ordering::Relaxed);
        self.mark_failed(&reason);
        for (_, reply) in self.batch.replies.drain(..) {
            let reason = reason.clone();
            let _ = reply.send(Err(AuditError::Unavailable { reason }));
        }
    }

    fn mark_failed(&self, reason: &str) {
        let was_failed = self.state.failed.swap(true, Ordering::SeqCst);
        *lock(&self.state.reason) = Some(reason.to_owned());
        // One warning per outage; every failed batch of the same outage is only a debug event.
        if was_failed {
            debug!(audit.path = %self.path.display(), error = %reason, "audit batch failed again");
        } else {
            warn!(audit.path = %self.path.display(), error = %reason, "audit log unavailable; rejecting records");
        }
    }

    /// Drops the file after a failure, first cutting off whatever part of the failed batch
    /// reached it. The open handle may be the only way to reach that file (it may have been
    /// renamed), so this is done before reopening by name.
    fn abandon_file(&mut self) {
        let Some(active) = self.file.take() else {
            return;
        };
        let cut = active
            .file
            .set_len(self.good_len)
            .and_then(|()| active.file.sync_data());
        if let Err(e) = cut {
            warn!(audit.path = %self.path.display(), error = %e, "cannot truncate the failed batch; the next open will");
        }
    }

    /// Opens the file again after a failure and checks that it still ends with the last
    /// acknowledged record, so nothing acknowledged is lost and no `seq` is reused.
    fn reopen(&mut self) -> Result<(), AuditError> {
        // A missing file is only expected right after a rotation; otherwise it was deleted and
        // silently starting a new one would hide that.
        let create = if self.good_len == 0 {
            Create::IfMissing
        } else {
            Create::No
        };
        let file = open_locked(&self.path, create)?;
        if self.good_len == 0 {
            sync_dir(&self.path)?;
        }
        let len = file
            .metadata()
            .map_err(AuditError::io("stat", &self.path))?
            .len();
        self.check_resume_point(&file, len)?;
        if len > self.good_len {
            // Leftovers of a failed batch whose truncation did not get through.
            file.set_len(self.good_len)
                .and_then(|()| file.sync_data())
                .map_err(AuditError::io("truncate", &self.path))?;
        }
        (&file)
            .seek(SeekFrom::Start(self.good_len))
            .map_err(AuditError::io("seek", &self.path))?;
        self.file = Some(Active::new(file, &self.path)?);
        info!(audit.path = %self.path.display(), audit.seq = self.seq, "audit log reopened");
        Ok(())
    }

    fn check_resume_point(&self, file: &File, len: u64) -> Result<(), AuditError> {
        let changed = |what: String| AuditError::Unavailable {
            reason: format!(
                "{} {what}; it was replaced or rewritten while the writer was failing",
                self.path.display()
            ),
        };
        if len < self.good_len {
            return Err(changed(format!(
                "is {len} bytes, shorter than the {} bytes acknowledged",
                self.good_len
            )));
        }
        if self.good_len == 0 {
            return match len {
                0 => Ok(()),
                _ => Err(changed("holds bytes the writer did not acknowledge".into())),
            };
        }
        let scan = record::scan_tail(file, self.good_len, &self.path)?;
        let intact = scan.good_end == self.good_len
            && scan
                .last
                .is_some_and(|rec| rec.seq == self.seq && rec.hash == self.prev);
        if intact {
            Ok(())
        } else {
            Err(changed(format!(
                "no longer ends with the last acknowledged record (seq {})",
                self.seq
            )))
        }
    }

    fn rotate_if_needed(&mut self) {
        let Some(limit) = self.rotate_bytes else {
            return;
        };
        if self.good_len < limit || self.file.is_none() {
            return;
        }
        if let Err(err) = self.rotate() {
            warn!(audit.path = %self.path.display(), error = %err, "audit log rotation failed");
            // Without an active file the next batch must reopen; until then we are failed.
            if self.file.is_none() {
                self.mark_failed(&err.to_string());
            }
        }
    }

    /// Renames the active file to the next segment and starts an empty one. The old handle
    /// keeps its lock until the new file is locked, so no other writer can slip in between.
    fn rotate(&mut self) -> Result<(), AuditError> {
        if let Some(active) = &self.file
            && self.durability == Durability::Buffered
        {
            // A segment is sealed: it must be complete on disk before it is renamed.
            active
                .file
                .sync_data()
                .map_err(AuditError::io("fdatasync", &self.path))?;
        }
        let segment = record::segment_path(&self.path, self.next_segment);
        if fs::symlink_metadata(&segment).is_ok() {
            return Err(AuditError::Unavailable {
                reason: format!("{} already exists; not overwriting it", segment.display()),
            });
        }
        fs::rename(&self.path, &segment).map_err(AuditError::io("rename", &self.path))?;
        self.next_segment += 1;
        let _old = self.file.take();
        self.good_len = 0;
        sync_dir(&self.path)?;
        let file = open_locked(&self.path, Create::New)?;
        sync_dir(&self.path)?;
        self.file = Some(Active::new(file, &self.path)?);
        info!(audit.path = %self.path.display(), audit.segment = %segment.display(), audit.seq = self.seq, "audit log rotated");
        Ok(())
    }

    /// After a close request: refuse what was queued behind it.
    fn refuse_rest(&self, rx: &Receiver<Msg>) {
        while let Ok(msg) = rx.try_recv() {
            if let Msg::Append(job) = msg {
                self.state.queued.fetch_sub(1, Ordering::AcqRel);
                self.state.queue_depth.fetch_sub(1, Ordering::Relaxed);
                let _ = job.reply.send(Err(AuditError::Closed));
            }
        }
    }

    fn finish(&mut self) -> Result<(), AuditError> {
        self.closed = true;
        // Durable batches are synced already; buffered ones get their sync now.
        if let Some(active) = &self.file
            && self.durability == Durability::Buffered
        {
            active
                .file
                .sync_data()
                .map_err(AuditError::io("fdatasync", &self.path))?;
        }
        Ok(())
    }
}

// === impl Active ===

impl Active {
    fn new(file: File, path: &Path) -> Result<Self, AuditError> {
        let meta = file.metadata().map_err(AuditError::io("stat", path))?;
        Ok(Active {
            file,
            id: file_id(&meta),
        })
    }
}

#[cfg(unix)]
fn file_id(meta: &fs::Metadata) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    Some(FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

#[cfg(not(unix))]
fn file_id(_meta: &fs::Metadata) -> Option<FileId> {
    None
}

fn check_identity(path: &Path, id: Option<FileId>) -> Result<(), AuditError> {
    let meta = fs::metadata(path).map_err(AuditError::io("stat", path))?;
    if file_id(&meta) == id {
        Ok(())
    } else {
        Err(AuditError::Unavailable {
            reason: format!("{} was replaced by another file", path.display()),
        })
    }
}

// === opening ===

fn open_locked(path: &Path, create: Create) -> Result<File, AuditError> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    match create {
        Create::No => {}
        Create::IfMissing => {
            opts.create(true).truncate(false);
        }
        Create::New => {
            opts.create_new(true);
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let file = opts.open(path).map_err(AuditError::io("open", path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(AuditError::Locked {
            path: path.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(AuditError::io("lock", path)(e)),
    }
}

/// Makes directory entries (a new or renamed file) durable.
fn sync_dir(path: &Path) -> Result<(), AuditError> {
    let (dir, _) = record::split_path(path)?;
    if cfg!(unix) {
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(AuditError::io("fsync directory", &dir))?;
    }
    Ok(())
}

/// Locks the active file and finds where the chain stands, cutting off a torn tail.
fn resume(path: &Path) -> Result<Resume, AuditError> {
    let file = open_locked(path, Create::IfMissing)?;
    // A new file's directory entry must be durable before anything in it is acknowledged.
    sync_dir(path)?;
    let len = file.metadata().map_err(AuditError::io("stat", path))?.len();
    let scan = record::scan_tail(&file, len, path)?;
    let torn = if scan.good_end < len {
        Some(cut_torn_tail(&file, path, &scan, len)?)
    } else {
        None
    };
    let segments = record::segment_paths(path)?;
    let next_segment = segments.last().map_or(1, |(n, _)| n + 1);
    let (seq, prev) = match (scan.last, segments.last()) {
        (Some(rec), _) => (rec.seq, rec.hash),
        (None, Some((_, newest))) => last_record_of(newest)?,
        (None, None) => (0, GENESIS.to_owned()),
    };
    (&file)
        .seek(SeekFrom::Start(scan.good_end))
        .map_err(AuditError::io("seek", path))?;
    Ok(Resume {
        active: Active::new(file, path)?,
        good_len: scan.good_end,
        seq,
        prev,
        next_segment,
        torn,
    })
}

/// The last record of a sealed segment, which must end cleanly.
fn last_record_of(segment: &Path) -> Result<(u64, String), AuditError> {
    let file = File::open(segment).map_err(AuditError::io("open", segment))?;
    let len = file
        .metadata()
        .map_err(AuditError::io("stat", segment))?
        .len();
    let scan = record::scan_tail(&file, len, segment)?;
    match (scan.last, scan.reason) {
        (Some(rec), None) => Ok((rec.seq, rec.hash)),
        (_, reason) => Err(AuditError::Corrupt {
            file: segment.to_path_buf(),
            line: 0,
            reason: reason.unwrap_or_else(|| "rotated segment holds no record".into()),
        }),
    }
}

fn cut_torn_tail(
    file: &File,
    path: &Path,
    scan: &record::TailScan,
    len: u64,
) -> Result<TornTail, AuditError> {
    let offset = scan.good_end;
    let bytes = len - offset;
    let reason = scan
        .reason
        .clone()
        .unwrap_or_else(|| "unexpected bytes".into());
    let saved_to = match save_torn(file, path, offset, bytes) {
        Ok(copy) => Some(copy),
        Err(e) => {
            warn!(audit.path = %path.display(), error = %e, "cannot keep a copy of the torn tail");
            None
        }
    };
    warn!(
        audit.path = %path.display(), audit.offset = offset, audit.bytes = bytes,
        audit.saved_to = ?saved_to, reason = %reason,
        "audit log has a torn tail; truncating it"
    );
    file.set_len(offset)
        .and_then(|()| file.sync_data())
        .map_err(AuditError::io("truncate", path))?;
    Ok(TornTail {
        offset,
        bytes,
        reason,
        saved_to,
    })
}

/// Keeps the bytes about to be cut off: after a crash they are garbage, but if someone edited
/// the last record they are evidence.
fn save_torn(file: &File, path: &Path, offset: u64, bytes: u64) -> Result<PathBuf, AuditError> {
    // The scan found `offset` within the last MAX_TAIL_SCAN bytes, so this read is bounded.
    let data = record::read_range(file, offset, bytes, path)?;
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".torn-{offset}-{secs}"));
    let copy = PathBuf::from(name);
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut out = opts.open(&copy).map_err(AuditError::io("create", &copy))?;
    out.write_all(&data)
        .and_then(|()| out.sync_all())
        .map_err(AuditError::io("write", &copy))?;
    sync_dir(&copy)?;
    Ok(copy)
}

// === impl TestHooks ===

impl TestHooks {
    fn before_batch(&self) {
        #[cfg(test)]
        if let Some((took, release)) = &self.pause
            && took.send(()).is_ok()
        {
            let _ = release.recv();
        }
    }

    #[cfg_attr(not(test), allow(unused_variables, clippy::unused_self))]
    fn write_fault(&self, file: &mut File, buf: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if take_one(&self.fail_writes) {
            file.write_all(&buf[..buf.len() / 2])?;
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        Ok(())
    }

    #[cfg_attr(not(test), allow(clippy::unused_self))]
    fn sync_fault(&self) -> io::Result<()> {
        #[cfg(test)]
        if take_one(&self.fail_syncs) {
            return Err(io::Error::other("injected fdatasync failure"));
        }
        Ok(())
    }
}

#[cfg(test)]
fn take_one(counter: &AtomicU64) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Poll, Wake};

    use serde_json::json;

    use super::*;
    use crate::audit::{ProblemKind, verify};

    fn entry(n: u64) -> Entry {
        Entry::from_serialize(&json!({"type": "decision", "n": n, "pad": "x".repeat(40)})).unwrap()
    }

    fn open(path: &Path) -> (AuditLog, Recovery) {
        AuditLog::open(AuditConfig::new(path)).unwrap()
    }

    fn append(log: &AuditLog, n: u64) -> Vec<u64> {
        (0..n)
            .map(|i| log.submit(entry(i)).unwrap().wait().unwrap())
            .collect()
    }

    fn assert_verifies(path: &Path, records: u64) {
        let report = verify(path).unwrap();
        assert!(report.is_ok(), "{:?}", report.problem);
        assert_eq!(report.records, records);
        assert_eq!(report.last_seq, records);
    }

    #[expect(clippy::panic, reason = "a test helper that fails the test")]
    fn unavailable(result: Result<u64, AuditError>) -> String {
        match result {
            Err(AuditError::Unavailable { reason }) => reason,
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    /// Runs a future to completion on this thread; enough for a oneshot receiver.
    fn block_on<F: Future>(fut: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Arc::new(Unpark(std::thread::current())).into();
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        loop {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::park();
        }
    }

    #[test]
    fn appends_verify_and_reopen_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (log, recovery) = open(&path);
        assert_eq!(
            recovery,
            Recovery {
                last_seq: 0,
                truncated: None
            }
        );
        assert_eq!(append(&log, 10), (1..=10).collect::<Vec<_>>());
        let stats = log.stats();
        assert_eq!(
            (stats.records_written, stats.queue_depth, stats.failed),
            (10, 0, false)
        );
        assert_eq!(stats.batches, 10);
        log.close().unwrap();
        assert_verifies(&path, 10);

        let (log, recovery) = open(&path);
        assert_eq!(
            recovery,
            Recovery {
                last_seq: 10,
                truncated: None
            }
        );
        assert_eq!(append(&log, 5), (11..=15).collect::<Vec<_>>());
        log.close().unwrap();
        assert_verifies(&path, 15);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn durable_resolves_in_async_code_and_buffered_mode_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut cfg = AuditConfig::new(&path);
        cfg.durability = Durability::Buffered;
        let (log, _) = AuditLog::open(cfg).unwrap();
        let receipts: Vec<Receipt> = (0..3).map(|i| log.submit(entry(i)).unwrap()).collect();
        let seqs = block_on(async {
            let mut seqs = Vec::new();
            for r in receipts {
                seqs.push(r.durable().await.unwrap());
            }
            seqs
        });
        assert_eq!(seqs, vec![1, 2, 3]);
        log.close().unwrap();
        assert_verifies(&path, 3);
    }

    #[test]
    fn torn_tail_without_newline_is_cut_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (log, _) = open(&path);
        append(&log, 3);
        log.close().unwrap();
        let good = fs::metadata(&path).unwrap().len();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"\x00\x00garbage without newline").unwrap();
        drop(file);
        assert_eq!(
            verify(&path).unwrap().problem.unwrap().kind,
            ProblemKind::TornTail
        );

        let (log, recovery) = open(&path);
        let torn = recovery.truncated.unwrap();
        assert_eq!(recovery.last_seq, 3);
        assert_eq!((torn.offset, torn.bytes), (good, 25));
        assert!(
            torn.reason.contains("no trailing newline"),
            "{}",
            torn.reason
        );
        let saved = torn.saved_to.unwrap();
        assert_eq!(
            fs::read(&saved).unwrap(),
            b"\x00\x00garbage without newline"
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), good);
        assert_eq!(append(&log, 2), vec![4, 5]);
        log.close().unwrap();
        assert_verifies(&path, 5);
    }

    #[test]
    fn half_written_record_is_cut_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (log, _) = open(&path);
        append(&log, 4);
        log.close().unwrap();
        let bytes = fs::read(&path).unwrap();
        let last_start = bytes[..bytes.len() - 1]
            .iter()
            .rposition(|b| *b == b'\n')
            .unwrap()
            + 1;
        let half = last_start + (bytes.len() - last_start) / 2;
        fs::write(&path, &bytes[..half]).unwrap();

        let (log, recovery) = open(&path);
        assert_eq!(recovery.last_seq, 3);
        assert_eq!(recovery.truncated.unwrap().offset, last_start as u64);
        assert_eq!(append(&log, 1), vec![4]);
        log.close().unwrap();
        assert_verifies(&path, 4);
    }

    #[test]
    fn complete_but_invalid_last_lines_are_cut_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (log, _) = open(&path);
        append(&log, 3);
        log.close().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let good = bytes.len();
        // An altered last record followed by a line of zeros, as a power loss can leave.
        let last_start = bytes[..good - 1].iter().rposition(|b| *b == b'\n').unwrap() + 1;
        let mut altered = bytes[last_start..].to_vec();
        let pos = altered.windows(8).position(|w| w == b"decision").unwrap();
        altered[pos] = b'X';
        bytes.truncate(last_start);
        bytes.extend_from_slice(&altered);
        bytes.extend_from_slice(&[0; 100]);
        bytes.push(b'\n');
        fs::write(&path, &bytes).unwrap();

        let (log, recovery) = open(&path);
        assert_eq!(recovery.last_seq, 2);
        let torn = recovery.truncated.unwrap();
        assert_eq!(torn.offset, last_start as u64);
        let saved = fs::read(torn.saved_to.unwrap()).unwrap();
        assert_eq!(saved, bytes[last_start..]);
        assert_eq!(append(&log, 1), vec![3]);
        log.close().unwrap();
        assert_verifies(&path, 3);
    }

    #[test]
    fn refuses_to_truncate_beyond_the_tail_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let garbage = vec![b'x'; record::MAX_TAIL_SCAN as usize + 10];
        fs::write(&path, &garbage).unwrap();
        let err = AuditLog::open(AuditConfig::new(&path)).unwrap_err();
        assert!(matches!(err, AuditError::Corrupt { .. }), "{err}");
        assert_eq!(fs::metadata(&path).unwrap().len(), garbage.len() as u64);
    }

    #[test]
    fn rotation_continues_the_chain_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut cfg = AuditConfig::new(&path);
        cfg.rotate_bytes = Some(1000);
        let (log, _) = AuditLog::open(cfg.clone()).unwrap();
        append(&log, 30);
        log.close().unwrap();
        let report = verify(&path).unwrap();
        assert!(report.is_ok(), "{:?}", report.problem);
        assert_eq!(report.records, 30);
        assert!(report.files.len() >= 4, "{:?}", report.files);
        assert_eq!(report.files[0], dir.path().join("audit.log.000001"));
        assert_eq!(report.files.last(), Some(&path));
        // The first record of the second file links to the last one of the first.
        let first = fs::read_to_string(&report.files[0]).unwrap();
        let second = fs::read_to_string(&report.files[1]).unwrap();
        let last_of_first = record::parse_line(first.lines().last().unwrap().as_bytes()).unwrap();
        let first_of_second =
            record::parse_line(second.lines().next().unwrap().as_bytes()).unwrap();
        assert_eq!(first_of_second.prev, last_of_first.hash);
        assert_eq!(first_of_second.seq, last_of_first.seq + 1);

        let (log, recovery) = AuditLog::open(cfg).unwrap();
        assert_eq!(recovery.last_seq, 30);
        assert_eq!(append(&log, 1), vec![31]);
        log.close().unwrap();
        assert_verifies(&path, 31);
    }

    #[test]
    fn empty_or_missing_active_file_continues_from_the_newest_segment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut cfg = AuditConfig::new(&path);
        cfg.rotate_bytes = Some(1);
        let (log, _) = AuditLog::open(cfg.clone()).unwrap();
        append(&log, 3);
        log.close().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
        assert!(dir.path().join("audit.log.000003").exists());

        let (log, recovery) = AuditLog::open(cfg.clone()).unwrap();
        assert_eq!(recovery.last_seq, 3);
        assert_eq!(append(&log, 1), vec![4]);
        log.close().unwrap();
        // As if the process died between renaming and creating the new active file.
        fs::remove_file(&path).unwrap();
        assert_verifies(&path, 4);
        let (log, recovery) = AuditLog::open(cfg).unwrap();
        assert_eq!(recovery.last_seq, 4);
        assert_eq!(append(&log, 1), vec![5]);
        log.close().unwrap();
        assert_verifies(&path, 5);
        assert!(dir.path().join("audit.log.000005").exists());
    }

    #[test]
    fn full_queue_is_refused_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (took_tx, took_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let hooks = TestHooks {
            pause: Some((took_tx, release_rx)),
            ..TestHooks::default()
        };
        let mut cfg = AuditConfig::new(&path);
        cfg.queue_capacity = 1;
        let (log, _) = AuditLog::open_with_hooks(cfg, hooks).unwrap();
        let first = log.submit(entry(1)).unwrap();
        took_rx.recv().unwrap(); // the writer holds `first`; the queue is empty
        let second = log.submit(entry(2)).unwrap();
        assert!(matches!(log.submit(entry(3)), Err(AuditError::QueueFull)));
        let stats = log.stats();
        // `first` is held by the paused writer but not yet in a batch.
        assert_eq!((stats.queue_full, stats.queue_depth), (1, 2));
        release_tx.send(()).unwrap();
        assert_eq!(first.wait().unwrap(), 1);
        assert_eq!(second.wait().unwrap(), 2);
        drop((took_rx, release_tx)); // stop pausing
        log.close().unwrap();
        assert_verifies(&path, 2);
    }

    #[test]
    fn failed_write_is_rejected_truncated_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let hooks = TestHooks::default();
        let fail_writes = Arc::clone(&hooks.fail_writes);
        let (log, _) = AuditLog::open_with_hooks(AuditConfig::new(&path), hooks).unwrap();
        append(&log, 3);
        let len = fs::metadata(&path).unwrap().len();
        fail_writes.store(2, Ordering::SeqCst);
        for _ in 0..2 {
            let reason = unavailable(log.submit(entry(9)).unwrap().wait());
            assert!(reason.contains("write"), "{reason}");
            // Half of the batch reached the file and was cut off again.
            assert_eq!(fs::metadata(&path).unwrap().len(), len);
            assert!(log.stats().failed);
            assert!(log.failure().is_some());
        }
        assert_eq!(log.stats().failures, 2);
        assert_eq!(append(&log, 2), vec![4, 5]);
        assert!(!log.stats().failed);
        assert_eq!(log.failure(), None);
        log.close().unwrap();
        assert_verifies(&path, 5);
    }

    #[test]
    fn failed_fdatasync_is_rejected_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let hooks = TestHooks::default();
        let fail_syncs = Arc::clone(&hooks.fail_syncs);
        let (log, _) = AuditLog::open_with_hooks(AuditConfig::new(&path), hooks).unwrap();
        append(&log, 2);
        let len = fs::metadata(&path).unwrap().len();
        fail_syncs.store(1, Ordering::SeqCst);
        let reason = unavailable(log.submit(entry(9)).unwrap().wait());
        assert!(reason.contains("fdatasync"), "{reason}");
        assert_eq!(fs::metadata(&path).unwrap().len(), len);
        assert_eq!(append(&log, 1), vec![3]);
        log.close().unwrap();
        assert_verifies(&path, 3);
    }

    /// Works as root, which ignores permission bits: the path is made a directory.
    #[test]
    fn file_replaced_by_a_directory_is_unavailable_until_restored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let moved = dir.path().join("moved.log");
        let (log, _) = open(&path);
        append(&log, 3);
        let len = fs::metadata(&path).unwrap().len();
        fs::rename(&path, &moved).unwrap();
        fs::create_dir(&path).unwrap();

        let reason = unavailable(log.submit(entry(9)).unwrap().wait());
        assert!(reason.contains("replaced"), "{reason}");
        // The batch went to the moved file through the open handle and was cut off again.
        assert_eq!(fs::metadata(&moved).unwrap().len(), len);
        let reason = unavailable(log.submit(entry(9)).unwrap().wait());
        assert!(reason.contains("open"), "{reason}");
        assert!(log.stats().failed);

        fs::remove_dir(&path).unwrap();
        fs::rename(&moved, &path).unwrap();
        assert_eq!(append(&log, 2), vec![4, 5]);
        assert!(!log.stats().failed);
        log.close().unwrap();
        assert_verifies(&path, 5);
    }

    #[test]
    fn deleted_file_is_not_silently_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (log, _) = open(&path);
        append(&log, 2);
        fs::remove_file(&path).unwrap();
        unavailable(log.submit(entry(9)).unwrap().wait());
        unavailable(log.submit(entry(9)).unwrap().wait());
        assert!(!path.exists());
        log.close().unwrap();
    }

    #[test]
    fn rewritten_file_is_not_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let moved = dir.path().join("moved.log");
        let (log, _) = open(&path);
        append(&log, 3);
        fs::rename(&path, &moved).unwrap();
        // Another log of the same length but different records takes its place.
        let (other, _) = open(&path);
        append(&other, 3);
        other.close().unwrap();
        unavailable(log.submit(entry(9)).unwrap().wait());
        let reason = unavailable(log.submit(entry(9)).unwrap().wait());
        assert!(reason.contains("no longer ends with"), "{reason}");
        log.close().unwrap();
    }

    #[test]
    fn concurrent_submits_get_unique_contiguous_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (log, _) = open(&path);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let receipts: Vec<Receipt> = (0..250)
                        .map(|i| log.submit(entry(t * 1000 + i)).unwrap())
                        .collect();
                    receipts
                        .into_iter()
                        .map(|r| r.wait().unwrap())
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in threads {
            let seqs = t.join().unwrap();
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "one thread's records stay in order"
            );
            all.extend(seqs);
        }
        all.sort_unstable();
        assert_eq!(all, (1..=2000).collect::<Vec<_>>());
        let stats = log.stats();
        assert_eq!(stats.records_written, 2000);
        assert!(stats.batches <= 2000);
        log.close().unwrap();
        assert_verifies(&path, 2000);
    }

    #[test]
    fn handles_are_send_sync_and_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<AuditLog>();
        fn send<T: Send>() {}
        send::<Receipt>();
    }

    #[test]
    fn second_writer_is_locked_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (log, _) = open(&path);
        let err = AuditLog::open(AuditConfig::new(&path)).unwrap_err();
        assert!(matches!(err, AuditError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("audit.log"));
        log.close().unwrap();
        let (log, _) = open(&path);
        log.close().unwrap();
    }

    #[test]
    fn closed_log_refuses_from_every_clone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (log, _) = open(&path);
        let other = log.clone();
        let queued = other.submit(entry(1)).unwrap();
        log.close().unwrap();
        assert_eq!(
            queued.wait().unwrap(),
            1,
            "records queued before close are written"
        );
        assert!(matches!(other.submit(entry(2)), Err(AuditError::Closed)));
        assert!(matches!(other.close(), Err(AuditError::Closed)));
        assert_verifies(&path, 1);
    }

    #[test]
    fn dropping_every_handle_stops_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (log, _) = open(&path);
        let receipt = log.submit(entry(1)).unwrap();
        let thread = lock(&log.inner.thread).take().unwrap();
        drop(log);
        assert_eq!(receipt.wait().unwrap(), 1);
        thread.join().unwrap().unwrap();
        assert_verifies(&path, 1);
    }
}
