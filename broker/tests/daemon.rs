//! `predictived` end to end on a temp socket and state dir: register, report, directives, leases, the decision
//! log, restart durability, bad messages, the lock. Runs as root and as non-root (the broker lets its own uid
//! in). Every wait is a poll with a generous bound, never a fixed sleep that a slow machine could miss.

mod common;
use common::{Daemon, now_ns, short_tempdir};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use broker::annotations;
use broker::api::{Explain, Finish, ParentLimit, Register, Report, Reports, Update};
use broker::client::{Client, ClientError};
use broker::controller::{Action, Mode, SpecLimits};
use runtime_hooks::{CpuSample, MemorySample, Sample};

const WAIT: Duration = Duration::from_secs(20);

type Broker = Daemon;

/// A broker with a 50 ms tick, a model from 3 runs and unlimited CPU quotas.
fn start_broker(dir: &Path) -> Broker {
    Daemon::start(
        dir,
        "tick_ms = 50\nretrain_check_ms = 100\nsample_flush_ms = 100\nhost_cpu_cores = 3.55\n\
         host_memory_bytes = 8589934592\ncgroup = \"v2\"\n[controller]\nquota_unlimited_cpu = true\n\
         [retrain]\nnew_runs = 1\nmin_runs = 3\n",
    )
}

fn client(b: &Broker) -> Client {
    Client::new(b.socket(), Duration::from_secs(5))
}

/// Two raw samples 100 ms apart showing `cores` of CPU, `throttled` of the periods throttled, `mem` bytes.
fn samples(cores: f64, throttled: f64, mem: u64, base_ns: u64) -> Vec<Sample> {
    let t = now_ns();
    let s = |dt: u64, usage: u64, periods: u64, thr: u64| Sample {
        unix_ns: t + dt,
        monotonic_ns: base_ns + dt,
        cpu: CpuSample {
            usage_ns: Some(usage),
            nr_periods: Some(periods),
            nr_throttled: Some(thr),
            throttled_ns: Some(0),
        },
        memory: MemorySample {
            usage_bytes: Some(mem),
            ..MemorySample::default()
        },
        ..Sample::default()
    };
    let used = (cores * 100_000_000.0) as u64;
    vec![
        s(0, base_ns, 1000, 0),
        s(100_000_000, base_ns + used, 1010, (10.0 * throttled) as u64),
    ]
}

fn register(id: &str, task_type: &str, cpu_limit: Option<f64>) -> Register {
    Register {
        container_id: id.to_owned(),
        namespace: "test".to_owned(),
        annotations: BTreeMap::from([(annotations::TASK_TYPE.to_owned(), task_type.to_owned())]),
        image: "busybox".to_owned(),
        command: vec!["sleep".to_owned(), "1".to_owned()],
        limits: SpecLimits {
            cpu_limit_cores: cpu_limit,
            memory_limit_bytes: Some(1 << 30),
            ..SpecLimits::default()
        },
        cgroup_path: format!("/test/{id}"),
        pid: Some(1),
        cgroup: None,
        adopt: None,
        parents: Vec::new(),
        own_netns: None,
        net_ingress: None,
        pokes: None,
        created_ns: None,
    }
}

fn wait_for<T>(what: &str, b: &Broker, f: impl FnMut() -> Option<T>) -> T {
    b.wait_for(what, WAIT, f)
}

/// Registers `hog`: no CPU limit of its own (a user's limit caps borrowing), a small quota predicted from a
/// history of three light runs of its task type.
fn warm_borrower(b: &Broker, borrower: &mut Client) -> broker::api::Registered {
    for i in 0..3 {
        let id = format!("hog-{i}");
        borrower
            .register(&register(&id, "hog-type", None))
            .expect("register");
        borrower
            .report(&Report {
                container_id: id.clone(),
                samples: samples(0.02, 0.0, 10 << 20, 1_000_000_000),
                ..Report::default()
            })
            .expect("report");
        std::thread::sleep(Duration::from_millis(30));
        borrower
            .finish(&Finish {
                container_id: id,
                ..Finish::default()
            })
            .expect("finish");
    }
    wait_for("a warm prediction for the borrower", b, || {
        let r = borrower
            .register(&register("hog", "hog-type", None))
            .expect("register hog");
        if r.cold_start {
            borrower
                .finish(&Finish {
                    container_id: "hog".to_owned(),
                    ..Finish::default()
                })
                .expect("finish");
            std::thread::sleep(Duration::from_millis(50));
            return None;
        }
        Some(r)
    })
}

