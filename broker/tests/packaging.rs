//! packaging/: the example configuration documents the true defaults; install.sh into a DESTDIR is idempotent and
//! undoes itself; the .deb (cargo-deb, from the release binaries `make build` left next to this test) lists its
//! files and conffiles and installs into a scratch root. Nothing is installed on the real system.
//!
//! The .deb test needs the release binaries and cargo-deb (`scripts/deps.sh` installs it); without them it says
//! `SKIPPED: <reason>` and fails under CI (`testkit`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the broker crate sits in the workspace")
        .to_owned()
}

/// The target directory this test was built in: `<target>/<profile>/deps/<test>`.
fn target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.to_owned())
}

const BINS: [&str; 3] = [
    "containerd-shim-predictive-v2",
    "predictived",
    "predictivectl",
];

fn skip(why: &str) {
    testkit::skip("deb_lists_its_files_and_installs_into_a_scratch_root", why);
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn example_config_is_the_defaults() {
    let path = workspace().join("packaging/predictived.toml");
    let text = std::fs::read_to_string(&path).expect("packaging/predictived.toml");
    let cfg = broker::config::Config::parse(&text, &path).expect("the example parses");
    assert_eq!(cfg, broker::config::Config::default());
    // Every commented-out key is a real key: uncommented, the file still parses.
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.contains(" = ") => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let cfg = broker::config::Config::parse(&uncommented, &path).expect("uncommented parses");
    assert_eq!(cfg.metrics.listen.as_deref(), Some("127.0.0.1:9464"));
    assert_eq!(cfg.allowed_gid, Some(1001));
}

#[test]
fn install_script_is_idempotent_and_uninstalls() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bindir = tmp.path().join("bin");
    std::fs::create_dir(&bindir).expect("bindir");
    for b in BINS {
        std::fs::write(bindir.join(b), format!("#!/bin/sh\necho {b}\n")).expect("fake binary");
        run(Command::new("chmod").arg("755").arg(bindir.join(b)));
    }
    let dest = tmp.path().join("root");
    let script = workspace().join("packaging/install.sh");
    let install_for = |args: &[&str], config_version: &str| {
        stdout(&run(Command::new(&script)
            .args(args)
            .env("DESTDIR", &dest)
            .env("PREFIX", "/usr")
            .env("BINDIR", &bindir)
            .env("CONTAINERD_CONFIG_VERSION", config_version)))
    };
    let install = |args: &[&str]| install_for(args, "3");
    let first = install(&[]);
    for f in [
        "usr/bin/containerd-shim-predictive-v2",
        "usr/bin/predictived",
        "usr/bin/predictivectl",
        "lib/systemd/system/predictived.service",
        "etc/predictive/predictived.toml",
        "etc/containerd/conf.d/predictive.toml",
        "usr/share/predictive/containerd/predictive-v2.toml",
        "usr/share/predictive/containerd/predictive-v3.toml",
    ] {
        assert!(dest.join(f).is_file(), "{f} not installed:\n{first}");
    }
    // containerd 2.x gets the version-3 drop-in (it ignores a version-2 file's CRI tables).
    let dropin = dest.join("etc/containerd/conf.d/predictive.toml");
    let shipped = |name: &str| {
        std::fs::read_to_string(workspace().join("packaging/containerd").join(name))
            .expect("drop-in")
    };
    assert_eq!(
        std::fs::read_to_string(&dropin).expect("drop-in"),
        shipped("predictive-v3.toml")
    );
    let unit =
        std::fs::read_to_string(dest.join("lib/systemd/system/predictived.service")).expect("unit");
    assert!(unit.contains("ExecStart=/usr/bin/predictived"), "{unit}");
    let second = install(&[]);
    assert!(
        second.lines().all(|l| l.starts_with("unchanged ")),
        "a second install changes nothing:\n{second}"
    );
    // An edited configuration survives an uninstall; the rest goes.
    let conf = dest.join("etc/predictive/predictived.toml");
    std::fs::write(&conf, "tick_ms = 500\n").expect("edit");
    let out = install(&["--uninstall"]);
    assert!(conf.is_file() && out.contains("kept"), "{out}");
    for f in [
        "usr/bin/predictived",
        "lib/systemd/system/predictived.service",
        "etc/containerd/conf.d/predictive.toml",
    ] {
        assert!(!dest.join(f).exists(), "{f} left behind:\n{out}");
    }
    // containerd 1.6/1.7 get the version-2 one; uninstall removes it too.
    install_for(&[], "2");
    assert_eq!(
        std::fs::read_to_string(&dropin).expect("drop-in"),
        shipped("predictive.toml")
    );
    let out = install_for(&["--uninstall"], "2");
    assert!(!dropin.exists(), "version-2 drop-in left behind:\n{out}");
    let bad = Command::new(&script)
        .env("CONTAINERD_CONFIG_VERSION", "4")
        .env("DESTDIR", &dest)
        .env("BINDIR", &bindir)
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("CONTAINERD_CONFIG_VERSION must be 2 or 3")
    );
    let bad = Command::new(&script).arg("--bogus").output().expect("run");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown argument --bogus"));
}

