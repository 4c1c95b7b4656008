//! End-to-end test of the network egress limits (issue 17's network half): two real containers, each in its own
//! network namespace on a CNI bridge (Debian's containernetworking-plugins: `bridge` + `host-local`), send TCP to
//! one receiver on the host side of the bridge. The broker's `[network]` link budget gives each its share (the
//! `io.predictive.egress-bytes-per-sec` annotation), which the shim sets as a TBF qdisc in the container's
//! namespace; the rate each sends (the host-side veth's received bytes) stays within 15% of it. When one sender
//! goes idle, the other's limit rises by what the idle one lends; when the idle one sends again, both limits fall
//! back. A third container on the host's network gets no limit, and with no ingress budget no qdisc appears on
//! the host side of any veth.
//!
//! Ingress (a second test): a container on the bridge receives TCP from a sender on the host; the broker's
//! `ingress_budget_bytes_per_sec` gives it its `io.predictive.ingress-bytes-per-sec`, which the shim sets as a TBF
//! qdisc on the host side of its veth; what it receives stays within 15% of it, and nothing is written in its own
//! namespace (no egress budget). Root only; `SKIPPED:` otherwise (a failure under CI=true).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use broker::client::Client;
use predictive_e2e::Containerd;
use predictive_e2e::cmd::wait_until;
use predictive_e2e::cni::{Attachment, CniBridge};
use predictive_e2e::settings::Settings;
use runtime_hooks::net::{Netns, root_qdisc};

const TEST: &str = "egress_limits_hold_and_an_idle_senders_share_is_lent_and_reclaimed";
/// Each sender's share, bytes/s.
const N: u64 = 1_000_000;
const TICK_MS: u64 = 500;

/// `n` seconds on this host, `n` x [`Settings::slow`] in the emulated guest.
fn secs(n: u64) -> Duration {
    Duration::from_secs(n * u64::from(Settings::from_env().slow()))
}

/// A TCP receiver on `ip` that reads and drops whatever any number of senders send.
fn receiver(ip: Ipv4Addr) -> u16 {
    let l = TcpListener::bind((ip, 0)).expect("binding the receiver on the bridge's address");
    let port = l.local_addr().expect("bound").port();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = vec![0u8; 64 * 1024];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    port
}

/// The TBF rate in force on the container's eth0, read back from the kernel.
fn tbf_rate(a: &Attachment) -> Option<u64> {
    root_qdisc(&Netns::Path(a.netns_path()), "eth0")
        .ok()
        .flatten()
        .filter(|q| q.kind == "tbf")
        .and_then(|q| q.rate_bytes_per_sec)
}

/// The TBF rate in force on the host side of the container's veth (its ingress), read back from the kernel.
fn host_tbf_rate(a: &Attachment) -> Option<u64> {
    root_qdisc(&Netns::Path("/proc/self/ns/net".into()), &a.host_veth)
        .ok()
        .flatten()
        .filter(|q| q.kind == "tbf")
        .and_then(|q| q.rate_bytes_per_sec)
}

/// Sends to `to` as fast as TCP lets it until `stop`, connecting again until the listener is up.
fn send_until(to: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let chunk = vec![7u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut conn) = TcpStream::connect_timeout(&to, Duration::from_secs(1)) else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            let _ = conn.set_write_timeout(Some(Duration::from_millis(200)));
            while !stop.load(Ordering::Relaxed) {
                match conn.write(&chunk) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
        }
    })
}

/// Bytes/s each attachment sent over `window` (the host side of its veth), after `settle` not counted: TCP takes a
/// moment to fill a limit that just changed.
fn rates(atts: &[&Attachment], settle: Duration, window: Duration) -> Vec<f64> {
    std::thread::sleep(settle);
    let read = || -> Vec<u64> {
        atts.iter()
            .map(|a| a.sent_bytes().expect("veth counters"))
            .collect()
    };
    counted(read, window)
}

