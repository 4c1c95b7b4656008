//! The shim's lifecycle, as containerd drives it: the `start` action (find or spawn the server for
//! this container's group and print its address), the `delete` action (clean up after a shim that
//! died), `-info`, and serving the Task API.
//!
//! The reply to `start` is a bare socket address: containerd 1.6 and 1.7 read nothing else, and
//! containerd 2.x takes a bare address for task API v2. The server registers the same handlers
//! under both `containerd.task.v2.Task` and `containerd.task.v3.Task` (the messages are the same on
//! the wire), so every version finds the service it asks for.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use containerd_shim::Flags;
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim_async::create_task;
use containerd_shim_protos::ttrpc::r#async::Server;
use containerd_shim_protos::ttrpc::r#async::transport::Listener;
use tokio::sync::Notify;

use crate::error::{Result, ShimError};
use crate::options::RuntimeOptions;
use crate::reaper::{self, Reaper};
use crate::task::TaskService;
use crate::zygote::{Request, Zygote};
use crate::{RUNTIME_NAME, runtime};

/// Where libcontainer keeps container state, one directory per containerd namespace.
pub const STATE_ROOT: &str = "/run/predictive";
/// Carries runc's `ShimCgroup` option from the `start` action to the server it spawns.
const SHIM_CGROUP_ENV: &str = "PREDICTIVE_SHIM_CGROUP";
/// The annotation that groups a pod's containers into one shim.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
/// How long after a `start` action was handed this server's address the server stays, even if idle:
/// containerd connects and sends Create right after the action returns.
const CLAIM_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// Entry point of `containerd-shim-predictive-v2`.
pub fn main() {
    // A replacement zygote (zygote.rs): the server ran this binary again for one.
    if let Some(value) = std::env::var_os(crate::zygote::EXEC_ENV) {
        crate::zygote::serve_exec(&value.to_string_lossy(), runtime::work);
    }
    let args: Vec<OsString> = std::env::args_os().collect();
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(flags) => flags,
        Err(e) => {
            eprintln!("{RUNTIME_NAME}: {e}");
            std::process::exit(1);
        }
    };
    let result = if flags.version {
        println!(
            "containerd-shim-predictive-v2:\n  Runtime: {RUNTIME_NAME}\n  Version: {}",
            env!("CARGO_PKG_VERSION")
        );
        Ok(())
    } else if flags.info {
        info()
    } else {
        match flags.action.as_str() {
            "start" => start(&flags),
            "delete" => delete(&flags),
            _ => serve(&flags),
        }
    };
    if let Err(e) = result {
        eprintln!("{RUNTIME_NAME}: {}", e.chain());
        std::process::exit(1);
    }
}

fn info() -> Result<()> {
    // containerd may pipe runtime options; they change nothing here.
    let mut ignored = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut ignored);
    let features = serde_json::to_vec(&features())
        .map_err(|e| ShimError::InvalidArgument(format!("encoding the features: {e}")))?;
    let info = containerd_shim_protos::types::introspection::RuntimeInfo {
        name: RUNTIME_NAME.to_string(),
        version: Some(
            containerd_shim_protos::types::introspection::RuntimeVersion {
                version: env!("CARGO_PKG_VERSION").to_string(),
                ..Default::default()
            },
        )
        .into(),
        features: Some(
            containerd_shim_protos::protobuf::well_known_types::any::Any {
                type_url: FEATURES_TYPE_URL.to_string(),
                value: features,
                ..Default::default()
            },
        )
        .into(),
        ..Default::default()
    };
    let bytes = info
        .write_to_bytes()
        .map_err(|e| ShimError::InvalidArgument(format!("encoding runtime info: {e}")))?;
    std::io::stdout()
        .write_all(&bytes)
        .map_err(ShimError::io("writing runtime info"))
}

