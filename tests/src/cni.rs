//! A CNI bridge network for tests, set up the way containerd's CRI plugin and nerdctl do it: a named network
//! namespace per container (`ip netns add`), the `bridge` plugin with `host-local` IPAM from Debian's
//! containernetworking-plugins run with `CNI_COMMAND=ADD` on it, and the container run with that namespace
//! (`ctr run --with-ns network:/var/run/netns/NAME`). Everything is removed on drop: the plugins' `DEL`, the
//! namespaces, the bridge and the IPAM state.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where Debian's containernetworking-plugins installs the plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// One container's attachment.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The namespace's name (`/var/run/netns/NAME`).
    pub netns: String,
    /// The container's address.
    pub ip: Ipv4Addr,
    /// The host side of its veth pair.
    pub host_veth: String,
}

impl Attachment {
    /// The namespace file, for `ctr run --with-ns network:PATH`.
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.netns)
    }

    /// Bytes the container has sent: what the host side of its veth received.
    pub fn sent_bytes(&self) -> Option<u64> {
        self.host_counter("rx_bytes")
    }

    /// Bytes the container has received: what the host side of its veth sent.
    pub fn received_bytes(&self) -> Option<u64> {
        self.host_counter("tx_bytes")
    }

    fn host_counter(&self, name: &str) -> Option<u64> {
        std::fs::read_to_string(format!(
            "/sys/class/net/{}/statistics/{name}",
            self.host_veth
        ))
        .ok()?
        .trim()
        .parse()
        .ok()
    }
}

/// A bridge with its own subnet and IPAM state.
pub struct CniBridge {
    name: String,
    bridge: String,
    subnet_octet: u8,
    dir: PathBuf,
    attached: Vec<Attachment>,
}

impl CniBridge {
    /// A bridge of this test process, or why not (no plugins).
    pub fn create() -> Result<Self, String> {
        for p in ["bridge", "host-local"] {
            if !Path::new(CNI_BIN_DIR).join(p).is_file() {
                return Err(format!(
                    "{CNI_BIN_DIR}/{p} missing (apt-get install containernetworking-plugins)"
                ));
            }
        }
        let me = std::process::id();
        let dir = std::env::temp_dir().join(format!("pe2e-cni-{me}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Self {
            name: format!("pe2e{me}"),
            bridge: format!("pe2b{}", me % 100_000),
            // 10.213.<n>.0/24, n from the pid: tests in parallel processes get different subnets.
            subnet_octet: (me % 250) as u8 + 1,
            dir,
            attached: Vec::new(),
        })
    }

    /// A directory of the test's, removed with the bridge.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bridge's own address: the gateway, reachable from every container on it.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet_octet, 1)
    }

    fn config(&self) -> String {
        serde_json::json!({
            "cniVersion": "0.4.0",
            "name": self.name,
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "subnet": format!("10.213.{}.0/24", self.subnet_octet),
                "dataDir": self.dir.join("ipam"),
            }
        })
        .to_string()
    }

    fn plugin(&self, command: &str, netns: &str) -> Result<String, String> {
        let mut child = Command::new(Path::new(CNI_BIN_DIR).join("bridge"))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", netns)
            .env("CNI_NETNS", format!("/var/run/netns/{netns}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", CNI_BIN_DIR)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running the bridge plugin: {e}"))?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(self.config().as_bytes())
            .map_err(|e| format!("writing the CNI config: {e}"))?;
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting on the bridge plugin: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!(
                "CNI {command} {netns}: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(stdout)
    }

    /// A new namespace `NAME-<suffix>` attached to the bridge.
    pub fn attach(&mut self, suffix: &str) -> Result<Attachment, String> {
        let netns = format!("{}-{suffix}", self.name);
        ip(&["netns", "add", &netns])?;
        let out = match self.plugin("ADD", &netns) {
            Ok(o) => o,
            Err(e) => {
                let _ = ip(&["netns", "del", &netns]);
                return Err(e);
            }
        };
        let v: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("CNI result {out:?}: {e}"))?;
        let host_veth = v["interfaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["sandbox"].is_null() && i["name"].as_str() != Some(self.bridge.as_str()))
            .and_then(|i| i["name"].as_str())
            .ok_or_else(|| format!("no host veth in the CNI result {out}"))?
            .to_owned();
        let ip = v["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("no address in the CNI result {out}"))?;
        let a = Attachment {
            netns,
            ip,
            host_veth,
        };
        self.attached.push(a.clone());
        Ok(a)
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Drop for CniBridge {
    fn drop(&mut self) {
        for a in std::mem::take(&mut self.attached) {
            if let Err(e) = self.plugin("DEL", &a.netns) {
                eprintln!("cleanup: {e}");
            }
            let _ = ip(&["netns", "del", &a.netns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