/// Per counter, how fast `read` grew over `window`, per second.
fn counted(read: impl Fn() -> Vec<u64>, window: Duration) -> Vec<f64> {
    let (b0, t0) = (read(), Instant::now());
    std::thread::sleep(window);
    let (b1, dt) = (read(), t0.elapsed().as_secs_f64());
    b0.iter()
        .zip(b1)
        .map(|(a, b)| (b - a) as f64 / dt)
        .collect()
}

fn within(measured: f64, want: u64, what: &str) {
    let ratio = measured / want as f64;
    println!("RESULT {what}: limit {want} B/s, measured {measured:.0} B/s, ratio {ratio:.3}");
    assert!(
        (0.85..=1.15).contains(&ratio),
        "{what}: measured {measured:.0} B/s against a limit of {want} B/s (ratio {ratio:.3})"
    );
}

/// The broker's egress view of every task: (id, limit) pairs, and that their sum is within the budget.
fn limits(c: &Containerd, budget: u64) -> Vec<(String, Option<u64>)> {
    let mut client = Client::new(c.broker_socket(), secs(5));
    let status = client.status().expect("broker status");
    let out: Vec<(String, Option<u64>)> = status
        .tasks
        .iter()
        .map(|t| {
            (
                t.container_id.clone(),
                t.net.as_ref().map(|n| n.limit_bytes_per_sec),
            )
        })
        .collect();
    let sum: u64 = out.iter().filter_map(|(_, l)| *l).sum();
    assert!(
        sum <= budget,
        "egress limits sum to {sum} > budget {budget}: {out:?}"
    );
    out
}

/// A CNI bridge with one network namespace attached per name, or `None` when the test cannot have one (skipped,
/// said why).
fn bridge<const K: usize>(test: &str, names: [&str; K]) -> Option<(CniBridge, [Attachment; K])> {
    let mut net = CniBridge::create()
        .map_err(|why| testkit::skip(test, &why))
        .ok()?;
    let mut atts = Vec::with_capacity(K);
    for name in names {
        match net.attach(name) {
            Ok(a) => atts.push(a),
            Err(e) => {
                testkit::skip(test, &format!("no CNI bridge: {e}"));
                return None;
            }
        }
    }
    let atts = atts.try_into().ok()?;
    Some((net, atts))
}

