//! Task.Update on a shim, the one Task call `ctr` has no command for (1.6, 1.7, 2.1), through
//! containerd-shim-protos' ttrpc client (its blocking one: the harness has no async runtime).
//!
//! The request is the one containerd sends: the resources as a JSON `LinuxResources` in an `Any`, with the
//! type URL containerd's typeurl gives it, to the shim's socket from the bundle's `address` file (or
//! `bootstrap.json` on containerd 2.x). The client speaks task API v3, which this project's shim serves next to
//! v2 on every containerd version.

use std::path::Path;
use std::time::Duration;

use containerd_shim_protos::api::UpdateTaskRequest;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::ttrpc::{self, context};
use containerd_shim_protos::{Client, TaskClient};

const LINUX_RESOURCES_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// How long the shim has to answer.
const TIMEOUT: Duration = Duration::from_secs(20);

/// The shim's socket path for a container, from its bundle (`address`, written by 1.x shims;
/// `bootstrap.json`, written by containerd 2.x), else `fallback` (the conventional socket path).
pub fn shim_address(bundle: &Path, fallback: Option<&Path>) -> Result<String, String> {
    let raw = match std::fs::read_to_string(bundle.join("address")) {
        Ok(a) => a,
        Err(_) => {
            let j = match std::fs::read_to_string(bundle.join("bootstrap.json")) {
                Ok(j) => j,
                Err(e) => match fallback.filter(|p| p.exists()) {
                    Some(p) => return Ok(p.to_string_lossy().into_owned()),
                    None => {
                        return Err(format!(
                            "no address or bootstrap.json in {}: {e}",
                            bundle.display()
                        ));
                    }
                },
            };
            let v: serde_json::Value =
                serde_json::from_str(&j).map_err(|e| format!("bootstrap.json: {e}"))?;
            v["address"]
                .as_str()
                .ok_or("bootstrap.json has no address")?
                .to_string()
        }
    };
    Ok(raw.trim().trim_start_matches("unix://").to_string())
}

/// A ttrpc error as a line: the gRPC code and message of a status, else the transport error.
fn describe(e: ttrpc::Error) -> String {
    match e {
        ttrpc::Error::RpcStatus(s) => {
            format!("code {:?}: {}", s.code.enum_value_or_default(), s.message)
        }
        e => e.to_string(),
    }
}

/// Task.Update on the shim serving container `id`. `resources` is an OCI LinuxResources object as JSON.
pub fn update_task(
    bundle: &Path,
    fallback: Option<&Path>,
    id: &str,
    resources: &serde_json::Value,
) -> Result<(), String> {
    let addr = shim_address(bundle, fallback)?;
    // ttrpc reads a leading `@` after the scheme as an abstract socket name, as the shim writes it.
    let client = Client::connect(&format!("unix://{addr}"))
        .map_err(|e| format!("connecting to the shim at {addr}: {}", describe(e)))?;
    let req = UpdateTaskRequest {
        id: id.to_owned(),
        resources: MessageField::some(Any {
            type_url: LINUX_RESOURCES_URL.to_owned(),
            value: resources.to_string().into_bytes(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let timeout = i64::try_from(TIMEOUT.as_nanos()).expect("20 s in nanoseconds fits an i64");
    TaskClient::new(client)
        .update(context::with_timeout(timeout), &req)
        .map(drop)
        .map_err(|e| format!("Task.Update on the shim at {addr}: {}", describe(e)))
}
