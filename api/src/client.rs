//! A blocking client of the broker for the shim and `predictivectl`, with a deadline on every call.
//!
//! The shim calls [`register_within`] at Create with a 50 ms budget and starts the container with the spec's
//! limits when it fails (fail open); while the container runs it keeps one [`Client`] and calls
//! [`Client::report`] every tick. A [`Client`] connects lazily and reconnects after an error, so a restarted
//! broker is picked up on the next call; a Report answered with [`ErrorCode::NotFound`] means the broker
//! restarted and the container must be registered again ([`ClientError::is_not_registered`]).

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::types::Directive;
use crate::wire::{
    self as wire, Decisions, EncodeError, ErrorCode, ErrorReply, Explain, Finish, Finished, Models,
    Register, Registered, Report, ReportOutcome, Reports, Request, Response, Status, Update,
};

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting failed (no broker).
    #[error("connecting to {path}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Sending or receiving failed.
    #[error("{what} on {path}")]
    Io {
        /// `"sending"` or `"receiving"`.
        what: &'static str,
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The deadline passed.
    #[error("no answer from {path} within {budget:?}")]
    Timeout {
        /// The socket.
        path: PathBuf,
        /// The budget.
        budget: Duration,
    },
    /// The broker closed the connection.
    #[error("{path} closed the connection")]
    Closed {
        /// The socket.
        path: PathBuf,
    },
    /// The process serving the socket is not the broker we trust (its uid is neither root, ours, nor
    /// `PREDICTIVE_BROKER_UID`): its directives are not applied.
    #[error("{path} is served by uid {uid}, not by root or the configured broker uid")]
    Untrusted {
        /// The socket.
        path: PathBuf,
        /// The server's uid (SO_PEERCRED).
        uid: u32,
    },
    /// The reply was not a valid message.
    #[error("unreadable reply")]
    BadReply(#[source] ErrorReply),
    /// The broker answered with an error.
    #[error("the broker refused the request")]
    Broker(#[source] ErrorReply),
    /// The reply was of another type.
    #[error("expected a {expected} reply")]
    Unexpected {
        /// The expected reply type.
        expected: &'static str,
    },
    /// The request could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl ClientError {
    /// The broker does not know the container (it restarted): register again.
    pub fn is_not_registered(&self) -> bool {
        matches!(self, ClientError::Broker(e) if e.code == ErrorCode::NotFound)
    }

    /// No broker answers on the socket (none started yet, or it died): buffer, and register with the next one.
    pub fn is_no_broker(&self) -> bool {
        matches!(self, ClientError::Connect { .. })
    }

    /// The broker took the connection and gave no answer within the budget (stopped, hung, overloaded): the
    /// request may still be in its socket and be served later.
    pub fn is_unanswered(&self) -> bool {
        matches!(self, ClientError::Timeout { .. })
    }
}

/// A connection to the broker. Not shared between threads; cheap to keep per container.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    timeout: Duration,
    conn: Option<BufReader<UnixStream>>,
    next_id: u64,
    /// A poke came while a request was under way: it may be for a directive queued after the broker read the
    /// request (the reply is written after the broker's state lock is let go), so one more report is due.
    poked_late: bool,
}

fn is_stale(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
    )
}

impl Client {
    /// A client of the broker at `path`; each call must finish within `timeout`. Connects on first use.
    pub fn new(path: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self {
            path: path.into(),
            timeout,
            conn: None,
            next_id: 1,
            poked_late: false,
        }
    }

    /// A client of the broker at [`wire::DEFAULT_SOCKET`].
    pub fn default_socket(timeout: Duration) -> Self {
        Self::new(wire::DEFAULT_SOCKET, timeout)
    }

