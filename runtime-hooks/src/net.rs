//! Egress and ingress rate limits for a container: a token-bucket (TBF) root qdisc set over rtnetlink, on
//! each interface of the container's network namespace (egress), or on the host-side peer of each of its veth
//! interfaces (ingress: what the container receives is what its peer sends, so no IFB device is needed).
//!
//! The netlink messages are built by hand (about 250 lines) instead of using `netlink-packet-route` /
//! `rtnetlink`: those crates have no typed TBF options (TBF would go through their untyped `Other`
//! attribute anyway), `rtnetlink` needs a tokio runtime, and the three messages used here
//! (`RTM_NEWQDISC`, `RTM_DELQDISC`, `RTM_GETQDISC`) are short, fixed-layout structs from
//! `linux/pkt_sched.h`. The rate is given in bytes per second with the link layer set to Ethernet, so
//! the kernel needs no rate table (Linux >= 3.13, like `TCA_TBF_BURST` and `TCA_TBF_RATE64`).
//!
//! The work happens on a short-lived thread that joins the namespace with setns(2) (`/proc/<pid>/ns/net`
//! or a bind-mounted path such as `/run/netns/NAME`); the calling thread never changes namespace. Each
//! write is read back with a dump and the rate compared.
//!
//! The ingress peer is found, never guessed: a container interface's `IFLA_LINK` is its peer's ifindex in
//! the peer's namespace, and ifindexes repeat across namespaces, so the interface in the host namespace with
//! that index is taken only if it is a veth whose own `IFLA_LINK` is the container interface and whose
//! `IFLA_LINK_NETNSID` is the container namespace's id as the host namespace sees it (`RTM_GETNSID`). Anything
//! else (macvlan/ipvlan, whose `IFLA_LINK` is the host's NIC; a peer in a third namespace) is refused before
//! anything is written. The host-side veth goes away with the container's namespace, and its qdisc with it.
//!
//! Limits: the root qdisc is replaced, so any qdisc the container (egress) or the operator (ingress, on the
//! host-side veth) set up is lost; ingress covers veth interfaces only, and the shaping happens after the host
//! received the packets (TCP's window slows the sender; a UDP flood is dropped at the veth, not upstream);
//! needs CAP_SYS_ADMIN (setns) and CAP_NET_ADMIN in the namespaces.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors from the egress and ingress limits.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The namespace file could not be opened.
    #[error("opening network namespace {path}")]
    OpenNetns {
        /// The namespace file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// setns(2) into the namespace failed.
    #[error("entering network namespace {path}")]
    Setns {
        /// The namespace file.
        path: PathBuf,
        /// The error from setns.
        #[source]
        source: std::io::Error,
    },
    /// The netlink socket could not be created or used.
    #[error("netlink socket")]
    Socket(#[source] std::io::Error),
    /// The named interface does not exist in the namespace.
    #[error("no interface {name:?} in the namespace")]
    NoInterface {
        /// The interface name.
        name: String,
    },
    /// The kernel refused a request (the errno says why: EINVAL for bad parameters, EPERM without
    /// CAP_NET_ADMIN, ...).
    #[error("{op} on {iface}")]
    Kernel {
        /// The request.
        op: &'static str,
        /// The interface.
        iface: String,
        /// The kernel's errno.
        #[source]
        source: std::io::Error,
    },
    /// The qdisc read back does not carry the rate asked for.
    #[error("{iface} reads back {found:?} after setting tbf rate {wanted} B/s")]
    Mismatch {
        /// The interface.
        iface: String,
        /// The rate asked for.
        wanted: u64,
        /// The root qdisc found: kind and rate.
        found: Option<(String, Option<u64>)>,
    },
    /// A parameter is outside what TBF accepts.
    #[error("{what} {value} is outside {range}")]
    OutOfRange {
        /// The parameter.
        what: &'static str,
        /// The value.
        value: u64,
        /// The accepted range.
        range: &'static str,
    },
    /// The helper thread panicked.
    #[error("network namespace helper thread panicked")]
    Thread,
    /// A container interface's peer is not a veth in the host namespace that points back at it: nothing was
    /// shaped (a guess could shape the host's NIC or another container's veth).
    #[error("no host-side veth peer for container interface {iface}: {why}")]
    NoPeer {
        /// The container's interface.
        iface: String,
        /// What did not match.
        why: String,
    },
}

/// A network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netns {
    /// The namespace of a process (`/proc/<pid>/ns/net`).
    Pid(i32),
    /// A namespace file, e.g. `/run/netns/NAME` or an OCI `linux.namespaces[].path`.
    Path(PathBuf),
}

impl Netns {
    fn path(&self) -> PathBuf {
        match self {
            Self::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            Self::Path(p) => p.clone(),
        }
    }
}

