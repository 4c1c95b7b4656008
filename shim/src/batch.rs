//! Grouped reports: one message per shim and wake-up for all its containers (a pod's containers share one shim).
//!
//! Every monitor wakes on the same multiples of the tick on CLOCK_MONOTONIC (`predict.rs`), so the reports of one
//! wake-up are due together. Each monitor *looks* at every wake-up (its round: the tick's index), saying whether
//! a report is coming; the reports queue here and one of their monitors sends the queue in one `reports`
//! request ([`predictive_api::wire::Reports`], at most [`MAX_BATCH`] entries), over its own connection, and
//! hands each monitor its outcome. When the queue goes:
//! - a report that carries a change (anything but a heartbeat: CPU use, memory moved, stopping, a retry) goes at
//!   once, with whatever is queued: grouping never delays it;
//! - a heartbeat waits until every monitor of the shim has looked at this round and every report announced has
//!   queued, at most [`GATHER_AT_MOST`] (a monitor that missed the round, one just started);
//! - a report of an older round (a monitor that woke late) goes at once.
//!
//! A queue of one goes as a single `report`. A broker that refuses the `reports` request whole (an older one: an
//! unknown `type`) gets the entries as single reports, and single reports for [`RETRY_BATCHES_AFTER`] before the
//! shim tries a batch again.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use predictive_api::client::{Client, ClientError};
use predictive_api::types::Directive;
use predictive_api::wire::{MAX_BATCH, Report, Reports};

/// Longest a heartbeat waits for the rest of its wake-up's reports.
pub const GATHER_AT_MOST: Duration = Duration::from_millis(100);
/// After a broker refused a batch, how long the shim sends single reports.
pub const RETRY_BATCHES_AFTER: Duration = Duration::from_secs(600);

/// What became of one container's report.
#[derive(Debug, PartialEq)]
pub enum Sent {
    /// The broker took it: the directives to apply.
    Directives(Vec<Directive>),
    /// The broker does not know the container (it restarted): register again.
    NotRegistered,
    /// No broker answers on the socket.
    NoBroker,
    /// Anything else (a timeout, a refusal), said for the log.
    Failed(String),
}

impl Sent {
    fn of(e: &ClientError) -> Self {
        if e.is_not_registered() {
            Sent::NotRegistered
        } else if e.is_no_broker() {
            Sent::NoBroker
        } else {
            Sent::Failed(predictive_api::error_chain(e).to_string())
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Monitors running.
    members: usize,
    /// The newest round any monitor looked at, and how many looked at it and announced a report.
    round: u64,
    looked: usize,
    coming: usize,
    queue: Vec<(u64, Report)>,
    /// Outcomes for their monitors, with each report back (its samples are kept when it failed).
    done: HashMap<u64, (Sent, Report)>,
    next_ticket: u64,
    /// When a broker last refused a batch.
    refused_at: Option<Instant>,
}

impl Inner {
    /// Everyone looked at the round and every announced report has queued.
    fn complete(&self) -> bool {
        self.looked >= self.members && self.coming == 0
    }
}

/// The shim's gathering point; [`shared`] is the one its monitors use.
#[derive(Debug)]
pub struct Group {
    inner: Mutex<Inner>,
    cv: Condvar,
    /// Longest a heartbeat waits ([`GATHER_AT_MOST`]).
    gather: Duration,
}

impl Group {
    /// A group whose heartbeats wait at most `gather` for the rest of their wake-up.
    pub fn new(gather: Duration) -> Self {
        Self {
            inner: Mutex::default(),
            cv: Condvar::new(),
            gather,
        }
    }
}

/// The shim's group.
pub fn shared() -> &'static Group {
    static GROUP: OnceLock<Group> = OnceLock::new();
    GROUP.get_or_init(|| Group::new(GATHER_AT_MOST))
}

/// A monitor announced a report at a round; dropped unsent (the step found nothing to say, or could not
/// register), it stops the others waiting for it.
#[derive(Debug)]
pub struct Coming {
    group: &'static Group,
    round: u64,
    live: bool,
}

impl Coming {
    fn settle(&mut self, g: &mut Inner) {
        if std::mem::take(&mut self.live) && self.round == g.round {
            g.coming = g.coming.saturating_sub(1);
        }
    }
}

impl Drop for Coming {
    fn drop(&mut self) {
        if self.live {
            let group = self.group;
            let mut g = group.lock();
            self.settle(&mut g);
            group.cv.notify_all();
        }
    }
}

impl Group {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A monitor starts.
    pub fn join(&self) {
        self.lock().members += 1;
    }