    /// Sets the bound on each later call.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn remaining(&self, deadline: Instant) -> Result<Duration, ClientError> {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| ClientError::Timeout {
                path: self.path.clone(),
                budget: self.timeout,
            })
    }

    fn io(&self, what: &'static str, source: std::io::Error) -> ClientError {
        if matches!(source.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
            return ClientError::Timeout {
                path: self.path.clone(),
                budget: self.timeout,
            };
        }
        ClientError::Io {
            what,
            path: self.path.clone(),
            source,
        }
    }

    /// Sends one request and waits for its reply; an error reply is [`ClientError::Broker`].
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        let deadline = Instant::now() + self.timeout;
        let reused = self.conn.is_some();
        match self.call_once(req, deadline) {
            Err(ClientError::Io { source, .. }) if reused && is_stale(&source) => {
                self.conn = None;
                self.call_once(req, deadline)
            }
            Err(ClientError::Closed { .. }) if reused => {
                self.conn = None;
                self.call_once(req, deadline)
            }
            r => r,
        }
    }

    fn call_once(&mut self, req: &Request, deadline: Instant) -> Result<Response, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let line = wire::encode_request(Some(id), req)?;
        // A report's reply carries every directive queued before the broker read it.
        let answers_pokes = matches!(req, Request::Report(_) | Request::Reports(_));
        let r = self.exchange(&line, deadline, answers_pokes);
        if r.is_err() {
            self.conn = None;
        }
        match r? {
            Response::Error(e) => Err(ClientError::Broker(e)),
            resp => Ok(resp),
        }
    }

    /// Sends `line` and reads the reply, skipping the pokes the broker sent before it ([`Response::Poke`]). The
    /// pokes already waiting when the request goes out are answered by it; one that comes after may be for a
    /// directive the broker queued after it read a report (it writes the reply once the report is durable, with
    /// its state lock let go), so it is remembered ([`Self::has_unread`]) until the next report goes out.
    fn exchange(
        &mut self,
        line: &str,
        deadline: Instant,
        answers_pokes: bool,
    ) -> Result<Response, ClientError> {
        self.read_waiting_pokes(deadline);
        self.send(line, deadline)?;
        if answers_pokes {
            self.poked_late = false;
        }
        loop {
            let (_, resp) = wire::parse_response(&self.read_line(deadline)?);
            match resp.map_err(ClientError::BadReply)? {
                Response::Poke => self.poked_late = true,
                resp => return Ok(resp),
            }
        }
    }

    /// Reads the lines the broker wrote between requests (pokes) without waiting for more. Anything else there
    /// (a line no request asked for, a closed connection, an error) drops the connection: the request goes out
    /// on a new one.
    fn read_waiting_pokes(&mut self, deadline: Instant) {
        while self.readable() {
            let poke = self
                .read_line(deadline)
                .ok()
                .map(|l| wire::parse_response(&l).1);
            if !matches!(poke, Some(Ok(Response::Poke))) {
                self.conn = None;
                return;
            }
        }
    }

    /// Whether the broker wrote something this client has not read (a poke, between requests), poked during the
    /// last request ([`Self::poked_late`]) or closed the connection: a report is worth sending now. Never blocks
    /// (a zero-timeout poll when nothing is buffered).
    pub fn has_unread(&self) -> bool {
        self.poked_late || self.readable()
    }

    /// A poke came while a request was under way and no report went out since ([`Self::exchange`]): a report
    /// is worth sending now, though nothing waits on the connection. No system call.
    pub fn poked_late(&self) -> bool {
        self.poked_late
    }

    /// Whether the connection has bytes buffered or waiting, or was closed (a zero-timeout poll).
    fn readable(&self) -> bool {
        let Some(conn) = &self.conn else {
            return false;
        };
        if !conn.buffer().is_empty() {
            return true;
        }
        let mut pfd = [nix::poll::PollFd::new(
            conn.get_ref().as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        matches!(nix::poll::poll(&mut pfd, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// The connection's descriptor, while connected: it turns readable when the broker pokes.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.conn.as_ref().map(|c| c.get_ref().as_fd())
    }

    fn send(&mut self, line: &str, deadline: Instant) -> Result<(), ClientError> {
        if self.conn.is_none() {
            let s = UnixStream::connect(&self.path).map_err(|source| ClientError::Connect {
                path: self.path.clone(),
                source,
            })?;
            server_trusted(&s, &self.path)?;
            self.conn = Some(BufReader::new(s));
        }
        let left = self.remaining(deadline)?;
        let conn = self.conn.as_mut().expect("connected just above");
        let sent = conn
            .get_ref()
            .set_write_timeout(Some(left))
            .and_then(|()| conn.get_mut().write_all(line.as_bytes()));
        if let Err(e) = sent {
            return Err(self.io("sending", e));
        }
        Ok(())
    }

    /// Reads one line (the reply, or a poke before it).
    fn read_line(&mut self, deadline: Instant) -> Result<String, ClientError> {
        let mut buf = Vec::new();
        loop {
            let left = self.remaining(deadline)?;
            let conn = self.conn.as_mut().expect("connected just above");
            if let Err(e) = conn.get_ref().set_read_timeout(Some(left)) {
                return Err(self.io("receiving", e));
            }
            let chunk = match conn.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io("receiving", e)),
            };
            if chunk.is_empty() {
                return Err(ClientError::Closed {
                    path: self.path.clone(),
                });
            }
            let (used, done) = match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            buf.extend_from_slice(&chunk[..used]);
            conn.consume(used);
            if done {
                return Ok(String::from_utf8_lossy(&buf).into_owned());
            }
            if buf.len() > wire::MAX_LINE {
                return Err(ClientError::BadReply(ErrorReply::new(
                    ErrorCode::TooLong,
                    "reply longer than MAX_LINE",
                )));
            }
        }
    }

    /// Registers a container; the reply carries its initial allocation.
    pub fn register(&mut self, r: &Register) -> Result<Registered, ClientError> {
        match self.call(&Request::Register(r.clone()))? {
            Response::Registered(x) => Ok(x),
            _ => Err(ClientError::Unexpected {
                expected: "registered",
            }),
        }
    }

    /// Sends samples; returns the directives to apply (those with `applied: true`).
    pub fn report(&mut self, r: &Report) -> Result<Vec<Directive>, ClientError> {
        match self.call(&Request::Report(r.clone()))? {
            Response::Directives(x) => Ok(x.directives),
            _ => Err(ClientError::Unexpected {
                expected: "directives",
            }),
        }
    }

    /// Sends several containers' reports in one message ([`Reports`]); returns one outcome per entry, in order. A
    /// broker that does not know batches (an older one) refuses the whole request ([`ClientError::Broker`]): send
    /// the entries as single Reports then.
    pub fn reports(&mut self, b: &Reports) -> Result<Vec<ReportOutcome>, ClientError> {
        match self.call(&Request::Reports(b.clone()))? {
            Response::Reports(x)
                if x.results.len() == b.reports.len()
                    && x.results
                        .iter()
                        .zip(&b.reports)
                        .all(|(o, r)| o.container_id == r.container_id) =>
            {
                Ok(x.results)
            }
            _ => Err(ClientError::Unexpected {
                expected: "one outcome per report, in order",
            }),
        }
    }

    /// The user resized the container: its new limits; returns the directives that re-derive its allocation
    /// (apply those with `applied: true`). [`ClientError::is_not_registered`] when the broker does not know it.
    pub fn update(&mut self, u: &Update) -> Result<Vec<Directive>, ClientError> {
        match self.call(&Request::Update(u.clone()))? {
            Response::Directives(x) => Ok(x.directives),
            _ => Err(ClientError::Unexpected {
                expected: "directives",
            }),
        }
    }

    /// Reports the exit of a container.
    pub fn finish(&mut self, f: &Finish) -> Result<Finished, ClientError> {
        match self.call(&Request::Finish(f.clone()))? {
            Response::Finished(x) => Ok(x),
            _ => Err(ClientError::Unexpected {
                expected: "finished",
            }),
        }
    }

    /// Tasks, allocations and leases: every page of them, merged (a status of 20,000 tasks is many replies).
    pub fn status(&mut self) -> Result<Status, ClientError> {
        let mut page = wire::Page::default();
        let mut out: Option<Status> = None;
        loop {
            let mut s = match self.call(&Request::Status(page.clone()))? {
                Response::Status(x) => x,
                _ => return Err(ClientError::Unexpected { expected: "status" }),
            };
            let next = s.next_offset.take();
            match &mut out {
                None => out = Some(s),
                Some(o) => {
                    o.tasks.append(&mut s.tasks);
                    o.leases.append(&mut s.leases);
                    o.predictions.append(&mut s.predictions);
                }
            }
            match next {
                // A broker that does not page (older) or the last page.
                Some(n) if page.offset.is_none_or(|o| n > o) => page.offset = Some(n),
                _ => break,
            }
        }
        Ok(out.expect("at least one page was read"))
    }

    /// Task types and their models: every page, merged.
    pub fn models(&mut self) -> Result<Models, ClientError> {
        let mut page = wire::Page::default();
        let mut out: Option<Models> = None;
        loop {
            let mut m = match self.call(&Request::Models(page.clone()))? {
                Response::Models(x) => x,
                _ => return Err(ClientError::Unexpected { expected: "models" }),
            };
            let next = m.next_offset.take();
            match &mut out {
                None => out = Some(m),
                Some(o) => o.task_types.append(&mut m.task_types),
            }
            match next {
                Some(n) if page.offset.is_none_or(|o| n > o) => page.offset = Some(n),
                _ => break,
            }
        }
        Ok(out.expect("at least one page was read"))
    }

    /// The decision log: `e.limit` decisions (default 100), newest last, paging backwards through the broker's
    /// pages of at most [`wire::MAX_PAGE`].
    pub fn explain(&mut self, e: &Explain) -> Result<Decisions, ClientError> {
        let want = e.limit.unwrap_or(100);
        let mut q = e.clone();
        let mut out: Vec<crate::prediction::Decision> = Vec::new();
        let mut next_before_seq;
        loop {
            q.limit = Some((want - out.len()).clamp(1, wire::MAX_PAGE));
            let mut d = match self.call(&Request::Explain(q.clone()))? {
                Response::Decisions(x) => x,
                _ => {
                    return Err(ClientError::Unexpected {
                        expected: "decisions",
                    });
                }
            };
            d.decisions.append(&mut out);
            out = d.decisions;
            next_before_seq = d.next_before_seq;
            match d.next_before_seq {
                Some(b) if out.len() < want && q.before_seq.is_none_or(|o| b < o) => {
                    q.before_seq = Some(b)
                }
                _ => break,
            }
        }
        Ok(Decisions {
            decisions: out,
            next_before_seq,
        })
    }
}

/// Environment variable naming the uid a non-root broker runs as (the shim trusts root, its own uid and this one).
pub const BROKER_UID_ENV: &str = "PREDICTIVE_BROKER_UID";

/// Whether a server with `uid` may send us directives: root, our own uid, or `configured`.
pub fn trusted_uid(uid: u32, own_uid: u32, configured: Option<u32>) -> bool {
    uid == 0 || uid == own_uid || configured == Some(uid)
}

/// Checks who serves the socket (SO_PEERCRED, taken when the server called `listen`) before anything is sent.
fn server_trusted(s: &UnixStream, path: &Path) -> Result<(), ClientError> {
    let cred = nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| ClientError::Connect {
            path: path.to_owned(),
            source: e.into(),
        })?;
    let configured = std::env::var(BROKER_UID_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok());
    if trusted_uid(cred.uid(), nix::unistd::geteuid().as_raw(), configured) {
        Ok(())
    } else {
        Err(ClientError::Untrusted {
            path: path.to_owned(),
            uid: cred.uid(),
        })
    }
}

