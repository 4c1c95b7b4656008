//! The on-disk store: one redb file holding task types, run summaries, telemetry samples, trained models and the
//! broker's decision log.
//!
//! Crash safety comes from redb: every public write is one transaction committed with `Durability::Immediate`
//! (the commit returns after fsync), so a `kill -9` or power loss keeps every committed write and the file reopens
//! (redb repairs its allocator state on the first open after an unclean shutdown; that open is slower).
//!
//! Tables (all values JSON unless noted, so new `#[serde(default)]` fields need no migration):
//!
//! | table        | key                     | value                                              |
//! |--------------|-------------------------|----------------------------------------------------|
//! | `meta`       | name                    | u64 (`schema_version`, `next_run_id`, `next_decision_seq`, `model_version`) |
//! | `task_types` | task key                | [`TaskTypeRecord`]                                 |
//! | `runs`       | (task key, run id)      | [`RunSummary`]                                     |
//! | `samples`    | (run id, ts ms)         | fixed (cpu cores f64, memory u64, io u64, count u32) |
//! | `models`     | (version, task key)     | [`TaskModel`]                                      |
//! | `decisions`  | sequence number         | [`Decision`]                                       |
//! | `open_runs`  | container id            | [`OpenRun`]: a registered container whose run has not finished (schema 2) |
//! | `run_origins`| (origin node, origin run id) | u64 local run id: runs imported from another node (schema 3) |
//! | `imported_runs` | local run id         | (origin node, origin run id) (schema 3)            |
//! | `score_pool` | `pool`                  | [`ScorePool`], written with each full retrain (created by its first write: no migration) |
//!
//! Run identity across nodes: every store draws a random 64-bit node id when it is created (`meta.node_id`); a run is
//! identified everywhere by (node id, run id on that node). A local run's origin is (own node id, its run id); an
//! imported run gets a fresh local run id and its origin is remembered in `run_origins`/`imported_runs`, so importing
//! the same run again (the same file twice, or a file that went round through a third node) adds nothing
//! ([`Store::import_runs`]).
//!
//! Models: each task type has at most one current entry in `models`, stored under the version that (re)fitted it.
//! The set in force at version `V` is every entry with `model_base_version <= version <= V` (the base is the version
//! of the last whole-set write, [`Store::save_models`]); [`Store::update_models`] writes a few task types at a new
//! version and replaces their older entries in the same transaction, so a refit of one task type writes one model,
//! not the whole set.
//!
//! [`Store::commit`] writes a whole [`Batch`] (decisions, samples, opened and finished runs of many containers) in one
//! transaction: the broker's group commit, one fsync for everything its peers sent since the last one.
//! Schema versions: a new file is version 0 and is brought to [`SCHEMA_VERSION`] by running [`MIGRATIONS`] in order,
//! all in one write transaction, so a crash mid-migration leaves the old version. A file stamped with a newer version
//! than this build knows is refused rather than misread.
//!
//! Limits: the file does not shrink — redb reuses freed pages, so [`Store::apply_retention`] keeps it bounded rather
//! than small. Reads that scan all runs (training) are O(runs); prediction never reads the store.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use redb::{
    Database, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::key::TaskKey;
use crate::model::TaskModel;
use crate::pool::ScorePool;
use crate::types::{Decision, Profile, RunId, RunSummary, Sample};

/// Schema version written by this build.
pub const SCHEMA_VERSION: u64 = 3;

type Migration = fn(&WriteTransaction) -> Result<(), StoreError>;

/// Migration `i` brings a file from version `i` to `i + 1`.
pub const MIGRATIONS: &[Migration] = &[migrate_0_to_1, migrate_1_to_2, migrate_2_to_3];

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const TASK_TYPES: TableDefinition<&str, &[u8]> = TableDefinition::new("task_types");
const RUNS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("runs");
/// (cpu cores, memory bytes, io bytes, raw sample count).
type SampleValue = (f64, u64, u64, u32);

const SAMPLES: TableDefinition<(u64, u64), SampleValue> = TableDefinition::new("samples");
const MODELS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("models");
const DECISIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("decisions");
const OPEN_RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("open_runs");
const RUN_ORIGINS: TableDefinition<(u64, u64), u64> = TableDefinition::new("run_origins");
const IMPORTED_RUNS: TableDefinition<u64, (u64, u64)> = TableDefinition::new("imported_runs");
/// One entry, `pool`: the conformal scores pooled across task types ([`ScorePool`]).
const SCORE_POOL: TableDefinition<&str, &[u8]> = TableDefinition::new("score_pool");

/// Most decisions or task types one retention pass deletes (the next pass goes on).
const RETENTION_BATCH: usize = 100_000;

const K_SCHEMA: &str = "schema_version";
const K_NEXT_RUN: &str = "next_run_id";
const K_NEXT_DECISION: &str = "next_decision_seq";
const K_MODEL_VERSION: &str = "model_version";
const K_MODEL_BASE: &str = "model_base_version";
const K_NODE_ID: &str = "node_id";

/// A run as it travels between nodes: its identity (origin node, run id there) and its summary.
#[derive(Debug, Clone, PartialEq)]
pub struct PortableRun {
    /// Node id of the store that recorded the run first.
    pub origin_node: u64,
    /// The run's id on that node.
    pub origin_run: RunId,
    /// The summary; its `run_id` is the local one on export and ignored on import.
    pub run: RunSummary,
}

/// What [`Store::import_runs`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Runs added.
    pub imported: u64,
    /// Runs already known (imported before): skipped.
    pub duplicates: u64,
    /// Runs that originated on this node: skipped.
    pub own: u64,
    /// Task types that received at least one run, by key.
    pub task_types: Vec<TaskKey>,
}

/// A run that has started and not finished: what the broker needs to carry it on after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenRun {
    /// The container.
    pub container_id: String,
    /// The run's id (its samples are stored under it).
    pub run_id: RunId,
    /// Task type.
    pub task_key: TaskKey,
    /// Start, ms.
    pub started_at_ms: u64,
    /// What was known at Register.
    pub meta: crate::types::RunMetadata,
    /// Model version of the prediction at Register (`None`: cold start).
    #[serde(default)]
    pub model_version: Option<u64>,
}

/// One write of a [`Batch`], applied in order.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchOp {
    /// Append a decision (its `seq` is assigned).
    Decision(Decision),
    /// Append samples of a run.
    Samples(RunId, Vec<Sample>),
    /// A run started (replaces the container's earlier open run).
    Open(Box<OpenRun>),
    /// A run finished: its summary; the container's open run of the same id is closed.
    Run {
        /// The container, whose open run is closed.
        container_id: Option<String>,
        /// The summary (`profile` derived from the stored samples when `None`).
        run: Box<RunSummary>,
    },
    /// A container's open run of this id ends without a summary (forgotten).
    Close(String, RunId),
}

/// Writes committed together by [`Store::commit`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// In order.
    pub ops: Vec<BatchOp>,
}

/// How the store file is opened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreOptions {
    /// redb's page cache, bytes (default: redb's, 1 GiB).
    pub cache_bytes: Option<usize>,
}

/// Errors of the store; each names the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("opening predictor database {path}")]
    Open {
        /// File path.
        path: PathBuf,
        /// Cause (boxed: redb's errors are large).
        #[source]
        source: Box<redb::DatabaseError>,
    },
    /// The file could not be opened safely (it is a symlink, or its mode could not be set).
    #[error("opening predictor database file {path}")]
    File {
        /// File path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The parent directory could not be created.
    #[error("creating directory {path} for the predictor database")]
    CreateDir {
        /// Directory path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A redb transaction, table or commit failed.
    #[error("predictor store: {op}")]
    Db {
        /// What was being done.
        op: &'static str,
        /// Cause (boxed: redb's errors are large).
        #[source]
        source: Box<redb::Error>,
    },
    /// A value could not be serialised.
    #[error("encoding {what}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value could not be parsed.
    #[error("decoding {what} {key}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Its key.
        key: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The file was written by a newer build.
    #[error("database {path} has schema version {found}; this build supports up to {supported}")]
    SchemaTooNew {
        /// File path.
        path: PathBuf,
        /// Version in the file.
        found: u64,
        /// Newest version this build knows.
        supported: u64,
    },
    /// The node id could not be drawn.
    #[error("drawing a random node id from /dev/urandom")]
    NodeId(#[source] std::io::Error),
    /// A run summary was rejected before writing.
    #[error("run {run_id} rejected: {reason}")]
    InvalidRun {
        /// The run.
        run_id: RunId,
        /// Why.
        reason: &'static str,
    },
}

impl StoreError {
    /// The file is not a database this build can read because its content is damaged (garbage, a truncated copy,
    /// a checksum that does not match): not a permission, I/O, lock or version problem, which stay errors.
    pub fn is_corrupt(&self) -> bool {
        use redb::{DatabaseError, StorageError};
        match self {
            StoreError::Open { source, .. } => match &**source {
                DatabaseError::Storage(StorageError::Corrupted(_)) => true,
                DatabaseError::Storage(StorageError::Io(e)) => {
                    e.kind() == std::io::ErrorKind::InvalidData
                }
                _ => false,
            },
            _ => false,
        }
    }
}

fn db<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Db {
        op,
        source: Box::new(e.into()),
    }
}

fn encode<T: Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|source| StoreError::Encode { what, source })
}

fn decode<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    key: impl FnOnce() -> String,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        what,
        key: key(),
        source,
    })
}

/// What the store knows about a task type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskTypeRecord {
    /// Distinct runs recorded (including runs later dropped by retention).
    pub runs_seen: u64,
    /// Start of the first run, ms.
    pub first_seen_ms: u64,
    /// End of the run that ended last (its start plus its duration), ms: a long-running service's run that
    /// started months ago was seen until it ended.
    pub last_seen_ms: u64,
    /// Image of the run that ended last (for display).
    #[serde(default)]
    pub image: String,
    /// Command of the run that ended last (for display).
    #[serde(default)]
    pub command: Vec<String>,
}

/// How long telemetry is kept and at what resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionPolicy {
    /// Samples younger than this keep full resolution.
    pub full_resolution_ms: u64,
    /// Older samples are merged into windows of this length (mean CPU, max memory, summed IO).
    pub downsample_window_ms: u64,
    /// Samples older than this are deleted.
    pub max_sample_age_ms: u64,
    /// At most this many run summaries are kept per task type; the oldest go first.
    pub max_runs_per_task: usize,
    /// At most this many decisions are kept; the oldest go first (0 = no cap).
    pub max_decisions: u64,
    /// Decisions older than this are deleted (0 = kept for ever).
    pub max_decision_age_ms: u64,
    /// At most this many task types are kept; those seen least recently go first, with their runs and samples
    /// (0 = no cap).
    pub max_task_types: usize,
    /// A task type not seen for this long is deleted with its runs and samples (0 = kept for ever).
    pub max_task_type_age_ms: u64,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        const HOUR: u64 = 3_600_000;
        Self {
            full_resolution_ms: 24 * HOUR,
            downsample_window_ms: 60_000,
            max_sample_age_ms: 14 * 24 * HOUR,
            max_runs_per_task: 5_000,
            max_decisions: 1_000_000,
            max_decision_age_ms: 30 * 24 * HOUR,
            max_task_types: 10_000,
            max_task_type_age_ms: 90 * 24 * HOUR,
        }
    }
}

/// What one retention pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Samples deleted for age.
    pub samples_expired: u64,
    /// Raw samples merged away by downsampling.
    pub samples_merged: u64,
    /// Run summaries dropped by the per-task cap.
    pub runs_dropped: u64,
    /// Decisions dropped for age or by the cap.
    pub decisions_dropped: u64,
    /// Task types dropped for age or by the cap (with their runs and samples).
    pub task_types_dropped: u64,
}

