//! Crash safety: a writer process is killed with SIGKILL in the middle of its writes, again and again, and every
//! write it had been told was committed must be there when the file is reopened.
//!
//! The writer is this test binary re-invoked with `PREDICTOR_CRASH_WRITER=<db path>` running only
//! `crash_writer_child`, which prints `ACK <run id>` after each committed run (and also appends samples, logs
//! decisions and retrains, so the kill can land inside any kind of write).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use predictor::synth::{SynthConfig, generate};
use predictor::{Decision, Directive, Predictor, PredictorConfig, Sample, TaskKey};

const ENV: &str = "PREDICTOR_CRASH_WRITER";

/// The writer. Does nothing (and passes) unless started by `kill_9_in_a_loop_loses_nothing_committed`.
#[test]
fn crash_writer_child() {
    let Some(path) = std::env::var_os(ENV) else {
        return;
    };
    let p = Predictor::open(Path::new(&path), PredictorConfig::default()).expect("child opens");
    let runs = generate(&SynthConfig {
        task_types: 4,
        runs_per_task: 500,
        ..SynthConfig::default()
    });
    for (i, template) in runs.iter().enumerate() {
        let id = p.allocate_run_id().expect("allocate");
        let samples: Vec<Sample> = (0..20)
            .map(|s| Sample {
                ts_ms: template.started_at_ms + s * 1000,
                cpu_cores: 1.0,
                memory_bytes: 1 << 20,
                io_bytes: 10,
                count: 1,
            })
            .collect();
        p.append_samples(id, &samples).expect("samples");
        let mut run = template.clone();
        run.run_id = id;
        p.record_run(&run).expect("record");
        println!("ACK {id}");
        if i % 7 == 0 {
            p.record_decision(&Decision {
                seq: 0,
                at_ms: run.started_at_ms,
                container_id: format!("c{id}"),
                task_key: run.task_key.clone(),
                directive: Directive::Initial,
                resource: "memory".to_owned(),
                reason: "crash test".to_owned(),
                old_value: None,
                new_value: Some(1.0),
                model_version: None,
            })
            .expect("decision");
        }
        if i % 25 == 24 {
            p.retrain(run.started_at_ms).expect("retrain");
        }
    }
}

#[test]
fn kill_9_in_a_loop_loses_nothing_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("crash.redb");
    let exe = std::env::current_exe().expect("test binary path");
    let mut acked: Vec<u64> = Vec::new();
    // Deterministic kill points: after this many acknowledged runs in each round.
    for (round, kill_after) in [3usize, 17, 1, 40, 9, 26].into_iter().enumerate() {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV, &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read child stdout");
            if let Some(id) = line.strip_prefix("ACK ") {
                acked.push(id.trim().parse().expect("run id"));
                got += 1;
                if got >= kill_after {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "writer too slow in round {round}"
            );
        }
        // SIGKILL, mid-write: the writer is already busy with the next run.
        child.kill().expect("kill -9 writer");
        child.wait().expect("reap writer");
        assert!(got >= kill_after, "writer stopped early in round {round}");

        let p = Predictor::open(&db, PredictorConfig::default()).expect("reopens after kill -9");
        let store = p.store();
        let mut stored = std::collections::HashSet::new();
        store
            .for_each_task_runs(|_, runs| stored.extend(runs.into_iter().map(|r| r.run_id)))
            .expect("runs readable");
        for id in &acked {
            assert!(
                stored.contains(id),
                "round {round}: committed run {id} lost"
            );
            assert_eq!(store.samples(*id).expect("samples readable").len(), 20);
        }
        // Run ids are never reused after a crash.
        let next = store.allocate_run_id().expect("allocate");
        assert!(acked.iter().all(|id| *id < next));
        store
            .decisions(&predictor::DecisionQuery::default())
            .expect("decisions readable");
        let _ = p.predict(&TaskKey::new("synth-0000"), &Default::default());
        drop(p);
    }
    assert_eq!(acked.len(), 3 + 17 + 1 + 40 + 9 + 26);
}
