//! What one egress write costs: `net::set_egress_limit` (a thread that joins the namespace, RTM_NEWQDISC, a dump
//! read back and compared) on one veth in a network namespace made for the run, timed over many iterations with
//! alternating rates; then one ingress write, `net::set_ingress_limit` (a link dump in the container's namespace,
//! a link dump and RTM_GETNSID in ours, then the same write on the host-side veth). Prints wall and CPU time (user +
//! system of the whole process) per write. Root only; removes the namespace (and so the veth pair) at the end.
//!
//! `cargo run --release -p runtime-hooks --example tc_cost [ITERATIONS]`

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use runtime_hooks::net::{
    EgressLimit, Netns, clear_ingress_limit, set_egress_limit, set_ingress_limit,
};

fn ip(args: &[&str]) {
    let ok = Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip {}", args.join(" "));
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid rusage to write.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let name = format!("tccost{}", std::process::id());
    ip(&["netns", "add", &name]);
    ip(&[
        "link",
        "add",
        &format!("{name}h"),
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &name,
    ]);
    ip(&["-n", &name, "link", "set", "eth0", "up"]);
    let ns = Netns::Path(PathBuf::from("/var/run/netns").join(&name));
    let rates = [1_000_000u64, 1_934_464];
    set_egress_limit(&ns, Some("eth0"), &EgressLimit::new(rates[0])).expect("warm-up write");
    let (t0, c0) = (Instant::now(), cpu_seconds());
    for i in 0..n {
        let rate = rates[(i % 2) as usize];
        set_egress_limit(&ns, Some("eth0"), &EgressLimit::new(rate)).expect("write");
    }
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
    let all = set_egress_limit(&ns, None, &EgressLimit::new(rates[0])).expect("every interface");
    println!(
        "set_egress_limit (set + read back, one interface): {n} writes, wall {:.1} us/write, CPU {:.1} us/write; interfaces found: {all:?}",
        wall * 1e6 / f64::from(n),
        cpu * 1e6 / f64::from(n)
    );
    let host = Netns::Path(PathBuf::from("/proc/self/ns/net"));
    let peers = set_ingress_limit(&ns, &host, None, &EgressLimit::new(rates[0])).expect("warm-up");
    let (t0, c0) = (Instant::now(), cpu_seconds());
    for i in 0..n {
        let rate = rates[(i % 2) as usize];
        set_ingress_limit(&ns, &host, None, &EgressLimit::new(rate)).expect("write");
    }
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
    clear_ingress_limit(&ns, &host, None).expect("clear");
    ip(&["netns", "del", &name]);
    println!(
        "set_ingress_limit (peer found and verified, set + read back on the host side): {n} writes, wall {:.1} us/write, CPU {:.1} us/write; pairs: {peers:?}",
        wall * 1e6 / f64::from(n),
        cpu * 1e6 / f64::from(n)
    );
}
