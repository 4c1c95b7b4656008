//! Process stdio: pipes between the container and the shim, and the shim's copies to containerd.
//!
//! containerd hands the shim fifo paths. The container gets one end of an anonymous pipe per
//! stream; the shim copies between the other end and the fifo (containerd-shim's `IoTasks`), so
//! CloseIO can close a process's stdin and a restarted containerd finds its output still flowing.
//! With a terminal, the container's init sends the pty master back over a console socket and the
//! shim copies between the fifos and the master instead.
//!
//! Without a terminal the stdin fifo is opened at Start ([`ProcessIo::start_input`]), not at Create:
//! `ctr run` and nerdctl set their CloseIO callback only after Create returns, so input that ends
//! while Create runs (`echo x | ctr run ... cat`) would never be closed and the process would wait
//! forever (runc's shim opens it at Create and loses that race about half the time). Opened at
//! Start, the client's writer waits for it, and by then its callback is in place.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use containerd_shim::asynchronous::io::{IoTasks, Pty};
use nix::fcntl::OFlag;
use tokio::net::UnixListener;
use tokio::net::unix::pipe;

use crate::error::{Result, ShimError};
use crate::zygote;

/// How long the shim waits for a container's console after create succeeded.
const CONSOLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The fifo paths containerd asked for, and whether the process has a terminal.
#[derive(Clone, Debug, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// What the shim keeps of a process's stdio while the process lives.
pub struct ProcessIo {
    pub tasks: IoTasks,
    pub pty: Option<Pty>,
    console: Option<Console>,
    /// The stdin fifo and the pipe to the process, until [`ProcessIo::start_input`] connects them.
    stdin: Option<(String, pipe::Sender)>,
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
    /// container's side (descriptors for the zygote, or the console socket path).
    pub fn prepare(
        paths: &StdioPaths,
        console_dir: &Path,
    ) -> Result<(ProcessIo, zygote::Stdio, Option<PathBuf>)> {
        for (name, path) in [
            ("stdin", &paths.stdin),
            ("stdout", &paths.stdout),
            ("stderr", &paths.stderr),
        ] {
            if path.contains("://") && !path.starts_with("fifo://") {
                return Err(ShimError::InvalidArgument(format!(
                    "{name} {path:?}: only fifo paths are supported (no binary:// or file:// logging URIs yet)"
                )));
            }
        }
        let tasks = IoTasks::default();
        if paths.terminal {
            let seq = CONSOLE_SEQ.fetch_add(1, Ordering::Relaxed);
            let path = console_dir.join(format!("console-{}-{seq}.sock", std::process::id()));
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path).map_err(ShimError::io(format!(
                "binding console socket {}",
                path.display()
            )))?;
            let io = ProcessIo {
                tasks,
                pty: None,
                console: Some(Console {
                    path: path.clone(),
                    listener,
                }),
                stdin: None,
            };
            return Ok((io, zygote::Stdio::default(), Some(path)));
        }
        let mut container = zygote::Stdio::default();
        let mut stdin = None;
        if !paths.stdin.is_empty() {
            let (r, w) = pipe_pair()?;
            let sender = pipe::Sender::from_owned_fd(w)
                .map_err(ShimError::io("registering the stdin pipe"))?;
            stdin = Some((paths.stdin.clone(), sender));
            container.stdin = Some(r);
        } else {
            container.stdin = Some(dev_null()?);
        }
        container.stdout = Some(output(&tasks, &paths.stdout, "stdout")?);
        container.stderr = Some(output(&tasks, &paths.stderr, "stderr")?);
        Ok((
            ProcessIo {
                tasks,
                pty: None,
                console: None,
                stdin,
            },
            container,
            None,
        ))
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
        if !paths.stdout.is_empty() {
            self.tasks
                .copy_to_fifo(pty.clone(), fifo_path(&paths.stdout))
                .map_err(ShimError::shim(format!("opening stdout {}", paths.stdout)))?;
        }
        self.pty = Some(pty);
        Ok(())
    }
}

fn fifo_path(path: &str) -> &str {
    path.strip_prefix("fifo://").unwrap_or(path)
}

fn output(tasks: &IoTasks, path: &str, name: &str) -> Result<OwnedFd> {
    if path.is_empty() {
        return dev_null();
    }
    let (r, w) = pipe_pair()?;
    let receiver = pipe::Receiver::from_owned_fd(r)
        .map_err(ShimError::io(format!("registering the {name} pipe")))?;
    tasks
        .copy_to_fifo(receiver, fifo_path(path))
        .map_err(ShimError::shim(format!("opening {name} {path}")))?;
    Ok(w)
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