#[test]
fn predicts_after_history_lends_cpu_records_decisions_and_survives_kill_9() {
    let dir = short_tempdir();
    let mut b = start_broker(dir.path());
    let mut c = client(&b);
    let mode = std::fs::metadata(b.socket())
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode");

    // History: three short runs of task type "etl" using 0.2 cores.
    for i in 0..3 {
        let id = format!("etl-{i}");
        let r = c.register(&register(&id, "etl", None)).expect("register");
        assert!(
            r.cold_start && r.allocation.cpu_cores.is_none(),
            "first runs start with the spec: {r:?}"
        );
        assert_eq!(r.allocation.memory_bytes, Some(1 << 30));
        c.report(&Report {
            container_id: id.clone(),
            samples: samples(0.2, 0.0, 50 << 20, 1_000_000_000),
            oom_events: 0,
            ..Report::default()
        })
        .expect("report");
        std::thread::sleep(Duration::from_millis(30));
        let f = c
            .finish(&Finish {
                container_id: id,
                exit_code: 0,
                ..Finish::default()
            })
            .expect("finish");
        assert_eq!(f.samples, 1);
    }
    // The retrain thread picks the runs up.
    let registered = wait_for("a warm prediction", &b, || {
        let r = c
            .register(&register("etl-live", "etl", None))
            .expect("register");
        if r.cold_start {
            c.finish(&Finish {
                container_id: "etl-live".to_owned(),
                ..Finish::default()
            })
            .expect("finish");
            std::thread::sleep(Duration::from_millis(50));
            None
        } else {
            Some(r)
        }
    });
    let quota = registered
        .allocation
        .cpu_cores
        .expect("predicted CPU quota");
    assert!(quota < 1.0, "predicted from 0.2-core history: {quota}");
    assert!(registered.prediction.is_some());
    assert!(registered.directives.iter().all(|d| d.applied));

    // An idle neighbour with a big allocation.
    let idle = c
        .register(&register("idle", "idle-type", Some(3.0)))
        .expect("register");
    assert_eq!(idle.allocation.cpu_cores, Some(3.0));

    // etl-live is starved: it gets a lease and a higher quota, delivered on its Report.
    let mut base = 2_000_000_000;
    let mut current = quota;
    let mut idle_quota = 3.0;
    let got = wait_for("a lease for etl-live", &b, || {
        base += 200_000_000;
        for d in c
            .report(&Report {
                container_id: "idle".to_owned(),
                samples: samples(0.05, 0.0, 10 << 20, base),
                oom_events: 0,
                ..Report::default()
            })
            .expect("report idle")
        {
            if let Action::SetCpu { cores: Some(q) } = d.action {
                idle_quota = q;
            }
        }
        let ds = c
            .report(&Report {
                container_id: "etl-live".to_owned(),
                samples: samples(current, 0.8, 50 << 20, base),
                oom_events: 0,
                ..Report::default()
            })
            .expect("report etl-live");
        let mut leased = false;
        for d in &ds {
            match &d.action {
                Action::SetCpu { cores: Some(q) } => current = *q,
                Action::LeaseGranted { .. } => leased = true,
                _ => {}
            }
        }
        (leased && current > quota).then_some(ds)
    });
    assert!(
        got.iter()
            .all(|d| d.container_id == "etl-live" && d.applied)
    );
    let status = c.status().expect("status");
    assert!(
        status.leases.iter().any(|l| l.holder == "etl-live"),
        "{:?}",
        status.leases
    );
    assert_eq!(status.tasks.len(), 2);
    // The host has no free CPU (3.55 cores, 0.5 reserved): the lease is the idle neighbour's.
    assert!(
        status
            .leases
            .iter()
            .all(|l| l.lender.as_deref() == Some("idle")),
        "{:?}",
        status.leases
    );

    // The neighbour gets busy: it uses all it kept. Its 3 cores come back, delivered on its Report.
    wait_for("idle's CPU back", &b, || {
        base += 200_000_000;
        for d in c
            .report(&Report {
                container_id: "idle".to_owned(),
                samples: samples(idle_quota, 0.8, 10 << 20, base),
                oom_events: 0,
                ..Report::default()
            })
            .expect("report idle")
        {
            if let Action::SetCpu { cores: Some(q) } = d.action {
                idle_quota = q;
            }
        }
        c.report(&Report {
            container_id: "etl-live".to_owned(),
            samples: samples(current, 0.8, 50 << 20, base),
            oom_events: 0,
            ..Report::default()
        })
        .expect("report etl-live");
        ((idle_quota - 3.0).abs() < 1e-9).then_some(())
    });
    let status = c.status().expect("status");
    assert!(
        status
            .leases
            .iter()
            .all(|l| l.lender.as_deref() != Some("idle")),
        "{:?}",
        status.leases
    );

    // Every decision is in the log, with its reason.
    let logged = wait_for("the lease in the decision log", &b, || {
        let d = c
            .explain(&Explain {
                container_id: Some("etl-live".to_owned()),
                limit: Some(100_000),
                before_seq: None,
            })
            .expect("explain")
            .decisions;
        d.iter().any(|d| d.resource == "cpu-lease").then_some(d)
    });
    assert!(
        logged.iter().any(|d| d.resource == "cpu"
            && d.directive == predictive_api::prediction::DecisionKind::Initial)
    );
    assert!(logged.iter().all(|d| !d.reason.is_empty()));

    // kill -9: committed records survive; the new broker does not know the old registrations.
    let runs_before = c
        .models()
        .expect("models")
        .task_types
        .iter()
        .find(|t| t.task_key.as_str() == "etl")
        .map(|t| t.runs_seen)
        .expect("etl listed");
    assert!(runs_before >= 3);
    b.kill9();
    let b = start_broker(dir.path());
    let mut c = client(&b);
    let after = c
        .explain(&Explain {
            container_id: Some("etl-live".to_owned()),
            limit: Some(100_000),
            before_seq: None,
        })
        .expect("explain")
        .decisions;
    // Everything read back before the kill is there, in order; later commits may follow.
    assert!(after.len() >= logged.len(), "{after:?}");
    assert_eq!(after[..logged.len()], logged[..]);
    let models = c.models().expect("models");
    assert!(models.model_version >= 1);
    let etl = models
        .task_types
        .iter()
        .find(|t| t.task_key.as_str() == "etl")
        .expect("etl listed");
    assert_eq!(etl.runs_seen, runs_before);
    let e = c
        .report(&Report {
            container_id: "etl-live".to_owned(),
            ..Report::default()
        })
        .expect_err("unknown after restart");
    assert!(e.is_not_registered(), "{e:?}");
    // A reused client reconnects to the new broker on its own.
    drop(b);
}

