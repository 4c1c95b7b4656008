//! Process stdio: pipes between the container and the shim, and the shim's copies to containerd.
//!
//! containerd hands the shim fifo paths, or a logging binary or file URI for the output (`log_uri.rs`: the
//! container's output then goes to the logging binary's pipes, or through the shim's copies into the file).
//! With fifos the container gets one end of an anonymous pipe per stream; the shim copies between the other end
//! and the fifo (containerd-shim's `IoTasks` for stdin, the shim's own copies for the output), so CloseIO can
//! close a process's stdin and a restarted containerd finds its output still flowing.
//! With a terminal, the container's init sends the pty master back over a console socket and the
//! shim copies between the fifos and the master instead.
//!
//! An output fifo is opened for writing only once the client's reader has it open, as runc's shim does with a
//! blocking open ([`open_output_fifo`]): containerd's client opens its readers without waiting (`containerd/fifo`
//! with `O_NONBLOCK`, in a goroutine of its own), and output the shim wrote into a fifo nobody else had open
//! vanished with the shim's own hold when the process ended, before a late reader came (a 45 ms `ctr run --rm`
//! printed nothing once in CI, on a loaded host).
//!
//! A process's exit is announced only once what it wrote is in its client's hands ([`OutputFlush`]): each output
//! copy passes on what its terminal or pipe still holds, and waits (up to [`FLUSH_TIMEOUT`]) until the client's
//! reader has taken what is in its fifo. containerd's client closes its fifo readers as soon as it has the exit
//! (`ctr run` cancels its IO before the task's Delete, `ctr exec` right after the exec's; containerd 1.6, 1.7 and
//! 2.1 as Debian ships them, fixed upstream in August 2026 by containerd's PR 13931), so output still unread then
//! was lost. A terminal's first EIO is not its end either (`pass_on_what_is_held`). Measured with 1000 `ctr exec -t`
//! whose command writes two lines on a host loaded by another test's parallel creates: 5 of 700 printed less than
//! was written before, 0 of 1000 on containerd 1.7 and 0 of 1000 on 2.1 after.
//!
//! Without a terminal the stdin fifo is opened at Start ([`ProcessIo::start_input`]), not at Create:
//! `ctr run` and nerdctl set their CloseIO callback only after Create returns, so input that ends
//! while Create runs (`echo x | ctr run ... cat`) would never be closed and the process would wait
//! forever (runc's shim opens it at Create and loses that race about half the time). Opened at
//! Start, the client's writer waits for it, and by then its callback is in place.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use containerd_shim::asynchronous::io::{IoTasks, Pty};
use nix::fcntl::OFlag;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::net::unix::pipe;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Result, ShimError};
use crate::log_uri::{self, Logger, Sink};
use crate::reaper::Reaper;
use crate::zygote;

/// How long the shim waits for a container's console after create succeeded.
const CONSOLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long the output copies may take to finish at Delete (what containerd's runc shim allows too).
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long an exit waits for the output copies to pass on what the process wrote ([`OutputFlush`]): they wait
/// only for a reader that has stopped reading.
pub const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
/// How long an output fifo waits for the client's reader ([`open_output_fifo`]); runc's shim waits for ever.
const READER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The fifo paths containerd asked for, and whether the process has a terminal.
#[derive(Clone, Debug, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Whose stdio it is: what a logging binary is told, and the reaper that collects it.
pub struct Owner<'a> {
    /// The process's id: the container's for its init, the exec's for an exec (as containerd's runc shim).
    pub id: &'a str,
    pub namespace: &'a str,
    pub reaper: &'a Reaper,
}

/// What the shim keeps of a process's stdio while the process lives.
pub struct ProcessIo {
    pub tasks: IoTasks,
    pub pty: Option<Pty>,
    console: Option<Console>,
    /// The stdin fifo and the pipe to the process, until [`ProcessIo::start_input`] connects them.
    stdin: Option<(String, pipe::Sender)>,
    /// Where the output goes.
    sink: Sink,
    /// The logging binary of a `binary://` sink.
    logger: Option<Logger>,
    /// With a terminal and a logging binary: the logger's stdout, for the console's copy.
    logger_stdout: Option<OwnedFd>,
    /// The output copies: into the fifos, into a `file://` sink, or from a console to a logging binary.
    copies: Vec<JoinHandle<()>>,
    /// Asks the copies to pass on what their sources hold.
    flush: OutputFlush,
}