/// A token-bucket egress limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressLimit {
    /// Sustained rate, bytes per second.
    pub rate_bytes_per_sec: u64,
    /// Bucket size in bytes: how much may leave at line rate after an idle spell.
    pub burst_bytes: u32,
    /// How long a packet may wait in the queue before being dropped (sets the queue length).
    pub latency: Duration,
}

/// The smallest bucket, bytes: larger than any packet the TBF may hold. TCP hands the qdisc GSO packets of up to
/// 64 KiB (plus each segment's headers, as the qdisc counts them), and a TBF splits a packet only when it is
/// enqueued: after a change to a smaller bucket, a queued packet larger than the bucket can never be sent, and
/// the kernel (6.1) keeps the queue on a change, so the whole stream behind it stops for good. 96 KiB covers a
/// 64 KiB GSO packet's 45 segments' headers with room; an interface with BIG TCP (`gso_max_size` above 64 KiB) is
/// not covered. The cost: a sender idle for a while may send up to this much at once.
pub const MIN_BURST: u32 = 96 * 1024;

impl EgressLimit {
    /// `rate_bytes_per_sec` with a burst of 10 ms worth of traffic (at least [`MIN_BURST`]) and 50 ms latency.
    pub fn new(rate_bytes_per_sec: u64) -> Self {
        let burst = (rate_bytes_per_sec / 100).clamp(MIN_BURST.into(), u64::from(u32::MAX));
        Self {
            rate_bytes_per_sec,
            burst_bytes: u32::try_from(burst).unwrap_or(u32::MAX),
            latency: Duration::from_millis(50),
        }
    }
}

/// The root qdisc of an interface as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootQdisc {
    /// Its kind (`tbf`, `noqueue`, `fq_codel`, ...).
    pub kind: String,
    /// The TBF rate in bytes per second, when it is a TBF.
    pub rate_bytes_per_sec: Option<u64>,
}

/// Sets `limit` as the root qdisc of `iface` (or of every non-loopback interface when `None`) in `netns`;
/// returns the interfaces changed.
pub fn set_egress_limit(
    netns: &Netns,
    iface: Option<&str>,
    limit: &EgressLimit,
) -> Result<Vec<String>, NetError> {
    check_limit(limit)?;
    let limit = *limit;
    in_netns(netns, move || {
        let mut nl = Netlink::open()?;
        let names = interfaces(iface)?;
        for name in &names {
            set_checked(&mut nl, ifindex(name)?, name, &limit)?;
        }
        Ok(names)
    })
}

/// Removes a TBF root qdisc set by [`set_egress_limit`] (other root qdiscs are left alone); returns the
/// interfaces changed.
pub fn clear_egress_limit(netns: &Netns, iface: Option<&str>) -> Result<Vec<String>, NetError> {
    in_netns(netns, move || {
        let mut nl = Netlink::open()?;
        let mut changed = Vec::new();
        for name in interfaces(iface)? {
            if clear_tbf(&mut nl, ifindex(&name)?, &name)? {
                changed.push(name);
            }
        }
        Ok(changed)
    })
}

/// Sets a TBF root qdisc on link `index` (`name` for errors) and reads it back.
fn set_checked(
    nl: &mut Netlink,
    index: i32,
    name: &str,
    limit: &EgressLimit,
) -> Result<(), NetError> {
    let kernel = |op| {
        move |source| NetError::Kernel {
            op,
            iface: name.to_owned(),
            source,
        }
    };
    nl.set_tbf(index, limit)
        .map_err(kernel("RTM_NEWQDISC tbf"))?;
    match nl.root_qdisc(index).map_err(kernel("RTM_GETQDISC"))? {
        Some(q) if q.kind == "tbf" && q.rate_bytes_per_sec == Some(limit.rate_bytes_per_sec) => {
            Ok(())
        }
        other => Err(NetError::Mismatch {
            iface: name.to_owned(),
            wanted: limit.rate_bytes_per_sec,
            found: other.map(|q| (q.kind, q.rate_bytes_per_sec)),
        }),
    }
}

/// Deletes link `index`'s root qdisc if it is a TBF; whether it was.
fn clear_tbf(nl: &mut Netlink, index: i32, name: &str) -> Result<bool, NetError> {
    let kernel = |op| {
        move |source| NetError::Kernel {
            op,
            iface: name.to_owned(),
            source,
        }
    };
    let current = nl.root_qdisc(index).map_err(kernel("RTM_GETQDISC"))?;
    if current.is_none_or(|q| q.kind != "tbf") {
        return Ok(false);
    }
    nl.delete_root(index).map_err(kernel("RTM_DELQDISC"))?;
    Ok(true)
}