/// Connects, registers and returns within `budget` (the shim's Create path: on error, use the spec).
pub fn register_within(
    path: &Path,
    r: &Register,
    budget: Duration,
) -> Result<Registered, ClientError> {
    Client::new(path, budget).register(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn only_root_our_uid_or_the_configured_uid_is_trusted() {
        assert!(trusted_uid(0, 1000, None));
        assert!(trusted_uid(1000, 1000, None));
        assert!(!trusted_uid(1001, 1000, None));
        assert!(trusted_uid(1001, 1000, Some(1001)));
        assert!(!trusted_uid(1002, 0, Some(1001)));
    }

    #[test]
    fn no_broker_is_a_connect_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = register_within(
            &dir.path().join("none.sock"),
            &Register::default(),
            Duration::from_millis(50),
        )
        .expect_err("nothing listens");
        assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
    }

    #[test]
    fn a_silent_broker_times_out_within_the_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("silent.sock");
        let _l = UnixListener::bind(&path).expect("bind");
        let started = Instant::now();
        let e = register_within(&path, &Register::default(), Duration::from_millis(50))
            .expect_err("silent");
        assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
        // Generous: only checks the call is bounded, not how tightly.
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn error_replies_and_garbage_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fake.sock");
        let l = UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            let (s, _) = l.accept().expect("accept");
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut w = s;
            let mut line = String::new();
            r.read_line(&mut line).expect("read");
            w.write_all(b"{\"version\":1,\"type\":\"error\",\"code\":\"not_found\",\"message\":\"container c is not registered\"}\n")
                .expect("write");
            line.clear();
            r.read_line(&mut line).expect("read");
            w.write_all(b"garbage\n").expect("write");
        });
        let mut c = Client::new(&path, Duration::from_secs(5));
        let e = c
            .report(&Report {
                container_id: "c".to_owned(),
                ..Report::default()
            })
            .expect_err("not found");
        assert!(e.is_not_registered(), "{e:?}");
        let e = c.status().expect_err("garbage");
        assert!(matches!(e, ClientError::BadReply(_)), "{e:?}");
        server.join().expect("server thread");
    }

    #[test]
    fn a_poke_during_a_request_asks_one_more_report() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("poke.sock");
        let l = UnixListener::bind(&path).expect("bind");
        let (step, stepped) = std::sync::mpsc::channel::<()>();
        let (done, wait_done) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (s, _) = l.accept().expect("accept");
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut unasked = s.try_clone().expect("clone");
            let mut w = s;
            let poke = wire::encode_response(None, &Response::Poke).expect("poke");
            let reply = wire::encode_response(
                Some(1),
                &Response::Directives(crate::wire::Directives::default()),
            )
            .expect("reply");
            let mut answer = |before: &str| {
                let mut line = String::new();
                r.read_line(&mut line).expect("read");
                w.write_all(format!("{before}{reply}").as_bytes())
                    .expect("write");
            };
            answer("");
            // Unasked, between requests.
            stepped.recv().expect("told to poke");
            unasked.write_all(poke.as_bytes()).expect("write");
            done.send(()).expect("done");
            answer("");
            // One raced with the request: it arrives before the reply.
            answer(&poke);
            // An Update and two more reports, nothing unasked.
            for _ in 0..3 {
                answer("");
            }
            // Open until the client looked (a closed connection reads as unread: worth a report).
            stepped.recv().expect("told to close");
        });
        let mut c = Client::new(&path, Duration::from_secs(5));
        let report = Report {
            container_id: "c".to_owned(),
            ..Report::default()
        };
        assert!(!c.has_unread(), "not connected yet");
        c.report(&report).expect("first report");
        assert!(c.fd().is_some());
        assert!(!c.has_unread(), "nothing sent after the reply");
        step.send(()).expect("poke");
        wait_done.recv().expect("poked");
        assert!(c.has_unread(), "the poke waits to be read");
        assert_eq!(c.report(&report).expect("second report"), Vec::new());
        assert!(
            !c.has_unread(),
            "a poke waiting before the request is answered by it"
        );
        assert_eq!(c.report(&report).expect("third report"), Vec::new());
        assert!(
            c.poked_late() && c.has_unread(),
            "a poke during the request may be for a directive queued after the broker read it"
        );
        let update = Update {
            container_id: "c".to_owned(),
            ..Update::default()
        };
        assert_eq!(c.update(&update).expect("update"), Vec::new());
        assert!(c.poked_late(), "only a report answers a late poke");
        assert_eq!(c.report(&report).expect("fourth report"), Vec::new());
        assert!(!c.has_unread(), "the fourth report answered it");
        assert_eq!(c.report(&report).expect("fifth report"), Vec::new());
        step.send(()).expect("close");
        server.join().expect("server thread");
        assert!(c.has_unread(), "a closed connection is worth a report");
    }
}