/// Asks a process's output copies to pass on what their sources (the terminal, the pipes) hold now, and waits until
/// each has: at an exit, what the process wrote before it ended reaches the client before the exit does.
#[derive(Clone)]
pub struct OutputFlush {
    asked: std::sync::Arc<watch::Sender<u64>>,
    /// Each copy's last flush done (its sender dropped: the copy ended).
    done: Vec<watch::Receiver<u64>>,
}

/// A copy's side of [`OutputFlush`].
struct FlushHook {
    asked: watch::Receiver<u64>,
    done: watch::Sender<u64>,
    /// The pipe the copy writes into, when what is in it counts as passed on only once its reader has taken it
    /// (the client's fifo, a logging binary's stdout).
    read_by: Option<RawFd>,
}

impl OutputFlush {
    fn new() -> OutputFlush {
        OutputFlush {
            asked: std::sync::Arc::new(watch::channel(0).0),
            done: Vec::new(),
        }
    }

    /// The hook of one more copy, into `read_by` if that is a pipe (see [`FlushHook::read_by`]).
    fn hook(&mut self, read_by: Option<RawFd>) -> FlushHook {
        let (done, rx) = watch::channel(0);
        self.done.push(rx);
        FlushHook {
            asked: self.asked.subscribe(),
            done,
            read_by,
        }
    }

    /// Has every copy pass on what its source holds and waits for it, up to `within`; false if one did not in time
    /// (its reader does not read).
    pub async fn run(&self, within: std::time::Duration) -> bool {
        if self.done.is_empty() {
            return true;
        }
        let mut n = 0;
        self.asked.send_modify(|v| {
            *v += 1;
            n = *v;
        });
        let all = async {
            for done in &self.done {
                // An error is a copy that ended: nothing left to pass on.
                let _ = done.clone().wait_for(|d| *d >= n).await;
            }
        };
        tokio::time::timeout(within, all).await.is_ok()
    }
}

/// A console socket waiting for the pty master.
struct Console {
    path: PathBuf,
    listener: UnixListener,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

static CONSOLE_SEQ: AtomicU64 = AtomicU64::new(0);

impl ProcessIo {
    /// Prepares stdio for a process about to be created: returns the shim's side and the
    /// container's side (descriptors for the zygote, or the console socket path). A logging binary is started
    /// and ready before this returns.
    pub async fn prepare(
        paths: &StdioPaths,
        console_dir: &Path,
        owner: &Owner<'_>,
    ) -> Result<(ProcessIo, zygote::Stdio, Option<PathBuf>)> {
        let sink = log_uri::parse(&paths.stdout)?;
        // Only the stdout URI may name a logging binary or a file (it decides for stderr too).
        let others: &[(&str, &String)] = match sink {
            Sink::Fifos => &[("stdin", &paths.stdin), ("stderr", &paths.stderr)],
            _ => &[("stdin", &paths.stdin)],
        };
        for (name, uri) in others {
            if log_uri::parse(uri)? != Sink::Fifos {
                return Err(ShimError::InvalidArgument(format!(
                    "{name} {uri:?}: only stdout may name a logging binary or file (it is used for stderr too)"
                )));
            }
        }
        let mut io = ProcessIo {
            tasks: IoTasks::default(),
            pty: None,
            console: None,
            stdin: None,
            sink,
            logger: None,
            logger_stdout: None,
            copies: Vec::new(),
            flush: OutputFlush::new(),
        };
        let mut pipes = None;
        if let Sink::Binary { program, args } = &io.sink {
            let (logger, p) =
                Logger::start(program, args, owner.id, owner.namespace, owner.reaper).await?;
            io.logger = Some(logger);
            pipes = Some(p);
        }
        if paths.terminal {
            let seq = CONSOLE_SEQ.fetch_add(1, Ordering::Relaxed);
            let path = console_dir.join(format!("console-{}-{seq}.sock", std::process::id()));
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path).map_err(ShimError::io(format!(
                "binding console socket {}",
                path.display()
            )))?;
            io.console = Some(Console {
                path: path.clone(),
                listener,
            });
            // The console's output goes to the logger's stdout; its stderr ends at once.
            io.logger_stdout = pipes.map(|p| p.stdout);
            return Ok((io, zygote::Stdio::default(), Some(path)));
        }
        let mut container = zygote::Stdio::default();
        if !paths.stdin.is_empty() {
            let (r, w) = pipe_pair()?;
            let sender = pipe::Sender::from_owned_fd(w)
                .map_err(ShimError::io("registering the stdin pipe"))?;
            io.stdin = Some((paths.stdin.clone(), sender));
            container.stdin = Some(r);
        } else {
            container.stdin = Some(dev_null()?);
        }
        match (&io.sink, pipes) {
            (Sink::Binary { .. }, Some(p)) => {
                container.stdout = Some(p.stdout);
                container.stderr = Some(p.stderr);
            }
            (Sink::File(path), _) => {
                let file = log_uri::open_file(path)?;
                for name in ["stdout", "stderr"] {
                    let (r, w) = pipe_pair()?;
                    let receiver = pipe::Receiver::from_owned_fd(r)
                        .map_err(ShimError::io(format!("registering the {name} pipe")))?;
                    let f = file
                        .try_clone()
                        .map_err(ShimError::io(format!("opening {} again", path.display())))?;
                    let hook = io.flush.hook(None);
                    io.copies
                        .push(copy_to_file(receiver, f, path.clone(), hook));
                    if name == "stdout" {
                        container.stdout = Some(w);
                    } else {
                        container.stderr = Some(w);
                    }
                }
            }
            _ => {
                container.stdout = Some(io.output(&paths.stdout, "stdout").await?);
                container.stderr = Some(io.output(&paths.stderr, "stderr").await?);
            }
        }
        Ok((io, container, None))
    }