/// Reads the root qdisc of `iface` in `netns` (`None` when the interface has none, e.g. `noqueue` veth).
pub fn root_qdisc(netns: &Netns, iface: &str) -> Result<Option<RootQdisc>, NetError> {
    let iface = iface.to_owned();
    in_netns(netns, move || {
        let mut nl = Netlink::open()?;
        let index = ifindex(&iface)?;
        nl.root_qdisc(index).map_err(|source| NetError::Kernel {
            op: "RTM_GETQDISC",
            iface,
            source,
        })
    })
}

/// A container interface and its host-side veth peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLink {
    /// The interface in the container's namespace.
    pub iface: String,
    /// Its veth peer in the host namespace, whose egress is the container's ingress.
    pub peer: String,
    /// The peer's ifindex there.
    pub peer_index: i32,
}

/// Sets `limit` on what the container receives: a TBF root qdisc on the host-side peer (in `host`, the shim's
/// own namespace: `/proc/self/ns/net`) of `iface` or, when `None`, of every interface of `container` that has a
/// link to another device. Every peer is verified (see the module doc) before any is written; one that cannot
/// be verified fails the whole call with [`NetError::NoPeer`]. Returns the pairs shaped.
pub fn set_ingress_limit(
    container: &Netns,
    host: &Netns,
    iface: Option<&str>,
    limit: &EgressLimit,
) -> Result<Vec<PeerLink>, NetError> {
    check_limit(limit)?;
    let limit = *limit;
    with_peers(container, host, iface, move |nl, peers| {
        for p in &peers {
            set_checked(nl, p.peer_index, &p.peer, &limit)?;
        }
        Ok(peers)
    })
}

/// Removes the TBF root qdisc [`set_ingress_limit`] set on the host-side peers; returns the pairs changed.
pub fn clear_ingress_limit(
    container: &Netns,
    host: &Netns,
    iface: Option<&str>,
) -> Result<Vec<PeerLink>, NetError> {
    with_peers(container, host, iface, |nl, peers| {
        let mut changed = Vec::new();
        for p in peers {
            if clear_tbf(nl, p.peer_index, &p.peer)? {
                changed.push(p);
            }
        }
        Ok(changed)
    })
}

/// The verified host-side veth peers of `iface` (or of every linked interface) of `container`.
pub fn host_peers(
    container: &Netns,
    host: &Netns,
    iface: Option<&str>,
) -> Result<Vec<PeerLink>, NetError> {
    with_peers(container, host, iface, |_, peers| Ok(peers))
}

/// Finds and verifies the peers, then runs `then` with them on the same thread in `host` (two namespace joins
/// per call, not one per step).
fn with_peers<T: Send>(
    container: &Netns,
    host: &Netns,
    iface: Option<&str>,
    then: impl FnOnce(&mut Netlink, Vec<PeerLink>) -> Result<T, NetError> + Send,
) -> Result<T, NetError> {
    let theirs = in_netns(container, || {
        Netlink::open()?.links().map_err(|source| NetError::Kernel {
            op: "RTM_GETLINK",
            iface: "*".to_owned(),
            source,
        })
    })?;
    let wanted: Vec<Link> = match iface {
        Some(name) => vec![theirs.into_iter().find(|l| l.name == name).ok_or_else(|| {
            NetError::NoInterface {
                name: name.to_owned(),
            }
        })?],
        None => theirs
            .into_iter()
            .filter(|l| l.name != "lo" && l.linked())
            .collect(),
    };
    let container_file = File::open(container.path()).map_err(|source| NetError::OpenNetns {
        path: container.path(),
        source,
    })?;
    in_netns(host, move || {
        let mut nl = Netlink::open()?;
        let kernel = |op| {
            move |source| NetError::Kernel {
                op,
                iface: "*".to_owned(),
                source,
            }
        };
        // Only the links the container's interfaces name (a host can have thousands), and those first: reading a
        // veth whose peer is elsewhere assigns that namespace an id if it had none.
        let mut ours = Vec::new();
        for index in wanted.iter().filter_map(|l| l.link) {
            if let Some(l) = nl.link(index).map_err(kernel("RTM_GETLINK"))? {
                ours.push(l);
            }
        }
        let nsid = nl
            .nsid(container_file.as_raw_fd())
            .map_err(kernel("RTM_GETNSID"))?;
        let peers = wanted
            .iter()
            .map(|c| match_peer(c, &ours, nsid))
            .collect::<Result<Vec<_>, _>>()?;
        then(&mut nl, peers)
    })
}

