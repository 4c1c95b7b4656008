//! Output URIs: a process's stdout and stderr sent to a logging binary (`binary://`) or appended to a file
//! (`file://`) instead of containerd's fifos, as containerd's runc v2 shim does. `ctr run --log-uri` sends them,
//! and nerdctl's detached containers (`nerdctl run -d`) log through its own binary this way.
//!
//! What containerd's runc v2 shim does, and so this shim: the scheme of the stdout URI decides for both streams
//! (the client sends the same URI twice); no scheme or `fifo` is containerd's fifos.
//! - `binary:///path/to/logger?key=value&flag`: the logger runs with the query as arguments (`key value flag ""`),
//!   only `CONTAINER_ID` (the process's id: the container's, or the exec's) and `CONTAINER_NAMESPACE` in its
//!   environment, the process's stdout on descriptor 3, stderr on 4, and a pipe on 5 that it closes (or writes a
//!   byte to) once it is ready; the process is created only then. It sees end-of-file on 3 and 4 when the
//!   process and everything that inherited its output are gone, and gets SIGTERM at Delete if it is still there
//!   a grace period after that, SIGKILL later. Unlike runc's shim this keeps the query's order (Go's map has
//!   none), waits for readiness at most [`READY_TIMEOUT`] instead of forever, and lets a logger drain its input
//!   before the SIGTERM instead of sending both at once.
//! - `file:///path`: the file (and its directory) is made if missing and both streams are appended to it.
//!
//! URIs come from containerd's clients: a malformed one is refused with an error naming it and what is wrong.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::reaper::{Exit, Reaper};
use crate::spawn::{self, Launch};

/// How long a logging binary may take to say it is ready before the process's creation fails.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a logger may take to end by itself at Delete (its input has ended) before it gets SIGTERM.
const EXIT_GRACE: Duration = Duration::from_secs(1);
/// How long after SIGTERM before SIGKILL (containerd's runc shim waits 12 s).
const TERM_WAIT: Duration = Duration::from_secs(10);
/// The most arguments a query may give a logger.
const MAX_ARGS: usize = 256;

/// Where a process's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// containerd's fifos (a path or `fifo://path` per stream), or nowhere when a path is empty.
    Fifos,
    /// A logging binary and its arguments.
    Binary {
        program: PathBuf,
        args: Vec<OsString>,
    },
    /// A file both streams are appended to.
    File(PathBuf),
}

/// Why an output URI was refused.
#[derive(Debug, thiserror::Error)]
pub enum LogUriError {
    #[error("stdio URI {uri:?}: unknown scheme {scheme:?} (fifo, binary and file are supported)")]
    Scheme { uri: String, scheme: String },
    #[error("stdio URI {uri:?}: {why}")]
    Malformed { uri: String, why: &'static str },
    #[error("stdio URI {uri:?}: more than {MAX_ARGS} query arguments")]
    TooManyArgs { uri: String },
    #[error("starting the logging binary {program}")]
    Spawn {
        program: String,
        #[source]
        source: spawn::SpawnError,
    },
    #[error(
        "the logging binary {program} did not say it was ready (closing or writing to descriptor 5) in time"
    )]
    NotReady { program: String },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// The sink the stdout URI `stdout` names (the stderr URI is the same one when it is not a fifo).
pub fn parse(stdout: &str) -> Result<Sink, LogUriError> {
    let Some((scheme, rest)) = split_scheme(stdout) else {
        return Ok(Sink::Fifos);
    };
    let bad = |why| LogUriError::Malformed {
        uri: stdout.to_owned(),
        why,
    };
    match scheme.to_ascii_lowercase().as_str() {
        "fifo" => Ok(Sink::Fifos),
        "binary" => {
            let (path, query) = path_and_query(rest);
            let program = absolute_path(path).map_err(bad)?;
            let mut args: Vec<OsString> = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let k =
                    unescape(k, true).ok_or_else(|| bad("a query key is not %-escaped right"))?;
                let v =
                    unescape(v, true).ok_or_else(|| bad("a query value is not %-escaped right"))?;
                // As Go's url.Values: a key given twice keeps its first value.
                if args.iter().step_by(2).any(|a| a.as_bytes() == k.as_slice()) {
                    continue;
                }
                if args.len() + 2 > 2 * MAX_ARGS {
                    return Err(LogUriError::TooManyArgs {
                        uri: stdout.to_owned(),
                    });
                }
                args.push(OsString::from_vec(k));
                args.push(OsString::from_vec(v));
            }
            Ok(Sink::Binary { program, args })
        }
        "file" => {
            let (path, _) = path_and_query(rest);
            Ok(Sink::File(absolute_path(path).map_err(bad)?))
        }
        _ => Err(LogUriError::Scheme {
            uri: stdout.to_owned(),
            scheme: scheme.to_owned(),
        }),
    }
}