#[test]
fn deb_lists_its_files_and_installs_into_a_scratch_root() {
    let Some(target) = target_dir() else {
        return skip("cannot tell the target directory from the test binary's path");
    };
    let release = target.join("release");
    if let Some(b) = BINS.iter().find(|b| !release.join(b).is_file()) {
        return skip(&format!(
            "{} is missing: `cargo build --release --workspace` (make build) first",
            release.join(b).display()
        ));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    if !Command::new(&cargo)
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return skip("cargo-deb is not installed (scripts/deps.sh installs it)");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let deb = tmp.path().join("predictive.deb");
    run(Command::new(&cargo)
        .args(["deb", "-p", "broker", "--no-build", "--fast", "--output"])
        .arg(&deb)
        .current_dir(workspace())
        .env("CARGO_TARGET_DIR", &target));

    let info = stdout(&run(Command::new("dpkg-deb").arg("--info").arg(&deb)));
    for needle in ["Package: predictive", "Depends: libc6", "conffiles"] {
        assert!(info.contains(needle), "--info lacks {needle:?}:\n{info}");
    }
    let conffiles = stdout(&run(Command::new("dpkg-deb")
        .arg("--info")
        .arg(&deb)
        .arg("conffiles")));
    for c in [
        "/etc/predictive/predictived.toml",
        "/etc/containerd/conf.d/predictive.toml",
    ] {
        assert!(conffiles.contains(c), "{c} is not a conffile:\n{conffiles}");
    }
    let contents = stdout(&run(Command::new("dpkg-deb").arg("--contents").arg(&deb)));
    let files = [
        "./usr/bin/containerd-shim-predictive-v2",
        "./usr/bin/predictived",
        "./usr/bin/predictivectl",
        "./lib/systemd/system/predictived.service",
        "./etc/predictive/predictived.toml",
        "./etc/containerd/conf.d/predictive.toml",
        "./usr/share/predictive/containerd/predictive-v2.toml",
        "./usr/share/predictive/containerd/predictive-v3.toml",
    ];
    for f in files {
        assert!(contents.contains(f), "--contents lacks {f}:\n{contents}");
    }

    // Extracted: the binaries run.
    let x = tmp.path().join("x");
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&x));
    let help = stdout(&run(
        Command::new(x.join("usr/bin/predictivectl")).arg("--help")
    ));
    assert!(help.contains("Usage: predictivectl"), "{help}");
    // conf.d gets the version-3 drop-in: containerd 2.x imports conf.d by default (1.6/1.7 do not, and their users
    // take the version-2 one from /usr/share/predictive/containerd).
    let dropin =
        std::fs::read_to_string(x.join("etc/containerd/conf.d/predictive.toml")).expect("drop-in");
    assert!(dropin.contains("\nversion = 3\n"), "{dropin}");

    // Installed with dpkg into a scratch root with its own database (no maintainer scripts to run), then removed.
    let root = tmp.path().join("root");
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        std::fs::create_dir_all(root.join(d)).expect("dpkg admin dir");
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").expect("status");
    let dpkg = |args: &[&str]| {
        let mut c = Command::new("dpkg");
        c.arg(format!("--root={}", root.display()))
            .args(["--force-depends", "--force-not-root", "--log=/dev/null"])
            .args(args);
        c
    };
    run(dpkg(&["-i"]).arg(&deb));
    for f in files {
        assert!(
            root.join(f).is_file(),
            "{f} not installed in the scratch root"
        );
    }
    let listed = stdout(&run(&mut dpkg(&["-L", "predictive"])));
    assert!(listed.contains("/usr/bin/predictived"), "{listed}");
    run(&mut dpkg(&["-r", "predictive"]));
    assert!(!root.join("usr/bin/predictived").exists());
    assert!(
        root.join("etc/predictive/predictived.toml").is_file(),
        "remove keeps conffiles"
    );
    run(&mut dpkg(&["-P", "predictive"]));
    assert!(
        !root.join("etc/predictive/predictived.toml").exists(),
        "purge removes them"
    );
    eprintln!(
        "deb: {} bytes (--fast compression)",
        std::fs::metadata(&deb).map(|m| m.len()).unwrap_or(0)
    );
}