/// How containerd names the OCI runtime features document it decodes from `RuntimeInfo.features` (JSON).
pub const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// The OCI runtime features of this shim (runtime-spec `features.md`), as `runc features` reports them to runc's
/// shim: what libcontainer does, plus the idmapped mounts the shim makes itself (`crate::idmap`). containerd 2.x
/// reads it into the CRI runtime handler's features, which kubelet checks before it sends a pod with
/// `hostUsers: false` (namespace `user` and `idmap` needed) or a `recursiveReadOnly` volume (`rro`).
pub fn features() -> serde_json::Value {
    use std::str::FromStr;
    let recursive = [
        "rro",
        "rrw",
        "rnosuid",
        "rsuid",
        "rnodev",
        "rdev",
        "rnoexec",
        "rexec",
        "rnodiratime",
        "rdiratime",
        "rrelatime",
        "rnorelatime",
        "rnoatime",
        "ratime",
        "rstrictatime",
        "rnostrictatime",
        "rnosymfollow",
        "rsymfollow",
    ];
    let mut options = libcontainer::syscall::linux::MountOption::known_options();
    options.extend(
        recursive
            .iter()
            .filter(|o| libcontainer::syscall::linux::MountRecursive::from_str(o).is_ok())
            .map(|o| o.to_string()),
    );
    options.extend(["idmap".to_string(), "ridmap".to_string()]);
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": oci_spec::runtime::VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": options,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "cgroup": {"v1": true, "v2": true, "systemd": true, "systemdUser": false, "rdma": false},
            "seccomp": {"enabled": true},
            "mountExtensions": {"idmap": {"enabled": true}}
        }
    })
}

fn bundle_dir(flags: &Flags) -> Result<PathBuf> {
    if flags.bundle.is_empty() {
        std::env::current_dir().map_err(ShimError::io("reading the working directory"))
    } else {
        Ok(PathBuf::from(&flags.bundle))
    }
}

/// The bundle's config.json as JSON, if it reads and parses (the create reports what is wrong with it).
fn read_spec(bundle: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(bundle.join("config.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// The group a container's shim is shared by: its pod's sandbox id (from the bundle's spec), else its own id.
fn group_of(spec: Option<&serde_json::Value>, id: &str) -> String {
    spec.and_then(|s| s.get("annotations"))
        .and_then(|a| a.get(SANDBOX_ID_ANNOTATION))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or(id)
        .to_string()
}

fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

/// Sets the socket's mtime to now.
fn claim(path: &str) {
    if let Ok(c) = std::ffi::CString::new(path) {
        // SAFETY: utimensat with a null times pointer sets both times to now on a valid C path.
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) };
    }
}

/// How long ago the socket was last claimed (or bound).
fn since_claim(path: &str) -> std::time::Duration {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or(CLAIM_WINDOW)
}

/// `true` when a server listens at `path` and is not on its way out. A connect alone does not tell: a killed
/// server's listening socket outlives its process (its files are released as the process exits, after its PSI
/// trigger and event files, each of whose release may wait for an RCU grace period: a CRI pod's shim, killed with
/// SIGKILL, still took connections 50 ms later with nobody to accept them, 2026-12-03), so the server that listened
/// (the socket's peer credentials) must be alive and not exiting too.
fn serving(path: &str) -> bool {
    let Ok(stream) = UnixStream::connect(path) else {
        return false;
    };
    match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(cred) if cred.pid() > 0 => !crate::process::exiting(cred.pid()),
        // Not known here (another pid namespace): only the connect tells.
        _ => true,
    }
}

/// An exclusive lock on the socket directory: serialises starts and the exit of idle servers.
struct StartLock {
    _held: File,
}

impl StartLock {
    fn take(socket: &str) -> Result<StartLock> {
        let dir = Path::new(socket).parent().ok_or_else(|| {
            ShimError::InvalidArgument(format!("socket {socket} has no directory"))
        })?;
        std::fs::create_dir_all(dir)
            .map_err(ShimError::io(format!("creating {}", dir.display())))?;
        let file = File::open(dir).map_err(ShimError::io(format!("opening {}", dir.display())))?;
        // SAFETY: flock on a descriptor we own; blocks until the lock is ours.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(ShimError::Io {
                context: format!("locking {}", dir.display()),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(StartLock { _held: file })
    }
}