    /// A monitor ends: nobody waits for it any more.
    pub fn leave(&self) {
        let mut g = self.lock();
        g.members = g.members.saturating_sub(1);
        self.cv.notify_all();
    }

    /// A monitor's wake-up at `round` (the tick's index on CLOCK_MONOTONIC); with `due`, its report is coming.
    pub fn look(&'static self, round: u64, due: bool) -> Option<Coming> {
        let mut g = self.lock();
        if round > g.round {
            g.round = round;
            g.looked = 0;
            g.coming = 0;
        }
        if round == g.round {
            g.looked += 1;
            g.coming += usize::from(due);
            self.cv.notify_all();
        }
        let live = round == g.round;
        drop(g);
        // Built only when due: a Coming dropped unsent takes the lock (`then_some` would build and drop one here).
        due.then(|| Coming {
            group: self,
            round,
            live,
        })
    }

    /// Sends `report` with the others of its wake-up (module docs); `urgent`: it carries a change and goes at
    /// once. A monitor that sends the queue does so on `client`, its own connection. Returns the outcome and the
    /// report.
    pub fn send(
        &self,
        mut coming: Option<Coming>,
        report: Report,
        urgent: bool,
        client: &mut Client,
    ) -> (Sent, Report) {
        let mut g = self.lock();
        let ticket = g.next_ticket;
        g.next_ticket += 1;
        let round = coming.as_ref().map(|c| c.round);
        if let Some(c) = coming.as_mut() {
            c.settle(&mut g);
        }
        g.queue.push((ticket, report));
        self.cv.notify_all();
        let started = Instant::now();
        loop {
            if let Some(out) = g.done.remove(&ticket) {
                return out;
            }
            let waited = started.elapsed();
            let go = urgent || round != Some(g.round) || g.complete() || waited >= self.gather;
            if go && !g.queue.is_empty() {
                g = self.flush(g, client);
                continue;
            }
            // Our report is in a batch another monitor is sending: its outcome comes with the notification.
            let wait = self
                .gather
                .saturating_sub(waited)
                .max(Duration::from_millis(1));
            g = self
                .cv
                .wait_timeout(g, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Sends up to [`MAX_BATCH`] queued reports on `client` and files their outcomes.
    fn flush<'a>(
        &'a self,
        mut g: MutexGuard<'a, Inner>,
        client: &mut Client,
    ) -> MutexGuard<'a, Inner> {
        let n = g.queue.len().min(MAX_BATCH);
        let (tickets, reports): (Vec<u64>, Vec<Report>) = g.queue.drain(..n).unzip();
        let singles = reports.len() == 1
            || g.refused_at
                .is_some_and(|t| t.elapsed() < RETRY_BATCHES_AFTER);
        drop(g);
        let (outcomes, refused) = if singles {
            (singly(&reports, client), false)
        } else {
            batched(reports, client)
        };
        let mut g = self.lock();
        if refused {
            g.refused_at = Some(Instant::now());
        }
        for (ticket, out) in tickets.into_iter().zip(outcomes) {
            g.done.insert(ticket, out);
        }
        self.cv.notify_all();
        g
    }
}

fn singly(reports: &[Report], client: &mut Client) -> Vec<(Sent, Report)> {
    reports
        .iter()
        .map(|r| {
            let sent = match client.report(r) {
                Ok(d) => Sent::Directives(d),
                Err(e) => Sent::of(&e),
            };
            (sent, r.clone())
        })
        .collect()
}

/// One `reports` request; `true` beside the outcomes when the broker refused it whole (then they were sent
/// singly).
fn batched(reports: Vec<Report>, client: &mut Client) -> (Vec<(Sent, Report)>, bool) {
    let batch = Reports { reports };
    match client.reports(&batch) {
        Ok(outcomes) => {
            tracing::debug!(reports = batch.reports.len(), "grouped report sent");
            let out = outcomes
                .into_iter()
                .zip(batch.reports)
                .map(|(o, r)| {
                    // An entry's error reads as the same error to a single report would.
                    let sent = match o.error {
                        None => Sent::Directives(o.directives),
                        Some(e) => Sent::of(&ClientError::Broker(e)),
                    };
                    (sent, r)
                })
                .collect();
            (out, false)
        }
        Err(e @ (ClientError::Broker(_) | ClientError::Unexpected { .. })) => {
            tracing::info!(
                "the broker does not take grouped reports (an older one?): single reports for {}s ({})",
                RETRY_BATCHES_AFTER.as_secs(),
                predictive_api::error_chain(&e)
            );
            (singly(&batch.reports, client), true)
        }
        Err(e) => {
            let out = batch
                .reports
                .into_iter()
                .map(|r| (Sent::of(&e), r))
                .collect();
            (out, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::sync::Arc;

    use predictive_api::wire::{
        self, Directives, ErrorCode, ErrorReply, ReportOutcome, ReportOutcomes, Request, Response,
    };

    use super::*;

    /// What the fake broker saw: each request's type and container ids.
    type Seen = Arc<Mutex<Vec<(String, Vec<String>)>>>;

    /// A broker on a temp socket that records each request's type and container ids; `old`: it answers
    /// `reports` as a broker before them does (an unknown type). It answers "ghost" with not_found.
    struct Fake {
        _dir: tempfile::TempDir,
        path: PathBuf,
        seen: Seen,
    }

    impl Fake {
        fn start(old: bool) -> Fake {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("b.sock");
            let listener = UnixListener::bind(&path).expect("bind");
            let seen = Arc::new(Mutex::new(Vec::new()));
            let log = seen.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { return };
                    let log = log.clone();
                    std::thread::spawn(move || serve(conn, old, &log));
                }
            });
            Fake {
                _dir: dir,
                path,
                seen,
            }
        }

        fn client(&self) -> Client {
            Client::new(&self.path, Duration::from_secs(5))
        }

        fn seen(&self) -> Vec<(String, Vec<String>)> {
            self.seen.lock().expect("log").clone()
        }
    }

    fn serve(
        conn: std::os::unix::net::UnixStream,
        old: bool,
        log: &Mutex<Vec<(String, Vec<String>)>>,
    ) {
        let mut w = conn.try_clone().expect("clone");
        for line in BufReader::new(conn).lines() {
            let Ok(line) = line else { return };
            let (id, req) = wire::parse_request(&line);
            let not_found = |c: &str| ErrorReply::new(ErrorCode::NotFound, format!("{c} unknown"));
            let resp = match req.expect("a valid request") {
                Request::Report(r) => {
                    log.lock()
                        .expect("log")
                        .push(("report".into(), vec![r.container_id.clone()]));
                    if r.container_id == "ghost" {
                        Response::Error(not_found(&r.container_id))
                    } else {
                        Response::Directives(Directives::default())
                    }
                }
                Request::Reports(b) => {
                    let ids: Vec<String> =
                        b.reports.iter().map(|r| r.container_id.clone()).collect();
                    log.lock()
                        .expect("log")
                        .push(("reports".into(), ids.clone()));
                    if old {
                        Response::Error(ErrorReply::new(
                            ErrorCode::InvalidRequest,
                            "unknown variant `reports`",
                        ))
                    } else {
                        Response::Reports(ReportOutcomes {
                            results: ids
                                .into_iter()
                                .map(|c| ReportOutcome {
                                    error: (c == "ghost").then(|| not_found(&c)),
                                    container_id: c,
                                    directives: Vec::new(),
                                })
                                .collect(),
                        })
                    }
                }
                other => panic!("unexpected {other:?}"),
            };
            let out = wire::encode_response(id, &resp).expect("encodes");
            if w.write_all(out.as_bytes()).is_err() {
                return;
            }
        }
    }

    fn report(id: &str) -> Report {
        Report {
            container_id: id.to_owned(),
            ..Report::default()
        }
    }

    /// `ids`' monitors look at one round, each with a report coming, and send heartbeats from their threads.
    fn heartbeats(group: &'static Group, fake: &Fake, round: u64, ids: &[&str]) -> Vec<Sent> {
        let coming: Vec<_> = ids.iter().map(|_| group.look(round, true)).collect();
        std::thread::scope(|s| {
            let hs: Vec<_> = ids
                .iter()
                .zip(coming)
                .map(|(id, c)| {
                    let mut client = fake.client();
                    s.spawn(move || group.send(c, report(id), false, &mut client))
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    let (sent, r) = h.join().expect("sender");
                    assert!(
                        ids.contains(&r.container_id.as_str()),
                        "its own report back"
                    );
                    sent
                })
                .collect()
        })
    }

    /// A group whose heartbeats would wait an hour: a test that relies on the cap hangs (and nextest fails it)
    /// instead of passing late.
    fn leaked() -> &'static Group {
        Box::leak(Box::new(Group::new(Duration::from_secs(3600))))
    }

