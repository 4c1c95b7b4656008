//! Run a command on a fresh pseudo-terminal (for `ctr run -t`), type into it, read the screen.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct PtyChild {
    child: Child,
    master: File,
    screen: Arc<Mutex<Vec<u8>>>,
    /// Says when the reader has read all the terminal had (EIO once the child's side is closed).
    read_all: std::sync::mpsc::Receiver<()>,
}

impl PtyChild {
    pub fn spawn(mut cmd: Command) -> PtyChild {
        let mut master: libc::c_int = -1;
        let mut slave: libc::c_int = -1;
        let ws = libc::winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two fds into the out-pointers; name and termios may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty succeeded, so both fds are open and owned by nobody else.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let s = slave.as_raw_fd();
        cmd.stdin(Stdio::from(slave.try_clone().expect("dup pty slave")))
            .stdout(Stdio::from(slave.try_clone().expect("dup pty slave")))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe; the child makes the pty its controlling tty.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // fd 0 is the slave by now
                libc::ioctl(0, libc::TIOCSCTTY as _, 0);
                let _ = s;
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawning a command on a pty");
        drop(cmd); // closes our copies of the slave, so reads on the master end with EIO at exit
        let master = File::from(master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let mut rd = master.try_clone().expect("dup pty master");
        let sc = screen.clone();
        let (done, read_all) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // The end is a second EIO: the first can come before what the command wrote last is readable (the
            // kernel's check that the other end closed races the writer's last write); the read after it waits
            // for that write. Taken as the end, it lost ctr's whole screen on a loaded host.
            let mut eio = false;
            loop {
                match rd.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => sc
                        .lock()
                        .expect("screen poisoned")
                        .extend_from_slice(&buf[..n]),
                    Err(e) if e.raw_os_error() == Some(libc::EIO) && !eio => eio = true,
                    Err(_) => break,
                }
            }
            let _ = done.send(());
        });
        PtyChild {
            child,
            master,
            screen,
            read_all,
        }
    }

    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().expect("screen poisoned")).into_owned()
    }

    pub fn type_text(&mut self, text: &str) {
        self.master
            .write_all(text.as_bytes())
            .expect("writing to the pty");
    }

    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.screen().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.screen().contains(needle)
    }

    /// Exit code (128+signal if killed), or None if it did not exit in time (it is then killed). After an exit
    /// the screen holds everything the command wrote: what was still in the terminal is read first (a loaded
    /// host's reader can be behind the exit).
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                let _ = self.read_all.recv_timeout(Duration::from_secs(5));
                return Some(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for PtyChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