/// Whether `query`, a container as a user names it, names the broker's container `id` (a shim names a container
/// `<namespace>/<id>` outside containerd's `default` namespace): the same name, or a bare id (no `/`) and `id` is
/// that id in some namespace (`web` names `a/web` and `web`; `a/web` names only `a/web`).
pub fn names_container(query: &str, id: &str) -> bool {
    query == id
        || (!query.contains('/') && id.rsplit_once('/').is_some_and(|(_, bare)| bare == query))
}

/// Filter for [`Store::decisions`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecisionQuery {
    /// Only this container ([`names_container`]: a bare id, any namespace's).
    pub container_id: Option<String>,
    /// Only this task type.
    pub task_key: Option<TaskKey>,
    /// Only decisions at or after this time.
    pub since_ms: Option<u64>,
    /// At most this many, newest last (0 = no limit).
    pub limit: usize,
    /// Only decisions with a smaller sequence number (paging backwards).
    pub before_seq: Option<u64>,
    /// Stop after examining this many decisions (0 = no bound); [`Store::decisions_page`] then says where to go
    /// on, so one request never scans a whole large log for a rare container.
    pub scan_budget: usize,
}

/// The predictor's database. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Store {
    /// `None` only after a reopen failed (the next transaction tries again, [`REOPEN_EVERY`] later).
    db: RwLock<Option<Database>>,
    path: PathBuf,
    opts: StoreOptions,
    /// When a reopen was last tried, and how many succeeded ([`Store::reopens`]).
    reopened: Mutex<Option<Instant>>,
    reopens: AtomicU64,
    /// A commit failed: the database refuses everything after it (reads too) until reopened.
    failed: AtomicBool,
}

/// A transaction, holding the store's read lock so that a reopen never drops the database under it. Derefs to
/// the redb transaction; the field order drops the transaction before the lock.
pub(crate) struct Txn<'a, T> {
    txn: T,
    _db: RwLockReadGuard<'a, Option<Database>>,
    failed: &'a AtomicBool,
}

impl<T> std::ops::Deref for Txn<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.txn
    }
}

impl Txn<'_, WriteTransaction> {
    fn commit(self) -> Result<(), redb::CommitError> {
        let Txn { txn, _db, failed } = self;
        txn.commit()
            .inspect_err(|_| failed.store(true, Ordering::Release))
    }
}

