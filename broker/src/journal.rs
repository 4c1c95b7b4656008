//! Group commit: everything the broker must not lose goes through one queue that a recorder thread writes to the
//! store, a whole batch per redb transaction (one fsync for every peer that sent something meanwhile).
//!
//! A writer [`Journal::submit`]s its records and gets a sequence number; a reply that acknowledges them waits in
//! [`Journal::wait`] until the recorder has committed that far. So an acknowledged Register, Report, Update or
//! Finish, and every decision a reply carries, is on disk before the peer hears of it, and `kill -9` at any moment
//! loses only what nobody was told. The queue is bounded: a connection waits in [`Journal::room`] before it serves a
//! request that writes, so a burst slows its senders down instead of growing the queue (the tick thread, whose
//! writes are bounded by the number of tasks, never waits).
//!
//! A queue of samples alone (the reports of running containers: on an idle node, the heartbeats every shim sends
//! at the same wake-up, arriving over some tens of milliseconds as their processes get a CPU) lingers up to
//! [`LINGER`] before its commit, so one commit takes the wake-up's reports instead of one every few: each commit
//! costs the broker two `fdatasync`s and its pages' writes. Anything else queued (a Register, a Finish, a
//! decision, an Update) ends the linger at once, so no latency that matters waits on it; a report's reply (its
//! directives) waits at most that long more.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use predictor::{Batch, BatchOp, Predictor};

/// Most failed batches remembered (their waiters woke long before an older one is forgotten).
const FAILURES_KEPT: usize = 64;
/// Longest a queue of samples alone waits for more before its commit (module docs).
pub const LINGER: Duration = Duration::from_millis(20);
/// A lingering queue commits once it holds this many records.
const LINGER_MOST: usize = 4096;

#[derive(Default)]
struct Queue {
    ops: Vec<BatchOp>,
    /// Sequence number of the latest submission.
    submitted: u64,
    /// Sequence number the recorder has committed (or failed) up to.
    committed: u64,
    /// The recorder is gone: nothing more will be committed.
    gone: bool,
    stop: bool,
    /// Something queued is not samples: commit without lingering.
    urgent: bool,
    /// Submission ranges whose commit failed, newest last.
    failures: VecDeque<(u64, u64)>,
}

/// The shared queue between writers and the recorder thread.
pub struct Journal {
    q: Mutex<Queue>,
    /// The recorder waits here for work.
    work: Condvar,
    /// Writers wait here for a commit or for room.
    done: Condvar,
    cap: usize,
    linger: Duration,
    /// Transactions committed (or failed).
    commits: std::sync::atomic::AtomicU64,
}

