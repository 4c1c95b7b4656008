//! The broker's CPU and memory directives written into a bundle's `config.json` before libcontainer reads it
//! (`container::write_config` makes the one edit; fields oci-spec does not model are kept).

use predictive_api::types::{Action, Directive};

/// Applies CPU and memory directives to an OCI spec as JSON; `false` when nothing changed.
pub fn edit_spec(spec: &mut serde_json::Value, directives: &[Directive]) -> bool {
    use serde_json::{Value, json};
    fn obj<'a>(v: &'a mut Value, key: &str) -> &'a mut serde_json::Map<String, Value> {
        let Some(map) = v.as_object_mut() else {
            unreachable!("callers pass objects")
        };
        let e = map.entry(key).or_insert_with(|| json!({}));
        if !e.is_object() {
            *e = json!({});
        }
        e.as_object_mut().expect("made an object above")
    }
    if !spec.is_object() {
        return false;
    }
    let mut changed = false;
    for d in directives.iter().filter(|d| d.applied) {
        let linux = obj(spec, "linux");
        let res = linux.entry("resources").or_insert_with(|| json!({}));
        if !res.is_object() {
            *res = json!({});
        }
        match &d.action {
            Action::SetCpu { cores: Some(c) } => {
                let cpu = obj(res, "cpu");
                cpu.insert("period".into(), json!(100_000u64));
                cpu.insert(
                    "quota".into(),
                    json!(((c * 100_000.0).round() as i64).max(1000)),
                );
                changed = true;
            }
            Action::SetMemoryLimit {
                limit_bytes: Some(l),
                oom_kill_disabled,
            } => {
                let mem = obj(res, "memory");
                mem.insert("limit".into(), json!(*l));
                mem.insert("disableOOMKiller".into(), json!(*oom_kill_disabled));
                changed = true;
            }
            Action::SetMemoryHigh {
                high_bytes,
                max_bytes,
            } => {
                if let Some(m) = max_bytes {
                    obj(res, "memory").insert("limit".into(), json!(*m));
                }
                if let Some(h) = high_bytes {
                    obj(res, "unified").insert("memory.high".into(), json!(h.to_string()));
                }
                changed = true;
            }
            _ => {}
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(action: Action) -> Directive {
        Directive {
            container_id: "c".into(),
            action,
            reason: "test".into(),
            applied: true,
            old_value: None,
        }
    }

    #[test]
    fn edit_spec_writes_cpu_and_v1_memory_and_keeps_other_fields() {
        let mut spec = serde_json::json!({
            "ociVersion": "1.0.2", "x-unknown": {"kept": true},
            "linux": {"resources": {"memory": {"limit": 1073741824, "swap": 2147483648u64}}}
        });
        let changed = edit_spec(
            &mut spec,
            &[
                d(Action::SetCpu { cores: Some(0.25) }),
                d(Action::SetMemoryLimit {
                    limit_bytes: Some(64 << 20),
                    oom_kill_disabled: true,
                }),
            ],
        );
        assert!(changed);
        let r = &spec["linux"]["resources"];
        assert_eq!(r["cpu"]["quota"], 25_000);
        assert_eq!(r["cpu"]["period"], 100_000);
        assert_eq!(r["memory"]["limit"], 64u64 << 20);
        assert_eq!(r["memory"]["disableOOMKiller"], true);
        assert_eq!(
            r["memory"]["swap"], 2147483648u64,
            "other memory fields stay"
        );
        assert_eq!(spec["x-unknown"]["kept"], true);
    }

    #[test]
    fn edit_spec_v2_uses_unified_memory_high_and_skips_unapplied() {
        let mut spec = serde_json::json!({"ociVersion": "1.0.2"});
        let mut observe = d(Action::SetCpu { cores: Some(1.0) });
        observe.applied = false;
        assert!(
            !edit_spec(&mut spec, &[observe]),
            "observe directives change nothing"
        );
        assert!(edit_spec(
            &mut spec,
            &[d(Action::SetMemoryHigh {
                high_bytes: Some(100 << 20),
                max_bytes: Some(200 << 20)
            })]
        ));
        let r = &spec["linux"]["resources"];
        assert_eq!(r["unified"]["memory.high"], (100u64 << 20).to_string());
        assert_eq!(r["memory"]["limit"], 200u64 << 20);
    }
}