/// `scheme` and the rest of `uri` when it starts with one (RFC 3986: a letter, then letters, digits, `+-.`,
/// then `:`); a plain path has none.
fn split_scheme(uri: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = uri.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some((scheme, rest))
}

/// The path (after an authority `//host`, which is ignored as containerd ignores it) and the query of what
/// follows a scheme; a fragment is dropped.
fn path_and_query(rest: &str) -> (&str, &str) {
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let (mut path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if let Some(after) = path.strip_prefix("//") {
        path = after.find('/').map_or("", |i| &after[i..]);
    }
    (path, query)
}

fn absolute_path(path: &str) -> Result<PathBuf, &'static str> {
    let bytes = unescape(path, false).ok_or("its path is not %-escaped right")?;
    if bytes.first() != Some(&b'/') {
        return Err("it names no absolute path");
    }
    if bytes.contains(&0) {
        return Err("its path holds a NUL byte");
    }
    Ok(PathBuf::from(OsString::from_vec(bytes)))
}

/// Percent-decoding; in a query `+` is a space (as Go's `url.ParseQuery`). `None` on a bad escape.
fn unescape(s: &str, query: bool) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if query => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// A running logging binary; dropped without [`Logger::stop`] (a process that failed to start) it is killed.
pub struct Logger {
    program: String,
    pid: i32,
    /// A pidfd, so a signal never reaches a process that reused the pid; `None` when it was already gone.
    pidfd: Option<OwnedFd>,
    exit: Option<oneshot::Receiver<Exit>>,
}

/// What [`Logger::start`] gives the process: the write ends of its stdout and stderr.
pub struct LoggerPipes {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl Logger {
    /// Starts `program` for process `id` of `namespace`, its exit collected by `reaper`, and waits until it says
    /// it is ready.
    pub async fn start(
        program: &std::path::Path,
        args: &[OsString],
        id: &str,
        namespace: &str,
        reaper: &Reaper,
    ) -> Result<(Logger, LoggerPipes), LogUriError> {
        Self::start_within(program, args, id, namespace, reaper, READY_TIMEOUT).await
    }

    async fn start_within(
        program: &std::path::Path,
        args: &[OsString],
        id: &str,
        namespace: &str,
        reaper: &Reaper,
        ready_within: Duration,
    ) -> Result<(Logger, LoggerPipes), LogUriError> {
        let name = program.display().to_string();
        let (out_r, out_w) = pipe("the logger's stdout pipe")?;
        let (err_r, err_w) = pipe("the logger's stderr pipe")?;
        let (ready_r, ready_w) = pipe("the logger's ready pipe")?;
        let launch = Launch {
            program: program.to_owned(),
            args: args.to_vec(),
            join: Vec::new(),
            reset_oom_score: false,
            log: None,
            env: Some(vec![
                format!("CONTAINER_ID={id}").into(),
                format!("CONTAINER_NAMESPACE={namespace}").into(),
            ]),
        };
        let pid =
            spawn::spawn_with(&launch, &[&out_r, &err_r, &ready_w], false).map_err(|source| {
                LogUriError::Spawn {
                    program: name.clone(),
                    source,
                }
            })?;
        let exit = reaper.subscribe(pid);
        let mut logger = Logger {
            program: name.clone(),
            pid,
            pidfd: pidfd_open(pid),
            exit: Some(exit),
        };
        drop((out_r, err_r, ready_w));
        let mut ready =
            tokio::net::unix::pipe::Receiver::from_owned_fd(ready_r).map_err(|source| {
                LogUriError::Io {
                    what: "registering the logger's ready pipe".into(),
                    source,
                }
            })?;
        // A byte, or end-of-file (closed, or the logger is gone), is the answer; an error counts as it too.
        let wait = async {
            use tokio::io::AsyncReadExt;
            let _ = ready.read(&mut [0u8; 1]).await;
        };
        if tokio::time::timeout(ready_within, wait).await.is_err() {
            logger.signal(libc::SIGKILL);
            logger.stopped().await;
            return Err(LogUriError::NotReady { program: name });
        }
        tracing::debug!(program = %logger.program, pid, "logging binary ready");
        Ok((
            logger,
            LoggerPipes {
                stdout: out_w,
                stderr: err_w,
            },
        ))
    }

    /// The logger's pid.
    #[cfg(test)]
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// At Delete: lets the logger end by itself on the end of its input, then asks it to (SIGTERM), then
    /// kills it.
    pub async fn stop(mut self) {
        if self.wait(EXIT_GRACE).await {
            return;
        }
        tracing::debug!(program = %self.program, pid = self.pid, "logging binary still running; SIGTERM");
        self.signal(libc::SIGTERM);
        if self.wait(TERM_WAIT).await {
            return;
        }
        tracing::warn!(
            program = %self.program,
            pid = self.pid,
            "logging binary ignored SIGTERM for {TERM_WAIT:?}; killing it"
        );
        self.signal(libc::SIGKILL);
        self.stopped().await;
    }