/// Why a submission is not durable.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The store refused the batch holding it.
    #[error("the store could not commit the batch holding this request")]
    Failed,
    /// The recorder is gone (the broker is stopping).
    #[error("the recorder stopped before this request was committed")]
    Stopped,
    /// Not committed within the bound given.
    #[error("not committed within {0:?}")]
    Timeout(Duration),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Journal {
    /// A journal whose queue holds about `cap` records before writers wait.
    pub fn new(cap: usize) -> Arc<Self> {
        Self::with_linger(cap, LINGER)
    }

    /// The same, with a queue of samples alone lingering `linger` before its commit.
    pub fn with_linger(cap: usize, linger: Duration) -> Arc<Self> {
        Arc::new(Self {
            q: Mutex::new(Queue::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            cap: cap.max(1),
            linger,
            commits: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Transactions the recorder has committed (or failed) so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Queues `ops` and returns the sequence number to wait for (the latest one when `ops` is empty: waiting for
    /// it waits for everything queued before). Never blocks on I/O.
    pub fn submit(&self, ops: Vec<BatchOp>) -> u64 {
        let mut q = lock(&self.q);
        if ops.is_empty() {
            return q.submitted;
        }
        let (was_empty, was_urgent) = (q.ops.is_empty(), q.urgent);
        q.urgent |= ops.iter().any(|o| !matches!(o, BatchOp::Samples(..)));
        q.ops.extend(ops);
        q.submitted += 1;
        let seq = q.submitted;
        // A recorder lingering over samples is woken only by what ends its linger: each report of a wake-up's
        // hundred waking it to wait again cost it a context switch apiece.
        let wake = was_empty || (q.urgent && !was_urgent) || q.ops.len() >= self.linger_most();
        drop(q);
        if wake {
            self.work.notify_one();
        }
        seq
    }

    /// The latest submission's sequence number.
    pub fn submitted(&self) -> u64 {
        lock(&self.q).submitted
    }

    /// Records queued and not yet taken by the recorder.
    pub fn queued(&self) -> usize {
        lock(&self.q).ops.len()
    }

    /// Waits until the queue has room (back-pressure for connections), at most `timeout`.
    pub fn room(&self, timeout: Duration) {
        let until = Instant::now() + timeout;
        let mut q = lock(&self.q);
        while q.ops.len() >= self.cap && !q.gone {
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                return;
            };
            q = self
                .done
                .wait_timeout(q, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits until submission `seq` is committed, at most `timeout`.
    pub fn wait(&self, seq: u64, timeout: Duration) -> Result<(), JournalError> {
        let until = Instant::now() + timeout;
        let mut q = lock(&self.q);
        loop {
            if q.committed >= seq {
                return if q.failures.iter().any(|&(lo, hi)| lo <= seq && seq <= hi) {
                    Err(JournalError::Failed)
                } else {
                    Ok(())
                };
            }
            if q.gone {
                return Err(JournalError::Stopped);
            }
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                return Err(JournalError::Timeout(timeout));
            };
            q = self
                .done
                .wait_timeout(q, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Asks the recorder to end once the queue is written.
    pub fn stop(&self) {
        lock(&self.q).stop = true;
        self.work.notify_all();
    }

    /// How many records end a linger.
    fn linger_most(&self) -> usize {
        LINGER_MOST.min(self.cap / 2).max(1)
    }

    /// A queue of samples alone waits for more, at most the journal's linger (module docs).
    fn linger<'a>(&self, mut q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        let until = Instant::now() + self.linger;
        let most = self.linger_most();
        while !q.urgent && !q.stop && q.ops.len() < most {
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                break;
            };
            q = self
                .work
                .wait_timeout(q, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        q
    }

    /// The recorder: takes everything queued, commits it in one transaction, publishes the sequence number reached.
    pub fn run_recorder(&self, predictor: &Predictor) {
        loop {
            let (ops, from, upto, stop) = {
                let mut q = lock(&self.q);
                while q.ops.is_empty() && !q.stop {
                    q = self.work.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                q = self.linger(q);
                q.urgent = false;
                (
                    std::mem::take(&mut q.ops),
                    q.committed + 1,
                    q.submitted,
                    q.stop,
                )
            };
            // Room again for writers while this batch is written.
            self.done.notify_all();
            let mut failed = false;
            if !ops.is_empty() {
                self.commits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let n = ops.len();
                if let Err(e) = predictor.commit(&Batch { ops }) {
                    tracing::error!(
                        error = %crate::error_chain(&e),
                        records = n,
                        "committing a batch; the requests in it are answered with an internal error"
                    );
                    failed = true;
                }
            }
            {
                let mut q = lock(&self.q);
                if failed {
                    if q.failures.len() >= FAILURES_KEPT {
                        q.failures.pop_front();
                    }
                    q.failures.push_back((from, upto));
                }
                q.committed = upto;
                if stop && q.ops.is_empty() {
                    q.gone = true;
                }
            }
            self.done.notify_all();
            if stop && self.queued() == 0 {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_submission_is_committed_in_one_batch_and_waiters_wake() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Arc::new(
            Predictor::open(
                &dir.path().join("p.redb"),
                predictor::PredictorConfig::default(),
            )
            .expect("open"),
        );
        let j = Journal::new(16);
        let rec = {
            let (j, p) = (Arc::clone(&j), Arc::clone(&p));
            std::thread::spawn(move || j.run_recorder(&p))
        };
        let d = predictor::Decision {
            seq: 0,
            at_ms: 1,
            container_id: "c".to_owned(),
            task_key: predictor::TaskKey::new("t"),
            directive: predictor::Directive::Initial,
            resource: "cpu".to_owned(),
            reason: "r".to_owned(),
            old_value: None,
            new_value: Some(1.0),
            model_version: None,
        };
        let seq = j.submit(vec![BatchOp::Decision(d.clone()), BatchOp::Decision(d)]);
        assert_eq!(seq, 1);
        j.wait(seq, Duration::from_secs(10)).expect("committed");
        let (got, _) = p
            .store()
            .decisions_page(&predictor::DecisionQuery::default())
            .expect("read");
        assert_eq!(got.len(), 2);
        assert_eq!(
            j.submit(Vec::new()),
            1,
            "an empty submission waits for the latest"
        );
        j.stop();
        rec.join().expect("recorder");
        assert!(matches!(
            j.wait(2, Duration::from_secs(1)),
            Err(JournalError::Stopped)
        ));
    }

    fn samples(n: u64) -> BatchOp {
        let s = predictor::Sample {
            ts_ms: n,
            cpu_cores: 0.0,
            memory_bytes: 1 << 20,
            io_bytes: 0,
            count: 1,
        };
        BatchOp::Samples(n, vec![s])
    }

    /// A journal lingering an hour and its recorder: a test that relied on the linger running out would hang
    /// (and fail under nextest's timeout) instead of passing.
    fn lingering(cap: usize) -> (Arc<Journal>, std::thread::JoinHandle<()>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Predictor::open(
            &dir.path().join("p.redb"),
            predictor::PredictorConfig::default(),
        )
        .expect("open");
        let j = Journal::with_linger(cap, Duration::from_secs(3600));
        let rec = {
            let j = Arc::clone(&j);
            std::thread::spawn(move || j.run_recorder(&p))
        };
        (j, rec, dir)
    }

    #[test]
    fn samples_wait_for_what_must_not_and_go_in_its_commit() {
        let (j, rec, _dir) = lingering(1024);
        let a = j.submit(vec![samples(1)]);
        let b = j.submit(vec![samples(2)]);
        // A Close is not samples: it ends the linger, and everything queued goes in one commit.
        let c = j.submit(vec![BatchOp::Close("c".to_owned(), 1)]);
        j.wait(c, Duration::from_secs(10)).expect("committed");
        j.wait(a.max(b), Duration::ZERO).expect("the samples too");
        assert_eq!(j.commits(), 1, "one commit for the queue");
        j.stop();
        rec.join().expect("recorder");
    }

    #[test]
    fn a_lingering_queue_commits_when_it_fills_or_the_journal_stops() {
        let (j, rec, _dir) = lingering(8);
        let seqs: Vec<u64> = (0..4).map(|n| j.submit(vec![samples(n)])).collect();
        j.wait(seqs[3], Duration::from_secs(10))
            .expect("half the queue's room: committed");
        let last = j.submit(vec![samples(9)]);
        j.stop();
        rec.join().expect("recorder");
        j.wait(last, Duration::ZERO)
            .expect("stopping writes what is queued");
    }
}