    /// What asks this process's output copies to pass on what they hold (see [`OutputFlush`]).
    pub fn flusher(&self) -> OutputFlush {
        self.flush.clone()
    }

    /// At Delete: lets the output copies finish, then the logging binary end (see `log_uri.rs`).
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
        let copies = std::mem::take(&mut self.copies);
        // A panicked or cancelled copy counts as finished.
        let drain = async {
            for c in copies {
                let _ = c.await;
            }
        };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            tracing::warn!("output copy did not finish within {DRAIN_TIMEOUT:?}, cancelling it");
        }
        self.abort_copies();
        self.logger_stdout = None;
        if let Some(logger) = self.logger.take() {
            logger.stop().await;
        }
    }

    /// For a process that failed to start: cancels every copy and kills its logging binary.
    pub async fn abort(mut self) {
        self.tasks.abort().await;
        self.abort_copies();
        // Dropped, a logger is killed.
        self.logger = None;
    }

    fn abort_copies(&mut self) {
        for c in self.copies.drain(..) {
            c.abort();
        }
    }

    /// The container's end of its `name` stream (stdout or stderr): a pipe the shim copies into the fifo at
    /// `path` (/dev/null without one).
    async fn output(&mut self, path: &str, name: &str) -> Result<OwnedFd> {
        if path.is_empty() {
            return dev_null();
        }
        let (r, w) = pipe_pair()?;
        let receiver = pipe::Receiver::from_owned_fd(r)
            .map_err(ShimError::io(format!("registering the {name} pipe")))?;
        self.copy_to_fifo(receiver, path).await?;
        Ok(w)
    }

    /// Copies `from` into the output fifo at `path` ([`open_output_fifo`]) until either ends.
    async fn copy_to_fifo<R>(&mut self, from: R, path: &str) -> Result<()>
    where
        R: AsyncRead + AsFd + Send + Unpin + 'static,
    {
        let (hold, fifo) = open_output_fifo(path, READER_TIMEOUT).await?;
        let hook = self.flush.hook(Some(fifo.as_raw_fd()));
        self.copies.push(tokio::spawn(async move {
            let _hold = hold;
            copy(from, fifo, hook).await;
        }));
        Ok(())
    }

    /// At Start: opens the stdin fifo and starts copying it to the process (see the module docs).
    pub fn start_input(&mut self) -> Result<()> {
        if let Some((path, sender)) = self.stdin.take() {
            self.tasks
                .copy_from_fifo(fifo_path(&path), sender)
                .map_err(ShimError::shim(format!("opening stdin {path}")))?;
        }
        Ok(())
    }

    /// After create: receives the pty master from the console socket and starts copying.
    pub async fn connect_console(&mut self, paths: &StdioPaths) -> Result<()> {
        let Some(console) = self.console.take() else {
            return Ok(());
        };
        let (stream, _) = tokio::time::timeout(CONSOLE_TIMEOUT, console.listener.accept())
            .await
            .map_err(|_| {
                ShimError::FailedPrecondition("no console received from the container".into())
            })?
            .map_err(ShimError::io("accepting on the console socket"))?;
        let std_stream = stream
            .into_std()
            .map_err(ShimError::io("taking the console stream"))?;
        let master = tokio::task::spawn_blocking(move || receive_fd(std_stream))
            .await
            .map_err(|e| ShimError::Zygote(format!("console receiver: {e}")))??;
        let pty = Pty::new(std::fs::File::from(master))
            .map_err(ShimError::shim("registering the console"))?;
        if !paths.stdin.is_empty() {
            self.tasks
                .copy_from_fifo(fifo_path(&paths.stdin), pty.clone())
                .map_err(ShimError::shim(format!("opening stdin {}", paths.stdin)))?;
        }
        match &self.sink {
            Sink::Binary { .. } => {
                if let Some(out) = self.logger_stdout.take() {
                    let sender = pipe::Sender::from_owned_fd(out)
                        .map_err(ShimError::io("registering the logger's stdout pipe"))?;
                    let hook = self.flush.hook(Some(sender.as_raw_fd()));
                    self.copies
                        .push(tokio::spawn(copy(pty.clone(), sender, hook)));
                }
            }
            Sink::File(path) => {
                let f = log_uri::open_file(path)?;
                let hook = self.flush.hook(None);
                self.copies
                    .push(copy_to_file(pty.clone(), f, path.clone(), hook));
            }
            Sink::Fifos if !paths.stdout.is_empty() => {
                self.copy_to_fifo(pty.clone(), &paths.stdout).await?;
            }
            Sink::Fifos => {}
        }
        self.pty = Some(pty);
        Ok(())
    }
}