    /// Waits for the exit up to `limit`; true when it came.
    async fn wait(&mut self, limit: Duration) -> bool {
        let Some(rx) = self.exit.as_mut() else {
            return true;
        };
        match tokio::time::timeout(limit, rx).await {
            Ok(_) => {
                self.exit = None;
                self.pidfd = None;
                true
            }
            Err(_) => false,
        }
    }

    /// Waits for the exit after SIGKILL (bounded: the reaper may be gone at shutdown).
    async fn stopped(&mut self) {
        self.wait(Duration::from_secs(2)).await;
        self.exit = None;
        self.pidfd = None;
    }

    fn signal(&self, sig: i32) {
        if let Some(fd) = &self.pidfd {
            // SAFETY: pidfd_send_signal with a pidfd we own, a valid signal number, no siginfo and no flags.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    sig,
                    std::ptr::null::<libc::siginfo_t>(),
                    0u32,
                )
            };
        }
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        if self.exit.is_some() {
            self.signal(libc::SIGKILL);
        }
    }
}

fn pipe(what: &str) -> Result<(OwnedFd, OwnedFd), LogUriError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| LogUriError::Io {
        what: format!("creating {what}"),
        source: e.into(),
    })
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    // SAFETY: a non-negative return is a descriptor the kernel just gave us.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Opens (making it and its directory if needed) the file of a `file://` sink for appending.
pub fn open_file(path: &std::path::Path) -> Result<std::fs::File, LogUriError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| LogUriError::Io {
            what: format!("making the log file's directory {}", dir.display()),
            source,
        })?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| LogUriError::Io {
            what: format!("opening the log file {}", path.display()),
            source,
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn binary(program: &str, args: &[&str]) -> Sink {
        Sink::Binary {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
        }
    }

    #[test]
    fn fifos_are_paths_or_the_fifo_scheme() {
        for uri in [
            "",
            "/run/containerd/fifo/1/x-stdout",
            "fifo:///run/x",
            "relative/with:colon",
        ] {
            assert_eq!(parse(uri).expect(uri), Sink::Fifos, "{uri}");
        }
    }

    #[test]
    fn a_binary_uri_gives_its_program_and_its_query_in_order() {
        assert_eq!(
            parse("binary:///usr/local/bin/nerdctl?_NERDCTL_INTERNAL_LOGGING=%2Fvar%2Flib%2Fnerdctl%2F1935db59").expect("a valid URI"),
            binary(
                "/usr/local/bin/nerdctl",
                &["_NERDCTL_INTERNAL_LOGGING", "/var/lib/nerdctl/1935db59"]
            )
        );
        assert_eq!(
            parse("binary:///opt/my%20logger?--driver=awslogs&--flag&b=x+y&--driver=again#frag")
                .expect("a valid URI"),
            binary(
                "/opt/my logger",
                &["--driver", "awslogs", "--flag", "", "b", "x y"]
            )
        );
        // An authority is ignored, as containerd ignores it; `binary:/path` is a path too.
        assert_eq!(
            parse("BINARY://host/bin/l").expect("a valid URI"),
            binary("/bin/l", &[])
        );
        assert_eq!(
            parse("binary:/bin/l").expect("a valid URI"),
            binary("/bin/l", &[])
        );
    }

    #[test]
    fn a_file_uri_gives_its_path() {
        assert_eq!(
            parse("file:///var/log/my%20app/out.log?ignored=1").expect("a valid URI"),
            Sink::File("/var/log/my app/out.log".into())
        );
    }

    #[test]
    fn bad_uris_are_refused_naming_the_uri_and_the_fault() {
        for (uri, needle) in [
            ("http://example.com/x", "unknown scheme \"http\""),
            ("binary://host", "no absolute path"),
            ("binary:relative/logger", "no absolute path"),
            ("binary:///bin/l?a=%zz", "query value"),
            ("binary:///bin/l?%4=1", "query key"),
            ("file:///tmp/a%00b", "NUL"),
            ("file:///tmp/%", "not %-escaped"),
        ] {
            let e = parse(uri).expect_err(uri).to_string();
            assert!(e.contains(needle), "{uri}: {e}");
            assert!(e.contains(&format!("{uri:?}")), "{uri}: {e}");
        }
        let many: Vec<String> = (0..=MAX_ARGS).map(|i| format!("k{i}=v")).collect();
        let uri = format!("binary:///bin/l?{}", many.join("&"));
        assert!(matches!(parse(&uri), Err(LogUriError::TooManyArgs { .. })));
    }

    #[test]
    fn split_scheme_needs_a_letter_first() {
        assert_eq!(split_scheme("a+b.c-d:x"), Some(("a+b.c-d", "x")));
        assert_eq!(split_scheme("1a:x"), None);
        assert_eq!(split_scheme("/abs:x"), None);
        assert_eq!(split_scheme(":x"), None);
    }

    /// Collects `pid` as the shim's reaper would (only that pid: other tests' children are theirs).
    pub(crate) fn reap_for(reaper: &std::sync::Arc<Reaper>, pid: i32) {
        let reaper = reaper.clone();
        std::thread::spawn(move || {
            let mut status = 0;
            // SAFETY: waiting for a child of this process, with a valid out-pointer.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            reaper.deliver(Exit {
                pid,
                status: libc::WEXITSTATUS(status) as u32,
            });
        });
    }

    fn sh(script: &str) -> (PathBuf, Vec<OsString>) {
        ("/bin/sh".into(), vec!["-c".into(), script.into()])
    }

    fn write_all(fd: OwnedFd, text: &str) {
        use std::io::Write;
        std::fs::File::from(fd)
            .write_all(text.as_bytes())
            .expect("writing to the logger");
    }

    #[tokio::test]
    async fn a_logger_gets_its_streams_and_its_names_and_ends_when_they_end() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path().display();
        let (program, args) = sh(&format!(
            "tr '\\0' ' ' < /proc/$$/environ > {d}/env; cat <&3 5>&- > {d}/out & cat <&4 5>&- > {d}/err & \
             exec 5>&-; wait; echo done > {d}/done"
        ));
        let reaper = std::sync::Arc::new(Reaper::default());
        let (logger, pipes) = Logger::start(&program, &args, "c1", "k8s.io", &reaper)
            .await
            .expect("the logger starts");
        reap_for(&reaper, logger.pid);
        // Ready means its set-up ran: the environment is written before descriptor 5 is closed.
        let env = std::fs::read_to_string(tmp.path().join("env")).expect("env");
        assert_eq!(env, "CONTAINER_ID=c1 CONTAINER_NAMESPACE=k8s.io ");
        write_all(pipes.stdout, "to stdout\n");
        write_all(pipes.stderr, "to stderr\n");
        let t = std::time::Instant::now();
        logger.stop().await;
        assert!(
            t.elapsed() < EXIT_GRACE,
            "it ended on its input's end, without a signal"
        );
        let read = |f: &str| std::fs::read_to_string(tmp.path().join(f)).unwrap_or_default();
        assert_eq!(read("out"), "to stdout\n");
        assert_eq!(read("err"), "to stderr\n");
        assert_eq!(read("done"), "done\n");
    }

    #[tokio::test]
    async fn a_logger_that_outlives_its_input_gets_sigterm() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path().display();
        let (program, args) = sh(&format!(
            "trap 'echo term > {d}/term; exit 0' TERM; exec 5>&-; while :; do sleep 0.05; done"
        ));
        let reaper = std::sync::Arc::new(Reaper::default());
        let (logger, pipes) = Logger::start(&program, &args, "c1", "default", &reaper)
            .await
            .expect("the logger starts");
        reap_for(&reaper, logger.pid);
        drop(pipes);
        logger.stop().await;
        let term = std::fs::read_to_string(tmp.path().join("term")).unwrap_or_default();
        assert_eq!(term, "term\n");
    }

    #[tokio::test]
    async fn a_logger_that_never_says_ready_is_refused_and_killed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pid_file = tmp.path().join("pid");
        let (program, args) = sh(&format!("echo $$ > {}; exec sleep 100", pid_file.display()));
        let reaper = Reaper::default();
        let e = Logger::start_within(
            &program,
            &args,
            "c1",
            "default",
            &reaper,
            Duration::from_millis(300),
        )
        .await
        .err()
        .expect("a logger that holds descriptor 5 open is refused");
        assert!(matches!(e, LogUriError::NotReady { .. }), "{e:?}");
        assert!(e.to_string().contains("/bin/sh"), "{e}");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .expect("pid")
            .trim()
            .parse()
            .expect("a pid");
        // Killed: a zombie until collected (no reaper runs here), or gone.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(") ").next().and_then(|r| r.chars().next());
        assert!(matches!(state, None | Some('Z')), "{stat}");
        // SAFETY: collecting our own child, with a null status pointer.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }

    #[tokio::test]
    async fn a_logger_that_is_not_there_is_an_error_naming_it() {
        let reaper = Reaper::default();
        let e = Logger::start(
            std::path::Path::new("/nonexistent/logger"),
            &[],
            "c1",
            "default",
            &reaper,
        )
        .await
        .err()
        .expect("no such program");
        assert!(e.to_string().contains("/nonexistent/logger"), "{e}");
        assert!(matches!(e, LogUriError::Spawn { .. }), "{e:?}");
    }
}