#[test]
fn egress_limits_hold_and_an_idle_senders_share_is_lent_and_reclaimed() {
    let budget = 2 * N;
    let toml = format!("tick_ms = {TICK_MS}\n\n[network]\nlink_budget_bytes_per_sec = {budget}\n");
    let Some(c) = Containerd::start_with_own_broker(TEST, &toml) else {
        return;
    };
    let Some((net, [att_a, att_b])) = bridge(TEST, ["a", "b"]) else {
        c.finish();
        return;
    };
    let port = receiver(net.gateway());
    // Removed with the bridge, also when the test fails.
    let ctl = net.dir().join("ctl");
    std::fs::create_dir_all(&ctl).expect("the control directory");
    let go = |name: &str, on: bool| {
        let f = ctl.join(format!("go-{name}"));
        if on {
            std::fs::write(&f, "").expect("go file");
        } else {
            std::fs::remove_file(&f).expect("go file");
        }
    };
    go("a", true);
    go("b", true);
    // One TCP connection per sender, fed while /ctl/go-NAME exists (idle, the connection stays open).
    let sender = |name: &str| {
        format!(
            "while :; do if [ -e /ctl/go-{name} ]; then head -c 262144 /dev/zero; else sleep 0.1; fi; done | nc {} {port}",
            net.gateway()
        )
    };
    let (a, b, h) = (c.id("net-a"), c.id("net-b"), c.id("net-host"));
    for (id, att, name) in [(&a, &att_a, "a"), (&b, &att_b, "b")] {
        let flags = [
            "--with-ns".to_owned(),
            format!("network:{}", att.netns_path().display()),
            "--annotation".to_owned(),
            "io.predictive.task-type=e2e-net".to_owned(),
            "--annotation".to_owned(),
            format!("io.predictive.egress-bytes-per-sec={N}"),
            "--mount".to_owned(),
            format!("type=bind,src={},dst=/ctl,options=rbind:ro", ctl.display()),
        ];
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        c.run_detached(id, &flags, &["sh", "-c", &sender(name)]);
    }
    // A container on the host's network: no share of the budget, nothing written on the host's interfaces.
    c.run_detached(
        &h,
        &[
            "--net-host",
            "--annotation",
            &format!("io.predictive.egress-bytes-per-sec={N}"),
        ],
        &["sleep", "600"],
    );

    // 1. Each sender's share is in force in its namespace, and each sends at it.
    wait_until(secs(30), || {
        (tbf_rate(&att_a) == Some(N) && tbf_rate(&att_b) == Some(N)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "TBF {N} B/s on both senders' eth0: a {:?}, b {:?}\n{}",
            tbf_rate(&att_a),
            tbf_rate(&att_b),
            c.log()
        )
    });
    let view = limits(&c, budget);
    assert!(
        view.iter()
            .any(|(id, l)| *id == c.broker_id(&h) && l.is_none()),
        "the host-network container has no egress limit: {view:?}"
    );
    // No ingress budget: nothing on the host side of the veths.
    assert_eq!(
        (host_tbf_rate(&att_a), host_tbf_rate(&att_b)),
        (None, None),
        "no ingress budget, yet a TBF on a host-side veth"
    );
    let r = rates(&[&att_a, &att_b], secs(1), secs(4));
    within(r[0], N, "sender a, both sending");
    within(r[1], N, "sender b, both sending");

    // 2. b goes idle: a's limit rises by what b lends.
    go("b", false);
    let t0 = Instant::now();
    let lent = wait_until(secs(30), || tbf_rate(&att_a).filter(|r| *r > N * 3 / 2))
        .unwrap_or_else(|| panic!("a's limit never rose above {N}: {:?}", tbf_rate(&att_a)));
    println!(
        "RESULT lend: b idle -> a's limit {lent} B/s after {:.1} s ({:.1} ticks; the lender waits 3 idle ticks)",
        t0.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64() * 1000.0 / TICK_MS as f64
    );
    limits(&c, budget);
    let r = rates(&[&att_a], secs(1), secs(4));
    within(r[0], lent, "sender a, borrowing");

    // 3. b sends again: it takes its share back and a's limit falls back.
    go("b", true);
    let t0 = Instant::now();
    wait_until(secs(30), || {
        (tbf_rate(&att_a) == Some(N) && tbf_rate(&att_b) == Some(N)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "limits back to {N}: a {:?}, b {:?}",
            tbf_rate(&att_a),
            tbf_rate(&att_b)
        )
    });
    let back = t0.elapsed().as_secs_f64();
    println!(
        "RESULT reclaim: b sends again -> both limits back to {N} B/s after {back:.2} s ({:.1} ticks of {TICK_MS} ms)",
        back * 1000.0 / TICK_MS as f64
    );
    limits(&c, budget);
    // b's connection idled at the small limit it kept while lending (its congestion window with it): two seconds
    // to fill its share again (one was measured at 0.86 of it after one, on containerd 1.6 under load).
    let r = rates(&[&att_a, &att_b], secs(2), secs(4));
    // b sends at least its share again (more when a idles in turn and lends to it, below).
    let b_limit = tbf_rate(&att_b).unwrap_or(N).max(N);
    println!(
        "RESULT sender b, after the reclaim: share {N} B/s, limit now {b_limit} B/s, measured {:.0} B/s, ratio to the share {:.3}",
        r[1],
        r[1] / N as f64
    );
    assert!(
        r[1] >= 0.85 * N as f64 && r[1] <= 1.15 * b_limit as f64,
        "sender b after the reclaim: measured {:.0} B/s, share {N} B/s, limit {b_limit} B/s",
        r[1]
    );
    // The borrower whose limit fell back sends at it again: before the bucket had a floor (runtime_hooks::net::
    // MIN_BURST), a GSO packet queued under the larger limit's bucket could never leave the smaller one, and this
    // connection sent nothing until it died.
    within(r[0], N, "sender a, after the reclaim");

    for id in [&a, &b, &h] {
        c.remove(id);
    }
    c.finish();
    drop(net);
}