/// Copies `from` into the log file `file` (opened for appending) until `from` ends.
fn copy_to_file<R>(from: R, file: std::fs::File, path: PathBuf, hook: FlushHook) -> JoinHandle<()>
where
    R: AsyncRead + AsFd + Send + Unpin + 'static,
{
    tokio::spawn(async move {
        let mut to = tokio::fs::File::from_std(file);
        copy(from, &mut to, hook).await;
        if let Err(e) = to.flush().await {
            tracing::warn!("writing the log file {}: {e}", path.display());
        }
    })
}

/// Copies until `from` ends; a console hanging up (EIO) or a reader gone (EPIPE) is a normal end. Asked by its
/// [`FlushHook`], it passes on what `from` holds at once and says so.
async fn copy<R, W>(mut from: R, mut to: W, mut hook: FlushHook)
where
    R: AsyncRead + AsFd + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; COPY_BUFFER];
    let end = loop {
        tokio::select! {
            // Cancel-safe: a read not finished read nothing.
            read = from.read(&mut buf) => match read {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    if let Err(e) = to.write_all(&buf[..n]).await {
                        break Err(e);
                    }
                }
                // A terminal's first EIO: what its last write left comes with the next read (see
                // `pass_on_what_is_held`).
                Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                    match pass_on_what_is_held(from.as_fd().as_raw_fd(), &mut to, &mut buf, true).await {
                        Ok(true) => {}
                        Ok(false) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                }
                Err(e) => break Err(e),
            },
            Ok(()) = hook.asked.changed() => {
                let n = *hook.asked.borrow_and_update();
                match pass_on_what_is_held(from.as_fd().as_raw_fd(), &mut to, &mut buf, false).await {
                    Ok(true) => {
                        hook.taken_by_the_reader().await;
                        hook.done.send_replace(n);
                    }
                    Ok(false) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
        }
    };
    // The exit a flush waits for is announced once this copy ends: what it wrote is read first.
    hook.taken_by_the_reader().await;
    match end {
        Ok(()) => {}
        Err(e)
            if e.kind() == std::io::ErrorKind::BrokenPipe
                || e.raw_os_error() == Some(libc::EIO) => {}
        Err(e) => tracing::warn!("copying a process's output: {e}"),
    }
}