/// The host-side link that is `c`'s veth peer, given the host's links and the container namespace's id there.
fn match_peer(c: &Link, host_links: &[Link], nsid: Option<i32>) -> Result<PeerLink, NetError> {
    let no = |why: String| NetError::NoPeer {
        iface: c.name.clone(),
        why,
    };
    let Some(index) = c.link.filter(|_| c.linked()) else {
        return Err(no("it has no link to another device".to_owned()));
    };
    let Some(h) = host_links.iter().find(|h| h.index == index) else {
        return Err(no(format!("no interface with ifindex {index} here")));
    };
    if h.kind.as_deref() != Some("veth") {
        return Err(no(format!(
            "ifindex {index} here is {} of kind {}, not a veth",
            h.name,
            h.kind.as_deref().unwrap_or("none")
        )));
    }
    if h.link != Some(c.index) {
        return Err(no(format!(
            "veth {} here peers with ifindex {:?}, not {}",
            h.name, h.link, c.index
        )));
    }
    match (h.link_netnsid, nsid) {
        (Some(a), Some(b)) if a == b => Ok(PeerLink {
            iface: c.name.clone(),
            peer: h.name.clone(),
            peer_index: h.index,
        }),
        (a, b) => Err(no(format!(
            "veth {} here peers into namespace id {a:?}, the container's is {b:?}",
            h.name
        ))),
    }
}

fn check_limit(limit: &EgressLimit) -> Result<(), NetError> {
    if limit.rate_bytes_per_sec == 0 {
        return Err(NetError::OutOfRange {
            what: "rate (B/s)",
            value: 0,
            range: "1..=u64::MAX",
        });
    }
    if limit.burst_bytes < 1600 {
        return Err(NetError::OutOfRange {
            what: "burst (bytes)",
            value: limit.burst_bytes.into(),
            range: "1600..=u32::MAX (at least one full-size packet)",
        });
    }
    Ok(())
}

/// Runs `f` on a thread that has joined `netns`.
fn in_netns<T: Send>(
    netns: &Netns,
    f: impl FnOnce() -> Result<T, NetError> + Send,
) -> Result<T, NetError> {
    let path = netns.path();
    let file = File::open(&path).map_err(|source| NetError::OpenNetns {
        path: path.clone(),
        source,
    })?;
    std::thread::scope(|scope| {
        let handle = scope.spawn(move || {
            // SAFETY: file is an open namespace descriptor; setns only affects this (helper) thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(NetError::Setns {
                    path,
                    source: std::io::Error::last_os_error(),
                });
            }
            f()
        });
        handle.join().map_err(|_| NetError::Thread)?
    })
}

/// Non-loopback interface names of the current thread's namespace, or just `only`.
fn interfaces(only: Option<&str>) -> Result<Vec<String>, NetError> {
    if let Some(name) = only {
        return Ok(vec![name.to_owned()]);
    }
    // thread-self: /proc/self/net would show the namespace of the main thread.
    let text = std::fs::read_to_string("/proc/thread-self/net/dev").map_err(NetError::Socket)?;
    Ok(text
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_owned()))
        .filter(|n| n != "lo" && !n.is_empty())
        .collect())
}

fn ifindex(name: &str) -> Result<i32, NetError> {
    let missing = || NetError::NoInterface {
        name: name.to_owned(),
    };
    let c_name = std::ffi::CString::new(name).map_err(|_| missing())?;
    // SAFETY: c_name is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    i32::try_from(index)
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(missing)
}

const TC_H_ROOT: u32 = 0xFFFF_FFFF;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
const TC_LINKLAYER_ETHERNET: u8 = 1;
const NLMSG_HDR: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_LINK_NETNSID: u16 = 37;
const NETNSA_NSID: u16 = 1;
const NETNSA_FD: u16 = 3;
const TCMSG_LEN: usize = 20;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn put_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align4(buf.len()), 0);
}