fn start(flags: &Flags) -> Result<()> {
    let bundle = bundle_dir(flags)?;
    let spec = read_spec(&bundle);
    let group = group_of(spec.as_ref(), &flags.id);
    let address = containerd_shim::socket_address(&flags.address, &flags.namespace, &group);
    let path = socket_path(&address).to_string();
    let lock = StartLock::take(&path)?;
    // As runc v2 does: tools find a task's shim through `<bundle>/address`.
    let _ = std::fs::write(bundle.join("address"), &address);
    if serving(&path) {
        // The claim: an idle server that sees a fresh mtime on its socket (checked under the same
        // lock) stays for containerd's Create instead of exiting under it.
        claim(&path);
        println!("{address}");
        drop(lock);
        return Ok(());
    }
    let _ = std::fs::remove_file(&path);
    let options = start_options()?;

    let exe = std::env::current_exe().map_err(ShimError::io("finding the shim binary"))?;
    let mut command = Command::new(exe);
    command
        .current_dir(&bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .args(["-namespace", &flags.namespace, "-id", &flags.id])
        .args(["-address", &flags.address, "-socket", &address]);
    if flags.debug {
        command.arg("-debug");
    }
    if !flags.publish_binary.is_empty() {
        command.args(["-publish-binary", &flags.publish_binary]);
    }
    if let Some(cgroup) = &options.shim_cgroup {
        command.env(SHIM_CGROUP_ENV, cgroup);
    }
    // The create's cgroup grace period starts now, not once the server runs (warmup.rs).
    let roots = runtime_hooks::HostRoots::default();
    let early = spec.and_then(|s| crate::warmup::early(&roots, &flags.id, &s));
    if let Some(e) = &early {
        command.env(crate::warmup::EARLY_ENV, &e.env);
    }
    // Whatever fails from here, the early warm-up's directories go (a server that ran removed them already).
    let undo = || {
        if let Some(e) = &early {
            e.undo()
        }
    };
    let mut child = command
        .spawn()
        .inspect_err(|_| undo())
        .map_err(ShimError::io("spawning the shim server"))?;
    // The server closes its stdout once it serves, or exits.
    let mut ready = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_end(&mut ready);
    }
    if let Ok(Some(status)) = child.try_wait()
        && !status.success()
    {
        undo();
        let why = String::from_utf8_lossy(&ready);
        return Err(ShimError::FailedPrecondition(format!(
            "shim server exited with {status} before serving {address}: {}",
            why.trim()
        )));
    }
    drop(lock);
    println!("{address}");
    Ok(())
}

/// As runc's shim, whose `start` action puts the server's `oom_score_adj` one above containerd's: the server
/// raises its own (inherited from the `start` action, so containerd's) by one before it forks the zygote, so the
/// zygote, its workers and every container whose spec sets no score of its own have it too. (The `start` action
/// raised the server's once the server served, and a zygote forked before that kept containerd's score: 1 container
/// start in 10 here.) Raising one's own score needs no privilege; a failure leaves containerd's.
fn raise_oom_score() {
    const PATH: &str = "/proc/self/oom_score_adj";
    let own = std::fs::read_to_string(PATH)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    if let Some(score) = own.filter(|s| *s < 1000)
        && let Err(e) = std::fs::write(PATH, (score + 1).to_string())
    {
        tracing::warn!("raising the shim's oom_score_adj to {}: {e}", score + 1);
    }
}

/// The runtime options containerd writes to the `start` action's stdin (a protobuf `Any`), if any; a terminal
/// (someone running the action by hand) gives none.
fn start_options() -> Result<RuntimeOptions> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(RuntimeOptions::default());
    }
    let mut data = Vec::new();
    stdin
        .lock()
        .take(1 << 20)
        .read_to_end(&mut data)
        .map_err(ShimError::io("reading the runtime options on stdin"))?;
    if data.is_empty() {
        return Ok(RuntimeOptions::default());
    }
    let any = containerd_shim_protos::protobuf::well_known_types::any::Any::parse_from_bytes(&data)
        .map_err(|e| ShimError::InvalidArgument(format!("runtime options on stdin: {e}")))?;
    RuntimeOptions::decode(&any.type_url, &any.value)
}