impl FlushHook {
    /// Waits until the reader of [`Self::read_by`] has taken what is in the pipe, up to [`FLUSH_TIMEOUT`]: a
    /// client that closes its reader as soon as it learns of the exit (see the module docs) has read it by then.
    async fn taken_by_the_reader(&self) {
        let Some(fd) = self.read_by else {
            return;
        };
        let deadline = tokio::time::Instant::now() + FLUSH_TIMEOUT;
        // Its reader takes it within a few microseconds, unless the reader does not read.
        while unread(fd).is_ok_and(|n| n > 0) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
}

/// The bytes in the pipe `fd` (either end) that its reader has not taken.
fn unread(fd: RawFd) -> std::io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points to `n`, alive across the call.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// The copies' buffer: `tokio::io::copy`'s size, which the copies used before they took flushes (one buffer per
/// output stream of every container the shim runs).
const COPY_BUFFER: usize = 8 * 1024;

/// Reads what the copy's source `from` holds now, without waiting for more, and writes it to `to`: by the
/// descriptor, since the reactor may not have seen the readiness yet (a process's last write and its exit come
/// close together). False at the end of `from`: a pipe's EOF, or a terminal's second EIO (`eio_seen`: the copy
/// already had one).
///
/// A terminal's first EIO is not its end: the kernel says EIO once the last other end has closed and nothing is
/// left to read, but the reader's check races the writer's last write, which is passed on by a queued work the
/// reader's check may run before (`n_tty_read`). The read after it waits for that work: it returns what was
/// written last, or EIO again. Taken as the end, the first EIO lost an exec's last line (`ctr exec -t`: 1 in 800
/// on a loaded host).
async fn pass_on_what_is_held<W>(
    from: RawFd,
    to: &mut W,
    buf: &mut [u8],
    mut eio_seen: bool,
) -> std::io::Result<bool>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    use nix::errno::Errno;
    loop {
        // The descriptor is non-blocking (a tokio pipe, the shim's console).
        match nix::unistd::read(from, buf) {
            Ok(0) => return Ok(false),
            Err(Errno::EIO) if eio_seen => return Ok(false),
            Err(Errno::EIO) => eio_seen = true,
            Ok(n) => to.write_all(&buf[..n]).await?,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                to.flush().await?;
                return Ok(true);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn fifo_path(path: &str) -> &str {
    path.strip_prefix("fifo://").unwrap_or(path)
}

/// Opens the output fifo at `path` (a `fifo://` URI or a path) for the shim's copy: its writer, once a reader has
/// the fifo open (the client's, see the module docs; up to `wait`, then without it and with a warning), and a
/// reader of the shim's own, held for as long as the copy runs, so that a containerd restarted meanwhile finds
/// the output still there instead of the copy failing with EPIPE. Neither end blocks a thread.
async fn open_output_fifo(
    path: &str,
    wait: std::time::Duration,
) -> Result<(std::fs::File, pipe::Sender)> {
    let path = fifo_path(path);
    let hold = || {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(ShimError::io(format!("holding the fifo {path} open")))
    };
    let open = || {
        pipe::OpenOptions::new()
            .open_sender(path)
            .map_err(ShimError::io(format!("opening the fifo {path}")))
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match pipe::OpenOptions::new().open_sender(path) {
            Ok(fifo) => return Ok((hold()?, fifo)),
            // No reader yet.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
            Err(e) => return Err(ShimError::io(format!("opening the fifo {path}"))(e)),
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                fifo = path,
                "no reader opened the output fifo within {wait:?}: writing to it anyway"
            );
            let hold = hold()?;
            return Ok((hold, open()?));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(50));
    }
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(ShimError::sys("creating a stdio pipe"))
}

fn dev_null() -> Result<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(ShimError::io("opening /dev/null"))
}

/// Receives one descriptor sent with SCM_RIGHTS.
fn receive_fd(stream: StdUnixStream) -> Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd, RawFd};
    stream
        .set_nonblocking(false)
        .map_err(ShimError::io("setting the console stream blocking"))?;
    stream
        .set_read_timeout(Some(CONSOLE_TIMEOUT))
        .map_err(ShimError::io("setting the console stream timeout"))?;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(ShimError::sys("receiving the console master"))?;
    for c in msg
        .cmsgs()
        .map_err(ShimError::sys("reading the console message"))?
    {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor for us.
            return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    Err(ShimError::FailedPrecondition(
        "console socket message carried no descriptor".into(),
    ))
}