    #[test]
    fn the_heartbeats_of_one_wake_up_go_in_one_message() {
        let fake = Fake::start(false);
        let group = leaked();
        for _ in 0..3 {
            group.join();
        }
        let sent = heartbeats(group, &fake, 7, &["a", "b", "ghost"]);
        assert_eq!(
            sent,
            vec![
                Sent::Directives(Vec::new()),
                Sent::Directives(Vec::new()),
                Sent::NotRegistered
            ]
        );
        let seen = fake.seen();
        assert_eq!(seen.len(), 1, "one message for the wake-up: {seen:?}");
        assert_eq!(seen[0].0, "reports");
        let mut ids = seen[0].1.clone();
        ids.sort();
        assert_eq!(ids, ["a", "b", "ghost"]);
    }

    #[test]
    fn an_older_broker_gets_single_reports() {
        let fake = Fake::start(true);
        let group = leaked();
        group.join();
        group.join();
        let sent = heartbeats(group, &fake, 1, &["a", "ghost"]);
        assert!(
            sent.contains(&Sent::Directives(Vec::new())) && sent.contains(&Sent::NotRegistered)
        );
        // The next wake-up does not try a batch again.
        heartbeats(group, &fake, 2, &["a", "b"]);
        let seen = fake.seen();
        let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            ["reports", "report", "report", "report", "report"],
            "{seen:?}"
        );
    }

