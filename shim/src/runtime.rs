//! What a zygote worker does: each [`Request`] carried out with youki's libcontainer.
//!
//! This code runs only in a freshly forked, single-threaded worker process (see `zygote.rs`). A
//! container's state lives under `root/<id>` (libcontainer's layout); the shim keeps one root per
//! containerd namespace.

use std::path::Path;

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::error::LibcontainerError;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::get_executor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::{LinuxSeccomp, Spec};

use crate::zygote::{Failure, Reply, Request, Stdio};

/// Carries out `request` in this worker process.
pub fn work(request: Request, stdio: Stdio) -> Reply {
    let result = match request {
        Request::Create {
            id,
            bundle,
            root,
            console_socket,
            systemd,
            ..
        } => create(&id, &bundle, &root, console_socket.as_deref(), systemd, stdio).map(Some),
        Request::Start { id, root } => load(&root, &id).and_then(|mut c| c.start()).map(|_| None),
        Request::Exec {
            id,
            root,
            process,
            console_socket,
            ..
        } => exec(&id, &root, &process, console_socket.as_deref(), stdio).map(Some),
        Request::Kill {
            id,
            root,
            signal,
            all,
        } => match Signal::try_from(signal) {
            Ok(signal) => load(&root, &id)
                .and_then(|mut c| c.kill(signal, all))
                .map(|_| None),
            Err(e) => Err(LibcontainerError::InvalidInput(format!(
                "signal {signal}: {e}"
            ))),
        },
        Request::Pause { id, root } => load(&root, &id).and_then(|mut c| c.pause()).map(|_| None),
        Request::Resume { id, root } => load(&root, &id).and_then(|mut c| c.resume()).map(|_| None),
        Request::Delete { id, root } => delete(&id, &root).map(|_| None),
        Request::JoinCgroup { dir, .. } => {
            // "0" is the writing process: this worker, which exits right after.
            return match std::fs::write(dir.join("cgroup.procs"), "0") {
                Ok(()) => Reply::Ok { pid: None },
                Err(e) => Reply::Err {
                    failure: Failure::Other,
                    message: format!("joining {}: {e}", dir.display()),
                },
            };
        }
    };
    match result {
        Ok(pid) => Reply::Ok { pid },
        Err(err) => Reply::Err {
            failure: failure_of(&err),
            message: chain(&err),
        },
    }
}

fn load(root: &Path, id: &str) -> Result<Container, LibcontainerError> {
    let dir = root.join(id);
    if !dir.exists() {
        return Err(LibcontainerError::NoDirectory);
    }
    Container::load(dir)
}

fn builder(
    id: &str,
    root: &Path,
    console_socket: Option<&Path>,
    stdio: Stdio,
) -> Result<ContainerBuilder, LibcontainerError> {
    let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_root_path(root)?
        .with_console_socket(console_socket);
    if let Some(fd) = stdio.stdin {
        builder = builder.with_stdin(fd);
    }
    if let Some(fd) = stdio.stdout {
        builder = builder.with_stdout(fd);
    }
    if let Some(fd) = stdio.stderr {
        builder = builder.with_stderr(fd);
    }
    Ok(builder)
}

fn create(
    id: &str,
    bundle: &Path,
    root: &Path,
    console_socket: Option<&Path>,
    systemd: bool,
    stdio: Stdio,
) -> Result<i32, LibcontainerError> {
    let result = builder(id, root, console_socket, stdio)?
        .validate_id()?
        .as_init(bundle)
        .with_systemd(systemd)
        .with_detach(true)
        .as_sibling(false)
        .build();
    match result {
        Ok(container) => container
            .pid()
            .map(|pid| pid.as_raw())
            .ok_or_else(|| LibcontainerError::Other("created container has no pid".into())),
        Err(err) => {
            // Leave nothing behind: a half-made container's processes, cgroups and state go.
            if !matches!(err, LibcontainerError::Exist) {
                let _ = delete(id, root);
            }
            Err(err)
        }
    }
}

fn exec(
    id: &str,
    root: &Path,
    process: &Path,
    console_socket: Option<&Path>,
    stdio: Stdio,
) -> Result<i32, LibcontainerError> {
    // libcontainer 0.7 rebuilds an exec's `linux` section without the container's seccomp profile;
    // the executor installs it again, so `ctr t exec` / `docker exec` cannot escape the filter.
    let container = load(root, id)?;
    let spec = Spec::load(container.bundle().join("config.json"))?;
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    let pid = builder(id, root, console_socket, stdio)?
        .with_executor(ExecExecutor { seccomp })
        .as_tenant()
        .with_process(Some(process))
        .with_detach(true)
        .as_sibling(false)
        .build()?;
    Ok(pid.as_raw())
}

/// Force-deletes the container; a container that is already gone is not an error.
fn delete(id: &str, root: &Path) -> Result<(), LibcontainerError> {
    let dir = root.join(id);
    match load(root, id) {
        Ok(mut container) => container.delete(true),
        Err(LibcontainerError::NoDirectory) => Ok(()),
        Err(err) => {
            // State that cannot be read cannot be cleaned through libcontainer; drop what we can.
            let _ = std::fs::remove_dir_all(&dir);
            Err(err)
        }
    }
}

/// Runs an exec process like libcontainer's default executor, under the container's seccomp
/// profile. Capabilities are dropped by then, so the filter needs no_new_privs (as runc sets when
/// it installs a filter late): an exec in a container with a seccomp profile cannot gain
/// privileges through setuid binaries.
#[derive(Clone)]
struct ExecExecutor {
    seccomp: Option<LinuxSeccomp>,
}

impl Executor for ExecExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(profile) = &self.seccomp {
            // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes plain integer arguments.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(ExecutorError::Other(format!(
                    "setting no_new_privs: {}",
                    std::io::Error::last_os_error()
                )));
            }
            libcontainer::seccomp::initialize_seccomp(profile).map_err(|e| {
                ExecutorError::Other(format!("installing the seccomp profile: {e}"))
            })?;
        }
        get_executor().exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        get_executor().validate(spec)
    }
}

fn failure_of(err: &LibcontainerError) -> Failure {
    match err {
        LibcontainerError::NoDirectory => Failure::NotFound,
        LibcontainerError::IncorrectStatus(_) => Failure::State,
        LibcontainerError::InvalidInput(_)
        | LibcontainerError::InvalidID(_)
        | LibcontainerError::MissingSpec(_)
        | LibcontainerError::InvalidSpec(_)
        | LibcontainerError::Spec(_)
        | LibcontainerError::Exist => Failure::Invalid,
        _ => Failure::Other,
    }
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = e.source();
    }
    message
}
