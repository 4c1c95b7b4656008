//! Grouped reports: one message per shim and wake-up for all its containers (a pod's containers share one shim).
//!
//! The shim's ticker (`ticker.rs`) looks at all its containers at each tick and steps the due ones together;
//! their reports go here as one `reports` request ([`predictive_api::wire::Reports`], at most [`MAX_BATCH`]
//! entries a message), on one container's connection, and each container gets its own outcome back. A lone
//! report goes as a single `report`. A broker that refuses the `reports` request whole (an older one: an unknown
//! `type`) gets the entries as single reports, and single reports for [`RETRY_BATCHES_AFTER`] before the shim
//! tries a batch again.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use predictive_api::client::{Client, ClientError};
use predictive_api::types::Directive;
use predictive_api::wire::{MAX_BATCH, Report, Reports};

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
    /// The broker gave no answer within the client's budget, said for the log.
    Unanswered(String),
    /// Anything else (a refusal, a dropped connection), said for the log.
    Failed(String),
}

impl Sent {
    fn of(e: &ClientError) -> Self {
        if e.is_not_registered() {
            Sent::NotRegistered
        } else if e.is_no_broker() {
            Sent::NoBroker
        } else if e.is_unanswered() {
            Sent::Unanswered(predictive_api::error_chain(e).to_string())
        } else {
            Sent::Failed(predictive_api::error_chain(e).to_string())
        }
    }
}

/// Sends a wake-up's reports; remembers a broker that refused a batch.
#[derive(Debug, Default)]
pub struct Batcher {
    /// When a broker last refused a batch.
    refused_at: Mutex<Option<Instant>>,
}

/// The shim's batcher.
pub fn shared() -> &'static Batcher {
    static BATCHER: OnceLock<Batcher> = OnceLock::new();
    BATCHER.get_or_init(Batcher::default)
}

impl Batcher {
    /// Sends `reports` on `client` (module docs); returns each one's outcome with the report, in order (a
    /// failed one keeps its samples for the next).
    pub fn send(&self, mut reports: Vec<Report>, client: &mut Client) -> Vec<(Sent, Report)> {
        let mut out = Vec::with_capacity(reports.len());
        while !reports.is_empty() {
            let rest = reports.split_off(reports.len().min(MAX_BATCH));
            let chunk = std::mem::replace(&mut reports, rest);
            let singles = chunk.len() == 1
                || self
                    .refused_at()
                    .is_some_and(|t| t.elapsed() < RETRY_BATCHES_AFTER);
            if singles {
                out.extend(singly(&chunk, client));
                continue;
            }
            let (outcomes, refused) = batched(chunk, client);
            if refused {
                *self.refused_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            }
            out.extend(outcomes);
        }
        out
    }

    fn refused_at(&self) -> Option<Instant> {
        *self.refused_at.lock().unwrap_or_else(|e| e.into_inner())
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

    fn send(b: &Batcher, fake: &Fake, ids: &[&str]) -> Vec<Sent> {
        let out = b.send(
            ids.iter().map(|id| report(id)).collect(),
            &mut fake.client(),
        );
        let back: Vec<&str> = out.iter().map(|(_, r)| r.container_id.as_str()).collect();
        assert_eq!(back, ids, "each report back, in order");
        out.into_iter().map(|(s, _)| s).collect()
    }

    #[test]
    fn the_reports_of_one_wake_up_go_in_one_message() {
        let fake = Fake::start(false);
        let sent = send(&Batcher::default(), &fake, &["a", "b", "ghost"]);
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
        assert_eq!(seen[0].1, ["a", "b", "ghost"]);
    }

    #[test]
    fn a_lone_report_goes_single_and_a_large_wake_up_in_messages_of_max_batch() {
        let fake = Fake::start(false);
        let b = Batcher::default();
        send(&b, &fake, &["alone"]);
        let ids: Vec<String> = (0..MAX_BATCH + 2).map(|i| format!("c{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let sent = send(&b, &fake, &ids);
        assert!(sent.iter().all(|s| *s == Sent::Directives(Vec::new())));
        let seen = fake.seen();
        let sizes: Vec<(&str, usize)> = seen.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
        assert_eq!(
            sizes,
            [("report", 1), ("reports", MAX_BATCH), ("reports", 2)]
        );
    }

    /// A broker that took the connection and stopped (SIGSTOP, a hang): every report of the wake-up comes back
    /// unanswered, which is what lets a Delete go on without waiting for the run's Finish (`predict.rs`).
    #[test]
    fn a_stalled_broker_leaves_each_report_unanswered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.sock");
        // Bound and listening, never read: the connection is taken, no answer comes.
        let listener = UnixListener::bind(&path).expect("bind");
        for ids in [&["a"][..], &["a", "b"]] {
            let reports = ids.iter().map(|id| report(id)).collect();
            let out = Batcher::default()
                .send(reports, &mut Client::new(&path, Duration::from_millis(50)));
            assert_eq!(out.len(), ids.len());
            for (sent, _) in out {
                assert!(
                    matches!(&sent, Sent::Unanswered(why) if why.contains("no answer")),
                    "{ids:?}: {sent:?}"
                );
            }
        }
        drop(listener);
        let out = Batcher::default().send(
            vec![report("a")],
            &mut Client::new(&path, Duration::from_millis(50)),
        );
        assert!(
            !matches!(out[0].0, Sent::Unanswered(_)),
            "no broker is not a stall: {:?}",
            out[0].0
        );
    }

    #[test]
    fn an_older_broker_gets_single_reports() {
        let fake = Fake::start(true);
        let b = Batcher::default();
        let sent = send(&b, &fake, &["a", "ghost"]);
        assert_eq!(sent, [Sent::Directives(Vec::new()), Sent::NotRegistered]);
        // The next wake-up does not try a batch again.
        send(&b, &fake, &["a", "b"]);
        let seen = fake.seen();
        let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            ["reports", "report", "report", "report", "report"],
            "{seen:?}"
        );
    }
}