    #[test]
    fn a_change_goes_at_once_and_a_monitor_with_nothing_to_say_is_not_waited_for() {
        let fake = Fake::start(false);
        let group = leaked();
        group.join();
        group.join();
        group.join();
        // A monitor with nothing to say at round 3 looks and is not waited for.
        assert!(group.look(3, false).is_none());
        // The third monitor has not looked at this round: a change does not wait for it.
        let c = group.look(3, true);
        let (sent, _) = group.send(c, report("busy"), true, &mut fake.client());
        assert_eq!(sent, Sent::Directives(Vec::new()));
        assert_eq!(
            fake.seen(),
            [("report".to_owned(), vec!["busy".to_owned()])]
        );
        // Next round: one monitor has nothing to say, one announced a report and then had nothing to say after all
        // (its Coming dropped unsent); the third's heartbeat goes as soon as all have looked.
        assert!(group.look(4, false).is_none());
        let quiet = group.look(4, true);
        let c = group.look(4, true);
        std::thread::scope(|s| {
            let mut client = fake.client();
            let h = s.spawn(move || group.send(c, report("idle"), false, &mut client));
            drop(quiet);
            assert_eq!(h.join().expect("sender").0, Sent::Directives(Vec::new()));
        });
        assert_eq!(fake.seen().len(), 2);
    }
}