const INGRESS_TEST: &str = "an_ingress_limit_holds_on_the_host_side_veth";

#[test]
fn an_ingress_limit_holds_on_the_host_side_veth() {
    let budget = 2 * N;
    let toml =
        format!("tick_ms = {TICK_MS}\n\n[network]\ningress_budget_bytes_per_sec = {budget}\n");
    let Some(c) = Containerd::start_with_own_broker(INGRESS_TEST, &toml) else {
        return;
    };
    let Some((net, [att])) = bridge(INGRESS_TEST, ["r"]) else {
        c.finish();
        return;
    };
    const PORT: u16 = 5001;
    let (r, h) = (c.id("net-recv"), c.id("net-host-recv"));
    let netns = format!("network:{}", att.netns_path().display());
    let ask = format!("io.predictive.ingress-bytes-per-sec={N}");
    c.run_detached(
        &r,
        &[
            "--with-ns",
            &netns,
            "--annotation",
            "io.predictive.task-type=e2e-net-ingress",
            "--annotation",
            &ask,
        ],
        &[
            "sh",
            "-c",
            &format!("while :; do nc -l -p {PORT} > /dev/null; done"),
        ],
    );
    // On the host's network: no share, nothing written on the host's interfaces.
    c.run_detached(&h, &["--net-host", "--annotation", &ask], &["sleep", "600"]);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = send_until(SocketAddr::from((att.ip, PORT)), stop.clone());

    // The limit is on the host side of the veth, and the receiver takes in what it allows (a receiver idle before
    // the sender connected lends its share for a moment: wait for the broker to see it receive).
    let ingress = |c: &Containerd| {
        let mut client = Client::new(c.broker_socket(), secs(5));
        let status = client.status().expect("broker status");
        status
            .tasks
            .into_iter()
            .map(|t| (t.container_id, t.net_ingress, t.net))
            .collect::<Vec<_>>()
    };
    wait_until(secs(30), || {
        let receiving = ingress(&c).into_iter().any(|(id, v, _)| {
            id == c.broker_id(&r) && v.is_some_and(|v| v.rx_bytes_per_sec.unwrap_or(0.0) > 0.5 * N as f64)
        });
        (host_tbf_rate(&att) == Some(N) && receiving).then_some(())
    })
    .unwrap_or_else(|| {
        // Whether traffic reached the receiver at all (the broker's view may be what is stale).
        let flowing = counted(|| vec![att.received_bytes().unwrap_or(0)], secs(1));
        panic!(
            "TBF {N} B/s on {} and the receiver receiving: {:?}, broker {:?}, the veth delivering {:.0} B/s\n{}",
            att.host_veth,
            host_tbf_rate(&att),
            ingress(&c),
            flowing[0],
            c.log()
        )
    });
    let view = ingress(&c);
    for (id, v, egress) in &view {
        assert!(egress.is_none(), "no egress budget, yet a limit for {id}");
        if *id == c.broker_id(&h) {
            assert!(
                v.is_none(),
                "the host-network container has no ingress limit: {view:?}"
            );
        }
    }
    assert_eq!(
        tbf_rate(&att),
        None,
        "no egress budget, yet a TBF on the receiver's eth0"
    );
    // TCP takes a moment to fill a limit that just changed: one second not counted.
    std::thread::sleep(secs(1));
    let rate = counted(
        || vec![att.received_bytes().expect("veth counters")],
        secs(4),
    );
    within(rate[0], N, "receiver, ingress");

    stop.store(true, Ordering::Relaxed);
    for id in [&r, &h] {
        c.remove(id);
    }
    sender.join().expect("the sender thread");
    c.finish();
    drop(net);
}