/// Sets the terminal size of a process's pty.
pub fn resize(pty: &Pty, width: u32, height: u32) -> Result<()> {
    use std::os::fd::{AsFd, AsRawFd};
    let size = libc::winsize {
        ws_row: height as u16,
        ws_col: width as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives for the duration of the call.
    let rc = unsafe { libc::ioctl(pty.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc < 0 {
        return Err(ShimError::Io {
            context: "resizing the console".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::Arc;

    use super::*;

    /// A pty pair: (master, slave).
    fn openpty() -> (OwnedFd, OwnedFd) {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two descriptors into the out-pointers; name, termios and winsize may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty succeeded, so both are descriptors we own.
        unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
    }

    /// What a container's init does with a console socket: sends the pty master over it.
    fn send_master(socket: &Path, master: &OwnedFd) {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        let stream = StdUnixStream::connect(socket).expect("connecting to the console socket");
        let fds = [master.as_raw_fd()];
        let iov = [std::io::IoSlice::new(b"console")];
        sendmsg::<()>(
            stream.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .expect("sending the pty master");
    }

    /// Gives `pio` a terminal as a container's init does (its master over the `console` socket): the slave.
    async fn connect_a_terminal(
        pio: &mut ProcessIo,
        paths: &StdioPaths,
        console: Option<PathBuf>,
    ) -> OwnedFd {
        let (master, slave) = openpty();
        let socket = console.expect("a console socket");
        let sender = std::thread::spawn(move || send_master(&socket, &master));
        pio.connect_console(paths)
            .await
            .expect("connecting the console");
        sender.join().expect("sender");
        slave
    }

    /// containerd's client opens its reader of a stdout fifo in a goroutine of its own, without waiting: a reader
    /// that comes late (300 ms here, after the process wrote and ended) still gets all of the output.
    #[tokio::test]
    async fn output_reaches_a_reader_that_opens_late() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fifo = tmp.path().join("stdout");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let (tx, rx) = std::sync::mpsc::channel();
        let f = fifo.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            // Blocking, as the client's goroutine's open: it returns once a writer has the fifo open.
            let mut out = String::new();
            let read = std::fs::File::open(&f).and_then(|mut r| r.read_to_string(&mut out));
            let _ = tx.send(read.map(|_| out));
        });
        let paths = StdioPaths {
            stdin: String::new(),
            stdout: format!("fifo://{}", fifo.display()),
            stderr: String::new(),
            terminal: false,
        };
        let reaper = Reaper::default();
        let owner = Owner {
            id: "c1",
            namespace: "default",
            reaper: &reaper,
        };
        let (pio, mut stdio, _) = ProcessIo::prepare(&paths, tmp.path(), &owner)
            .await
            .expect("prepare");
        // The process writes, and ends.
        let mut out = std::fs::File::from(stdio.stdout.take().expect("a stdout pipe"));
        out.write_all(b"short-lived\n").expect("writing stdout");
        drop(out);
        drop(stdio);
        pio.shutdown().await;
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .unwrap_or_else(|_| {
                // The reader waits for a writer that will not come: let it go, to see what it read.
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&fifo);
                rx.recv().expect("the reader's result")
            })
            .expect("reading the fifo");
        assert_eq!(got, "short-lived\n", "what the late reader read");
    }

    /// At an exit, what the process wrote is in the client's fifo before the exit is announced: the flush passes on
    /// what a pipe or a terminal holds though the copy's task has not run since the write (one thread here), and a
    /// reader that does not read holds it up only for the time it is given.
    #[tokio::test]
    async fn a_flush_passes_on_what_the_process_wrote_before_it_returns() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let reaper = Reaper::default();
        let owner = Owner {
            id: "c1",
            namespace: "default",
            reaper: &reaper,
        };
        for terminal in [false, true] {
            let fifo = tmp.path().join(format!("stdout-{terminal}"));
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
            // The client's reader, open before the process starts, reading until told to stop.
            let client = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .expect("opening the client's reader");
            let read = Arc::new(std::sync::Mutex::new(Vec::new()));
            let reading = Arc::new(std::sync::atomic::AtomicBool::new(true));
            let reader = {
                let (read, reading) = (read.clone(), reading.clone());
                std::thread::spawn(move || {
                    let mut client = client;
                    let mut buf = [0u8; 4096];
                    while reading.load(Ordering::SeqCst) {
                        match client.read(&mut buf) {
                            Ok(n) if n > 0 => {
                                read.lock().expect("read").extend_from_slice(&buf[..n])
                            }
                            _ => std::thread::sleep(std::time::Duration::from_millis(1)),
                        }
                    }
                    client
                })
            };
            let paths = StdioPaths {
                stdin: String::new(),
                stdout: format!("fifo://{}", fifo.display()),
                stderr: String::new(),
                terminal,
            };
            let (mut pio, mut stdio, console) = ProcessIo::prepare(&paths, tmp.path(), &owner)
                .await
                .expect("prepare");
            // The process's end of its output, kept open (a child of it may hold it too).
            let mut out = if terminal {
                let slave = connect_a_terminal(&mut pio, &paths, console).await;
                // Raw, so the terminal passes the bytes as they are.
                let mut t = nix::sys::termios::tcgetattr(&slave).expect("tcgetattr");
                nix::sys::termios::cfmakeraw(&mut t);
                nix::sys::termios::tcsetattr(&slave, nix::sys::termios::SetArg::TCSANOW, &t)
                    .expect("tcsetattr");
                std::fs::File::from(slave)
            } else {
                std::fs::File::from(stdio.stdout.take().expect("a stdout pipe"))
            };
            out.write_all(b"last words\n").expect("writing the output");
            assert!(
                pio.flusher().run(std::time::Duration::from_secs(5)).await,
                "terminal {terminal}: flushed in time"
            );
            assert_eq!(
                read.lock().expect("read").as_slice(),
                b"last words\n",
                "terminal {terminal}: read by the client when the flush returned"
            );
            // A reader that stops reading: the fifo fills up and the flush gives up after its time.
            reading.store(false, Ordering::SeqCst);
            let client = reader.join().expect("the reader");
            let filler = std::thread::spawn(move || {
                let _ = out.write_all(&vec![b'x'; 1 << 20]);
                out
            });
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let wait = std::time::Duration::from_millis(300);
            let started = std::time::Instant::now();
            assert!(
                !pio.flusher().run(wait).await,
                "terminal {terminal}: a full fifo is not flushed"
            );
            assert!(
                started.elapsed() >= wait,
                "gave up after {:?}",
                started.elapsed()
            );
            // The copy ends at the reader's end, the writer at the terminal's or the pipe's.
            drop(client);
            pio.abort().await;
            // (Off the runtime's one thread, which drops the aborted copy.)
            let writer = tokio::task::spawn_blocking(move || filler.join().expect("the writer"));
            drop(writer.await.expect("joining the writer"));
        }
    }

    /// A source that says EIO at its first read, as a terminal can when its other end has just closed and its
    /// last write is not yet readable (see `pass_on_what_is_held`).
    struct FirstReadSaysEio {
        pipe: pipe::Receiver,
        said: bool,
    }

    impl AsyncRead for FirstReadSaysEio {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if !self.said {
                self.said = true;
                return std::task::Poll::Ready(Err(std::io::Error::from_raw_os_error(libc::EIO)));
            }
            std::pin::Pin::new(&mut self.pipe).poll_read(cx, buf)
        }
    }

    impl AsFd for FirstReadSaysEio {
        fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
            self.pipe.as_fd()
        }
    }

    /// A first EIO is not the end of a copy: what the source still holds is copied (the last line of an exec on a
    /// terminal was lost when it was).
    #[tokio::test]
    async fn a_copy_reads_once_more_after_an_eio() {
        let (r, w) = pipe_pair().expect("source pipe");
        let mut w = std::fs::File::from(w);
        w.write_all(b"last line\n").expect("writing");
        drop(w);
        let from = FirstReadSaysEio {
            pipe: pipe::Receiver::from_owned_fd(r).expect("registering the source"),
            said: false,
        };
        let (out_r, out_w) = pipe_pair().expect("destination pipe");
        let to = pipe::Sender::from_owned_fd(out_w).expect("registering the destination");
        copy(from, to, OutputFlush::new().hook(None)).await;
        let mut got = String::new();
        std::fs::File::from(out_r)
            .read_to_string(&mut got)
            .expect("reading what was copied");
        assert_eq!(got, "last line\n");
    }

    /// A fifo nobody opens for reading is written to anyway after the wait, the shim's own reader keeping it.
    #[tokio::test]
    async fn an_output_fifo_without_a_reader_is_opened_after_the_wait() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fifo = tmp.path().join("stdout");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let path = fifo.display().to_string();
        let wait = std::time::Duration::from_millis(50);
        let started = std::time::Instant::now();
        let (mut hold, mut writer) = open_output_fifo(&path, wait)
            .await
            .expect("opening without a reader");
        assert!(
            started.elapsed() >= wait,
            "returned after {:?}",
            started.elapsed()
        );
        writer.write_all(b"kept\n").await.expect("writing");
        let mut buf = [0u8; 5];
        hold.read_exact(&mut buf)
            .expect("reading back through the hold");
        assert_eq!(&buf, b"kept\n");
        assert!(
            open_output_fifo(&tmp.path().join("none").display().to_string(), wait)
                .await
                .is_err(),
            "a missing fifo is an error, not a wait"
        );
    }

    /// A terminal's output (one stream) goes to a logging binary's stdout, or into a `file://` sink, and both
    /// are complete once the process's io is shut down.
    #[tokio::test]
    async fn a_terminals_output_goes_to_the_logger_or_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path().display();
        let logger = tmp.path().join("logger.sh");
        std::fs::write(
            &logger,
            format!("#!/bin/sh\ncat <&3 5>&- > {d}/out & cat <&4 5>&- > {d}/err & exec 5>&-; wait; echo done > {d}/done\n"),
        )
        .expect("writing the logger");
        std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let file = tmp.path().join("logs/tty.log");
        let reaper = Arc::new(Reaper::default());
        for uri in [
            format!("binary://{}", logger.display()),
            format!("file://{}", file.display()),
        ] {
            let paths = StdioPaths {
                stdin: String::new(),
                stdout: uri.clone(),
                stderr: uri.clone(),
                terminal: true,
            };
            let owner = Owner {
                id: "c1",
                namespace: "default",
                reaper: &reaper,
            };
            let (mut pio, stdio, console) = ProcessIo::prepare(&paths, tmp.path(), &owner)
                .await
                .expect("prepare");
            assert!(
                stdio.stdout.is_none() && stdio.stderr.is_none(),
                "{uri}: a terminal has no pipes"
            );
            if let Some(l) = &pio.logger {
                crate::log_uri::tests::reap_for(&reaper, l.pid());
            }
            let mut slave =
                std::fs::File::from(connect_a_terminal(&mut pio, &paths, console).await);
            slave
                .write_all(b"on a tty\n")
                .expect("writing to the terminal");
            drop(slave);
            pio.shutdown().await;
        }
        let read = |f: &str| {
            let mut s = String::new();
            let _ = std::fs::File::open(tmp.path().join(f)).map(|mut f| f.read_to_string(&mut s));
            s
        };
        assert_eq!(read("out"), "on a tty\r\n");
        assert_eq!(read("err"), "");
        assert_eq!(read("done"), "done\n", "the logger ended by itself");
        assert_eq!(read("logs/tty.log"), "on a tty\r\n");
    }
}
