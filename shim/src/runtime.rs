//! What a zygote worker does: each [`Request`] carried out with youki's libcontainer.
//!
//! This code runs only in a freshly forked, single-threaded worker process (see `zygote.rs`). A
//! container's state lives under `root/<id>` (libcontainer's layout); the shim keeps one root per
//! containerd namespace.

use std::path::{Path, PathBuf};

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
            cgroups_path,
            fidelity,
            ..
        } => create(
            &id,
            &bundle,
            &root,
            console_socket.as_deref(),
            (systemd, cgroups_path.as_deref()),
            &fidelity,
            stdio,
        )
        .map(Some),
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
            return match runtime_hooks::companions::enter(&dir, 0) {
                Ok(()) => Reply::Ok { pid: None },
                Err(e) => Reply::Err {
                    failure: Failure::Other,
                    message: predictive_api::error_chain(&e),
                },
            };
        }
    };
    match result {
        Ok(pid) => Reply::Ok { pid },
        Err(err) => Reply::Err {
            failure: failure_of(&err),
            message: predictive_api::error_chain(&err),
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
        .with_console_socket(console_socket)
        .with_executor(Workload::default());
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

/// Creates the container; `cgroups` is libcontainer's systemd driver and, with cgroupfs, the container's cgroupsPath.
/// With a cgroupfs path this worker first enters the container's `name=systemd` directory, so the processes
/// libcontainer forks from it are there when the init mounts the container's cgroupfs
/// ([`runtime_hooks::companions::enter_named`]); after a failed create it goes back and removes what it made. What
/// libcontainer leaves different from runc's (a v1 cgroupfs mount's options, the init's locked-memory limit, the
/// device directories' modes) is set right before the container runs ([`crate::fidelity`]); a create that cannot
/// make the cgroupfs as its spec asks fails.
fn create(
    id: &str,
    bundle: &Path,
    root: &Path,
    console_socket: Option<&Path>,
    (systemd, cgroups_path): (bool, Option<&str>),
    fidelity: &crate::fidelity::Fidelity,
    stdio: Stdio,
) -> Result<i32, LibcontainerError> {
    let builder = builder(id, root, console_socket, stdio)?.validate_id()?;
    let memlock = crate::fidelity::memlock();
    let named = cgroups_path
        .map(|p| runtime_hooks::companions::enter_named(&runtime_hooks::HostRoots::default(), p));
    for e in named.iter().flat_map(|n| &n.errors) {
        tracing::debug!(container = id, "{}", predictive_api::error_chain(e));
    }
    let result = builder
        .as_init(bundle)
        .with_systemd(systemd)
        .with_detach(true)
        .as_sibling(false)
        .build()
        .and_then(|container| {
            let pid = container
                .pid()
                .map(|pid| pid.as_raw())
                .ok_or_else(|| LibcontainerError::Other("created container has no pid".into()))?;
            fidelity.apply(pid, memlock, systemd).map_err(|e| {
                LibcontainerError::Other(format!(
                    "setting the created container as its spec asks: {}",
                    predictive_api::error_chain(&e)
                ))
            })?;
            if systemd {
                crate::fidelity::systemd_resources(bundle, pid);
            }
            Ok(pid)
        });
    match result {
        Ok(pid) => Ok(pid),
        Err(err) => {
            // Leave nothing behind: a half-made container's processes, cgroups and state go.
            if !matches!(err, LibcontainerError::Exist) {
                let _ = delete(id, root);
            }
            if let Some(n) = &named {
                n.undo();
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
    // As runc's exec, into every cgroup of the container's: libcontainer moves the tenant into the v1 controllers,
    // not into `name=systemd` or a hybrid host's cgroup2 tree, where the create put the init. This worker joins the
    // init there first (a best effort, as for the init) and the tenant inherits it.
    // The host's layout is the zygote's, inherited: no mountinfo parse per exec.
    if let Some(init) = container.pid() {
        let joined = runtime_hooks::companions::join_init(
            &runtime_hooks::HostRoots::default(),
            init.as_raw(),
        );
        for e in &joined.errors {
            tracing::debug!(container = id, "exec: {}", predictive_api::error_chain(e));
        }
    }
    // libcontainer 0.7 joins an exec to every namespace of the init's but its user namespace: in a container with
    // one of its own, the exec would run as the host's root. It runs the process as root instead, and the
    // executor joins the user namespace and becomes the process's user there ([`JoinUser`]).
    // The exec's process spec, read once (and only when something below needs it).
    let userns = container.pid().filter(|_| has_user_namespace(&spec));
    let read = if userns.is_some() || seccomp.is_some() {
        Some(read_process(process)?)
    } else {
        None
    };
    let join = match (userns, &read) {
        (Some(init), Some(r)) => Some(JoinUser::prepare(init.as_raw(), process, r)?),
        _ => None,
    };
    // As runc: a process that does not ask for no_new_privs gets its seccomp filter while it still has
    // CAP_SYS_ADMIN (in its user namespace, once joined; else lent for the filter, [`WithAdmin`]).
    let filter_first = seccomp.is_some()
        && read
            .as_ref()
            .is_some_and(|(_, p)| p.no_new_privileges() != Some(true));
    let admin = match (&join, &read) {
        (None, Some(r)) if filter_first => WithAdmin::prepare(process, r)?,
        _ => None,
    };
    let process = join
        .as_ref()
        .map(|j| j.as_root.as_path())
        .or(admin.as_ref().map(|a| a.path.as_path()))
        .unwrap_or(process);
    let built = builder(id, root, console_socket, stdio)?
        .with_executor(Workload {
            seccomp,
            filter_first,
            restore_caps: admin.as_ref().map(|a| a.restore.clone()),
            join: join.as_ref().map(|j| j.exec.clone()),
            ..Workload::default()
        })
        .as_tenant()
        .with_process(Some(process))
        .with_detach(true)
        .as_sibling(false)
        .build();
    drop(join);
    drop(admin);
    Ok(built?.as_raw())
}

/// Reads an exec's process spec: its JSON as given (to rewrite) and parsed.
fn read_process(
    process: &Path,
) -> Result<(serde_json::Value, oci_spec::runtime::Process), LibcontainerError> {
    let read = |e: String| {
        LibcontainerError::Other(format!("the exec's process {}: {e}", process.display()))
    };
    let text = std::fs::read(process).map_err(|e| read(e.to_string()))?;
    let json: serde_json::Value = serde_json::from_slice(&text).map_err(|e| read(e.to_string()))?;
    let spec = serde_json::from_value(json.clone()).map_err(|e| read(e.to_string()))?;
    Ok((json, spec))
}

/// `json` written next to `process` as `<process>.<suffix>`: the file libcontainer reads instead.
fn rewrite(
    process: &Path,
    suffix: &str,
    json: &serde_json::Value,
) -> Result<PathBuf, LibcontainerError> {
    let mut name = process.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    let path = PathBuf::from(name);
    std::fs::write(&path, json.to_string())
        .map_err(|e| LibcontainerError::Other(format!("writing {}: {e}", path.display())))?;
    Ok(path)
}

/// An exec whose seccomp filter is installed without no_new_privs, as runc installs it for a process that does not
/// ask for no_new_privs: before its capabilities are dropped. libcontainer drops them before the executor runs, so
/// it is given the process spec with `CAP_SYS_ADMIN` (to install the filter) and `CAP_SETPCAP` (to drop from the
/// bounding set) added to the bounding, effective and permitted sets, and the executor installs the filter and
/// then drops to the spec's own capabilities. Without this an exec ran with no_new_privs: in a container with a
/// seccomp profile (Docker's and RuntimeDefault pods', that is most) `sudo`, `su`, `ping` with file capabilities
/// and other setuid programs failed in `docker exec` and `kubectl exec` where runc's ran them.
struct WithAdmin {
    /// The rewritten process spec, next to the given one; removed on drop.
    path: PathBuf,
    /// The spec's own capabilities, dropped to after the filter.
    restore: oci_spec::runtime::LinuxCapabilities,
}

impl WithAdmin {
    /// `None` when the spec names no capabilities (libcontainer then drops none: the filter can be installed).
    fn prepare(
        process: &Path,
        (json, spec): &(serde_json::Value, oci_spec::runtime::Process),
    ) -> Result<Option<WithAdmin>, LibcontainerError> {
        let mut json = json.clone();
        let Some(restore) = spec.capabilities().clone() else {
            return Ok(None);
        };
        let caps = &mut json["capabilities"];
        for set in ["bounding", "effective", "permitted"] {
            if set != "bounding" && caps.get(set).is_none_or(serde_json::Value::is_null) {
                // libcontainer leaves a set the spec does not name as it is (all of root's).
                continue;
            }
            let mut names: Vec<serde_json::Value> =
                caps[set].as_array().cloned().unwrap_or_default();
            for cap in ["CAP_SYS_ADMIN", "CAP_SETPCAP"] {
                if !names.iter().any(|n| n == cap) {
                    names.push(cap.into());
                }
            }
            caps[set] = names.into();
        }
        let path = rewrite(process, "admin", &json)?;
        Ok(Some(WithAdmin { path, restore }))
    }
}

impl Drop for WithAdmin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether the container has a user namespace of its own (a new one or one it joins).
fn has_user_namespace(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|n| {
            n.iter()
                .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User)
        })
}

/// An exec into a container with a user namespace: the init's namespace, held open for the exec process, and
/// the exec's process spec as libcontainer runs it (as root, to join the namespace; it becomes the spec's user
/// there).
struct JoinUser {
    /// Held open until the exec process has forked (it inherits it as `exec.userns`).
    _userns: std::fs::File,
    /// The process spec with user 0:0 and no other groups, next to the given one; removed on drop.
    as_root: PathBuf,
    /// What the executor does with it.
    exec: ExecUser,
}

/// The host id of `id` in a `uid_map`/`gid_map` text (`inside outside count` lines).
fn host_id(map: &str, id: u32) -> Option<u32> {
    map.lines().find_map(|line| {
        let f: Vec<u64> = line
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let [inside, outside, count] = f[..] else {
            return None;
        };
        let id = u64::from(id);
        (inside <= id && id < inside + count)
            .then(|| u32::try_from(outside + id - inside).ok())
            .flatten()
    })
}

impl JoinUser {
    fn prepare(
        init: i32,
        process: &Path,
        (json, spec): &(serde_json::Value, oci_spec::runtime::Process),
    ) -> Result<JoinUser, LibcontainerError> {
        let other = |e: String| LibcontainerError::Other(e);
        let userns = std::fs::File::open(format!("/proc/{init}/ns/user"))
            .map_err(|e| other(format!("opening the container's user namespace: {e}")))?;
        let mut json = json.clone();
        let user = spec.user().clone();
        let capabilities = spec.capabilities().clone();
        // Only the user's ids change: every other field reaches libcontainer as given.
        json["user"]["uid"] = 0.into();
        json["user"]["gid"] = 0.into();
        if let Some(u) = json["user"].as_object_mut() {
            u.remove("additionalGids");
        }
        let as_root = rewrite(process, "userns", &json)?;
        let uid_map = std::fs::read_to_string(format!("/proc/{init}/uid_map")).unwrap_or_default();
        let host_uid = host_id(&uid_map, user.uid());
        use std::os::fd::AsRawFd;
        Ok(JoinUser {
            exec: ExecUser {
                userns: userns.as_raw_fd(),
                user,
                capabilities,
                host_uid,
            },
            _userns: userns,
            as_root,
        })
    }
}

impl Drop for JoinUser {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.as_root);
    }
}

/// What the exec process does last, before its seccomp profile: joins the container's user namespace (its
/// owner, root on the host, may without capabilities), where it has every capability; becomes the spec's user and
/// groups there (the host's groups are dropped: none of them is the container's); keeps only the spec's
/// capabilities (none when the spec names none).
#[derive(Clone)]
struct ExecUser {
    /// The init's user namespace, open in the worker and inherited (libcontainer marks it close-on-exec).
    userns: std::os::fd::RawFd,
    user: oci_spec::runtime::User,
    capabilities: Option<oci_spec::runtime::LinuxCapabilities>,
    /// The user's uid outside the namespace (its `uid_map`), for its terminal's owner.
    host_uid: Option<u32>,
}

impl ExecUser {
    /// Joins the container's user namespace, where this process (its owner's, root on the host) has every
    /// capability.
    fn enter(&self) -> Result<(), String> {
        // A terminal libcontainer made for the exec is the host's root's, which inside is nobody's: the process
        // could not open its own /dev/tty again. It becomes the user's, as runc's is, while this process still may
        // (best effort: without CAP_CHOWN in the spec it stays as it was).
        if let Some(uid) = self.host_uid
            && nix::unistd::isatty(0).unwrap_or(false)
        {
            // SAFETY: fchown of descriptor 0 with a gid of -1 (unchanged).
            unsafe { libc::fchown(0, uid, u32::MAX) };
        }
        libcontainer::syscall::syscall::create_syscall()
            .set_ns(self.userns, nix::sched::CloneFlags::CLONE_NEWUSER)
            .map_err(|e| format!("joining the container's user namespace: {e}"))
    }

    /// Becomes the spec's user and groups in the joined namespace, with the spec's capabilities only.
    fn become_user(&self) -> Result<(), String> {
        use nix::unistd::{Gid, Uid};
        let syscall = libcontainer::syscall::syscall::create_syscall();
        let groups: Vec<Gid> = self
            .user
            .additional_gids()
            .iter()
            .flatten()
            .map(|g| Gid::from_raw(*g))
            .collect();
        syscall
            .set_groups(&groups)
            .map_err(|e| format!("setting the groups {groups:?}: {e}"))?;
        let (uid, gid) = (self.user.uid(), self.user.gid());
        syscall
            .set_id(Uid::from_raw(uid), Gid::from_raw(gid))
            .map_err(|e| format!("becoming {uid}:{gid} in the container's user namespace: {e}"))?;
        let none = oci_spec::runtime::LinuxCapabilities::default();
        let empty = oci_spec::runtime::LinuxCapabilitiesBuilder::default()
            .bounding(std::collections::HashSet::new())
            .effective(std::collections::HashSet::new())
            .permitted(std::collections::HashSet::new())
            .inheritable(std::collections::HashSet::new())
            .ambient(std::collections::HashSet::new())
            .build()
            .unwrap_or(none);
        drop_to(self.capabilities.as_ref().unwrap_or(&empty))
    }
}

/// Keeps only `caps` (libcontainer's order: the effective set from the permitted one first, then each set).
fn drop_to(caps: &oci_spec::runtime::LinuxCapabilities) -> Result<(), String> {
    use libcontainer::capabilities::{drop_privileges, reset_effective};
    let syscall = libcontainer::syscall::syscall::create_syscall();
    reset_effective(syscall.as_ref()).map_err(|e| format!("resetting capabilities: {e}"))?;
    drop_privileges(caps, syscall.as_ref()).map_err(|e| format!("dropping capabilities: {e}"))
}

/// Force-deletes the container; a container that is already gone is not an error.
///
/// Cgroups the container made below its own go first, deepest first ([`runtime_hooks::subtree`]): libcgroups removes
/// only the container's own directory, which the kernel refuses while it has children, and its delete then stops
/// before the state (the id stays taken). Those that still hold a process when the container was running go after
/// libcontainer's delete has killed it, and the delete is tried again.
fn delete(id: &str, root: &Path) -> Result<(), LibcontainerError> {
    let dir = root.join(id);
    match load(root, id) {
        Ok(mut container) => {
            let own = container
                .spec()
                .map(|c| {
                    runtime_hooks::subtree::container_dirs(
                        &runtime_hooks::HostRoots::default(),
                        &c.cgroup_path.to_string_lossy(),
                    )
                })
                .unwrap_or_default();
            let pruned = prune_below(id, &own, false);
            match container.delete(true) {
                Err(e) if pruned.1 => {
                    let again = prune_below(id, &own, true);
                    tracing::debug!(
                        container = id,
                        "delete after removing {} cgroups below the container's: {e}",
                        again.0
                    );
                    container.delete(true)
                }
                done => done,
            }
        }
        Err(LibcontainerError::NoDirectory) => Ok(()),
        Err(err) => {
            // State that cannot be read cannot be cleaned through libcontainer; drop what we can.
            let _ = std::fs::remove_dir_all(&dir);
            Err(err)
        }
    }
}

/// Removes the cgroups below each of the container's directories `own` (with `wait`, until their processes have
/// left); returns how many went and whether any stayed. What stays is logged with `wait` only (without, a running
/// container's processes are still there by design).
fn prune_below(id: &str, own: &[PathBuf], wait: bool) -> (usize, bool) {
    let mut removed = 0;
    let mut stayed = false;
    for dir in own {
        let pruned = runtime_hooks::subtree::remove_below(dir, wait);
        removed += pruned.removed;
        if let Some((d, e)) = pruned.failed {
            stayed = true;
            if wait {
                tracing::warn!(container = id, "removing the cgroup {}: {e}", d.display());
            }
        }
    }
    (removed, stayed)
}

/// Runs a container's process as libcontainer's default executor does, with two differences.
///
/// - The command is looked up as runc looks it up (Go's `exec.LookPath` with the process's own `PATH`): a name
///   with a `/` is used as is when it is an executable file (any execute bit), whatever `PATH` says; a bare name
///   is searched in `PATH`, and with no `PATH` it is not found. libcontainer's default refuses any process whose
///   spec has no `PATH`, even `/bin/sleep` (`ctr run --rootfs DIR ID /bin/sleep 60` has none), and wants the
///   execute bit for "others".
/// - The environment keeps the spec's order (runc's: each variable where it first appears, with its last value,
///   then `HOME` when the spec has none); libcontainer passes it through a hash map, which scrambles it.
/// - An exec process runs under the container's seccomp profile: libcontainer 0.7 rebuilds an exec's `linux`
///   section without it. As runc: a process that asks for no_new_privs gets the filter last, with no_new_privs;
///   one that does not gets it before its user and capabilities are set ([`WithAdmin`]), and keeps setuid
///   programs and file capabilities working.
/// - A process with no `HOME` gets its user's from the container's `/etc/passwd`, else `/`, as runc's
///   (libcontainer sets none for a user that file does not name).
#[derive(Clone, Default)]
struct Workload {
    /// The container's seccomp profile, for an exec process (the init's is installed by libcontainer).
    seccomp: Option<LinuxSeccomp>,
    /// The exec does not ask for no_new_privs: its filter is installed while it may (see [`WithAdmin`]), without.
    filter_first: bool,
    /// The spec's capabilities, dropped to once the filter is in ([`WithAdmin`]).
    restore_caps: Option<oci_spec::runtime::LinuxCapabilities>,
    /// For an exec into a container with a user namespace: joining it ([`ExecUser`]).
    join: Option<ExecUser>,
    /// The process's `env` as the spec lists it, kept by `validate` (which libcontainer calls just before
    /// `setup_envs`, in the same single-threaded process).
    env: std::cell::RefCell<Vec<String>>,
}

impl Executor for Workload {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let install = |profile: &LinuxSeccomp| {
            libcontainer::seccomp::initialize_seccomp(profile)
                .map(|_| ())
                .map_err(|e| ExecutorError::Other(format!("installing the seccomp profile: {e}")))
        };
        if let Some(join) = &self.join {
            join.enter().map_err(ExecutorError::Other)?;
        }
        // runc's order: without no_new_privs the filter goes in before the user and capabilities are set, with
        // it as late as possible.
        if let Some(profile) = self.seccomp.as_ref().filter(|_| self.filter_first) {
            install(profile)?;
        }
        if let Some(join) = &self.join {
            join.become_user().map_err(ExecutorError::Other)?;
        } else if let Some(caps) = &self.restore_caps {
            drop_to(caps).map_err(ExecutorError::Other)?;
        }
        if let Some(profile) = self.seccomp.as_ref().filter(|_| !self.filter_first) {
            // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes plain integer arguments.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(ExecutorError::Other(format!(
                    "setting no_new_privs: {}",
                    std::io::Error::last_os_error()
                )));
            }
            install(profile)?;
        }
        // execvp: a name with a `/` is executed as is, a bare one is searched in the process's PATH (the spec's,
        // set by then), as `validate` found it.
        get_executor().exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        let process = spec.process().as_ref().ok_or_else(|| {
            ExecutorValidationError::ArgValidationError("the spec has no process".into())
        })?;
        let args = process.args().as_deref().unwrap_or_default();
        let Some(name) = args.first() else {
            return Err(ExecutorValidationError::ArgValidationError(
                "the process has no args: the command to run is missing".into(),
            ));
        };
        let env = process.env().as_deref().unwrap_or_default();
        *self.env.borrow_mut() = env.to_vec();
        look_path(name, env)
            .map(|_| ())
            .map_err(ExecutorValidationError::ArgValidationError)
    }

    fn setup_envs(
        &self,
        mut envs: std::collections::HashMap<String, String>,
    ) -> Result<(), libcontainer::workload::ExecutorSetEnvsError> {
        // A spec without `HOME` gets its user's, from the container's /etc/passwd (this process is in its mount
        // namespace), else `/`, as runc. libcontainer set the `HOME` of the user it runs the process as (root for
        // an exec that joins a user namespace, [`JoinUser`]) when that file names it, else none.
        if !self.env.borrow().iter().any(|kv| kv.starts_with("HOME=")) {
            match &self.join {
                Some(join) => {
                    envs.insert("HOME".into(), home_of(&read_passwd(), join.user.uid()));
                }
                None if envs.get("HOME").is_none_or(String::is_empty) => {
                    let uid = nix::unistd::getuid().as_raw();
                    envs.insert("HOME".into(), home_of(&read_passwd(), uid));
                }
                None => {}
            }
        }
        let order = env_order(&self.env.borrow(), &envs);
        // SAFETY: this is the container's init or exec process, single-threaded, just before it execs: no other
        // thread can read the environment while it changes.
        unsafe {
            for (key, _) in std::env::vars_os() {
                std::env::remove_var(key);
            }
            for (key, value) in order {
                std::env::set_var(key, value);
            }
        }
        Ok(())
    }
}