/// Cleans up after a shim that is gone: kills what is left of the container, removes its state and
/// cgroups, unmounts its rootfs. Never touches a container whose shim still serves.
fn delete(flags: &Flags) -> Result<()> {
    let bundle = bundle_dir(flags)?;
    let spec = read_spec(&bundle);
    let group = group_of(spec.as_ref(), &flags.id);
    let address = containerd_shim::socket_address(&flags.address, &flags.namespace, &group);
    if dead_server(socket_path(&address)) {
        // The container is still there only when its shim died before deleting it (a normal Delete removes its
        // state before containerd 1.6 runs this action): then what only that server knew goes too.
        let stood = state_root(&flags.namespace).join(&flags.id).exists();
        let reply = runtime::work(
            Request::Delete {
                id: flags.id.clone(),
                root: state_root(&flags.namespace),
            },
            crate::zygote::Stdio::default(),
        );
        if let crate::zygote::Reply::Err { message, .. } = reply {
            eprintln!("{RUNTIME_NAME}: delete {}: {message}", flags.id);
        }
        crate::container::unmount_rootfs(&bundle.join("rootfs"));
        // A server killed during a Create may leave idmapped copies attached in the bundle, which containerd
        // removes recursively next: through a copy that would be the files of its source (a volume).
        crate::idmap::detach_left(&bundle);
        if stood {
            if let Some(path) = spec
                .as_ref()
                .and_then(|s| s.pointer("/linux/cgroupsPath")?.as_str())
            {
                crate::companions::remove_left(&flags.id, path);
            }
            crate::predict::finish_after_dead_shim(&flags.namespace, &flags.id, &bundle);
        }
    }
    let response = DeleteResponse {
        exit_status: 137,
        exited_at: Some(crate::process::now()).into(),
        ..Default::default()
    };
    let bytes = response
        .write_to_bytes()
        .map_err(|e| ShimError::InvalidArgument(format!("encoding delete response: {e}")))?;
    std::io::stdout()
        .write_all(&bytes)
        .map_err(ShimError::io("writing the delete response"))
}

/// `false` when the group's server still serves its socket; else the server is gone (exited or killed) and a
/// socket file it left (a SIGKILL leaves it) is removed. Checked under the start lock, so a `start` for the same
/// group either serves before the check or binds after the removal.
fn dead_server(path: &str) -> bool {
    let _lock = StartLock::take(path).ok();
    if serving(path) {
        return false;
    }
    let _ = std::fs::remove_file(path);
    true
}

pub fn state_root(namespace: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(namespace)
}

fn bind(socket: &str) -> Result<Option<UnixListener>> {
    match UnixListener::bind(socket) {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if serving(socket) {
                return Ok(None);
            }
            let _ = std::fs::remove_file(socket);
            UnixListener::bind(socket)
                .map(Some)
                .map_err(ShimError::io(format!("binding {socket}")))
        }
        Err(e) => Err(ShimError::io(format!("binding {socket}"))(e)),
    }
}

/// Tells the `start` action we serve: our stdout was its pipe.
fn signal_ready() {
    // SAFETY: dup2 on the process's own standard descriptors.
    unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) };
}

/// Serves the group, then removes what the `start` action's early warm-up made if no create adopted it.
fn serve(flags: &Flags) -> Result<()> {
    if let Some(early) = std::env::var_os(crate::warmup::EARLY_ENV) {
        crate::warmup::keep_early(&early.to_string_lossy());
    }
    let result = serve_group(flags);
    crate::warmup::drop_early();
    result
}

