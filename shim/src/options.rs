//! The runtime options containerd sends with Create (and to the `start` action on stdin): runc's own
//! `containerd.runc.v1.Options`, or `runtimeoptions.v1.Options`, which containerd's CRI plugin and Docker use for
//! every runtime type that is not runc's. The latter carries the TOML of the runtime's `options` table
//! (`config_body`) or names a file (`config_path`); runc's field names are read from it (`SystemdCgroup`,
//! `ShimCgroup`), so a node's existing `[...runtimes.predictive.options] SystemdCgroup = true` means what it
//! means for runc.

use containerd_shim_protos::protobuf::{CodedInputStream, Message};
use containerd_shim_protos::shim::oci::Options as RuncOptions;
use predictive_api::toml_keys::{self, Value};

use crate::error::{Result, ShimError};

/// Type URL suffix of runc's options.
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";
/// Type URL suffix of the generic runtime options (CRI, Docker).
const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";
/// Type URL suffix of the options containerd's client sends for a runtime that is not runc's
/// (`runctypes.CreateOptions`).
const LEGACY_CREATE_OPTIONS: &str = "containerd.linux.runc.CreateOptions";
/// Largest `config_path` file read.
const MAX_CONFIG_FILE: u64 = 1 << 20;

/// What the shim takes from the runtime options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// `SystemdCgroup`: the systemd cgroup driver is asked for.
    pub systemd_cgroup: bool,
    /// `ShimCgroup`: the cgroup the shim itself should run in.
    pub shim_cgroup: Option<String>,
}

fn invalid(what: impl std::fmt::Display) -> ShimError {
    ShimError::InvalidArgument(format!("runtime options: {what}"))
}

impl RuntimeOptions {
    /// Decodes an `Any` (type URL and bytes); no options is the default.
    pub fn decode(type_url: &str, value: &[u8]) -> Result<Self> {
        if type_url.is_empty() && value.is_empty() {
            return Ok(Self::default());
        }
        if type_url.ends_with(RUNC_OPTIONS) {
            let o = RuncOptions::parse_from_bytes(value)
                .map_err(|e| invalid(format!("undecodable {RUNC_OPTIONS}: {e}")))?;
            return Ok(Self {
                systemd_cgroup: o.systemd_cgroup,
                shim_cgroup: Some(o.shim_cgroup).filter(|s| !s.is_empty()),
            });
        }
        if type_url.ends_with(LEGACY_CREATE_OPTIONS) {
            // containerd's client sends this for a runtime that is not runc's when a task option needs one
            // (`ctr run --uidmap` sets the I/O owner): only `shim_cgroup` (field 9) is the shim's business; the
            // I/O owner (`io_uid`/`io_gid`) matters only for fifos the container reopens, which the shim's pipes are not.
            let mut shim_cgroup = None;
            for (field, bytes) in length_delimited(value, LEGACY_CREATE_OPTIONS)? {
                if field == 9 {
                    shim_cgroup = Some(
                        String::from_utf8(bytes)
                            .map_err(|_| invalid("shim_cgroup is not UTF-8"))?,
                    )
                    .filter(|s| !s.is_empty());
                }
            }
            return Ok(Self {
                systemd_cgroup: false,
                shim_cgroup,
            });
        }
        if type_url.ends_with(RUNTIME_OPTIONS) {
            let (path, body) = runtime_options_fields(value)?;
            let text = if !body.is_empty() {
                String::from_utf8(body).map_err(|_| invalid("config_body is not UTF-8"))?
            } else if !path.is_empty() {
                read_config_file(&path)?
            } else {
                return Ok(Self::default());
            };
            return Self::from_toml(&text);
        }
        Err(invalid(format!(
            "unknown options type {:?} (expected {RUNC_OPTIONS}, {RUNTIME_OPTIONS} or {LEGACY_CREATE_OPTIONS})",
            type_url.escape_debug().to_string()
        )))
    }