fn tcmsg(ifindex: i32, parent: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(TCMSG_LEN);
    m.extend_from_slice(&[0u8; 4]); // family (AF_UNSPEC), padding
    m.extend_from_slice(&ifindex.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // handle: let the kernel pick
    m.extend_from_slice(&parent.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // info
    m
}

/// The TBF options: `struct tc_tbf_qopt` plus 64-bit rate and burst.
fn tbf_options(limit: &EgressLimit) -> Vec<u8> {
    let rate = limit.rate_bytes_per_sec;
    let rate32 = u32::try_from(rate).unwrap_or(u32::MAX);
    let burst = u64::from(limit.burst_bytes);
    // Bucket size as transmission time in psched ticks (64 ns); the kernel recomputes it from TCA_TBF_BURST.
    let buffer_ns = burst.saturating_mul(1_000_000_000) / rate.max(1);
    let buffer_ticks = u32::try_from(buffer_ns >> 6).unwrap_or(u32::MAX);
    let queue = rate.saturating_mul(u64::try_from(limit.latency.as_micros()).unwrap_or(u64::MAX))
        / 1_000_000;
    let queue_limit = u32::try_from(queue.saturating_add(burst)).unwrap_or(u32::MAX);

    let mut qopt = Vec::with_capacity(36);
    // rate: struct tc_ratespec { cell_log, linklayer, overhead, cell_align, mpu, rate }
    qopt.push(0);
    qopt.push(TC_LINKLAYER_ETHERNET);
    qopt.extend_from_slice(&0u16.to_ne_bytes());
    qopt.extend_from_slice(&0i16.to_ne_bytes());
    qopt.extend_from_slice(&0u16.to_ne_bytes());
    qopt.extend_from_slice(&rate32.to_ne_bytes());
    qopt.extend_from_slice(&[0u8; 12]); // peakrate: none
    qopt.extend_from_slice(&queue_limit.to_ne_bytes());
    qopt.extend_from_slice(&buffer_ticks.to_ne_bytes());
    qopt.extend_from_slice(&0u32.to_ne_bytes()); // mtu: only used with a peak rate

    let mut opts = Vec::with_capacity(64);
    put_attr(&mut opts, TCA_TBF_PARMS, &qopt);
    if rate > u64::from(u32::MAX) {
        put_attr(&mut opts, TCA_TBF_RATE64, &rate.to_ne_bytes());
    }
    put_attr(&mut opts, TCA_TBF_BURST, &limit.burst_bytes.to_ne_bytes());
    opts
}

/// Walks the rtattrs in `buf`.
fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        if off + 4 > buf.len() {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[off], buf[off + 1]]));
        let ty = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]) & 0x3FFF;
        if len < 4 || off + len > buf.len() {
            return None;
        }
        let data = &buf[off + 4..off + len];
        off += align4(len);
        Some((ty, data))
    })
}