fn raw_call(conn: &mut BufReader<UnixStream>, line: &str) -> serde_json::Value {
    conn.get_mut().write_all(line.as_bytes()).expect("write");
    conn.get_mut().write_all(b"\n").expect("write");
    let mut reply = String::new();
    conn.read_line(&mut reply).expect("read");
    serde_json::from_str(&reply).expect("reply is JSON")
}

#[test]
fn bad_messages_get_named_errors_and_the_connection_survives() {
    let dir = short_tempdir();
    let b = start_broker(dir.path());
    let s = UnixStream::connect(b.socket()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut conn = BufReader::new(s);
    let r = raw_call(&mut conn, "this is not json");
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("bad_json"))
    );
    let r = raw_call(&mut conn, r#"{"type":"status"}"#);
    assert_eq!(r["code"], "unsupported_version");
    let r = raw_call(&mut conn, r#"{"version":1,"id":9,"type":"register"}"#);
    assert_eq!(
        (r["code"].as_str(), r["id"].as_u64()),
        (Some("invalid_request"), Some(9))
    );
    assert!(
        r["message"].as_str().unwrap_or("").contains("container_id"),
        "{r}"
    );
    let r = raw_call(
        &mut conn,
        r#"{"version":1,"type":"register","container_id":"x","annotations":{"io.predictive.priority":"high"}}"#,
    );
    assert_eq!(r["code"], "invalid_annotation");
    assert!(
        r["message"]
            .as_str()
            .unwrap_or("")
            .contains("io.predictive.priority"),
        "{r}"
    );
    let r = raw_call(
        &mut conn,
        r#"{"version":1,"type":"report","container_id":"nobody"}"#,
    );
    assert_eq!(r["code"], "not_found");
    // Still the same connection.
    let r = raw_call(&mut conn, r#"{"version":1,"id":10,"type":"status"}"#);
    assert_eq!(
        (r["type"].as_str(), r["id"].as_u64()),
        (Some("status"), Some(10))
    );
    assert_eq!(r["version"], 1);

    // Mode observe: decided, not applied. Mode off: the spec, nothing registered.
    let mut c = client(&b);
    let mut reg = register("watched", "w", Some(1.0));
    reg.annotations
        .insert(annotations::MODE.to_owned(), "observe".to_owned());
    let r = c.register(&reg).expect("register");
    assert_eq!(r.mode, Mode::Observe);
    assert!(!r.directives.is_empty() && r.directives.iter().all(|d| !d.applied));
    let mut reg = register("ignored", "w", Some(1.0));
    reg.annotations
        .insert(annotations::MODE.to_owned(), "off".to_owned());
    let r = c.register(&reg).expect("register");
    assert_eq!((r.mode, r.allocation.cpu_cores), (Mode::Off, Some(1.0)));
    assert!(r.directives.is_empty());
    let names: Vec<String> = c
        .status()
        .expect("status")
        .tasks
        .into_iter()
        .map(|t| t.container_id)
        .collect();
    assert_eq!(names, vec!["watched"]);
    let e = c.register(&register(" ", "w", None)).expect_err("empty id");
    assert!(
        matches!(e, ClientError::Broker(ref r) if r.message.contains("container_id")),
        "{e:?}"
    );
}

/// Grouped reports (a pod's containers in one shim): each entry of a batch is answered on its own, a bad one
/// costs the others nothing, and an oversized batch is refused whole, naming its size, with nothing applied.
#[test]
fn a_batch_of_reports_is_answered_entry_by_entry() {
    let dir = short_tempdir();
    let b = start_broker(dir.path());
    let mut c = client(&b);
    for id in ["pod-a", "pod-b"] {
        c.register(&register(id, "pod", None)).expect("register");
    }
    let entry = |id: &str, base: u64| Report {
        container_id: id.to_owned(),
        samples: samples(0.1, 0.0, 20 << 20, base),
        ..Report::default()
    };
    let too_many = Reports {
        reports: (0..broker::api::MAX_BATCH + 1)
            .map(|i| entry(if i == 0 { "pod-a" } else { "pod-b" }, 1_000_000_000))
            .collect(),
    };
    match c.reports(&too_many) {
        Err(ClientError::Broker(e)) => assert!(
            e.message.contains("`reports`")
                && e.message
                    .contains(&(broker::api::MAX_BATCH + 1).to_string()),
            "{e:?}"
        ),
        other => panic!("an oversized batch must be refused: {other:?}"),
    }
    let mut bad = entry("pod-b", 1_000_000_000);
    bad.samples[1].pressure.cpu = Some(runtime_hooks::cgroup::Pressure {
        some: runtime_hooks::cgroup::PsiLine {
            avg10: 500.0,
            ..Default::default()
        },
        full: None,
    });
    let out = c
        .reports(&Reports {
            reports: vec![
                entry("pod-a", 1_000_000_000),
                entry("ghost", 1_000_000_000),
                bad,
                entry("pod-b", 2_000_000_000),
                entry("pod-a", 3_000_000_000),
            ],
        })
        .expect("a batch with bad entries is answered");
    let errors: Vec<_> = out.iter().map(|o| o.error.as_ref()).collect();
    assert!(errors[0].is_none() && errors[3].is_none(), "{out:?}");
    let code = |i: usize| errors[i].map(|e| (e.code, e.message.clone()));
    assert!(
        matches!(code(1), Some((broker::api::ErrorCode::NotFound, m)) if m.contains("ghost")),
        "{out:?}"
    );
    assert!(
        matches!(code(2), Some((broker::api::ErrorCode::InvalidRequest, m)) if m.contains("reports[2]") && m.contains("avg10")),
        "{out:?}"
    );
    assert!(
        matches!(code(4), Some((broker::api::ErrorCode::InvalidRequest, m)) if m.contains("twice")),
        "{out:?}"
    );
    // What the valid entries carried is the runs' (one sampled interval each; nothing of the refused batch).
    for id in ["pod-a", "pod-b"] {
        let f = c
            .finish(&Finish {
                container_id: id.to_owned(),
                ..Finish::default()
            })
            .expect("finish");
        assert_eq!(f.samples, 1, "{id}: {f:?}");
    }
}

#[test]
fn a_second_broker_on_the_same_state_dir_refuses_to_start() {
    let dir = short_tempdir();
    let b = start_broker(dir.path());
    let second = short_tempdir();
    let out = Command::new(env!("CARGO_BIN_EXE_predictived"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(second.path().join("other.sock"))
        .arg("--config")
        .arg(dir.path().join("predictived.toml"))
        .output()
        .expect("run second broker");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another predictived holds"), "{err}");
    // The first one still serves.
    client(&b).status().expect("first broker still serves");
    let bad = Command::new(env!("CARGO_BIN_EXE_predictived"))
        .arg("--config")
        .arg(second.path().join("missing.toml"))
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("missing.toml"));
}

/// Issue 13, over the socket: a pod's sandbox is refused with its reason; a pod's priority and borrowing are
/// capped by `[policy]` (status and the decision log show the capped values; a ctr container is not capped);
/// an Update makes the new limits the task's at once; `parents` are checked.
#[test]
fn sandboxes_are_refused_pods_are_capped_and_update_resizes() {
    let dir = short_tempdir();
    let b = start_broker(dir.path());
    let mut c = client(&b);
    let pod = |id: &str, kind: &str| {
        let mut r = register(id, "web", Some(2.0));
        for (k, v) in [
            ("io.kubernetes.cri.container-type", kind),
            ("io.kubernetes.cri.sandbox-namespace", "tenant"),
            ("io.kubernetes.cri.container-name", "app"),
            ("io.predictive.priority", "1000"),
            ("io.predictive.max-borrow", "3.5"),
        ] {
            r.annotations.insert(k.to_owned(), v.to_owned());
        }
        r
    };
    let e = c.register(&pod("sb", "sandbox")).expect_err("a sandbox");
    assert!(
        matches!(&e, ClientError::Broker(r) if r.message.contains("sandbox") && r.message.contains("\"sb\"")),
        "{e:?}"
    );
    let r = c
        .register(&pod("app", "container"))
        .expect("a pod's container");
    assert_eq!(r.task_key, "tenant/web/app");
    let mut plain = register("plain", "web", Some(2.0));
    plain
        .annotations
        .insert("io.predictive.priority".to_owned(), "1000".to_owned());
    c.register(&plain).expect("a ctr container");
    let st = c.status().expect("status");
    let task = |id: &str| {
        st.tasks
            .iter()
            .find(|t| t.container_id == id)
            .unwrap_or_else(|| panic!("{id} in {:?}", st.tasks))
            .clone()
    };
    assert_eq!(
        task("app").priority,
        0,
        "capped at [policy] max_priority (0)"
    );
    assert_eq!(task("plain").priority, 1000, "not a pod: not capped");
    assert!(!st.tasks.iter().any(|t| t.container_id == "sb"));
    let log = wait_for("the policy decision", &b, || {
        let d = c
            .explain(&Explain {
                container_id: Some("app".to_owned()),
                limit: None,
                before_seq: None,
            })
            .ok()?;
        d.decisions.into_iter().find(|d| d.resource == "priority")
    });
    assert_eq!((log.old_value, log.new_value), (Some(1000.0), Some(0.0)));
    assert!(log.reason.contains("max_priority"), "{}", log.reason);

    // Update: the new limits are the task's at once, with directives that say why.
    let ds = c
        .update(&Update {
            container_id: "app".to_owned(),
            limits: SpecLimits {
                cpu_limit_cores: Some(0.5),
                memory_limit_bytes: Some(256 << 20),
                ..SpecLimits::default()
            },
            parents: None,
        })
        .expect("update");
    assert!(
        ds.iter().any(
            |d| matches!(d.action, Action::SetCpu { cores: Some(q) } if q <= 0.5)
                && d.reason.starts_with("resized by the user")
        ),
        "{ds:?}"
    );
    let st = c.status().expect("status");
    let app = st
        .tasks
        .iter()
        .find(|t| t.container_id == "app")
        .expect("app");
    assert_eq!(app.limits.cpu_limit_cores, Some(0.5));
    assert!(app.allocation.cpu_cores.is_some_and(|q| q <= 0.5));
    let e = c
        .update(&Update {
            container_id: "nobody".to_owned(),
            ..Update::default()
        })
        .expect_err("unknown");
    assert!(e.is_not_registered(), "{e:?}");
    let mut bad = pod("badparent", "container");
    bad.parents = vec![ParentLimit {
        path: "relative/path".to_owned(),
        cpu_limit_cores: Some(1.0),
        memory_limit_bytes: None,
    }];
    let e = c.register(&bad).expect_err("a relative parent");
    assert!(
        matches!(&e, ClientError::Broker(r) if r.message.contains("parents") && r.message.contains("relative/path")),
        "{e:?}"
    );
}

/// A shim whose Register got no answer in its budget drops the connection and sends Finish on a new one, which
/// can reach the broker before the Register: that Register must not leave a task nobody finishes (issue 14's
/// churn found one of 500 so with a 1 ms budget). A later run of the same id registers normally. When the Finish
/// says how long its container ran (`ran_ms`, which an older shim leaves out), the run is recorded from both.
#[test]
fn a_register_overtaken_by_its_finish_leaves_no_task_behind() {
    let dir = short_tempdir();
    let b = start_broker(dir.path());
    let mut c = client(&b);
    let finish = |c: &mut Client, id: &str| {
        c.finish(&Finish {
            container_id: id.to_owned(),
            ..Finish::default()
        })
    };
    let e = finish(&mut c, "late").expect_err("not registered yet");
    assert!(
        matches!(&e, ClientError::Broker(r) if r.message.contains("not registered")),
        "{e:?}"
    );
    let e = c
        .register(&register("late", "churn", Some(1.0)))
        .expect_err("its Finish came first");
    assert!(
        matches!(&e, ClientError::Broker(r) if r.message.contains("already finished") && r.message.contains("\"late\"")),
        "{e:?}"
    );
    let st = c.status().expect("status");
    assert!(
        st.tasks.iter().all(|t| t.container_id != "late"),
        "{:?}",
        st.tasks
    );
    // The refusal is used up: the next run of the same id (ctr reuses names) registers and finishes as usual.
    c.register(&register("late", "churn", Some(1.0)))
        .expect("a new run of the id");
    finish(&mut c, "late").expect("finished");
    // A container that finished normally leaves nothing that would refuse its next Register.
    c.register(&register("late", "churn", Some(1.0)))
        .expect("and another");
    finish(&mut c, "late").expect("finished again");
    assert!(c.status().expect("status").tasks.is_empty());

    // A shim that says how long its container ran (`ran_ms`): the run its Register and Finish describe is recorded
    // even though they came in the wrong order, with the Finish's figures. An older shim's (above) is not.
    let e = c
        .finish(&Finish {
            container_id: "overtaken".to_owned(),
            exit_code: 3,
            peak_memory_bytes: Some(64 << 20),
            ran_ms: Some(1500),
            ..Finish::default()
        })
        .expect_err("not registered yet");
    assert!(matches!(&e, ClientError::Broker(_)), "{e:?}");
    let e = c
        .register(&register("overtaken", "overtaken-type", Some(1.0)))
        .expect_err("its Finish came first");
    assert!(
        matches!(&e, ClientError::Broker(r) if r.message.contains("recorded from both")),
        "{e:?}"
    );
    assert!(c.status().expect("status").tasks.is_empty());
    // The refusal says the run is recorded: it is committed before the refusal is sent.
    let run = match c.call(&broker::api::Request::Export(Default::default())) {
        Ok(broker::api::Response::Export(p)) => p
            .runs
            .into_iter()
            .find(|r| r.task_key == "overtaken-type")
            .expect("the overtaken run, in the store when its Register was answered"),
        r => panic!("export answered {r:?}"),
    };
    assert_eq!(
        (run.duration_s, run.peak_memory_bytes, run.exit_code),
        (1.5, 64 << 20, 3),
        "{run:?}"
    );
    let churn = c.models().expect("models").task_types;
    assert_eq!(
        churn
            .iter()
            .find(|t| t.task_key == "churn")
            .map(|t| t.runs_seen),
        Some(2),
        "the older shim's overtaken run is not recorded, the two normal ones are: {churn:?}"
    );
}

/// A long-running service's run (a Deployment's pod, a VM-like container) ends months after its Register, or
/// registers late: it is recorded from when it started, by the Finish's `ran_ms`, and its task type is not
/// retired at the next retention pass for having started more than `task_type_retention_days` ago (found by the
/// `server` fuzz target: such a run was deleted at the broker's next start).
#[test]
fn a_run_of_months_starts_when_it_started_and_outlives_retention() {
    const DAY_MS: u64 = 86_400_000;
    let dir = short_tempdir();
    let b = start_broker(dir.path());
    let mut c = client(&b);
    c.register(&register("svc", "service", Some(1.0)))
        .expect("registered");
    let ran_ms = 100 * DAY_MS;
    c.finish(&Finish {
        container_id: "svc".to_owned(),
        ran_ms: Some(ran_ms),
        ..Finish::default()
    })
    .expect("finished");
    let export = |c: &mut Client| match c.call(&broker::api::Request::Export(Default::default())) {
        Ok(broker::api::Response::Export(p)) => {
            p.runs.into_iter().find(|r| r.task_key == "service")
        }
        r => panic!("export answered {r:?}"),
    };
    let run = export(&mut c).expect("the run, committed before the Finish was answered");
    let now = common::now_ms();
    assert!(
        run.started_at_ms <= now - ran_ms && run.started_at_ms + 60_000 >= now - ran_ms,
        "started {} ms before now, ran {ran_ms} ms",
        now - run.started_at_ms
    );
    assert_eq!(run.duration_s, (ran_ms / 1000) as f64);
    // Retention runs on every retrain check (100 ms here): ten of them.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        export(&mut c).is_some(),
        "the service's run was retired 90 days after its start, though it ended just now"
    );
}

/// A stalled broker reads a container's requests out of order once it goes on: the retries of its Register (the
/// shim's monitor tries every few ticks while unanswered) after its Finish, and with a reused id (`ctr run --rm
/// ... web` in a loop) the runs' Registers and Finishes crossed. A shim names each run (`created_ns`, when its
/// Create was taken on the host's monotonic clock): no retry leaves a task nobody finishes, no run is lost, and
/// no run takes another's Finish. Before runs were named, three of four containers (distinct ids) stayed registered
/// after a 40 s stall until forgotten 10 minutes later.
#[test]
fn runs_of_one_container_are_told_apart_when_their_requests_cross() {
    let dir = short_tempdir();
    let b = start_broker(dir.path());
    let mut c = client(&b);
    let reg = |id: &str, created: u64, adopt: bool| Register {
        created_ns: Some(created),
        adopt: adopt.then(Default::default),
        ..register(id, "crossed", Some(1.0))
    };
    let fin = |id: &str, created: u64, ran_ms: u64| Finish {
        container_id: id.to_owned(),
        ran_ms: Some(ran_ms),
        created_ns: Some(created),
        ..Finish::default()
    };
    let refused = |e: ClientError, why: &str| {
        assert!(
            matches!(&e, ClientError::Broker(r) if r.code == broker::api::ErrorCode::NotFound && r.message.contains(why)),
            "{why}: {e:?}"
        )
    };
    let tasks = |c: &mut Client| -> Vec<String> {
        let st = c.status().expect("status");
        st.tasks.into_iter().map(|t| t.container_id).collect()
    };

    // One run: its Register, a retry (adopt) that carries the same run on with its samples, its Finish, then a
    // retry that queued up behind the Finish: refused, nothing left registered.
    c.register(&reg("a", 100, false)).expect("a's Register");
    c.report(&Report {
        container_id: "a".to_owned(),
        samples: samples(0.5, 0.0, 32 << 20, 1_000_000_000),
        oom_events: 0,
        stopping: None,
    })
    .expect("a report");
    c.register(&reg("a", 100, true))
        .expect("a retry of the same run");
    let done = c.finish(&fin("a", 100, 900)).expect("a's Finish");
    assert_eq!(done.samples, 1, "the retry kept the run's samples");
    refused(
        c.register(&reg("a", 100, true))
            .expect_err("behind its Finish"),
        "ended already",
    );
    assert_eq!(tasks(&mut c), Vec::<String>::new());
    // The Register of the Create, read after a retry that adopted the limits in force: nothing new in it.
    c.register(&reg("b", 200, true)).expect("b's retry first");
    refused(
        c.register(&reg("b", 200, false))
            .expect_err("b's first Register last"),
        "registered already",
    );
    assert_eq!(tasks(&mut c), ["b"]);
    c.finish(&fin("b", 200, 1_000)).expect("b's Finish");

    // A reused id: the second run's Register first, then the first run's Register and Finish. The first run is
    // recorded, the second stays registered and takes its own Finish.
    c.register(&reg("web", 400, false)).expect("run 2");
    refused(
        c.register(&reg("web", 300, false))
            .expect_err("run 1 after run 2"),
        "later run",
    );
    let done = c
        .finish(&fin("web", 300, 1_100))
        .expect("run 1's Finish records it");
    assert_eq!(done.duration_s, 1.1);
    assert_eq!(tasks(&mut c), ["web"], "run 2 stays registered");
    let done = c.finish(&fin("web", 400, 2_200)).expect("run 2's Finish");
    assert_eq!(done.duration_s, 2.2);
    // Run 3 registered, then run 4 replaces it before run 3's Finish came: both are recorded by their Finishes.
    c.register(&reg("web", 500, false)).expect("run 3");
    c.register(&reg("web", 600, false)).expect("run 4");
    let done = c.finish(&fin("web", 500, 3_300)).expect("run 3's Finish");
    assert_eq!(done.duration_s, 3.3);
    assert_eq!(tasks(&mut c), ["web"], "run 4 stays registered");
    // Run 6's Finish before run 5's: run 5's Finish ends run 5, run 6's Register finds its own Finish.
    c.finish(&fin("web", 600, 4_400)).expect("run 4's Finish");
    c.register(&reg("web", 700, false)).expect("run 5");
    c.finish(&fin("web", 800, 6_600))
        .expect_err("run 6 is not registered yet");
    assert_eq!(tasks(&mut c), ["web"], "run 6's Finish left run 5 alone");
    c.finish(&fin("web", 700, 5_500)).expect("run 5's Finish");
    let e = c
        .register(&reg("web", 800, false))
        .expect_err("run 6 came after its Finish");
    refused(e, "recorded from both");
    // Run 8 registered and finished before run 7's Register was read: run 7 still registers, and its Finish
    // records it.
    c.register(&reg("web", 1_000, false)).expect("run 8");
    c.finish(&fin("web", 1_000, 8_800)).expect("run 8's Finish");
    c.register(&reg("web", 900, false))
        .expect("run 7 after run 8 ended");
    let done = c.finish(&fin("web", 900, 7_700)).expect("run 7's Finish");
    assert_eq!(done.duration_s, 7.7);
    assert_eq!(tasks(&mut c), Vec::<String>::new());

    let mut durations = wait_for("the ten runs in the store", &b, || {
        match c.call(&broker::api::Request::Export(Default::default())) {
            Ok(broker::api::Response::Export(p)) => {
                let d: Vec<f64> = p
                    .runs
                    .iter()
                    .filter(|r| r.task_key == "crossed")
                    .map(|r| r.duration_s)
                    .collect();
                (d.len() >= 10).then_some(d)
            }
            _ => None,
        }
    });
    durations.sort_by(f64::total_cmp);
    assert_eq!(
        durations,
        [0.9, 1.0, 1.1, 2.2, 3.3, 4.4, 5.5, 6.6, 7.7, 8.8]
    );
}

/// Issue 16: a lender whose shim takes pokes is told at once that a lease drew on it: the broker writes a poke on
/// its connection between its reports, and its next report collects the lower quota. A shim that takes pokes is
/// asked the long idle heartbeat; one that does not, half of `stale_after_ms`.
#[test]
fn a_lender_that_takes_pokes_is_poked_when_a_lease_draws_on_it() {
    let dir = short_tempdir();
    let b = start_broker(dir.path());
    let mut lender = client(&b);
    let mut borrower = client(&b);
    let reg = lender
        .register(&Register {
            pokes: Some(true),
            ..register("idle", "idle-type", Some(3.0))
        })
        .expect("register idle");
    assert_eq!(reg.allocation.cpu_cores, Some(3.0));
    assert_eq!(reg.heartbeat_ms, Some(10_000), "the idle heartbeat");
    let reg = warm_borrower(&b, &mut borrower);
    assert_eq!(
        reg.heartbeat_ms,
        Some(2_500),
        "no pokes: half of stale_after_ms"
    );
    let start_quota = reg.allocation.cpu_cores.expect("a predicted quota");
    let mut base = 2_000_000_000;
    lender
        .report(&Report {
            container_id: "idle".to_owned(),
            samples: samples(0.01, 0.0, 10 << 20, base),
            ..Report::default()
        })
        .expect("report idle");
    assert!(!lender.has_unread(), "nothing to say yet");
    // Only the borrower reports from now on: throttled at its quota, it borrows from the idle lender.
    let mut hog_quota = start_quota;
    wait_for("a poke on the lender's connection", &b, || {
        base += 200_000_000;
        for d in borrower
            .report(&Report {
                container_id: "hog".to_owned(),
                samples: samples(hog_quota, 0.8, 10 << 20, base),
                ..Report::default()
            })
            .expect("report hog")
        {
            if let Action::SetCpu { cores: Some(q) } = d.action {
                hog_quota = q;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        lender.has_unread().then_some(())
    });
    let leases = borrower.status().expect("status").leases;
    assert!(
        leases
            .iter()
            .any(|l| l.holder == "hog" && l.lender.as_deref() == Some("idle")),
        "the poke is for a lease from the lender: {leases:?}"
    );
    let ds = lender
        .report(&Report {
            container_id: "idle".to_owned(),
            samples: samples(0.01, 0.0, 10 << 20, base + 100_000_000),
            ..Report::default()
        })
        .expect("report idle after the poke");
    let lent = ds.iter().find_map(|d| match d.action {
        Action::SetCpu { cores: Some(q) } => Some(q),
        _ => None,
    });
    assert!(
        lent.is_some_and(|q| q < 3.0),
        "the lender's report collects its lower quota: {ds:?}"
    );
    assert!(!lender.has_unread(), "the poke was read with the reply");
}

/// A report is fresh as of when the broker took it, on the broker's own steady clock, whatever time its samples
/// claim: a shim whose wall clock is a century ahead (a clock stepped, or a peer that lies) keeps no lease once it
/// falls silent. Before, a task's freshness was the latest time its samples claimed, and such a holder stayed
/// fresh, with its lease, until that time came.
#[test]
fn a_silent_holder_whose_samples_claim_the_future_loses_its_lease() {
    let dir = short_tempdir();
    let b = start_broker(dir.path());
    let mut lender = client(&b);
    let mut borrower = client(&b);
    lender
        .register(&register("idle", "idle-type", Some(3.0)))
        .expect("register idle");
    let reg = warm_borrower(&b, &mut borrower);
    let century = 100 * 365 * 86_400 * 1_000_000_000u64;
    let ahead = |mut v: Vec<Sample>| {
        for s in &mut v {
            s.unix_ns += century;
        }
        v
    };
    let mut base = 2_000_000_000;
    // The lender reports all along, idle.
    let mut idle = |base: &mut u64| {
        *base += 200_000_000;
        lender
            .report(&Report {
                container_id: "idle".to_owned(),
                samples: samples(0.01, 0.0, 10 << 20, *base),
                ..Report::default()
            })
            .expect("report idle");
    };
    let mut quota = reg.allocation.cpu_cores.expect("a predicted quota");
    let lease = wait_for("a lease to the borrower", &b, || {
        idle(&mut base);
        for d in borrower
            .report(&Report {
                container_id: "hog".to_owned(),
                samples: ahead(samples(quota, 0.8, 10 << 20, base)),
                ..Report::default()
            })
            .expect("report hog")
        {
            if let Action::SetCpu { cores: Some(q) } = d.action {
                quota = q;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        let st = borrower.status().expect("status");
        st.leases
            .into_iter()
            .find(|l| l.holder == "hog")
            .map(|l| l.id)
    });
    let st = borrower.status().expect("status");
    let shown = st
        .tasks
        .iter()
        .find(|t| t.container_id == "hog")
        .and_then(|t| t.usage)
        .map(|u| u.at_ms)
        .expect("the borrower's usage");
    assert!(
        shown < common::now_ms() + 60_000,
        "status shows the time the samples claimed ({shown}), not when the broker took them"
    );
    // Only the lender reports from now on: the silent holder's lease ends (stale_after_ms 5 s, a tick of 50 ms).
    wait_for("the silent holder's lease to end", &b, || {
        idle(&mut base);
        std::thread::sleep(Duration::from_millis(100));
        let st = borrower.status().expect("status");
        (!st.leases.iter().any(|l| l.id == lease)).then_some(())
    });
}

/// A pod chooses its command line (the kernel execs up to ~2 MiB of it): a crash-looping container whose command
/// is 394 KB must not cost the node 394 KB of store per run, up to `max_runs_per_task` (5,000) of them, nor
/// the broker's memory when it trains on them. Before the bound, 300 such runs grew the state directory by 162 MB
/// and the broker's RSS to 255 MB (10 MB with a short command). Commands that differ only past the bound are
/// still their own task types.
#[test]
fn a_pods_long_command_line_costs_the_node_what_a_short_one_does() {
    const RUNS: usize = 100;
    let long = |tail: &str| -> Vec<String> {
        let mut args: Vec<String> = (0..2000)
            .map(|j| format!("/data/input/part-{j:06}-{}", "x".repeat(170)))
            .collect();
        args.push(tail.to_owned());
        args
    };
    fn allocated(dir: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::read_dir(dir)
            .expect("state dir")
            .map(|e| {
                let e = e.expect("entry");
                let m = std::fs::symlink_metadata(e.path()).expect("metadata");
                m.blocks() * 512 + if m.is_dir() { allocated(&e.path()) } else { 0 }
            })
            .sum()
    }
    let rss_kb = |b: &Broker| -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", b.pid()))
            .expect("status")
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .expect("VmRSS")
    };
    let mut figures = Vec::new();
    for command in [vec!["sleep".to_owned(), "1".to_owned()], long("--last")] {
        let dir = short_tempdir();
        let b = start_broker(dir.path());
        let mut c = client(&b);
        let mut keys = std::collections::BTreeSet::new();
        for i in 0..RUNS {
            let id = format!("c{i}");
            let mut r = register(&id, "unused", Some(1.0));
            r.annotations.clear();
            r.command = command.clone();
            keys.insert(c.register(&r).expect("registered").task_key);
            c.finish(&Finish {
                container_id: id,
                ran_ms: Some(1000),
                ..Finish::default()
            })
            .expect("finished");
        }
        assert_eq!(keys.len(), 1, "one command, one task type: {keys:?}");
        // Retraining (every 100 ms here) has read the runs back.
        std::thread::sleep(Duration::from_millis(500));
        figures.push((allocated(dir.path()), rss_kb(&b), keys));
    }
    let ((short_store, short_rss, _), (long_store, long_rss, long_keys)) =
        (&figures[0], &figures[1]);
    println!(
        "{RUNS} runs: store {short_store} / {long_store} bytes, RSS {short_rss} / {long_rss} kB (short / long command)"
    );
    assert!(
        *long_store <= short_store + (1 << 20),
        "the state directory holds {long_store} bytes after {RUNS} runs of a 394 KB command, {short_store} after a short one's"
    );
    assert!(
        *long_rss <= short_rss * 2 + 16 * 1024,
        "the broker's RSS is {long_rss} kB after {RUNS} runs of a 394 KB command, {short_rss} kB after a short one's"
    );
    // Two commands alike in their first 64 KiB are two task types.
    let dir = short_tempdir();
    let b = start_broker(dir.path());
    let mut r = register("other", "unused", Some(1.0));
    r.annotations.clear();
    r.command = long("--other");
    let other = client(&b).register(&r).expect("registered").task_key;
    assert!(!long_keys.contains(&other), "{other} was {long_keys:?}");
}
