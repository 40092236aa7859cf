//! The probe (`keel-tool-runner sandbox-exec --probe DIR`), run once at
//! startup by [`super::status`]: PID 1 of a fresh PID namespace lays out a
//! writable root with a protected path and two hidden paths in DIR,
//! confines itself as a read-only command without network would be
//! (best effort, so that every part gets tried), and then checks what each
//! restriction really does — a claim is only reported when the check
//! passed. The tool-runner removes DIR afterwards.

use std::collections::BTreeSet;
use std::os::unix::fs::FileTypeExt as _;
use std::path::Path;

use super::helper::{ProbeReport, confine};
use super::init::Namespaces;
use super::{Confinement, WritableRoot, caps};

const SECRET: &[u8] = b"probe secret\n";

/// Confines this process (PID 1 of its namespace) and checks the result.
pub(super) fn run(dir: &Path, namespaces: &Namespaces) -> ProbeReport {
    let rw = dir.join("rw");
    let protected = rw.join("protected");
    let hidden_dir = dir.join("hidden");
    let hidden_file = dir.join("hidden-file");
    let laid_out = std::fs::create_dir_all(&protected)
        .and_then(|()| std::fs::create_dir_all(&hidden_dir))
        .and_then(|()| std::fs::write(hidden_dir.join("secret"), SECRET))
        .and_then(|()| std::fs::write(&hidden_file, SECRET));
    if let Err(err) = laid_out {
        return ProbeReport {
            landlock_detail: format!("cannot lay out the probe in {}: {err}", dir.display()),
            ..ProbeReport::default()
        };
    }
    let confinement = Confinement {
        writable: vec![WritableRoot {
            root: rw.clone(),
            read_only_subpaths: vec![protected.clone()],
        }],
        hidden: vec![hidden_dir.clone(), hidden_file.clone()],
        restrict_network: true,
        require: false,
    };
    let mut report = match confine(&confinement, namespaces) {
        Ok(report) => report,
        Err(err) => ProbeReport {
            landlock_detail: err.to_string(),
            ..ProbeReport::default()
        },
    };

    if report.landlock_enforced {
        if std::fs::write(dir.join("outside"), b"x").is_ok() {
            report.landlock_enforced = false;
            report.landlock_detail = "a write outside the writable roots succeeded".into();
        } else if let Err(err) = std::fs::write(rw.join("inside"), b"x") {
            report.landlock_enforced = false;
            report.landlock_detail = format!("a write inside a writable root failed: {err}");
        }
    }
    if report.mounts_enforced && std::fs::write(protected.join("x"), b"x").is_ok() {
        report.mounts_enforced = false;
        report.mounts_detail = "a protected path inside a writable root was writable".into();
    }
    if report.hidden_enforced {
        let listed = std::fs::read_dir(&hidden_dir).map(Iterator::count);
        let read = std::fs::read(&hidden_file).unwrap_or_default();
        if listed.is_ok_and(|n| n > 0) || !read.is_empty() {
            report.hidden_enforced = false;
            report.hidden_detail = "a hidden path's content was still readable".into();
        }
    }
    if report.processes_isolated
        && let Err(detail) = only_this_process()
    {
        report.processes_isolated = false;
        report.processes_detail = detail;
    }
    if report.devices_minimal
        && let Err(detail) = minimal_dev()
    {
        report.devices_minimal = false;
        report.devices_detail = detail;
    }
    if report.capabilities_dropped
        && let Err(detail) = reduced_capabilities()
    {
        report.capabilities_dropped = false;
        report.capabilities_detail = detail;
    }
    if report.seccomp_enforced && status_field("Seccomp").as_deref() != Some("2") {
        report.seccomp_enforced = false;
        report.seccomp_detail = "no seccomp filter in /proc/self/status".into();
    }
    report.network_refused = std::net::TcpListener::bind("127.0.0.1:0").is_err()
        && std::net::UdpSocket::bind("127.0.0.1:0").is_err();
    report
}

/// `/proc` lists this process alone, as PID 1.
fn only_this_process() -> Result<(), String> {
    if std::process::id() != 1 {
        return Err(format!("the probe is pid {}, not 1", std::process::id()));
    }
    let pids: Vec<String> = std::fs::read_dir("/proc")
        .map_err(|err| format!("cannot list /proc: {err}"))?
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    if pids == ["1"] {
        Ok(())
    } else {
        Err(format!("/proc shows other processes: {pids:?}"))
    }
}

/// `/dev` holds no block device and no device but the allowed ones.
fn minimal_dev() -> Result<(), String> {
    let allowed: BTreeSet<&str> = ["null", "zero", "full", "random", "urandom", "tty"].into();
    for entry in std::fs::read_dir("/dev").map_err(|err| format!("cannot list /dev: {err}"))? {
        let entry = entry.map_err(|err| err.to_string())?;
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        if kind.is_block_device() || (kind.is_char_device() && !allowed.contains(name.as_str())) {
            return Err(format!("/dev/{name} is reachable"));
        }
        // A bound device shows as the host's node; check the ones bound
        // (the links lead to this process's own descriptors).
        if !kind.is_symlink()
            && let Ok(meta) = std::fs::metadata(entry.path())
            && (meta.file_type().is_block_device()
                || (meta.file_type().is_char_device() && !allowed.contains(name.as_str())))
        {
            return Err(format!("/dev/{name} is reachable"));
        }
    }
    Ok(())
}

/// No capability set holds anything beyond the kept ones, and the
/// inheritable and ambient sets are empty.
fn reduced_capabilities() -> Result<(), String> {
    let kept = caps::kept_mask();
    for (field, allowed) in [
        ("CapBnd", kept),
        ("CapPrm", kept),
        ("CapEff", kept),
        ("CapInh", 0),
        ("CapAmb", 0),
    ] {
        let value = status_field(field)
            .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
            .ok_or_else(|| format!("no {field} in /proc/self/status"))?;
        if value & !allowed != 0 {
            return Err(format!("{field} is {value:016x}, more than {allowed:016x}"));
        }
    }
    Ok(())
}

/// A field of `/proc/self/status`, trimmed.
fn status_field(name: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim().to_string())
    })
}