/// The container's `/etc/passwd` (its file: the image's, hostile), the first MiB of it, if it is a regular file;
/// opened without blocking, so a FIFO put there cannot hold the exec.
fn read_passwd() -> Vec<u8> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut text = Vec::new();
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/etc/passwd")
        && f.metadata().is_ok_and(|m| m.is_file())
    {
        let _ = f.take(1 << 20).read_to_end(&mut text);
    }
    text
}

/// The home directory of `uid` in an `/etc/passwd` text (the first line for it), else `/`, as runc falls back.
fn home_of(passwd: &[u8], uid: u32) -> String {
    let text = String::from_utf8_lossy(passwd);
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && f[2].parse::<u32>().ok() == Some(uid))
        .map(|f| f[5].to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into())
}

/// The variables of `envs` (libcontainer's map: the spec's, plus `HOME`) in the order of `spec_env` (`KEY=VALUE`,
/// each key where it first appears), then the rest sorted.
fn env_order<'a>(
    spec_env: &[String],
    envs: &'a std::collections::HashMap<String, String>,
) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<(&str, &str)> = Vec::with_capacity(envs.len());
    for kv in spec_env {
        let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
        if let Some((k, v)) = envs.get_key_value(key)
            && !out.iter().any(|(seen, _)| *seen == k)
        {
            out.push((k.as_str(), v.as_str()));
        }
    }
    let mut rest: Vec<(&str, &str)> = envs
        .iter()
        .filter(|(k, _)| !out.iter().any(|(seen, _)| seen == k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    rest.sort();
    out.extend(rest);
    out
}

/// Where `name` is, as Go's `exec.LookPath` (runc) finds it with the environment `env` (`KEY=VALUE`; the last
/// `PATH` wins, as runc sets them in order). The error reads like runc's.
pub fn look_path(name: &str, env: &[String]) -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| -> Result<(), std::io::Error> {
        let m = std::fs::metadata(p)?;
        if m.is_dir() {
            return Err(std::io::Error::from_raw_os_error(libc::EISDIR));
        }
        if m.permissions().mode() & 0o111 == 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EACCES));
        }
        Ok(())
    };
    if name.contains('/') {
        return executable(Path::new(name))
            .map(|()| name.into())
            .map_err(|e| format!("exec: {name:?}: stat {name}: {e}"));
    }
    let path = env
        .iter()
        .rev()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or_default();
    if !path.is_empty() {
        for dir in path.split(':') {
            // An empty entry is the working directory, as in Go.
            let dir = if dir.is_empty() { "." } else { dir };
            let candidate = Path::new(dir).join(name);
            if executable(&candidate).is_ok() {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "exec: {name:?}: executable file not found in $PATH{}",
        if path.is_empty() {
            " (the process has no PATH)"
        } else {
            ""
        }
    ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(dir: &Path, name: &str, mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    #[test]
    fn a_user_is_found_in_its_namespaces_uid_map() {
        let map = "         0     100000      65536\n     65536          7          1\n";
        assert_eq!(host_id(map, 0), Some(100_000));
        assert_eq!(host_id(map, 1000), Some(101_000));
        assert_eq!(host_id(map, 65535), Some(165_535));
        assert_eq!(host_id(map, 65536), Some(7));
        assert_eq!(host_id(map, 65537), None, "not mapped");
        assert_eq!(host_id("0 4294967295 2\n", 1), None, "past 2^32");
        assert_eq!(host_id("garbage\n", 0), None);
    }

    #[test]
    fn an_exec_users_home_comes_from_the_containers_passwd() {
        let passwd = b"root:x:0:0:root:/root:/bin/sh\nbad line\napp:x:1000:1000::/home/app:/bin/sh\nnohome:x:7:7:::\n";
        assert_eq!(home_of(passwd, 0), "/root");
        assert_eq!(home_of(passwd, 1000), "/home/app");
        assert_eq!(home_of(passwd, 7), "/", "an empty home is /");
        assert_eq!(home_of(passwd, 4242), "/", "an unknown user's home is /");
        assert_eq!(home_of(b"\xff\xfe:x", 0), "/");
    }

    #[test]
    fn the_environment_keeps_the_specs_order() {
        let spec = [
            "PATH=/bin".to_owned(),
            "A=1".to_owned(),
            "B=2".to_owned(),
            "A=3".to_owned(),
        ];
        let envs: std::collections::HashMap<String, String> =
            [("A", "3"), ("B", "2"), ("PATH", "/bin"), ("HOME", "/root")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        assert_eq!(
            env_order(&spec, &envs),
            vec![("PATH", "/bin"), ("A", "3"), ("B", "2"), ("HOME", "/root")]
        );
    }

    #[test]
    fn look_path_follows_runc() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let sleep = file(&bin, "sleep", 0o750);
        file(&bin, "data", 0o644);
        let abs = sleep.to_str().expect("utf-8");
        // An absolute path needs no PATH, and any execute bit will do.
        assert_eq!(look_path(abs, &[]), Ok(sleep.clone()));
        // A bare name is searched in the last PATH.
        let env = vec![
            "PATH=/nonexistent".to_owned(),
            format!("PATH=/nonexistent2:{}", bin.display()),
        ];
        assert_eq!(look_path("sleep", &env), Ok(sleep.clone()));
        // ... and without one it is not found (runc: "executable file not found in $PATH").
        let e = look_path("sleep", &[]).expect_err("no PATH");
        assert!(
            e.contains("not found in $PATH") && e.contains("no PATH"),
            "{e}"
        );
        // Not executable, a directory, or missing: refused, naming it.
        for (p, want) in [
            (bin.join("data"), "Permission denied"),
            (bin.clone(), "Is a directory"),
            (bin.join("nope"), "No such file"),
        ] {
            let e = look_path(p.to_str().expect("utf-8"), &env).expect_err("refused");
            assert!(
                e.contains(want) && e.contains(p.to_str().expect("utf-8")),
                "{e}"
            );
        }
        let e = look_path("data", &env).expect_err("not executable");
        assert!(e.contains("not found"), "{e}");
    }
}