/// Fewest seconds between two reopens after I/O errors: a disk that stays full is not reopened on every request.
const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// Longest a reopen waits for the transactions in flight to end (it polls, so a transaction that began inside
/// another on the same thread can never deadlock against it).
const REOPEN_WAIT: Duration = Duration::from_secs(5);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the database at `path`, creating its directory and migrating the schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, &StoreOptions::default())
    }

    /// [`Store::open`] with options. The file is opened without following a symlink and is made mode 0600
    /// whatever the umask (it holds containers' command lines).
    pub fn open_with(path: &Path, opts: &StoreOptions) -> Result<Self, StoreError> {
        let store = Self {
            db: RwLock::new(Some(Self::open_db(path, opts)?)),
            path: path.to_path_buf(),
            opts: opts.clone(),
            reopened: Mutex::new(None),
            reopens: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Opens the file (created mode 0600, never through a symlink) as a redb database.
    fn open_db(path: &Path, opts: &StoreOptions) -> Result<Database, StoreError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let file_err = |source| StoreError::File {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(file_err)?;
        let mode = file.metadata().map_err(file_err)?.permissions().mode() & 0o7777;
        if mode != 0o600 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(file_err)?;
        }
        let mut builder = redb::Builder::new();
        if let Some(c) = opts.cache_bytes {
            builder.set_cache_size(c);
        }
        // redb asserts on some damaged files (a truncated copy: "raw_file_len() >= layout().len()") instead of
        // returning an error: such a panic is the file's corruption, reported as one.
        let opened =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.create_file(file)))
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(
                        format!("redb panicked opening it: {what}"),
                    )))
                });
        opened.map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// Transactions begin here: a database that failed an I/O (redb then refuses every transaction with
    /// `PreviousIo` until it is closed and opened again: a full disk, once freed, would be refused for the
    /// process's whole life) is reopened, at most every [`REOPEN_EVERY`], which repairs it as after a crash (the
    /// failed transaction is not in it), and the transaction is begun on the new one.
    fn begin<T>(
        &self,
        op: &'static str,
        start: impl Fn(&Database) -> Result<T, redb::TransactionError>,
    ) -> Result<Txn<'_, T>, StoreError> {
        let failed = || redb::TransactionError::Storage(redb::StorageError::PreviousIo);
        let mut reopened = false;
        loop {
            let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
            let generation = self.reopens.load(Ordering::Acquire);
            let result = match guard.as_ref() {
                Some(db) if !self.failed.load(Ordering::Acquire) => start(db),
                _ => Err(failed()),
            };
            match result {
                Ok(txn) => {
                    return Ok(Txn {
                        txn,
                        _db: guard,
                        failed: &self.failed,
                    });
                }
                Err(redb::TransactionError::Storage(redb::StorageError::PreviousIo))
                    if !reopened =>
                {
                    drop(guard);
                    reopened = true;
                    if !self.reopen(generation) {
                        return Err(db(op)(failed()));
                    }
                }
                Err(e) => return Err(db(op)(e)),
            }
        }
    }

    fn begin_write(&self, op: &'static str) -> Result<Txn<'_, WriteTransaction>, StoreError> {
        self.begin(op, Database::begin_write)
    }

    fn begin_read(&self, op: &'static str) -> Result<Txn<'_, ReadTransaction>, StoreError> {
        self.begin(op, Database::begin_read)
    }

    /// Closes the failed database and opens the file again; `true` when a database that works is in place (this
    /// call's or another's since `seen`, the reopen count the caller's failure was seen at).
    fn reopen(&self, seen: u64) -> bool {
        let mut last = self.reopened.lock().unwrap_or_else(|p| p.into_inner());
        if self.reopens.load(Ordering::Acquire) != seen {
            return true;
        }
        if last.is_some_and(|t| t.elapsed() < REOPEN_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        let deadline = Instant::now() + REOPEN_WAIT;
        let mut guard = loop {
            match self.db.try_write() {
                Ok(g) => break g,
                Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    tracing::error!(path = %self.path.display(), "predictor store failed an I/O; transactions still in flight after {REOPEN_WAIT:?}: not reopened");
                    return false;
                }
            }
        };
        // The file is locked while open: the failed database goes before the file is opened again.
        drop(guard.take());
        match Self::open_db(&self.path, &self.opts) {
            Ok(db) => {
                *guard = Some(db);
                self.failed.store(false, Ordering::Release);
                self.reopens.fetch_add(1, Ordering::AcqRel);
                tracing::warn!(path = %self.path.display(), "predictor store reopened after an I/O error (what failed was not written)");
                true
            }
            Err(e) => {
                let mut error = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    error = format!("{error}: {c}");
                    cause = c.source();
                }
                tracing::error!(path = %self.path.display(), %error, "predictor store failed an I/O and cannot be opened again yet");
                false
            }
        }
    }

    /// Times the database was reopened after an I/O error.
    pub fn reopens(&self) -> u64 {
        self.reopens.load(Ordering::Relaxed)
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let txn = self.begin_write("beginning migration")?;
        let found = {
            let meta = txn.open_table(META).map_err(db("opening meta"))?;
            let v = meta.get(K_SCHEMA).map_err(db("reading schema version"))?;
            v.map(|g| g.value()).unwrap_or(0)
        };
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                path: self.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == SCHEMA_VERSION {
            // Nothing to write; dropping the transaction aborts it.
            return Ok(());
        }
        for (from, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tracing::info!(from, to = from + 1, path = %self.path.display(), "migrating predictor schema");
            step(&txn)?;
        }
        {
            let mut meta = txn.open_table(META).map_err(db("opening meta"))?;
            meta.insert(K_SCHEMA, SCHEMA_VERSION)
                .map_err(db("writing schema version"))?;
        }
        txn.commit().map_err(db("committing migration"))
    }

    /// The schema version stored in the file.
    pub fn schema_version(&self) -> Result<u64, StoreError> {
        self.meta(K_SCHEMA)
    }

    fn meta(&self, name: &str) -> Result<u64, StoreError> {
        let txn = self.begin_read("beginning read")?;
        let t = txn.open_table(META).map_err(db("opening meta"))?;
        let v = t.get(name).map_err(db("reading meta"))?;
        Ok(v.map(|g| g.value()).unwrap_or(0))
    }

    /// Allocates a fresh run id (monotonic, never reused, also after a crash).
    pub fn allocate_run_id(&self) -> Result<RunId, StoreError> {
        let txn = self.begin_write("beginning run id allocation")?;
        let id = {
            let mut meta = txn.open_table(META).map_err(db("opening meta"))?;
            let next = meta
                .get(K_NEXT_RUN)
                .map_err(db("reading next run id"))?
                .map(|g| g.value())
                .unwrap_or(1);
            meta.insert(K_NEXT_RUN, next + 1)
                .map_err(db("writing next run id"))?;
            next
        };
        txn.commit().map_err(db("committing run id allocation"))?;
        Ok(id)
    }

    /// Records one finished run (one transaction). A run recorded twice under the same id is overwritten and
    /// counted once. When `run.profile` is `None` the profile is derived from the run's stored samples.
    pub fn record_run(&self, run: &RunSummary) -> Result<(), StoreError> {
        self.record_runs(std::slice::from_ref(run))
    }

    /// Records many runs in one transaction (bulk import, benchmarks).
    pub fn record_runs(&self, runs: &[RunSummary]) -> Result<(), StoreError> {
        let txn = self.begin_write("beginning run write")?;
        {
            let mut runs_t = txn.open_table(RUNS).map_err(db("opening runs"))?;
            let mut types_t = txn
                .open_table(TASK_TYPES)
                .map_err(db("opening task types"))?;
            let samples_t = txn.open_table(SAMPLES).map_err(db("opening samples"))?;
            let mut meta = txn.open_table(META).map_err(db("opening meta"))?;
            let mut max_id = 0;
            for run in runs {
                validate(run)?;
                let mut run = run.clone();
                if run.profile.is_none() {
                    let samples = read_samples(&samples_t, run.run_id)?;
                    let duration_ms = (run.outcome.duration_s * 1000.0).max(1.0) as u64;
                    run.profile = Profile::from_samples(&samples, run.started_at_ms, duration_ms);
                }
                write_run(&mut runs_t, &mut types_t, &run)?;
                max_id = max_id.max(run.run_id);
            }
            // Keep allocate_run_id ahead of ids the caller chose itself.
            let next = meta
                .get(K_NEXT_RUN)
                .map_err(db("reading next run id"))?
                .map(|g| g.value())
                .unwrap_or(1);
            if max_id >= next {
                meta.insert(K_NEXT_RUN, max_id + 1)
                    .map_err(db("writing next run id"))?;
            }
        }
        txn.commit().map_err(db("committing runs"))
    }

    /// One run summary.
    pub fn run(&self, key: &TaskKey, run_id: RunId) -> Result<Option<RunSummary>, StoreError> {
        let txn = self.begin_read("beginning read")?;
        let t = txn.open_table(RUNS).map_err(db("opening runs"))?;
        let v = t.get((key.as_str(), run_id)).map_err(db("reading run"))?;
        v.map(|g| decode("run summary", || format!("{key}/{run_id}"), g.value()))
            .transpose()
    }

    /// All stored runs of a task type, in run id order.
    pub fn runs_of(&self, key: &TaskKey) -> Result<Vec<RunSummary>, StoreError> {
        let txn = self.begin_read("beginning read")?;
        let t = txn.open_table(RUNS).map_err(db("opening runs"))?;
        let range = t
            .range((key.as_str(), 0)..=(key.as_str(), u64::MAX))
            .map_err(db("scanning runs"))?;
        let mut out = Vec::new();
        for item in range {
            let (k, v) = item.map_err(db("scanning runs"))?;
            out.push(decode(
                "run summary",
                || format!("{key}/{}", k.value().1),
                v.value(),
            )?);
        }
        Ok(out)
    }

    /// Calls `f` once per task type with all its stored runs (run id order), reading one consistent snapshot.
    /// Memory use is bounded by the largest task type, not the whole table.
    pub fn for_each_task_runs(
        &self,
        mut f: impl FnMut(&TaskKey, Vec<RunSummary>),
    ) -> Result<(), StoreError> {
        let txn = self.begin_read("beginning read")?;
        let t = txn.open_table(RUNS).map_err(db("opening runs"))?;
        let mut current: Option<TaskKey> = None;
        let mut batch = Vec::new();
        for item in t.iter().map_err(db("scanning runs"))? {
            let (k, v) = item.map_err(db("scanning runs"))?;
            let (key, id) = k.value();
            if current.as_ref().map(TaskKey::as_str) != Some(key) {
                if let Some(prev) = current.take() {
                    f(&prev, std::mem::take(&mut batch));
                }
                current = Some(TaskKey::new(key));
            }
            batch.push(decode("run summary", || format!("{key}/{id}"), v.value())?);
        }
        if let Some(prev) = current {
            f(&prev, batch);
        }
        Ok(())
    }

    /// Number of stored run summaries.
    pub fn run_count(&self) -> Result<u64, StoreError> {
        let txn = self.begin_read("beginning read")?;
        let t = txn.open_table(RUNS).map_err(db("opening runs"))?;
        t.len().map_err(db("counting runs"))
    }

    /// Appends telemetry samples of a (usually running) run, in one transaction.
    pub fn append_samples(&self, run_id: RunId, samples: &[Sample]) -> Result<(), StoreError> {
        let txn = self.begin_write("beginning sample write")?;
        {
            let mut t = txn.open_table(SAMPLES).map_err(db("opening samples"))?;
            for s in samples {
                t.insert(
                    (run_id, s.ts_ms),
                    (s.cpu_cores, s.memory_bytes, s.io_bytes, s.count.max(1)),
                )
                .map_err(db("writing sample"))?;
            }
        }
        txn.commit().map_err(db("committing samples"))
    }

    /// The stored samples of a run, by time.
    pub fn samples(&self, run_id: RunId) -> Result<Vec<Sample>, StoreError> {
        let txn = self.begin_read("beginning read")?;
        let t = txn.open_table(SAMPLES).map_err(db("opening samples"))?;
        read_samples(&t, run_id)
    }

    /// Number of stored samples (all runs).
    pub fn sample_count(&self) -> Result<u64, StoreError> {
        let txn = self.begin_read("beginning read")?;
        let t = txn.open_table(SAMPLES).map_err(db("opening samples"))?;
        t.len().map_err(db("counting samples"))
    }

    /// Expires and downsamples old samples and caps runs per task type, in one transaction.
    pub fn apply_retention(
        &self,
        now_ms: u64,
        policy: &RetentionPolicy,
    ) -> Result<RetentionReport, StoreError> {
        let mut report = RetentionReport::default();
        let txn = self.begin_write("beginning retention")?;
        downsample_samples(&txn, now_ms, policy, &mut report)?;
        cap_runs_per_task(&txn, policy, &mut report)?;
        drop_old_decisions(&txn, now_ms, policy, &mut report)?;
        drop_stale_task_types(&txn, now_ms, policy, &mut report)?;
        txn.commit().map_err(db("committing retention"))?;
        Ok(report)
    }

    /// One task type's record.
    pub fn task_type(&self, key: &TaskKey) -> Result<Option<TaskTypeRecord>, StoreError> {
        let txn = self.begin_read("beginning read")?;
        let t = txn
            .open_table(TASK_TYPES)
            .map_err(db("opening task types"))?;
        let v = t.get(key.as_str()).map_err(db("reading task type"))?;
        v.map(|g| decode("task type", || key.to_string(), g.value()))
            .transpose()
    }

    /// All task types, by key.
    pub fn task_types(&self) -> Result<Vec<(TaskKey, TaskTypeRecord)>, StoreError> {
        let txn = self.begin_read("beginning read")?;
        let t = txn
            .open_table(TASK_TYPES)
            .map_err(db("opening task types"))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db("scanning task types"))? {
            let (k, v) = item.map_err(db("scanning task types"))?;
            let key = k.value();
            out.push((
                TaskKey::new(key),
                decode("task type", || key.to_owned(), v.value())?,
            ));
        }
        Ok(out)
    }

    /// The next run id [`Store::allocate_run_id`] would hand out; a caller that allocates ids itself starts here
    /// and [`Store::commit`] keeps the stored counter ahead of every id it writes.
    pub fn next_run_id(&self) -> Result<RunId, StoreError> {
        Ok(self.meta(K_NEXT_RUN)?.max(1))
    }

    /// Every open run (registered, not finished), by container id.
    pub fn open_runs(&self) -> Result<Vec<OpenRun>, StoreError> {
        let txn = self.begin_read("beginning read")?;
        let t = txn.open_table(OPEN_RUNS).map_err(db("opening open runs"))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db("scanning open runs"))? {
            let (k, v) = item.map_err(db("scanning open runs"))?;
            out.push(decode("open run", || k.value().to_owned(), v.value())?);
        }
        Ok(out)
    }

    /// Writes a whole batch in one transaction (one fsync): nothing of it or all of it survives a crash.
    pub fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.ops.is_empty() {
            return Ok(());
        }
        let txn = self.begin_write("beginning a batch")?;
        {
            let mut meta = txn.open_table(META).map_err(db("opening meta"))?;
            let mut samples_t = txn.open_table(SAMPLES).map_err(db("opening samples"))?;
            let mut decisions_t = txn.open_table(DECISIONS).map_err(db("opening decisions"))?;
            let mut open_t = txn.open_table(OPEN_RUNS).map_err(db("opening open runs"))?;
            let mut runs_t = txn.open_table(RUNS).map_err(db("opening runs"))?;
            let mut types_t = txn
                .open_table(TASK_TYPES)
                .map_err(db("opening task types"))?;
            let mut seq = meta
                .get(K_NEXT_DECISION)
                .map_err(db("reading decision sequence"))?
                .map(|g| g.value())
                .unwrap_or(1);
            let seq0 = seq;
            let mut max_run = 0;
            let close = |open_t: &mut redb::Table<&str, &[u8]>, container: &str, run_id: RunId| {
                let same = match open_t.get(container).map_err(db("reading open run"))? {
                    Some(g) => decode::<OpenRun>("open run", || container.to_owned(), g.value())
                        .map(|o| o.run_id == run_id)
                        .unwrap_or(true),
                    None => false,
                };
                if same {
                    open_t.remove(container).map_err(db("closing open run"))?;
                }
                Ok::<(), StoreError>(())
            };
            for op in &batch.ops {
                match op {
                    BatchOp::Decision(d) => {
                        let mut d = d.clone();
                        d.seq = seq;
                        decisions_t
                            .insert(seq, encode("decision", &d)?.as_slice())
                            .map_err(db("writing decision"))?;
                        seq += 1;
                    }
                    BatchOp::Samples(run_id, samples) => {
                        max_run = max_run.max(*run_id);
                        for s in samples {
                            samples_t
                                .insert(
                                    (*run_id, s.ts_ms),
                                    (s.cpu_cores, s.memory_bytes, s.io_bytes, s.count.max(1)),
                                )
                                .map_err(db("writing sample"))?;
                        }
                    }
                    BatchOp::Open(o) => {
                        max_run = max_run.max(o.run_id);
                        open_t
                            .insert(
                                o.container_id.as_str(),
                                encode("open run", &**o)?.as_slice(),
                            )
                            .map_err(db("writing open run"))?;
                    }
                    BatchOp::Run { container_id, run } => {
                        // One bad summary must not fail the batch it shares with other peers' records.
                        if let Err(e) = validate(run) {
                            tracing::error!(error = %e, "dropping an invalid run summary from a batch");
                            if let Some(c) = container_id {
                                close(&mut open_t, c, run.run_id)?;
                            }
                            continue;
                        }
                        let mut run = (**run).clone();
                        max_run = max_run.max(run.run_id);
                        if run.profile.is_none() {
                            let samples = read_samples(&samples_t, run.run_id)?;
                            let duration_ms = (run.outcome.duration_s * 1000.0).max(1.0) as u64;
                            run.profile =
                                Profile::from_samples(&samples, run.started_at_ms, duration_ms);
                        }
                        write_run(&mut runs_t, &mut types_t, &run)?;
                        if let Some(c) = container_id {
                            close(&mut open_t, c, run.run_id)?;
                        }
                    }
                    BatchOp::Close(c, run_id) => close(&mut open_t, c, *run_id)?,
                }
            }
            if seq != seq0 {
                meta.insert(K_NEXT_DECISION, seq)
                    .map_err(db("writing decision sequence"))?;
            }
            let next = meta
                .get(K_NEXT_RUN)
                .map_err(db("reading next run id"))?
                .map(|g| g.value())
                .unwrap_or(1);
            if max_run >= next {
                meta.insert(K_NEXT_RUN, max_run + 1)
                    .map_err(db("writing next run id"))?;
            }
        }
        txn.commit().map_err(db("committing a batch"))
    }

    /// Decisions matching `q`, oldest first, and where to go on: `Some(seq)` when older matching decisions may
    /// exist (pass it as `before_seq`). Examines at most `q.scan_budget` decisions.
    pub fn decisions_page(
        &self,
        q: &DecisionQuery,
    ) -> Result<(Vec<Decision>, Option<u64>), StoreError> {
        let txn = self.begin_read("beginning read")?;
        let t = txn.open_table(DECISIONS).map_err(db("opening decisions"))?;
        let upper = match q.before_seq {
            Some(b) => Bound::Excluded(b),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        let mut last_seq = None;
        let mut more = false;
        for (scanned, item) in t
            .range::<u64>((Bound::Unbounded, upper))
            .map_err(db("scanning decisions"))?
            .rev()
            .enumerate()
        {
            if q.limit > 0 && out.len() >= q.limit || q.scan_budget > 0 && scanned >= q.scan_budget
            {
                more = true;
                break;
            }
            let (k, v) = item.map_err(db("scanning decisions"))?;
            let seq = k.value();
            last_seq = Some(seq);
            let d: Decision = decode("decision", || seq.to_string(), v.value())?;
            if q.since_ms.is_some_and(|s| d.at_ms < s) {
                // Sequence numbers follow time: everything older is older still.
                break;
            }
            if q.container_id
                .as_ref()
                .is_some_and(|c| !names_container(c, &d.container_id))
                || q.task_key.as_ref().is_some_and(|k| *k != d.task_key)
            {
                continue;
            }
            out.push(d);
        }
        out.reverse();
        Ok((out, if more { last_seq } else { None }))
    }

    /// The model version currently in force (0 = never trained).
    pub fn current_model_version(&self) -> Result<u64, StoreError> {
        self.meta(K_MODEL_VERSION)
    }

    /// Writes a complete model set as `version` and makes it current in the same transaction, deleting versions
    /// older than `version - keep_previous`. Readers see either the old set or the new one, never a mix.
    pub fn save_models<'a>(
        &self,
        version: u64,
        models: impl IntoIterator<Item = (&'a TaskKey, &'a TaskModel)>,
        keep_previous: u64,
    ) -> Result<(), StoreError> {
        self.save_models_and_pool(version, models, keep_previous, None)
    }

    /// [`Store::save_models`], also replacing the pooled scores in the same transaction (one commit, one fsync).
    pub fn save_models_and_pool<'a>(
        &self,
        version: u64,
        models: impl IntoIterator<Item = (&'a TaskKey, &'a TaskModel)>,
        keep_previous: u64,
        pool: Option<&ScorePool>,
    ) -> Result<(), StoreError> {
        let txn = self.begin_write("beginning model write")?;
        if let Some(pool) = pool {
            let mut t = txn
                .open_table(SCORE_POOL)
                .map_err(db("opening score pool"))?;
            t.insert("pool", encode("score pool", pool)?.as_slice())
                .map_err(db("writing score pool"))?;
        }
        {
            let mut t = txn.open_table(MODELS).map_err(db("opening models"))?;
            for (key, model) in models {
                t.insert((version, key.as_str()), encode("model", model)?.as_slice())
                    .map_err(db("writing model"))?;
            }
            let oldest_kept = version.saturating_sub(keep_previous);
            let stale: Vec<(u64, String)> = {
                let range = t
                    .range::<(u64, &str)>((Bound::Unbounded, Bound::Excluded((oldest_kept, ""))))
                    .map_err(db("scanning old models"))?;
                let mut stale = Vec::new();
                for item in range {
                    let (k, _) = item.map_err(db("scanning old models"))?;
                    let (v, key) = k.value();
                    stale.push((v, key.to_owned()));
                }
                stale
            };
            for (v, key) in stale {
                t.remove((v, key.as_str()))
                    .map_err(db("deleting old model"))?;
            }
            let mut meta = txn.open_table(META).map_err(db("opening meta"))?;
            meta.insert(K_MODEL_VERSION, version)
                .map_err(db("writing model version"))?;
            meta.insert(K_MODEL_BASE, version)
                .map_err(db("writing model base version"))?;
        }
        txn.commit().map_err(db("committing models"))
    }

    /// Writes the models of a few task types as `version`, drops the models of `removed`, and makes `version`
    /// current, in one transaction: the set in force becomes the previous one with these task types replaced.
    /// `version` must be above the current one. The other task types' entries stay where they are (one write per
    /// refitted task type, whatever the number of task types).
    pub fn update_models<'a>(
        &self,
        version: u64,
        models: impl IntoIterator<Item = (&'a TaskKey, &'a TaskModel)>,
        removed: &[TaskKey],
    ) -> Result<(), StoreError> {
        let models: Vec<(&TaskKey, &TaskModel)> = models.into_iter().collect();
        let txn = self.begin_write("beginning model write")?;
        {
            let mut meta = txn.open_table(META).map_err(db("opening meta"))?;
            let base = get_meta(&meta, K_MODEL_BASE)?;
            let current = get_meta(&meta, K_MODEL_VERSION)?;
            let mut t = txn.open_table(MODELS).map_err(db("opening models"))?;
            let changed: std::collections::HashSet<&str> = models
                .iter()
                .map(|(k, _)| k.as_str())
                .chain(removed.iter().map(TaskKey::as_str))
                .collect();
            let stale: Vec<(u64, String)> = {
                let mut stale = Vec::new();
                for item in t
                    .range::<(u64, &str)>((
                        Bound::Included((base, "")),
                        Bound::Excluded((current.max(version).saturating_add(1), "")),
                    ))
                    .map_err(db("scanning models"))?
                {
                    let (k, _) = item.map_err(db("scanning models"))?;
                    let (v, key) = k.value();
                    if changed.contains(key) {
                        stale.push((v, key.to_owned()));
                    }
                }
                stale
            };
            for (v, key) in stale {
                t.remove((v, key.as_str()))
                    .map_err(db("deleting replaced model"))?;
            }
            for (key, model) in models {
                t.insert((version, key.as_str()), encode("model", model)?.as_slice())
                    .map_err(db("writing model"))?;
            }
            meta.insert(K_MODEL_VERSION, version)
                .map_err(db("writing model version"))?;
        }
        txn.commit().map_err(db("committing models"))
    }

    /// The pooled scores last written (`None` before the first full retrain wrote them).
    pub fn load_score_pool(&self) -> Result<Option<ScorePool>, StoreError> {
        let txn = self.begin_read("beginning read")?;
        let t = match txn.open_table(SCORE_POOL) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db("opening score pool")(e)),
        };
        let Some(v) = t.get("pool").map_err(db("reading score pool"))? else {
            return Ok(None);
        };
        decode("score pool", || "pool".to_owned(), v.value()).map(Some)
    }

    /// The model set in force: for each task type its entry from the last whole-set write on, as replaced by
    /// [`Store::update_models`] since.
    pub fn load_current_models(&self) -> Result<HashMap<TaskKey, TaskModel>, StoreError> {
        let txn = self.begin_read("beginning read")?;
        let meta = txn.open_table(META).map_err(db("opening meta"))?;
        let current = get_meta(&meta, K_MODEL_VERSION)?;
        let base = get_meta(&meta, K_MODEL_BASE)?.min(current);
        let t = txn.open_table(MODELS).map_err(db("opening models"))?;
        let mut out = HashMap::new();
        for item in t
            .range::<(u64, &str)>((
                Bound::Included((base, "")),
                Bound::Excluded((current.saturating_add(1), "")),
            ))
            .map_err(db("scanning models"))?
        {
            let (k, v) = item.map_err(db("scanning models"))?;
            let (version, key) = k.value();
            // Versions ascend: a later entry of the same key replaces an earlier one.
            out.insert(
                TaskKey::new(key),
                decode("model", || format!("{version}/{key}"), v.value())?,
            );
        }
        Ok(out)
    }

    /// This store's node id (drawn at random when the file was created; see the module docs).
    pub fn node_id(&self) -> Result<u64, StoreError> {
        self.meta(K_NODE_ID)
    }

    /// Number of stored runs of one task type.
    pub fn run_count_of(&self, key: &TaskKey) -> Result<u64, StoreError> {
        let txn = self.begin_read("beginning read")?;
        let t = txn.open_table(RUNS).map_err(db("opening runs"))?;
        let mut n = 0;
        for item in t
            .range((key.as_str(), 0)..=(key.as_str(), u64::MAX))
            .map_err(db("scanning runs"))?
        {
            item.map_err(db("scanning runs"))?;
            n += 1;
        }
        Ok(n)
    }

    /// Adds runs recorded on other nodes, in one transaction. A run whose origin is this node, or whose origin was
    /// imported before, is skipped and counted; every other run gets a fresh local run id. Each summary is checked
    /// as [`Store::record_runs`] checks it; one bad run fails the whole import (nothing is written).
    pub fn import_runs(&self, runs: &[PortableRun]) -> Result<ImportReport, StoreError> {
        let mut report = ImportReport::default();
        let txn = self.begin_write("beginning import")?;
        {
            let mut meta = txn.open_table(META).map_err(db("opening meta"))?;
            let own = get_meta(&meta, K_NODE_ID)?;
            let mut next = get_meta(&meta, K_NEXT_RUN)?.max(1);
            let mut runs_t = txn.open_table(RUNS).map_err(db("opening runs"))?;
            let mut types_t = txn
                .open_table(TASK_TYPES)
                .map_err(db("opening task types"))?;
            let mut origins = txn
                .open_table(RUN_ORIGINS)
                .map_err(db("opening run origins"))?;
            let mut imported = txn
                .open_table(IMPORTED_RUNS)
                .map_err(db("opening imported runs"))?;
            let mut touched = std::collections::BTreeSet::new();
            for p in runs {
                if p.origin_node == own {
                    report.own += 1;
                    continue;
                }
                let identity = (p.origin_node, p.origin_run);
                if origins
                    .get(identity)
                    .map_err(db("reading run origin"))?
                    .is_some()
                {
                    report.duplicates += 1;
                    continue;
                }
                let mut run = p.run.clone();
                run.run_id = next;
                validate(&run)?;
                write_run(&mut runs_t, &mut types_t, &run)?;
                origins
                    .insert(identity, next)
                    .map_err(db("writing run origin"))?;
                imported
                    .insert(next, identity)
                    .map_err(db("writing imported run"))?;
                touched.insert(run.task_key.clone());
                report.imported += 1;
                next += 1;
            }
            meta.insert(K_NEXT_RUN, next)
                .map_err(db("writing next run id"))?;
            report.task_types = touched.into_iter().collect();
        }
        txn.commit().map_err(db("committing import"))?;
        Ok(report)
    }

    /// One page of runs to export: for each task type (in key order) its newest `newest_per_type` runs (by local
    /// run id), each with its origin, after the cursor `after` (exclusive), at most `limit` runs. Returns the page
    /// and the cursor of the next one (`None`: this was the last).
    #[allow(clippy::type_complexity)]
    pub fn export_page(
        &self,
        after: Option<(&TaskKey, RunId)>,
        newest_per_type: usize,
        limit: usize,
    ) -> Result<(Vec<PortableRun>, Option<(TaskKey, RunId)>), StoreError> {
        let txn = self.begin_read("beginning read")?;
        let meta = txn.open_table(META).map_err(db("opening meta"))?;
        let own = get_meta(&meta, K_NODE_ID)?;
        let runs_t = txn.open_table(RUNS).map_err(db("opening runs"))?;
        let types_t = txn
            .open_table(TASK_TYPES)
            .map_err(db("opening task types"))?;
        let imported = txn
            .open_table(IMPORTED_RUNS)
            .map_err(db("opening imported runs"))?;
        let from = after.map(|(k, _)| k.as_str().to_owned());
        let mut out = Vec::new();
        let keys: Vec<String> = {
            let mut keys = Vec::new();
            let range = match &from {
                Some(k) => types_t.range::<&str>(k.as_str()..),
                None => types_t.range::<&str>(..),
            }
            .map_err(db("scanning task types"))?;
            for item in range {
                let (k, _) = item.map_err(db("scanning task types"))?;
                keys.push(k.value().to_owned());
            }
            keys
        };
        for key in keys {
            let ids: Vec<u64> = {
                let mut ids = Vec::new();
                for item in runs_t
                    .range((key.as_str(), 0)..=(key.as_str(), u64::MAX))
                    .map_err(db("scanning runs"))?
                {
                    ids.push(item.map_err(db("scanning runs"))?.0.value().1);
                }
                ids
            };
            let skip = ids.len().saturating_sub(newest_per_type);
            for id in &ids[skip..] {
                if after.is_some_and(|(k, a)| k.as_str() == key && *id <= a) {
                    continue;
                }
                if out.len() >= limit {
                    let next = out
                        .last()
                        .map(|p: &PortableRun| (p.run.task_key.clone(), p.run.run_id));
                    return Ok((out, next));
                }
                let Some(v) = runs_t.get((key.as_str(), *id)).map_err(db("reading run"))? else {
                    continue;
                };
                let run: RunSummary = decode("run summary", || format!("{key}/{id}"), v.value())?;
                let (origin_node, origin_run) = imported
                    .get(*id)
                    .map_err(db("reading imported run"))?
                    .map(|g| g.value())
                    .unwrap_or((own, *id));
                out.push(PortableRun {
                    origin_node,
                    origin_run,
                    run,
                });
            }
        }
        Ok((out, None))
    }

    /// All models of one version.
    pub fn load_models(&self, version: u64) -> Result<HashMap<TaskKey, TaskModel>, StoreError> {
        let txn = self.begin_read("beginning read")?;
        let t = txn.open_table(MODELS).map_err(db("opening models"))?;
        let mut out = HashMap::new();
        let range = t
            .range::<(u64, &str)>((
                Bound::Included((version, "")),
                Bound::Excluded((version + 1, "")),
            ))
            .map_err(db("scanning models"))?;
        for item in range {
            let (k, v) = item.map_err(db("scanning models"))?;
            let (_, key) = k.value();
            out.insert(
                TaskKey::new(key),
                decode("model", || format!("{version}/{key}"), v.value())?,
            );
        }
        Ok(out)
    }

    /// Versions that have at least one stored model, ascending.
    pub fn model_versions(&self) -> Result<Vec<u64>, StoreError> {
        let txn = self.begin_read("beginning read")?;
        let t = txn.open_table(MODELS).map_err(db("opening models"))?;
        let mut out: Vec<u64> = Vec::new();
        for item in t.iter().map_err(db("scanning models"))? {
            let (k, _) = item.map_err(db("scanning models"))?;
            let v = k.value().0;
            if out.last() != Some(&v) {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Appends decisions to the log in one transaction (one fsync) and returns their sequence numbers.
    pub fn record_decisions(&self, decisions: &[Decision]) -> Result<Vec<u64>, StoreError> {
        let txn = self.begin_write("beginning decision write")?;
        let mut seqs = Vec::with_capacity(decisions.len());
        {
            let mut meta = txn.open_table(META).map_err(db("opening meta"))?;
            let mut seq = meta
                .get(K_NEXT_DECISION)
                .map_err(db("reading decision sequence"))?
                .map(|g| g.value())
                .unwrap_or(1);
            let mut t = txn.open_table(DECISIONS).map_err(db("opening decisions"))?;
            for decision in decisions {
                let mut d = decision.clone();
                d.seq = seq;
                t.insert(seq, encode("decision", &d)?.as_slice())
                    .map_err(db("writing decision"))?;
                seqs.push(seq);
                seq += 1;
            }
            meta.insert(K_NEXT_DECISION, seq)
                .map_err(db("writing decision sequence"))?;
        }
        txn.commit().map_err(db("committing decisions"))?;
        Ok(seqs)
    }

    /// Appends samples of several runs in one transaction (one fsync).
    pub fn append_samples_many(&self, batches: &[(RunId, Vec<Sample>)]) -> Result<(), StoreError> {
        let txn = self.begin_write("beginning sample write")?;
        {
            let mut t = txn.open_table(SAMPLES).map_err(db("opening samples"))?;
            for (run_id, samples) in batches {
                for s in samples {
                    t.insert(
                        (*run_id, s.ts_ms),
                        (s.cpu_cores, s.memory_bytes, s.io_bytes, s.count.max(1)),
                    )
                    .map_err(db("writing sample"))?;
                }
            }
        }
        txn.commit().map_err(db("committing samples"))
    }

    /// Appends a decision to the log and returns its sequence number.
    pub fn record_decision(&self, decision: &Decision) -> Result<u64, StoreError> {
        let txn = self.begin_write("beginning decision write")?;
        let seq = {
            let mut meta = txn.open_table(META).map_err(db("opening meta"))?;
            let seq = meta
                .get(K_NEXT_DECISION)
                .map_err(db("reading decision sequence"))?
                .map(|g| g.value())
                .unwrap_or(1);
            meta.insert(K_NEXT_DECISION, seq + 1)
                .map_err(db("writing decision sequence"))?;
            let mut d = decision.clone();
            d.seq = seq;
            let mut t = txn.open_table(DECISIONS).map_err(db("opening decisions"))?;
            t.insert(seq, encode("decision", &d)?.as_slice())
                .map_err(db("writing decision"))?;
            seq
        };
        txn.commit().map_err(db("committing decision"))?;
        Ok(seq)
    }

    /// Decisions matching `q`, oldest first (the newest `q.limit` when a limit is set).
    pub fn decisions(&self, q: &DecisionQuery) -> Result<Vec<Decision>, StoreError> {
        let txn = self.begin_read("beginning read")?;
        let t = txn.open_table(DECISIONS).map_err(db("opening decisions"))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db("scanning decisions"))?.rev() {
            let (k, v) = item.map_err(db("scanning decisions"))?;
            let seq = k.value();
            let d: Decision = decode("decision", || seq.to_string(), v.value())?;
            if q.container_id
                .as_ref()
                .is_some_and(|c| !names_container(c, &d.container_id))
                || q.task_key.as_ref().is_some_and(|k| *k != d.task_key)
                || q.since_ms.is_some_and(|s| d.at_ms < s)
            {
                continue;
            }
            out.push(d);
            if q.limit > 0 && out.len() >= q.limit {
                break;
            }
        }
        out.reverse();
        Ok(out)
    }
}

fn get_meta(t: &impl ReadableTable<&'static str, u64>, name: &str) -> Result<u64, StoreError> {
    Ok(t.get(name)
        .map_err(db("reading meta"))?
        .map(|g| g.value())
        .unwrap_or(0))
}

/// Retention, samples: drops those older than the age limit and merges those older than full resolution into one
/// sample per run and window (CPU averaged by count, memory's max, I/O summed).
fn downsample_samples(
    txn: &WriteTransaction,
    now_ms: u64,
    policy: &RetentionPolicy,
    report: &mut RetentionReport,
) -> Result<(), StoreError> {
    let expire_before = now_ms.saturating_sub(policy.max_sample_age_ms);
    let full_after = now_ms.saturating_sub(policy.full_resolution_ms);
    let window = policy.downsample_window_ms.max(1);
    let mut t = txn.open_table(SAMPLES).map_err(db("opening samples"))?;
    // Pass 1 (read): decide, per run, which keys go and which merged samples replace them.
    let mut doomed: Vec<(u64, u64)> = Vec::new();
    let mut merged: Vec<(u64, u64, SampleValue)> = Vec::new();
    let mut group: Option<(u64, u64)> = None; // (run, window start)
    let mut acc: Vec<(u64, SampleValue)> = Vec::new();
    let mut flush = |group: Option<(u64, u64)>,
                     acc: &mut Vec<(u64, SampleValue)>,
                     doomed: &mut Vec<(u64, u64)>,
                     report: &mut RetentionReport| {
        if let Some((run, start)) = group
            && acc.len() > 1
        {
            let count: u64 = acc.iter().map(|(_, v)| u64::from(v.3)).sum();
            let cpu =
                acc.iter().map(|(_, v)| v.0 * f64::from(v.3)).sum::<f64>() / count.max(1) as f64;
            let mem = acc.iter().map(|(_, v)| v.1).max().unwrap_or(0);
            let io = acc.iter().map(|(_, v)| v.2).sum();
            for (ts, _) in acc.iter() {
                doomed.push((run, *ts));
            }
            report.samples_merged += acc.len() as u64 - 1;
            merged.push((
                run,
                start,
                (cpu, mem, io, count.min(u64::from(u32::MAX)) as u32),
            ));
        }
        acc.clear();
    };
    for item in t.iter().map_err(db("scanning samples"))? {
        let (k, v) = item.map_err(db("scanning samples"))?;
        let (run, ts) = k.value();
        if ts < expire_before {
            doomed.push((run, ts));
            report.samples_expired += 1;
            continue;
        }
        if ts >= full_after {
            continue;
        }
        let g = (run, ts - ts % window);
        if group != Some(g) {
            flush(group, &mut acc, &mut doomed, report);
            group = Some(g);
        }
        acc.push((ts, v.value()));
    }
    flush(group, &mut acc, &mut doomed, report);
    // Pass 2 (write).
    for k in doomed {
        t.remove(k).map_err(db("deleting sample"))?;
    }
    for (run, start, v) in merged {
        t.insert((run, start), v)
            .map_err(db("writing merged sample"))?;
    }
    Ok(())
}

/// Retention, runs: a task type over `max_runs_per_task` loses its oldest runs (by start).
fn cap_runs_per_task(
    txn: &WriteTransaction,
    policy: &RetentionPolicy,
    report: &mut RetentionReport,
) -> Result<(), StoreError> {
    let mut runs = txn.open_table(RUNS).map_err(db("opening runs"))?;
    let mut origins = txn
        .open_table(RUN_ORIGINS)
        .map_err(db("opening run origins"))?;
    let mut imported = txn
        .open_table(IMPORTED_RUNS)
        .map_err(db("opening imported runs"))?;
    let mut per_task: HashMap<String, Vec<u64>> = HashMap::new();
    for item in runs.iter().map_err(db("scanning runs"))? {
        let (k, _) = item.map_err(db("scanning runs"))?;
        let (key, id) = k.value();
        per_task.entry(key.to_owned()).or_default().push(id);
    }
    for (key, mut ids) in per_task {
        if ids.len() <= policy.max_runs_per_task {
            continue;
        }
        // Local ids follow time, but an imported run gets a fresh id whatever its start: order by start (only the
        // types over the cap are read) and drop the oldest.
        let mut starts = HashMap::with_capacity(ids.len());
        for id in &ids {
            if let Some(v) = runs.get((key.as_str(), *id)).map_err(db("reading run"))? {
                let r: RunSummary = decode("run summary", || format!("{key}/{id}"), v.value())?;
                starts.insert(*id, r.started_at_ms);
            }
        }
        ids.sort_by_key(|id| (starts.get(id).copied().unwrap_or(0), *id));
        for id in &ids[..ids.len() - policy.max_runs_per_task] {
            runs.remove((key.as_str(), *id))
                .map_err(db("deleting run"))?;
            forget_origin(&mut origins, &mut imported, *id)?;
            report.runs_dropped += 1;
        }
    }
    Ok(())
}

/// Retention, decisions: the oldest beyond the cap, and those older than the age limit. Bounded per pass.
fn drop_old_decisions(
    txn: &WriteTransaction,
    now_ms: u64,
    policy: &RetentionPolicy,
    report: &mut RetentionReport,
) -> Result<(), StoreError> {
    let mut dec = txn.open_table(DECISIONS).map_err(db("opening decisions"))?;
    let total = dec.len().map_err(db("counting decisions"))?;
    let over = if policy.max_decisions > 0 {
        total.saturating_sub(policy.max_decisions)
    } else {
        0
    };
    let too_old = now_ms.saturating_sub(policy.max_decision_age_ms);
    let mut doomed = Vec::new();
    for item in dec.iter().map_err(db("scanning decisions"))? {
        if doomed.len() >= RETENTION_BATCH {
            break;
        }
        let (k, v) = item.map_err(db("scanning decisions"))?;
        let seq = k.value();
        if (doomed.len() as u64) < over {
            doomed.push(seq);
            continue;
        }
        if policy.max_decision_age_ms == 0 {
            break;
        }
        let d: Decision = decode("decision", || seq.to_string(), v.value())?;
        if d.at_ms >= too_old {
            break;
        }
        doomed.push(seq);
    }
    for seq in doomed {
        dec.remove(seq).map_err(db("deleting decision"))?;
        report.decisions_dropped += 1;
    }
    Ok(())
}

/// Retention, task types: those not seen for the age limit, then the least recently seen beyond the cap, with
/// their runs and samples; never a type with a run open (a container of it runs now). Bounded per pass.
fn drop_stale_task_types(
    txn: &WriteTransaction,
    now_ms: u64,
    policy: &RetentionPolicy,
    report: &mut RetentionReport,
) -> Result<(), StoreError> {
    let mut types = txn
        .open_table(TASK_TYPES)
        .map_err(db("opening task types"))?;
    let running: std::collections::HashSet<String> = {
        let open = txn.open_table(OPEN_RUNS).map_err(db("opening open runs"))?;
        let mut keys = std::collections::HashSet::new();
        for item in open.iter().map_err(db("scanning open runs"))? {
            let (k, v) = item.map_err(db("scanning open runs"))?;
            let o: OpenRun = decode("open run", || k.value().to_owned(), v.value())?;
            keys.insert(o.task_key.as_str().to_owned());
        }
        keys
    };
    let mut seen: Vec<(u64, String)> = Vec::new();
    let mut total: usize = 0;
    for item in types.iter().map_err(db("scanning task types"))? {
        let (k, v) = item.map_err(db("scanning task types"))?;
        total += 1;
        let key = k.value().to_owned();
        if running.contains(&key) {
            continue;
        }
        let rec: TaskTypeRecord = decode("task type", || key.clone(), v.value())?;
        seen.push((rec.last_seen_ms, key));
    }
    seen.sort();
    // Types with a run open count towards the cap; the others go to make room.
    let over = if policy.max_task_types > 0 {
        usize::min(total.saturating_sub(policy.max_task_types), seen.len())
    } else {
        0
    };
    let stale_before = now_ms.saturating_sub(policy.max_task_type_age_ms);
    let gone: Vec<String> = seen
        .into_iter()
        .enumerate()
        .filter(|(i, (last, _))| {
            *i < over || policy.max_task_type_age_ms > 0 && *last < stale_before
        })
        .map(|(_, (_, k))| k)
        .take(RETENTION_BATCH)
        .collect();
    if gone.is_empty() {
        return Ok(());
    }
    let mut runs = txn.open_table(RUNS).map_err(db("opening runs"))?;
    let mut origins = txn
        .open_table(RUN_ORIGINS)
        .map_err(db("opening run origins"))?;
    let mut imported = txn
        .open_table(IMPORTED_RUNS)
        .map_err(db("opening imported runs"))?;
    let mut samples = txn.open_table(SAMPLES).map_err(db("opening samples"))?;
    for key in gone {
        let mut ids = Vec::new();
        for item in runs
            .range((key.as_str(), 0)..=(key.as_str(), u64::MAX))
            .map_err(db("scanning runs"))?
        {
            let (k, _) = item.map_err(db("scanning runs"))?;
            ids.push(k.value().1);
        }
        for id in ids {
            runs.remove((key.as_str(), id))
                .map_err(db("deleting run"))?;
            forget_origin(&mut origins, &mut imported, id)?;
            let mut stamps = Vec::new();
            for item in samples
                .range((id, 0)..=(id, u64::MAX))
                .map_err(db("scanning samples"))?
            {
                let (k, _) = item.map_err(db("scanning samples"))?;
                stamps.push(k.value().1);
            }
            for ts in stamps {
                samples.remove((id, ts)).map_err(db("deleting sample"))?;
            }
        }
        types
            .remove(key.as_str())
            .map_err(db("deleting task type"))?;
        report.task_types_dropped += 1;
    }
    Ok(())
}

/// Drops the origin of a deleted run (a local run has none).
fn forget_origin(
    origins: &mut redb::Table<(u64, u64), u64>,
    imported: &mut redb::Table<u64, (u64, u64)>,
    run_id: RunId,
) -> Result<(), StoreError> {
    let identity = imported
        .remove(run_id)
        .map_err(db("deleting imported run"))?
        .map(|g| g.value());
    if let Some(identity) = identity {
        origins
            .remove(identity)
            .map_err(db("deleting run origin"))?;
    }
    Ok(())
}

/// Writes one run summary and updates its task type's record.
fn write_run(
    runs_t: &mut redb::Table<(&str, u64), &[u8]>,
    types_t: &mut redb::Table<&str, &[u8]>,
    run: &RunSummary,
) -> Result<(), StoreError> {
    let key = run.task_key.as_str();
    let fresh = runs_t
        .insert((key, run.run_id), encode("run summary", run)?.as_slice())
        .map_err(db("writing run summary"))?
        .is_none();
    let mut rec: TaskTypeRecord = match types_t.get(key).map_err(db("reading task type"))? {
        Some(g) => decode("task type", || key.to_owned(), g.value())?,
        None => TaskTypeRecord {
            first_seen_ms: run.started_at_ms,
            ..TaskTypeRecord::default()
        },
    };
    if fresh {
        rec.runs_seen += 1;
    }
    rec.first_seen_ms = rec.first_seen_ms.min(run.started_at_ms);
    let ended_ms = run.ended_at_ms();
    if ended_ms >= rec.last_seen_ms {
        rec.last_seen_ms = ended_ms;
        rec.image.clone_from(&run.meta.image);
        rec.command.clone_from(&run.meta.command);
    }
    types_t
        .insert(key, encode("task type", &rec)?.as_slice())
        .map_err(db("writing task type"))?;
    Ok(())
}

fn validate(run: &RunSummary) -> Result<(), StoreError> {
    let bad = |reason| {
        Err(StoreError::InvalidRun {
            run_id: run.run_id,
            reason,
        })
    };
    if run.task_key.as_str().is_empty() {
        return bad("empty task key");
    }
    if !run.outcome.duration_s.is_finite() || run.outcome.duration_s < 0.0 {
        return bad("duration is negative or not finite");
    }
    if run.profile.as_ref().is_some_and(|p| !p.is_well_formed()) {
        return bad("profile does not have 20 buckets per resource");
    }
    Ok(())
}

fn read_samples(
    t: &impl ReadableTable<(u64, u64), SampleValue>,
    run_id: RunId,
) -> Result<Vec<Sample>, StoreError> {
    let mut out = Vec::new();
    for item in t
        .range((run_id, 0)..=(run_id, u64::MAX))
        .map_err(db("scanning samples"))?
    {
        let (k, v) = item.map_err(db("scanning samples"))?;
        let (cpu_cores, memory_bytes, io_bytes, count) = v.value();
        out.push(Sample {
            ts_ms: k.value().1,
            cpu_cores,
            memory_bytes,
            io_bytes,
            count,
        });
    }
    Ok(out)
}

fn migrate_0_to_1(txn: &WriteTransaction) -> Result<(), StoreError> {
    // Version 1 is the first layout: opening a table in a write transaction creates it.
    txn.open_table(META).map_err(db("creating meta"))?;
    txn.open_table(TASK_TYPES)
        .map_err(db("creating task types"))?;
    txn.open_table(RUNS).map_err(db("creating runs"))?;
    txn.open_table(SAMPLES).map_err(db("creating samples"))?;
    txn.open_table(MODELS).map_err(db("creating models"))?;
    txn.open_table(DECISIONS)
        .map_err(db("creating decisions"))?;
    Ok(())
}

fn migrate_1_to_2(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(OPEN_RUNS)
        .map_err(db("creating open runs"))?;
    Ok(())
}

fn migrate_2_to_3(txn: &WriteTransaction) -> Result<(), StoreError> {
    use std::io::Read;
    txn.open_table(RUN_ORIGINS)
        .map_err(db("creating run origins"))?;
    txn.open_table(IMPORTED_RUNS)
        .map_err(db("creating imported runs"))?;
    let mut meta = txn.open_table(META).map_err(db("opening meta"))?;
    // Version 2 wrote whole sets only: the set in force is the current version's entries.
    let current = get_meta(&meta, K_MODEL_VERSION)?;
    meta.insert(K_MODEL_BASE, current)
        .map_err(db("writing model base version"))?;
    if get_meta(&meta, K_NODE_ID)? == 0 {
        let mut id = 0u64;
        while id == 0 {
            let mut buf = [0u8; 8];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut buf))
                .map_err(StoreError::NodeId)?;
            id = u64::from_le_bytes(buf);
        }
        meta.insert(K_NODE_ID, id).map_err(db("writing node id"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{BUCKETS, Directive, RunMetadata, RunOutcome};

    fn open_tmp() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("sub/predictor.redb")).expect("open");
        (dir, store)
    }

    fn run(key: &str, id: u64, start: u64) -> RunSummary {
        RunSummary {
            run_id: id,
            task_key: TaskKey::new(key),
            started_at_ms: start,
            meta: RunMetadata {
                image: format!("img-{key}"),
                command: vec!["run".to_owned()],
                input_bytes: 10 * id,
                ..RunMetadata::default()
            },
            outcome: RunOutcome {
                duration_s: 10.0,
                peak_memory_bytes: 1000 + id,
                ..RunOutcome::default()
            },
            profile: Some(Profile::flat()),
        }
    }

    fn sample(ts: u64, cpu: f64, mem: u64, io: u64) -> Sample {
        Sample {
            ts_ms: ts,
            cpu_cores: cpu,
            memory_bytes: mem,
            io_bytes: io,
            count: 1,
        }
    }

    #[test]
    fn fresh_file_is_migrated_to_current_version() {
        let (_d, s) = open_tmp();
        assert_eq!(s.schema_version().expect("version"), SCHEMA_VERSION);
        assert_eq!(s.run_count().expect("count"), 0);
        assert_eq!(s.sample_count().expect("count"), 0);
        assert_eq!(s.current_model_version().expect("version"), 0);
        assert!(s.task_types().expect("types").is_empty());
        assert!(
            s.decisions(&DecisionQuery::default())
                .expect("decisions")
                .is_empty()
        );
    }

    #[test]
    fn newer_schema_is_refused_and_version_zero_is_migrated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.redb");
        drop(Store::open(&path).expect("open"));
        let stamp = |v: u64| {
            let raw = Database::create(&path).expect("raw open");
            let txn = raw.begin_write().expect("txn");
            txn.open_table(META)
                .expect("meta")
                .insert(K_SCHEMA, v)
                .expect("stamp");
            txn.commit().expect("commit");
        };
        stamp(SCHEMA_VERSION + 1);
        match Store::open(&path) {
            Err(StoreError::SchemaTooNew {
                found, supported, ..
            }) => {
                assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
        stamp(0);
        let s = Store::open(&path).expect("migrates from 0");
        assert_eq!(s.schema_version().expect("version"), SCHEMA_VERSION);
    }

    #[test]
    fn runs_and_task_types_tables() {
        let (_d, s) = open_tmp();
        s.record_run(&run("b", 7, 700)).expect("record");
        s.record_runs(&[run("a", 2, 200), run("a", 1, 100), run("b", 3, 300)])
            .expect("record batch");
        // Re-recording the same run overwrites it and is not counted twice.
        let mut again = run("a", 1, 100);
        again.outcome.exit_code = 3;
        s.record_run(&again).expect("re-record");
        assert_eq!(s.run_count().expect("count"), 4);
        assert_eq!(
            s.run(&TaskKey::new("a"), 1)
                .expect("read")
                .map(|r| r.outcome.exit_code),
            Some(3)
        );
        assert!(s.run(&TaskKey::new("a"), 99).expect("read").is_none());
        let ids: Vec<u64> = s
            .runs_of(&TaskKey::new("a"))
            .expect("runs")
            .iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(ids, vec![1, 2]);
        let mut groups = Vec::new();
        s.for_each_task_runs(|k, runs| groups.push((k.to_string(), runs.len())))
            .expect("scan");
        assert_eq!(groups, vec![("a".to_owned(), 2), ("b".to_owned(), 2)]);
        let a = s
            .task_type(&TaskKey::new("a"))
            .expect("read")
            .expect("exists");
        assert_eq!(
            (a.runs_seen, a.first_seen_ms, a.last_seen_ms),
            (2, 100, 200 + 10_000),
            "first seen at its first start, last at its latest run's end"
        );
        assert_eq!(a.image, "img-a");
        assert_eq!(s.task_types().expect("types").len(), 2);
        // Run ids allocated after caller-chosen ids do not collide with them.
        assert_eq!(s.allocate_run_id().expect("id"), 8);
        assert_eq!(s.allocate_run_id().expect("id"), 9);
    }

    #[test]
    fn invalid_runs_are_rejected_without_writing() {
        let (_d, s) = open_tmp();
        let mut bad = run("a", 1, 1);
        bad.outcome.duration_s = f64::NAN;
        assert!(matches!(
            s.record_runs(&[run("a", 2, 2), bad]),
            Err(StoreError::InvalidRun { run_id: 1, .. })
        ));
        let mut bad = run("a", 3, 1);
        bad.profile = Some(Profile {
            cpu: vec![1.0],
            memory: vec![],
            io: vec![],
        });
        assert!(s.record_run(&bad).is_err());
        assert!(s.record_run(&run("", 4, 1)).is_err());
        assert_eq!(
            s.run_count().expect("count"),
            0,
            "the batch was all or nothing"
        );
    }

    #[test]
    fn samples_table_and_profile_from_samples() {
        let (_d, s) = open_tmp();
        let id = s.allocate_run_id().expect("id");
        // A 10 s run whose memory ramps up to its peak at the end.
        let samples: Vec<Sample> = (0..=10)
            .map(|i| sample(1_000 + i * 1_000, 1.0, 100 * (i + 1), 500))
            .collect();
        s.append_samples(id, &samples[..5]).expect("append");
        s.append_samples(id, &samples[5..]).expect("append");
        s.append_samples(id + 1, &[sample(5, 1.0, 1, 1)])
            .expect("other run");
        assert_eq!(s.samples(id).expect("read"), samples);
        assert_eq!(s.sample_count().expect("count"), 12);
        let mut r = run("ramp", id, 1_000);
        r.profile = None;
        s.record_run(&r).expect("record");
        let p = s
            .run(&TaskKey::new("ramp"), id)
            .expect("read")
            .and_then(|r| r.profile)
            .expect("profile derived from samples");
        assert!(p.is_well_formed());
        assert!((p.memory[BUCKETS - 1] - 1.0).abs() < 1e-6);
        assert!(p.memory[0] < 0.3, "{:?}", p.memory);
        assert!(p.memory.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn a_type_is_seen_until_its_runs_end_and_while_one_is_open() {
        const DAY: u64 = 86_400_000;
        let (_d, s) = open_tmp();
        let policy = RetentionPolicy {
            max_task_type_age_ms: 90 * DAY,
            ..RetentionPolicy::default()
        };
        let now = 200 * DAY;
        // A service whose run started 190 days ago and ended 40 days ago (found by the `server` fuzz target: a
        // run recorded now was deleted at the broker's next start, 90 days after its start).
        let mut service = run("service", 1, 10 * DAY);
        service.outcome.duration_s = (150 * DAY / 1000) as f64;
        // A job that ran for 10 s 190 days ago.
        let job = run("job", 2, 10 * DAY);
        // Another such job, of a type with a container running now.
        let live = run("live", 3, 10 * DAY);
        s.record_runs(&[service, job, live]).expect("record");
        let open = OpenRun {
            container_id: "c".to_owned(),
            run_id: 4,
            task_key: TaskKey::new("live"),
            started_at_ms: 20 * DAY,
            meta: RunMetadata::default(),
            model_version: None,
        };
        s.commit(&Batch {
            ops: vec![BatchOp::Open(Box::new(open))],
        })
        .expect("open");
        let rep = s.apply_retention(now, &policy).expect("retention");
        assert_eq!(rep.task_types_dropped, 1);
        let kept: Vec<String> = s
            .task_types()
            .expect("types")
            .into_iter()
            .map(|(k, _)| k.as_str().to_owned())
            .collect();
        assert_eq!(kept, ["live", "service"]);
        assert!(s.run(&TaskKey::new("service"), 1).expect("read").is_some());
        // Over a cap of one, the type with a run open counts and stays: the service goes.
        let capped = RetentionPolicy {
            max_task_types: 1,
            ..policy.clone()
        };
        let rep = s.apply_retention(now, &capped).expect("retention");
        assert_eq!(rep.task_types_dropped, 1);
        assert_eq!(s.task_types().expect("types")[0].0.as_str(), "live");
        // Its container gone, the live type goes at the next pass.
        s.commit(&Batch {
            ops: vec![BatchOp::Close("c".to_owned(), 4)],
        })
        .expect("close");
        let rep = s.apply_retention(now, &policy).expect("retention");
        assert_eq!(rep.task_types_dropped, 1);
        assert!(s.task_types().expect("types").is_empty());
    }

    #[test]
    fn retention_downsamples_expires_and_caps_runs() {
        let (_d, s) = open_tmp();
        let policy = RetentionPolicy {
            full_resolution_ms: 10_000,
            downsample_window_ms: 1_000,
            max_sample_age_ms: 100_000,
            max_runs_per_task: 2,
            ..RetentionPolicy::default()
        };
        let now = 200_000;
        let mut samples = Vec::new();
        // Too old: 50 samples at [50_000, 99_000) (all before now - max age).
        samples.extend((0..50).map(|i| sample(50_000 + i * 980, 1.0, 10, 1)));
        // Old: 4 samples per second for 10 s at [150_000, 160_000): merged to 10.
        samples.extend((0..40).map(|i| sample(150_000 + i * 250, (i % 4) as f64, 100 + i, 2)));
        // Recent: 20 samples at full resolution.
        samples.extend((0..20).map(|i| sample(195_000 + i * 100, 1.0, 5, 3)));
        s.append_samples(1, &samples).expect("append");
        let rep = s.apply_retention(now, &policy).expect("retention");
        assert_eq!(rep.samples_expired, 50);
        assert_eq!(rep.samples_merged, 30);
        let kept = s.samples(1).expect("read");
        assert_eq!(kept.len(), 30);
        let merged = &kept[0];
        assert_eq!(merged.ts_ms, 150_000);
        assert_eq!(merged.count, 4);
        assert!((merged.cpu_cores - 1.5).abs() < 1e-9, "mean of 0,1,2,3");
        assert_eq!(merged.memory_bytes, 103, "max");
        assert_eq!(merged.io_bytes, 8, "sum");
        assert!(
            kept[10..]
                .iter()
                .all(|s| s.count == 1 && s.ts_ms >= 195_000)
        );
        // Idempotent: a second pass changes nothing.
        let rep = s.apply_retention(now, &policy).expect("retention");
        assert_eq!(rep, RetentionReport::default());
        // Runs: the oldest beyond the cap go.
        s.record_runs(&[
            run("a", 1, 1),
            run("a", 2, 2),
            run("a", 3, 3),
            run("b", 4, 4),
        ])
        .expect("record");
        let rep = s.apply_retention(now, &policy).expect("retention");
        assert_eq!(rep.runs_dropped, 1);
        let ids: Vec<u64> = s
            .runs_of(&TaskKey::new("a"))
            .expect("runs")
            .iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(ids, vec![2, 3]);
        assert_eq!(
            s.task_type(&TaskKey::new("a"))
                .expect("read")
                .map(|t| t.runs_seen),
            Some(3),
            "runs seen keeps counting dropped runs"
        );
    }

    #[test]
    fn models_table_is_versioned_and_pruned() {
        let (_d, s) = open_tmp();
        let runs: Vec<RunSummary> = (0..10).map(|i| run("a", i, i * 1000)).collect();
        let model = crate::model::train_task(&runs, 5, &crate::model::TrainConfig::default())
            .expect("trains");
        let a = TaskKey::new("a");
        let b = TaskKey::new("b");
        s.save_models(1, [(&a, &model)], 1).expect("v1");
        s.save_models(2, [(&a, &model), (&b, &model)], 1)
            .expect("v2");
        assert_eq!(s.model_versions().expect("versions"), vec![1, 2]);
        assert_eq!(s.current_model_version().expect("current"), 2);
        assert_eq!(s.load_models(1).expect("load").len(), 1);
        let v2 = s.load_models(2).expect("load");
        assert_eq!(v2.len(), 2);
        assert_eq!(v2.get(&a), Some(&model));
        s.save_models(3, [(&b, &model)], 1).expect("v3");
        assert_eq!(s.model_versions().expect("versions"), vec![2, 3]);
        assert!(s.load_models(1).expect("load").is_empty());
    }

    #[test]
    fn a_refit_replaces_only_its_task_types_in_the_set_in_force() {
        let (_d, s) = open_tmp();
        let runs: Vec<RunSummary> = (0..10).map(|i| run("a", i, i * 1000)).collect();
        let cfg = crate::model::TrainConfig::default();
        let old = crate::model::train_task(&runs, 5, &cfg).expect("trains");
        let new = crate::model::train_task(&runs[..6], 9, &cfg).expect("trains");
        let (a, b, c) = (TaskKey::new("a"), TaskKey::new("b"), TaskKey::new("c"));
        s.save_models(4, [(&a, &old), (&b, &old), (&c, &old)], 1)
            .expect("v4");
        s.update_models(5, [(&a, &new)], std::slice::from_ref(&c))
            .expect("v5");
        assert_eq!(s.current_model_version().expect("current"), 5);
        let set = s.load_current_models().expect("load");
        assert_eq!(set.len(), 2, "c was dropped");
        assert_eq!((set.get(&a), set.get(&b)), (Some(&new), Some(&old)));
        // One entry per task type: a's v4 model was replaced, b's stays where it was written.
        assert_eq!(s.model_versions().expect("versions"), vec![4, 5]);
        s.update_models(6, [(&b, &new)], &[]).expect("v6");
        let set = s.load_current_models().expect("load");
        assert_eq!((set.get(&a), set.get(&b)), (Some(&new), Some(&new)));
        assert_eq!(s.model_versions().expect("versions"), vec![5, 6]);
        // A whole-set write starts over: nothing written before it is in force.
        s.save_models(7, [(&c, &old)], 1).expect("v7");
        let set = s.load_current_models().expect("load");
        assert_eq!(set.keys().collect::<Vec<_>>(), vec![&c]);
    }

    #[test]
    fn retention_drops_the_oldest_runs_by_start_imported_ones_included() {
        let (_d, s) = open_tmp();
        let policy = RetentionPolicy {
            max_runs_per_task: 3,
            ..RetentionPolicy::default()
        };
        s.record_runs(&[
            run("a", 1, 10_000),
            run("a", 2, 20_000),
            run("a", 3, 30_000),
        ])
        .expect("record");
        // Two runs from another node: one older than every local run, one newer; both get ids after the local ones.
        let portable = |origin_run, start| PortableRun {
            origin_node: 0xbb,
            origin_run,
            run: run("a", 0, start),
        };
        let rep = s
            .import_runs(&[portable(7, 5_000), portable(8, 40_000)])
            .expect("import");
        assert_eq!(rep.imported, 2);
        let rep = s.apply_retention(50_000, &policy).expect("retention");
        assert_eq!(rep.runs_dropped, 2);
        let starts: Vec<u64> = s
            .runs_of(&TaskKey::new("a"))
            .expect("runs")
            .iter()
            .map(|r| r.started_at_ms)
            .collect();
        assert_eq!(
            starts,
            vec![20_000, 30_000, 40_000],
            "the two oldest went, one of them imported"
        );
    }

    #[test]
    fn a_schema_2_file_gets_a_node_id_and_keeps_its_models() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.redb");
        let runs: Vec<RunSummary> = (0..10).map(|i| run("a", i, i * 1000)).collect();
        let model = crate::model::train_task(&runs, 5, &crate::model::TrainConfig::default())
            .expect("trains");
        let (a, b) = (TaskKey::new("a"), TaskKey::new("b"));
        {
            let s = Store::open(&path).expect("open");
            s.save_models(1, [(&a, &model)], 1).expect("v1");
            s.save_models(2, [(&b, &model)], 1).expect("v2");
        }
        // What a schema-2 build left: no node id, no base version (it loaded exactly the current version).
        {
            let raw = Database::create(&path).expect("raw open");
            let txn = raw.begin_write().expect("txn");
            {
                let mut meta = txn.open_table(META).expect("meta");
                meta.insert(K_SCHEMA, 2).expect("stamp");
                meta.remove(K_NODE_ID).expect("forget node id");
                meta.remove(K_MODEL_BASE).expect("forget base");
            }
            txn.commit().expect("commit");
        }
        let s = Store::open(&path).expect("migrates");
        assert_eq!(s.schema_version().expect("version"), 3);
        assert_ne!(s.node_id().expect("node id"), 0);
        let set = s.load_current_models().expect("load");
        assert_eq!(
            set.keys().collect::<Vec<_>>(),
            vec![&b],
            "v1's model of a is not in force"
        );
        let (_d2, other) = open_tmp();
        assert_ne!(other.node_id().expect("id"), s.node_id().expect("id"));
    }

    #[test]
    fn decision_log_filters_and_orders() {
        let (_d, s) = open_tmp();
        let d = |c: &str, at: u64| Decision {
            seq: 0,
            at_ms: at,
            container_id: c.to_owned(),
            task_key: TaskKey::new("t"),
            directive: Directive::Raise,
            resource: "memory".to_owned(),
            reason: "pressure".to_owned(),
            old_value: Some(1.0),
            new_value: Some(2.0),
            model_version: Some(4),
        };
        for (i, c) in ["x", "y", "x", "x"].iter().enumerate() {
            assert_eq!(
                s.record_decision(&d(c, 100 * i as u64)).expect("record"),
                i as u64 + 1
            );
        }
        let all = s.decisions(&DecisionQuery::default()).expect("read");
        assert_eq!(
            all.iter().map(|d| d.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(
            all[1],
            Decision {
                seq: 2,
                ..d("y", 100)
            }
        );
        let x = s
            .decisions(&DecisionQuery {
                container_id: Some("x".to_owned()),
                limit: 2,
                ..DecisionQuery::default()
            })
            .expect("read");
        assert_eq!(
            x.iter().map(|d| d.seq).collect::<Vec<_>>(),
            vec![3, 4],
            "newest two, oldest first"
        );
        let since = s
            .decisions(&DecisionQuery {
                since_ms: Some(150),
                task_key: Some(TaskKey::new("t")),
                ..DecisionQuery::default()
            })
            .expect("read");
        assert_eq!(since.len(), 2);
    }

    #[test]
    fn batched_decisions_and_samples_continue_the_log() {
        let (_d, s) = open_tmp();
        let d = |c: &str, at: u64| Decision {
            seq: 0,
            at_ms: at,
            container_id: c.to_owned(),
            task_key: TaskKey::new("t"),
            directive: Directive::Raise,
            resource: "cpu".to_owned(),
            reason: "busy".to_owned(),
            old_value: None,
            new_value: Some(1.0),
            model_version: None,
        };
        assert_eq!(s.record_decision(&d("x", 1)).expect("record"), 1);
        // A batch continues the sequence, in order, and one record after it continues from there.
        assert_eq!(
            s.record_decisions(&[d("y", 2), d("x", 3)]).expect("batch"),
            vec![2, 3]
        );
        assert_eq!(s.record_decision(&d("y", 4)).expect("record"), 4);
        s.append_samples_many(&[
            (
                1,
                vec![Sample {
                    ts_ms: 1,
                    cpu_cores: 0.5,
                    memory_bytes: 10,
                    io_bytes: 0,
                    count: 1,
                }],
            ),
            (
                2,
                vec![Sample {
                    ts_ms: 2,
                    cpu_cores: 0.7,
                    memory_bytes: 20,
                    io_bytes: 0,
                    count: 1,
                }],
            ),
        ])
        .expect("samples of two runs");
        assert_eq!(s.samples(2).expect("read")[0].memory_bytes, 20);
        assert_eq!(s.samples(1).expect("read")[0].memory_bytes, 10);
        let all = s.decisions(&DecisionQuery::default()).expect("read");
        assert_eq!(
            all.iter()
                .map(|d| (d.seq, d.container_id.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, "x"), (2, "y"), (3, "x"), (4, "y")]
        );
    }

    #[test]
    fn a_damaged_file_is_corrupt_and_other_failures_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let garbage = dir.path().join("garbage.redb");
        let noise: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&garbage, &noise).expect("write");
        let e = Store::open(&garbage).expect_err("garbage opens");
        assert!(e.is_corrupt(), "{e:?}");
        // A truncated copy of a real store.
        let real = dir.path().join("real.redb");
        drop(Store::open(&real).expect("open"));
        let bytes = std::fs::read(&real).expect("read");
        let cut = dir.path().join("cut.redb");
        std::fs::write(&cut, &bytes[..bytes.len().min(4096) / 2]).expect("write");
        let e = Store::open(&cut).expect_err("a truncated store opens");
        assert!(e.is_corrupt(), "{e:?}");
        // Not corrupt: a directory where the file should be, a newer schema.
        let dir_path = dir.path().join("a-dir.redb");
        std::fs::create_dir(&dir_path).expect("mkdir");
        let e = Store::open(&dir_path).expect_err("a directory opens");
        assert!(!e.is_corrupt(), "{e:?}");
    }

    /// A write the file system refuses (a full disk; here the file size limit, which nextest's process per test
    /// keeps to this test) fails the store's later transactions only while there is no room: once there is, the
    /// store reopens its file (without what failed) and writes again, and what was committed before is all there.
    #[test]
    fn a_refused_write_is_recovered_from_once_there_is_room() {
        if std::env::var_os("NEXTEST_EXECUTION_MODE").is_none_or(|m| m != "process-per-test") {
            println!(
                "SKIPPED: sets the process's file size limit, so it needs a process of its own (cargo nextest)"
            );
            return;
        }
        let limit = |bytes: u64| {
            let l = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: libc::RLIM_INFINITY,
            };
            // SAFETY: setrlimit with a valid struct; this test has the process to itself.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &l) }, 0);
        };
        // SAFETY: ignoring SIGXFSZ, so that a write past the limit fails with EFBIG instead of killing the process.
        unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.redb");
        let s = Store::open(&path).expect("open");
        s.record_run(&run("a", 1, 1)).expect("run");
        limit(std::fs::metadata(&path).expect("size").len());
        let many: Vec<Sample> = (0..2_000).map(|t| sample(t, 1.0, t, 1)).collect();
        let refused = (2..500).find(|id| s.append_samples(*id, &many).is_err());
        let refused = refused.expect("the file grew past the limit");
        assert!(
            s.append_samples(refused, &many).is_err(),
            "still no room, still refused"
        );
        std::thread::sleep(REOPEN_EVERY);
        assert_eq!(
            s.run_count().expect("reads while there is no room"),
            1,
            "what was committed before"
        );
        limit(libc::RLIM_INFINITY);
        std::thread::sleep(REOPEN_EVERY);
        s.append_samples(refused, &many)
            .expect("written once there is room again");
        s.record_run(&run("c", 601, 1)).expect("run");
        assert!(s.reopens() >= 1, "reopened {}", s.reopens());
        let mut keys = Vec::new();
        s.for_each_task_runs(|k, runs| keys.extend(runs.iter().map(|_| k.as_str().to_owned())))
            .expect("runs");
        assert_eq!(keys, ["a", "c"]);
        drop(s);
        let again = Store::open(&path).expect("reopen");
        assert_eq!(again.run_count().expect("count"), 2);
    }

    #[test]
    fn everything_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.redb");
        {
            let s = Store::open(&path).expect("open");
            s.record_run(&run("a", 1, 1)).expect("run");
            s.append_samples(1, &[sample(1, 1.0, 1, 1)])
                .expect("samples");
        }
        let s = Store::open(&path).expect("reopen");
        assert_eq!(s.run_count().expect("count"), 1);
        assert_eq!(s.sample_count().expect("count"), 1);
        assert_eq!(s.allocate_run_id().expect("id"), 2);
    }

    fn decision_at(c: &str, at: u64) -> Decision {
        Decision {
            seq: 0,
            at_ms: at,
            container_id: c.to_owned(),
            task_key: TaskKey::new("t"),
            directive: crate::types::Directive::Initial,
            resource: "cpu".to_owned(),
            reason: "r".to_owned(),
            old_value: None,
            new_value: Some(1.0),
            model_version: None,
        }
    }

    #[test]
    fn a_batch_opens_runs_appends_samples_closes_with_a_summary_and_keeps_ids_ahead() {
        let (_d, s) = open_tmp();
        let first = s.next_run_id().expect("next");
        let open = OpenRun {
            container_id: "c1".to_owned(),
            run_id: first + 5,
            task_key: TaskKey::new("a"),
            started_at_ms: 1000,
            meta: RunMetadata::default(),
            model_version: None,
        };
        s.commit(&Batch {
            ops: vec![
                BatchOp::Decision(decision_at("c1", 1000)),
                BatchOp::Open(Box::new(open.clone())),
                BatchOp::Samples(
                    first + 5,
                    vec![Sample {
                        ts_ms: 1500,
                        cpu_cores: 1.0,
                        memory_bytes: 10,
                        io_bytes: 0,
                        count: 1,
                    }],
                ),
            ],
        })
        .expect("commit");
        assert_eq!(s.open_runs().expect("open"), vec![open]);
        assert!(
            s.next_run_id().expect("next") > first + 5,
            "ids stay ahead of every written one"
        );
        let mut summary = run("a", first + 5, 1000);
        summary.profile = None;
        s.commit(&Batch {
            ops: vec![BatchOp::Run {
                container_id: Some("c1".to_owned()),
                run: Box::new(summary),
            }],
        })
        .expect("commit");
        assert!(
            s.open_runs().expect("open").is_empty(),
            "the summary closes the run"
        );
        let stored = s
            .run(&TaskKey::new("a"), first + 5)
            .expect("read")
            .expect("stored");
        assert!(
            stored.profile.is_some(),
            "profile derived from the stored samples"
        );
        // An invalid summary is dropped without failing the rest of its batch.
        let mut bad = run("b", first + 6, 1000);
        bad.outcome.duration_s = f64::NAN;
        s.commit(&Batch {
            ops: vec![
                BatchOp::Run {
                    container_id: None,
                    run: Box::new(bad),
                },
                BatchOp::Decision(decision_at("c2", 2000)),
            ],
        })
        .expect("commit");
        let (ds, _) = s.decisions_page(&DecisionQuery::default()).expect("read");
        assert_eq!(ds.len(), 2);
    }

    #[test]
    fn decisions_page_backwards_and_retention_bounds_the_log() {
        let (_d, s) = open_tmp();
        let ops = (0..25)
            .map(|i| BatchOp::Decision(decision_at(&format!("c{}", i % 5), 1000 + i)))
            .collect();
        s.commit(&Batch { ops }).expect("commit");
        let mut q = DecisionQuery {
            container_id: Some("c0".to_owned()),
            limit: 2,
            ..DecisionQuery::default()
        };
        let mut seen = Vec::new();
        loop {
            let (page, next) = s.decisions_page(&q).expect("page");
            seen.splice(0..0, page.into_iter().map(|d| d.seq));
            match next {
                Some(b) => q.before_seq = Some(b),
                None => break,
            }
        }
        assert_eq!(seen, vec![1, 6, 11, 16, 21], "every page, oldest first");
        let policy = RetentionPolicy {
            max_decisions: 10,
            ..RetentionPolicy::default()
        };
        let r = s.apply_retention(2000, &policy).expect("retention");
        assert_eq!(r.decisions_dropped, 15);
        let (left, _) = s.decisions_page(&DecisionQuery::default()).expect("read");
        assert_eq!(
            left.first().map(|d| d.seq),
            Some(16),
            "the oldest went first"
        );
    }

    #[test]
    fn a_bare_id_names_the_container_in_every_namespace_and_a_qualified_one_only_its_own() {
        let (_d, s) = open_tmp();
        let ops = ["web", "a/web", "b/web", "a/webb", "a/db"]
            .iter()
            .enumerate()
            .map(|(i, c)| BatchOp::Decision(decision_at(c, 1000 + i as u64)))
            .collect();
        s.commit(&Batch { ops }).expect("commit");
        let of = |c: &str| -> Vec<String> {
            let q = DecisionQuery {
                container_id: Some(c.to_owned()),
                ..DecisionQuery::default()
            };
            let (page, _) = s.decisions_page(&q).expect("page");
            let all: Vec<String> = s
                .decisions(&q)
                .expect("read")
                .into_iter()
                .map(|d| d.container_id)
                .collect();
            let paged: Vec<String> = page.into_iter().map(|d| d.container_id).collect();
            assert_eq!(paged, all, "both readers filter alike");
            all
        };
        assert_eq!(of("web"), ["web", "a/web", "b/web"]);
        assert_eq!(of("a/web"), ["a/web"]);
        assert_eq!(of("b/db"), Vec::<String>::new());
        assert_eq!(of("db"), ["a/db"]);
    }
}
