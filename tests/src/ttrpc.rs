//! A minimal ttrpc client for the one Task call `ctr` has no command for: Update.
//!
//! ctr (1.6, 1.7, 2.1) has no `task update`, so the update test sends the shim the same
//! `UpdateTaskRequest` containerd would (resources as a JSON `LinuxResources` in an `Any`,
//! exactly as containerd's typeurl encodes it), straight to the shim's socket from the bundle's
//! `address` file (or `bootstrap.json` on containerd 2.x). Hand-encoded protobuf: four messages.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const LINUX_RESOURCES_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(field: u32, b: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(field << 3 | 2), out);
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

fn int_field(field: u32, v: u64, out: &mut Vec<u8>) {
    varint(u64::from(field << 3), out);
    varint(v, out);
}

fn read_varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Fields of a protobuf message: (field number, varint value or bytes).
fn parse(b: &[u8]) -> Vec<(u32, Result<u64, Vec<u8>>)> {
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let Some(key) = read_varint(b, &mut i) else {
            break;
        };
        let (field, wt) = ((key >> 3) as u32, key & 7);
        match wt {
            0 => match read_varint(b, &mut i) {
                Some(v) => out.push((field, Ok(v))),
                None => break,
            },
            2 => {
                let Some(len) = read_varint(b, &mut i) else {
                    break;
                };
                let end = i + len as usize;
                if end > b.len() {
                    break;
                }
                out.push((field, Err(b[i..end].to_vec())));
                i = end;
            }
            1 => i += 8,
            5 => i += 4,
            _ => break,
        }
    }
    out
}

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

fn connect(addr: &str) -> std::io::Result<UnixStream> {
    if let Some(name) = addr.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        UnixStream::connect_addr(&sa)
    } else {
        UnixStream::connect(addr)
    }
}

/// One unary ttrpc call; returns the response payload, or (grpc code, message).
fn call(addr: &str, service: &str, method: &str, payload: &[u8]) -> Result<Vec<u8>, (u64, String)> {
    let io = |e: std::io::Error| (14u64, format!("ttrpc to {addr}: {e}"));
    let mut s = connect(addr).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    let mut req = Vec::new();
    bytes_field(1, service.as_bytes(), &mut req);
    bytes_field(2, method.as_bytes(), &mut req);
    bytes_field(3, payload, &mut req);
    int_field(4, 20_000_000_000, &mut req);
    let mut frame = Vec::with_capacity(10 + req.len());
    frame.extend_from_slice(&(req.len() as u32).to_be_bytes());
    frame.extend_from_slice(&1u32.to_be_bytes()); // stream id
    frame.push(1); // request
    frame.push(0); // flags
    frame.extend_from_slice(&req);
    s.write_all(&frame).map_err(io)?;
    let mut hdr = [0u8; 10];
    s.read_exact(&mut hdr).map_err(io)?;
    let len = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).map_err(io)?;
    let mut payload = Vec::new();
    for (f, v) in parse(&body) {
        match (f, v) {
            (1, Err(status)) => {
                let mut code = 0;
                let mut msg = String::new();
                for (sf, sv) in parse(&status) {
                    match (sf, sv) {
                        (1, Ok(c)) => code = c,
                        (2, Err(m)) => msg = String::from_utf8_lossy(&m).into_owned(),
                        _ => {}
                    }
                }
                if code != 0 {
                    return Err((code, msg));
                }
            }
            (2, Err(p)) => payload = p,
            _ => {}
        }
    }
    Ok(payload)
}

/// Task.Update on the shim: task API v2 (containerd 1.x shims) or v3 (2.x), whichever it serves.
/// `resources` is an OCI LinuxResources object as JSON.
pub fn update_task(
    bundle: &Path,
    fallback: Option<&Path>,
    id: &str,
    resources: &serde_json::Value,
) -> Result<(), String> {
    let addr = shim_address(bundle, fallback)?;
    let mut any = Vec::new();
    bytes_field(1, LINUX_RESOURCES_URL.as_bytes(), &mut any);
    bytes_field(2, resources.to_string().as_bytes(), &mut any);
    let mut req = Vec::new();
    bytes_field(1, id.as_bytes(), &mut req);
    bytes_field(2, &any, &mut req);
    let mut errors = Vec::new();
    for service in ["containerd.task.v2.Task", "containerd.task.v3.Task"] {
        match call(&addr, service, "Update", &req) {
            Ok(_) => return Ok(()),
            // 12 Unimplemented / 5 NotFound: the shim does not serve this API version
            Err((code @ (5 | 12), msg)) if msg.contains("service") => {
                errors.push(format!("{service}: {code} {msg}"))
            }
            Err((code, msg)) => return Err(format!("{service}/Update: code {code}: {msg}")),
        }
    }
    Err(format!(
        "shim at {addr} serves no Task service: {}",
        errors.join("; ")
    ))
}