    /// runc's option names among the top-level keys of a TOML document; other keys are the runtime's own
    /// business and ignored, though the whole document must be TOML (`predictive_api::toml_keys`).
    fn from_toml(text: &str) -> Result<Self> {
        let entries = toml_keys::top_level(text)
            .map_err(|e| invalid(format!("the options are not TOML: {e}")))?;
        let mut out = Self::default();
        for e in entries {
            match (e.key.as_str(), e.value) {
                ("SystemdCgroup", Value::Boolean(b)) => out.systemd_cgroup = b,
                ("SystemdCgroup", _) => {
                    return Err(invalid(format!(
                        "SystemdCgroup = {} is not a boolean",
                        e.raw
                    )));
                }
                ("ShimCgroup", Value::String(s)) => {
                    out.shim_cgroup = Some(s).filter(|s| !s.is_empty())
                }
                ("ShimCgroup", _) => {
                    return Err(invalid(format!("ShimCgroup = {} is not a string", e.raw)));
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// `config_path` (field 2) and `config_body` (field 3) of a `runtimeoptions.v1.Options`.
fn runtime_options_fields(value: &[u8]) -> Result<(String, Vec<u8>)> {
    let (mut path, mut body) = (String::new(), Vec::new());
    for (field, bytes) in length_delimited(value, RUNTIME_OPTIONS)? {
        match field {
            2 => {
                path = String::from_utf8(bytes).map_err(|_| invalid("config_path is not UTF-8"))?
            }
            3 => body = bytes,
            _ => {}
        }
    }
    Ok((path, body))
}

/// The length-delimited fields (strings, bytes) of a protobuf message, by field number; other fields skipped.
fn length_delimited(value: &[u8], what: &str) -> Result<Vec<(u32, Vec<u8>)>> {
    let bad = |e| invalid(format!("undecodable {what}: {e}"));
    let mut input = CodedInputStream::from_bytes(value);
    let mut out = Vec::new();
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(bad)? {
        let wire = containerd_shim_protos::protobuf::rt::WireType::new(tag & 7)
            .ok_or_else(|| invalid(format!("undecodable {what}: wire type {}", tag & 7)))?;
        if wire == containerd_shim_protos::protobuf::rt::WireType::LengthDelimited {
            out.push((tag >> 3, input.read_bytes().map_err(bad)?));
        } else {
            input.skip_field(wire).map_err(bad)?;
        }
    }
    Ok(out)
}

fn read_config_file(path: &str) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(ShimError::io(format!(
        "runtime options: opening config_path {path}"
    )))?;
    let mut text = String::new();
    file.take(MAX_CONFIG_FILE)
        .read_to_string(&mut text)
        .map_err(ShimError::io(format!(
            "runtime options: reading config_path {path}"
        )))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::CodedOutputStream;

    fn runtime_options(path: &str, body: &str) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = CodedOutputStream::vec(&mut out);
            w.write_string(1, "type").expect("field 1");
            if !path.is_empty() {
                w.write_string(2, path).expect("field 2");
            }
            if !body.is_empty() {
                w.write_bytes(3, body.as_bytes()).expect("field 3");
            }
            w.write_uint32(9, 7).expect("an unknown field");
            w.flush().expect("flush");
        }
        out
    }

    #[test]
    fn no_options_is_the_default() {
        assert_eq!(
            RuntimeOptions::decode("", &[]).expect("empty"),
            RuntimeOptions::default()
        );
    }

    #[test]
    fn runc_options_are_read() {
        let o = RuncOptions {
            systemd_cgroup: true,
            shim_cgroup: "/podruntime/shims".into(),
            ..Default::default()
        };
        let bytes = o.write_to_bytes().expect("encode");
        let got = RuntimeOptions::decode("containerd.runc.v1.Options", &bytes).expect("decode");
        assert!(got.systemd_cgroup);
        assert_eq!(got.shim_cgroup.as_deref(), Some("/podruntime/shims"));
    }

    #[test]
    fn legacy_create_options_give_the_shim_cgroup() {
        let mut out = Vec::new();
        {
            let mut w = CodedOutputStream::vec(&mut out);
            w.write_bool(1, true).expect("no_pivot_root");
            w.write_string(6, "network").expect("empty_namespaces");
            w.write_string(9, "/shims").expect("shim_cgroup");
            w.write_uint32(10, 100000).expect("io_uid");
            w.write_uint32(11, 100000).expect("io_gid");
            w.flush().expect("flush");
        }
        let got =
            RuntimeOptions::decode("containerd.linux.runc.CreateOptions", &out).expect("decode");
        assert_eq!(got.shim_cgroup.as_deref(), Some("/shims"));
        assert!(!got.systemd_cgroup);
        let err =
            RuntimeOptions::decode("containerd.linux.runc.CreateOptions", &[0x4a, 0x05, b'x'])
                .expect_err("truncated");
        assert!(
            err.to_string()
                .contains("undecodable containerd.linux.runc.CreateOptions"),
            "{err}"
        );
    }

    #[test]
    fn cri_config_body_carries_runc_names() {
        let bytes = runtime_options("", "SystemdCgroup = true\nBinaryName = \"x\"\n");
        let got = RuntimeOptions::decode("runtimeoptions.v1.Options", &bytes).expect("decode");
        assert!(got.systemd_cgroup);
        assert_eq!(got.shim_cgroup, None);
        let off = runtime_options("", "SystemdCgroup = false\n");
        assert!(
            !RuntimeOptions::decode("type.googleapis.com/runtimeoptions.v1.Options", &off)
                .expect("decode")
                .systemd_cgroup
        );
    }

    #[test]
    fn docker_config_path_is_read() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = tmp.path().join("opts.toml");
        std::fs::write(&f, "socket = \"/x\"\nSystemdCgroup = true\n").expect("write");
        let bytes = runtime_options(&f.to_string_lossy(), "");
        assert!(
            RuntimeOptions::decode("runtimeoptions.v1.Options", &bytes)
                .expect("decode")
                .systemd_cgroup
        );
        let missing = runtime_options("/nonexistent/opts.toml", "");
        let e = RuntimeOptions::decode("runtimeoptions.v1.Options", &missing)
            .expect_err("missing file");
        assert!(e.to_string().contains("/nonexistent/opts.toml"), "{e}");
    }

    #[test]
    fn bad_options_name_what_is_wrong() {
        let e = RuntimeOptions::decode("example.v1.Other", b"x").expect_err("unknown type");
        assert!(e.to_string().contains("example.v1.Other"), "{e}");
        let bytes = runtime_options("", "SystemdCgroup = \"yes\"\n");
        let e =
            RuntimeOptions::decode("runtimeoptions.v1.Options", &bytes).expect_err("not a bool");
        assert!(e.to_string().contains("SystemdCgroup"), "{e}");
        let e = RuntimeOptions::decode("runtimeoptions.v1.Options", &[0x1a, 0x05, 0x01])
            .expect_err("truncated");
        assert!(e.to_string().contains("undecodable"), "{e}");
        let bytes = runtime_options("", "not = [toml");
        assert!(RuntimeOptions::decode("runtimeoptions.v1.Options", &bytes).is_err());
    }
}