fn serve_group(flags: &Flags) -> Result<()> {
    if flags.socket.is_empty() {
        return Err(ShimError::InvalidArgument(
            "-socket is required to serve".into(),
        ));
    }
    // One malloc arena: the server has one runtime thread plus a blocking-pool thread or two, and an
    // arena per thread costs resident memory in every shim for no gain in speed.
    // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    crate::logging::init(flags.debug);
    // containerd deletes the first bundle, which is our working directory.
    std::env::set_current_dir("/").map_err(ShimError::io("changing directory to /"))?;
    let socket = socket_path(&flags.socket).to_string();
    let Some(listener) = bind(&socket)? else {
        // Another server of this group won the race; it serves.
        signal_ready();
        return Ok(());
    };
    // runc's ShimCgroup option: the server (and so the zygote it forks next) runs in that cgroup. A failure is
    // told to the start action through the pipe it reads.
    if let Some(cgroup) = std::env::var_os(SHIM_CGROUP_ENV) {
        let cgroup = cgroup.to_string_lossy().into_owned();
        if let Err(e) = runtime_hooks::discovery::join(
            &runtime_hooks::HostRoots::default(),
            &cgroup,
            std::process::id(),
        ) {
            let e = ShimError::FailedPrecondition(format!(
                "ShimCgroup {:?}: {}",
                cgroup.escape_debug().to_string(),
                predictive_api::error_chain(&e)
            ));
            println!("{e}");
            return Err(e);
        }
    }
    reaper::set_subreaper().map_err(ShimError::io("becoming a child subreaper"))?;
    raise_oom_score();
    // The socket is bound, so connections queue from here on. Ready before the zygote forks: it
    // must not inherit the start action's pipe, or that action would wait for it forever.
    signal_ready();
    // The host's cgroup layout, parsed from mountinfo once for this process, its zygote and every worker (they
    // inherit it): the create's warm-up, companions and discovery all need it (runtime_hooks::discovery).
    let _ = runtime_hooks::discovery::Hierarchy::detect(&runtime_hooks::HostRoots::default());
    // Still single-threaded: the only safe moment to fork the zygote.
    let zygote = Zygote::spawn(runtime::work)?;
    tracing::info!(
        socket = %socket,
        namespace = %flags.namespace,
        zygote = zygote.pid(),
        "serving"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // A blocking-pool thread outlives the idle heartbeat (10 s by default, tokio's keep-alive too): an idle
        // shim's heartbeat step reuses its thread instead of spawning one each time.
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()
        .map_err(ShimError::io("building the tokio runtime"))?;
    let root = state_root(&flags.namespace);
    let result = runtime.block_on(serve_async(flags, listener, &socket, zygote));
    let _ = std::fs::remove_file(&socket);
    // The namespace's state directory goes with its last container (rmdir: only when empty, so a sibling
    // shim's containers are never touched).
    let _ = std::fs::remove_dir(&root);
    tracing::info!("shim exits");
    result
}

/// How long an idle thread of the shim's blocking pool waits for work before it exits.
const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(60);

async fn serve_async(
    flags: &Flags,
    listener: UnixListener,
    socket: &str,
    zygote: Zygote,
) -> Result<()> {
    let reaper = Arc::new(Reaper::default());
    let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
        .map_err(ShimError::io("watching SIGCHLD"))?;
    {
        let reaper = reaper.clone();
        tokio::spawn(async move {
            // Children that exited before the handler was installed are reaped on the first pass.
            reaper.reap();
            while sigchld.recv().await.is_some() {
                reaper.reap();
            }
        });
    }
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ShimError::io("watching SIGTERM"))?;
    tokio::spawn(async move {
        while sigterm.recv().await.is_some() {
            tracing::info!("SIGTERM ignored: the shim exits when containerd shuts it down");
        }
    });

    let ttrpc_address = std::env::var("TTRPC_ADDRESS").map_err(|_| {
        ShimError::InvalidArgument(
            "TTRPC_ADDRESS is not set: containerd starts shims with it".into(),
        )
    })?;
    let publisher = crate::publisher::Publisher::connect(&ttrpc_address).await?;
    let exit = Arc::new(Notify::new());
    let task = TaskService::new(
        &flags.namespace,
        state_root(&flags.namespace),
        Arc::new(zygote),
        reaper,
        publisher,
        exit.clone(),
        runtime_hooks::HostRoots::default(),
    );
    let shared = task.shared();
    let service: Arc<dyn containerd_shim_protos::shim_async::Task + Send + Sync> =
        Arc::new(task.clone());
    let v3 = create_task(service.clone());
    let v2 = create_task(service)
        .into_iter()
        .map(|(name, svc)| (name.replace(".v3.", ".v2."), svc))
        .collect();
    let listener =
        Listener::try_from(listener).map_err(ShimError::io("registering the ttrpc listener"))?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(v3)
        .register_service(v2);
    server
        .start()
        .await
        .map_err(|e| ShimError::Zygote(format!("starting the ttrpc server: {e}")))?;

    // Exit when idle, deciding under the start lock (held only for the check, so other groups'
    // starts never wait on us): a `start` that was handed our address in the last CLAIM_WINDOW
    // means a Create is on its way, so wait that out and look again.
    'serve: loop {
        exit.notified().await;
        loop {
            let socket_owned = socket.to_string();
            let lock = tokio::task::spawn_blocking(move || StartLock::take(&socket_owned))
                .await
                .map_err(|e| ShimError::Zygote(format!("taking the start lock: {e}")))??;
            if !shared.idle() {
                drop(lock);
                continue 'serve;
            }
            let since = since_claim(socket);
            if since >= CLAIM_WINDOW {
                let _ = std::fs::remove_file(socket);
                drop(lock);
                break 'serve;
            }
            drop(lock);
            tokio::time::sleep(CLAIM_WINDOW - since).await;
        }
    }
    let _ = server.shutdown().await;
    // Events still queued (TaskDelete of the last container) reach containerd before we exit.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), shared.events.flush()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// What containerd 2.x reads from `-info` into the CRI handler's features (its `supportsCRIUserns` and the
    /// `rro` check), and what kubelet then asks of a RuntimeClass.
    #[test]
    fn the_features_say_user_namespaces_idmapped_mounts_and_rro() {
        let f = features();
        let has =
            |v: &serde_json::Value, s: &str| v.as_array().is_some_and(|a| a.iter().any(|x| x == s));
        assert!(has(&f["linux"]["namespaces"], "user"), "{f}");
        assert_eq!(
            f["linux"]["mountExtensions"]["idmap"]["enabled"], true,
            "{f}"
        );
        for option in ["rro", "rbind", "nosuid", "idmap", "ridmap"] {
            assert!(has(&f["mountOptions"], option), "{option}: {f}");
        }
        assert!(
            !has(&f["mountOptions"], "rbogus"),
            "only what libcontainer parses: {f}"
        );
        assert_eq!(f["ociVersionMax"], oci_spec::runtime::VERSION);
        assert!(
            serde_json::from_value::<oci_spec::runtime::Features>(f.clone()).is_ok(),
            "a runtime-spec features document: {f}"
        );
    }

    #[test]
    fn a_listener_whose_server_is_alive_is_serving() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        let _listener = UnixListener::bind(&path).expect("bind");
        assert!(serving(path.to_str().expect("utf-8 path")));
        assert!(!serving(dir.path().join("none").to_str().expect("utf-8")));
    }

    /// A listening socket that outlives the process that listened on it (a killed server's, while its files are
    /// still being released) takes connections, but nobody serves it.
    #[test]
    fn a_listener_whose_server_is_gone_is_not_serving() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        // Bound here, listened on by a child that exits at once: the socket's credentials are the child's.
        let sock = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        let addr = nix::sys::socket::UnixAddr::new(&path).expect("address");
        nix::sys::socket::bind(sock.as_raw_fd(), &addr).expect("bind");
        // SAFETY: the child makes only the async-signal-safe calls listen(2) and _exit(2).
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                // SAFETY: listen on a socket this process owns, then exit without running destructors.
                unsafe {
                    libc::_exit(if libc::listen(sock.as_raw_fd(), 8) == 0 {
                        0
                    } else {
                        1
                    })
                }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
        let path = path.to_str().expect("utf-8 path");
        assert!(
            UnixStream::connect(path).is_ok(),
            "the orphaned listener takes connections"
        );
        assert!(!serving(path), "nobody serves an orphaned listener");
        drop(sock);
    }
}