/// Parses an RTM_NEWQDISC payload into (ifindex, parent, qdisc).
fn parse_qdisc(payload: &[u8]) -> Option<(i32, u32, RootQdisc)> {
    if payload.len() < TCMSG_LEN {
        return None;
    }
    let ifindex = i32::from_ne_bytes(payload[4..8].try_into().ok()?);
    let parent = u32::from_ne_bytes(payload[12..16].try_into().ok()?);
    let mut kind = String::new();
    let mut rate = None;
    let mut rate64 = None;
    for (ty, data) in attrs(&payload[TCMSG_LEN..]) {
        match ty {
            TCA_KIND => {
                kind = String::from_utf8_lossy(data)
                    .trim_end_matches('\0')
                    .to_owned()
            }
            TCA_OPTIONS => {
                for (ty, data) in attrs(data) {
                    match ty {
                        TCA_TBF_PARMS if data.len() >= 12 => {
                            rate =
                                Some(u64::from(u32::from_ne_bytes(data[8..12].try_into().ok()?)));
                        }
                        TCA_TBF_RATE64 if data.len() >= 8 => {
                            rate64 = Some(u64::from_ne_bytes(data[..8].try_into().ok()?));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let rate_bytes_per_sec = if kind == "tbf" { rate64.or(rate) } else { None };
    Some((
        ifindex,
        parent,
        RootQdisc {
            kind,
            rate_bytes_per_sec,
        },
    ))
}

/// One link of a `RTM_GETLINK` dump.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    index: i32,
    name: String,
    /// `IFLA_LINK`: the peer's (veth) or lower device's ifindex, in the namespace `link_netnsid` names.
    link: Option<i32>,
    /// `IFLA_INFO_KIND`: `veth`, `bridge`, ...
    kind: Option<String>,
    /// `IFLA_LINK_NETNSID`: where `link` lives, when not in this namespace.
    link_netnsid: Option<i32>,
}

impl Link {
    /// Whether it has a peer or lower device: an `IFLA_LINK` naming another device (the same index is another
    /// device when it lives in another namespace: a container's eth0 and its host-side veth are often both 2).
    /// lo, dummy and tun devices have none.
    fn linked(&self) -> bool {
        self.link
            .is_some_and(|k| k != self.index || self.link_netnsid.is_some())
    }
}

fn i32_attr(data: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(data.get(..4)?.try_into().ok()?))
}

fn str_attr(data: &[u8]) -> String {
    String::from_utf8_lossy(data)
        .trim_end_matches('\0')
        .to_owned()
}

/// Parses an RTM_NEWLINK payload.
fn parse_link(payload: &[u8]) -> Option<Link> {
    let index = i32_attr(payload.get(4..8)?)?;
    let mut l = Link {
        index,
        name: String::new(),
        link: None,
        kind: None,
        link_netnsid: None,
    };
    for (ty, data) in attrs(payload.get(IFINFOMSG_LEN..)?) {
        match ty {
            IFLA_IFNAME => l.name = str_attr(data),
            IFLA_LINK => l.link = i32_attr(data),
            IFLA_LINK_NETNSID => l.link_netnsid = i32_attr(data),
            IFLA_LINKINFO => {
                l.kind = attrs(data)
                    .find(|(t, _)| *t == IFLA_INFO_KIND)
                    .map(|(_, d)| str_attr(d));
            }
            _ => {}
        }
    }
    Some(l)
}

struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    fn open() -> Result<Self, NetError> {
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(NetError::Socket(std::io::Error::last_os_error()));
        }
        // SAFETY: raw is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value (pid 0 = the kernel).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = u16::try_from(libc::AF_NETLINK).unwrap_or(16);
        let len = u32::try_from(std::mem::size_of::<libc::sockaddr_nl>()).unwrap_or(12);
        // SAFETY: kernel is a valid sockaddr_nl of `len` bytes.
        let rc = unsafe { libc::connect(fd.as_raw_fd(), (&raw const kernel).cast(), len) };
        if rc != 0 {
            return Err(NetError::Socket(std::io::Error::last_os_error()));
        }
        Ok(Self { fd, seq: 1 })
    }

    /// Sends one request and collects reply payloads until the ack or the end of the dump.
    fn request(
        &mut self,
        msg_type: u16,
        flags: u16,
        payload: &[u8],
    ) -> std::io::Result<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = NLMSG_HDR + payload.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
        msg.extend_from_slice(&msg_type.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        // SAFETY: msg is a valid buffer of msg.len() bytes.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let dump = flags & (libc::NLM_F_DUMP as u16) == libc::NLM_F_DUMP as u16;
        let mut replies = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: buf is writable for its whole length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            let data = &buf[..usize::try_from(n).unwrap_or(0)];
            let mut off = 0;
            while off + NLMSG_HDR <= data.len() {
                let word = |at: usize| {
                    u32::from_ne_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
                };
                let mlen = usize::try_from(word(off)).unwrap_or(0);
                let mtype = u16::from_ne_bytes([data[off + 4], data[off + 5]]);
                let mseq = word(off + 8);
                if mlen < NLMSG_HDR || off + mlen > data.len() {
                    return Err(std::io::Error::from(std::io::ErrorKind::InvalidData));
                }
                let body = &data[off + NLMSG_HDR..off + mlen];
                off += align4(mlen);
                if mseq != seq {
                    continue;
                }
                match i32::from(mtype) {
                    libc::NLMSG_ERROR => {
                        let code = body
                            .get(..4)
                            .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        if code != 0 {
                            return Err(std::io::Error::from_raw_os_error(-code));
                        }
                        return Ok(replies);
                    }
                    libc::NLMSG_DONE => return Ok(replies),
                    _ => {
                        replies.push(body.to_vec());
                        if !dump {
                            return Ok(replies);
                        }
                    }
                }
            }
        }
    }

    fn set_tbf(&mut self, ifindex: i32, limit: &EgressLimit) -> std::io::Result<()> {
        let mut payload = tcmsg(ifindex, TC_H_ROOT);
        put_attr(&mut payload, TCA_KIND, b"tbf\0");
        put_attr(&mut payload, TCA_OPTIONS, &tbf_options(limit));
        let flags =
            libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_REPLACE;
        self.request(libc::RTM_NEWQDISC, flags as u16, &payload)
            .map(drop)
    }

    fn delete_root(&mut self, ifindex: i32) -> std::io::Result<()> {
        let flags = libc::NLM_F_REQUEST | libc::NLM_F_ACK;
        self.request(libc::RTM_DELQDISC, flags as u16, &tcmsg(ifindex, TC_H_ROOT))
            .map(drop)
    }

    /// The link with `index`; `None` when there is none (ENODEV).
    fn link(&mut self, index: i32) -> std::io::Result<Option<Link>> {
        let mut ifinfo = [0u8; IFINFOMSG_LEN];
        ifinfo[4..8].copy_from_slice(&index.to_ne_bytes());
        match self.request(libc::RTM_GETLINK, libc::NLM_F_REQUEST as u16, &ifinfo) {
            Ok(replies) => Ok(replies.first().and_then(|r| parse_link(r))),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn links(&mut self) -> std::io::Result<Vec<Link>> {
        let flags = libc::NLM_F_REQUEST | libc::NLM_F_DUMP;
        let replies = self.request(libc::RTM_GETLINK, flags as u16, &[0u8; IFINFOMSG_LEN])?;
        Ok(replies.iter().filter_map(|r| parse_link(r)).collect())
    }

    /// The id this namespace gives the namespace open at `fd` (`None`: none assigned).
    fn nsid(&mut self, fd: i32) -> std::io::Result<Option<i32>> {
        let mut payload = vec![0u8; 4]; // struct rtgenmsg (AF_UNSPEC), padded
        put_attr(&mut payload, NETNSA_FD, &fd.to_ne_bytes());
        let flags = libc::NLM_F_REQUEST;
        let replies = self.request(libc::RTM_GETNSID, flags as u16, &payload)?;
        Ok(replies
            .first()
            .and_then(|r| r.get(4..))
            .and_then(|a| attrs(a).find(|(t, _)| *t == NETNSA_NSID))
            .and_then(|(_, d)| i32_attr(d))
            .filter(|id| *id >= 0))
    }

    fn root_qdisc(&mut self, ifindex: i32) -> std::io::Result<Option<RootQdisc>> {
        let flags = libc::NLM_F_REQUEST | libc::NLM_F_DUMP;
        let replies = self.request(libc::RTM_GETQDISC, flags as u16, &tcmsg(0, 0))?;
        Ok(replies
            .iter()
            .filter_map(|r| parse_qdisc(r))
            .find(|(idx, parent, _)| *idx == ifindex && *parent == TC_H_ROOT)
            .map(|(_, _, q)| q))
    }
}

/// Where a process's network namespace file is under a given procfs root (for callers with a fake /proc).
pub fn netns_path(proc_root: &Path, pid: i32) -> PathBuf {
    proc_root.join(pid.to_string()).join("ns/net")
}

/// Whether process `pid` is in the calling process's network namespace (`/proc/self/ns/net`). A shim runs in
/// the host's (containerd starts it there), so for a shim this says whether the container shares the host's
/// network, whose interfaces must not be shaped. PID 1's namespace is no reference: reading it needs ptrace
/// access a shim does not have.
pub fn in_host_netns(proc_root: &Path, pid: i32) -> Result<bool, NetError> {
    use std::os::unix::fs::MetadataExt;
    let id = |path: PathBuf| {
        std::fs::metadata(&path)
            .map(|m| (m.dev(), m.ino()))
            .map_err(|source| NetError::OpenNetns { path, source })
    };
    Ok(id(netns_path(proc_root, pid))? == id(proc_root.join("self/ns/net"))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_message_layout() {
        let limit = EgressLimit {
            rate_bytes_per_sec: 125_000,
            burst_bytes: 16_384,
            latency: Duration::from_millis(50),
        };
        let opts = tbf_options(&limit);
        let parsed: Vec<(u16, Vec<u8>)> = attrs(&opts).map(|(t, d)| (t, d.to_vec())).collect();
        assert_eq!(parsed.len(), 2, "parms and burst, no rate64 below 4 GB/s");
        let (ty, qopt) = &parsed[0];
        assert_eq!((*ty, qopt.len()), (TCA_TBF_PARMS, 36));
        assert_eq!(qopt[1], TC_LINKLAYER_ETHERNET);
        assert_eq!(
            u32::from_ne_bytes(qopt[8..12].try_into().expect("4 bytes")),
            125_000
        );
        let queue = u32::from_ne_bytes(qopt[24..28].try_into().expect("4 bytes"));
        assert_eq!(queue, 6250 + 16_384);
        let buffer = u32::from_ne_bytes(qopt[28..32].try_into().expect("4 bytes"));
        assert_eq!(
            u64::from(buffer),
            (16_384u64 * 1_000_000_000 / 125_000) >> 6
        );
        assert_eq!(parsed[1], (TCA_TBF_BURST, 16_384u32.to_ne_bytes().to_vec()));

        let fast = EgressLimit::new(10_000_000_000);
        let parsed: Vec<u16> = attrs(&tbf_options(&fast)).map(|(t, _)| t).collect();
        assert_eq!(parsed, vec![TCA_TBF_PARMS, TCA_TBF_RATE64, TCA_TBF_BURST]);
    }

    #[test]
    fn parses_qdisc_dump_entries() {
        let limit = EgressLimit::new(5_000_000_000);
        let mut payload = tcmsg(3, TC_H_ROOT);
        put_attr(&mut payload, TCA_KIND, b"tbf\0");
        put_attr(&mut payload, TCA_OPTIONS, &tbf_options(&limit));
        let (idx, parent, q) = parse_qdisc(&payload).expect("parsed");
        assert_eq!((idx, parent), (3, TC_H_ROOT));
        assert_eq!(
            q,
            RootQdisc {
                kind: "tbf".into(),
                rate_bytes_per_sec: Some(5_000_000_000)
            }
        );

        let mut other = tcmsg(2, TC_H_ROOT);
        put_attr(&mut other, TCA_KIND, b"fq_codel\0");
        assert_eq!(
            parse_qdisc(&other).map(|(_, _, q)| q.rate_bytes_per_sec),
            Some(None)
        );
        // Truncated or garbage input never panics.
        assert_eq!(parse_qdisc(&payload[..10]), None);
        let mut bad = tcmsg(1, 0);
        bad.extend_from_slice(&[200, 0, 1, 0, 1]);
        assert!(parse_qdisc(&bad).is_some());
    }

    #[test]
    fn defaults_and_ranges() {
        assert_eq!(EgressLimit::new(125_000).burst_bytes, MIN_BURST);
        assert_eq!(EgressLimit::new(20_000_000).burst_bytes, 200_000);
        assert_eq!(EgressLimit::new(1_000_000_000).burst_bytes, 10_000_000);
        let ns = Netns::Path(PathBuf::from("/nonexistent/netns"));
        assert!(matches!(
            set_egress_limit(
                &ns,
                None,
                &EgressLimit {
                    rate_bytes_per_sec: 0,
                    ..EgressLimit::new(1)
                }
            ),
            Err(NetError::OutOfRange { .. })
        ));
        assert!(matches!(
            set_egress_limit(&ns, None, &EgressLimit::new(1000)),
            Err(NetError::OpenNetns { .. })
        ));
        assert_eq!(
            netns_path(Path::new("/proc"), 7),
            PathBuf::from("/proc/7/ns/net")
        );
    }

    fn link(index: i32, name: &str, link: Option<i32>, kind: &str, nsid: Option<i32>) -> Link {
        Link {
            index,
            name: name.to_owned(),
            link,
            kind: (!kind.is_empty()).then(|| kind.to_owned()),
            link_netnsid: nsid,
        }
    }

    #[test]
    fn parses_link_dump_entries() {
        let mut payload = vec![0u8; IFINFOMSG_LEN];
        payload[4..8].copy_from_slice(&7i32.to_ne_bytes());
        put_attr(&mut payload, IFLA_IFNAME, b"veth1a2b\0");
        put_attr(&mut payload, IFLA_LINK, &3i32.to_ne_bytes());
        let mut info = Vec::new();
        put_attr(&mut info, IFLA_INFO_KIND, b"veth");
        put_attr(&mut payload, IFLA_LINKINFO, &info);
        put_attr(&mut payload, IFLA_LINK_NETNSID, &2i32.to_ne_bytes());
        assert_eq!(
            parse_link(&payload),
            Some(link(7, "veth1a2b", Some(3), "veth", Some(2)))
        );
        assert_eq!(parse_link(&payload[..6]), None);
    }

    /// The peer is taken only when every side agrees; ifindexes repeat across namespaces, so an index match alone
    /// (the host's own eth0 for a macvlan, another container's veth) is refused.
    #[test]
    fn the_host_side_peer_must_point_back_from_the_containers_namespace() {
        let eth0 = link(2, "eth0", Some(9), "veth", Some(0));
        let host = [
            link(1, "lo", None, "", None),
            link(2, "ens3", Some(2), "", None),
            link(5, "cni0", Some(5), "bridge", None),
            link(9, "vethab12", Some(2), "veth", Some(4)),
            link(10, "vethcd34", Some(2), "veth", Some(6)),
        ];
        assert_eq!(
            match_peer(&eth0, &host, Some(4)).expect("peer"),
            PeerLink {
                iface: "eth0".into(),
                peer: "vethab12".into(),
                peer_index: 9,
            }
        );
        let why = |c: &Link, nsid| match match_peer(c, &host, nsid) {
            Err(NetError::NoPeer { why, .. }) => why,
            other => panic!("{other:?}"),
        };
        // Same index, another container's namespace.
        assert!(why(&eth0, Some(6)).contains("namespace id"));
        assert!(why(&eth0, None).contains("namespace id"));
        // A macvlan's IFLA_LINK is the host NIC.
        let mv = link(3, "eth1", Some(2), "macvlan", Some(0));
        assert!(why(&mv, Some(4)).contains("not a veth"));
        // The index points at a veth that peers with someone else.
        let other = link(3, "eth0", Some(10), "veth", Some(0));
        assert!(why(&other, Some(6)).contains("peers with"));
        assert!(why(&link(2, "eth0", Some(42), "veth", Some(0)), Some(4)).contains("ifindex 42"));
        assert!(why(&link(4, "dummy0", Some(4), "dummy", None), Some(4)).contains("no link"));
    }

    #[test]
    fn a_process_in_our_namespace_is_on_the_host_network() {
        let me = i32::try_from(std::process::id()).expect("a pid fits i32");
        assert!(in_host_netns(Path::new("/proc"), me).expect("readable"));
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            in_host_netns(dir.path(), me),
            Err(NetError::OpenNetns { .. })
        ));
    }
}
