//! Processes (alive, ours, stopped), health probes and log tails.

use super::*;

pub(super) fn report(component: Component, what: &str, addr: &str, pid: Option<i32>) {
    match pid {
        Some(pid) => say(format_args!(
            "{:<12} {what} at {addr} (pid {pid})",
            component.name()
        )),
        None => say(format_args!("{:<12} {what} at {addr}", component.name())),
    }
}

/// Where the Keel binaries are: next to this executable.
pub(super) fn binary_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the keel executable")?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("the keel executable {} has no directory", exe.display()))
}

pub(super) fn child_pid(child: &Child) -> Result<i32> {
    i32::try_from(child.id()).map_err(|_| anyhow!("pid {} out of range", child.id()))
}

/// The first executable called `program` on PATH.
pub(super) fn find_on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// `http://host:port` and `host:port` both mean `host:port`.
pub(crate) fn strip_scheme(addr: &str) -> &str {
    let addr = addr.trim().trim_end_matches('/');
    addr.strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr)
}

/// Splits `host:port` (or `[v6]:port`); the port must not be 0.
pub(super) fn split_host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = strip_scheme(addr).rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// The IP to give `temporal server start-dev --ip` for a host on this
/// machine's loopback; None for anything else.
pub(super) fn local_bind_ip(host: &str) -> Option<String> {
    if host.eq_ignore_ascii_case("localhost") {
        return Some("127.0.0.1".to_string());
    }
    let ip: IpAddr = host.parse().ok()?;
    ip.is_loopback().then(|| ip.to_string())
}

/// Says once, loudly, when the tool-runner cannot enforce the sandbox on
/// this host: sessions will then be asked before each command runs
/// unconfined (or refused under `never`), and the operator should know why.
pub(super) async fn report_sandbox(addr: &str, tls: Option<&Arc<keel_server::ClientTls>>) {
    use keel_proto::v1::GetSandboxStatusRequest;
    use keel_proto::v1::tool_service_client::ToolServiceClient;
    let status = async {
        let channel = keel_server::ClientTls::lazy_channel(tls, strip_scheme(addr), None).ok()?;
        ToolServiceClient::new(channel)
            .get_sandbox_status(GetSandboxStatusRequest {})
            .await
            .ok()
            .map(tonic::Response::into_inner)
    };
    match tokio::time::timeout(Duration::from_secs(10), status).await {
        Ok(Some(status)) if sandbox_complete(&status) => say(format_args!(
            "{:<12} sandbox enforced ({})",
            Component::ToolRunner.name(),
            status.mechanism
        )),
        Ok(Some(status)) => eprintln!(
            "\n!!! WARNING: this host cannot enforce Keel's sandbox ({}).\n\
             !!! Missing: {}\n\
             !!! Sandboxed commands and file tools will not run here: each one is put to you\n\
             !!! as \"run it without the sandbox?\" (refused under --approval-policy never).\n",
            status.mechanism, status.detail
        ),
        _ => eprintln!(
            "\n!!! WARNING: cannot ask the tool-runner at {addr} what sandbox it enforces.\n"
        ),
    }
}

pub(super) fn sandbox_complete(status: &keel_proto::v1::GetSandboxStatusResponse) -> bool {
    status.filesystem_enforced
        && status.network_enforced
        && status.protected_paths_enforced
        && status.processes_isolated
        && status.hidden_paths_enforced
        && status.privileges_dropped
}

/// True when grpc.health.v1 Check for the whole server says SERVING.
#[cfg(test)]
pub(crate) async fn grpc_healthy(addr: &str, timeout: Duration) -> bool {
    serving(addr, "", timeout, None).await
}

/// [`grpc_healthy`], over mutual TLS when `tls` is set.
pub(super) async fn grpc_healthy_as(
    addr: &str,
    timeout: Duration,
    tls: Option<&Arc<keel_server::ClientTls>>,
) -> bool {
    serving(addr, "", timeout, tls).await
}

/// True when Temporal's frontend answers: its health check reports the
/// WorkflowService SERVING. (A bare TCP connect is not enough: a proxy in
/// the way accepts connections for servers that are not there.)
pub(crate) async fn temporal_answers(addr: &str, timeout: Duration) -> bool {
    serving(addr, TEMPORAL_HEALTH_SERVICE, timeout, None).await
}

/// Whether grpc.health.v1 Check for `service` at `addr` says SERVING
/// within `timeout`.
pub(super) async fn serving(
    addr: &str,
    service: &str,
    timeout: Duration,
    tls: Option<&Arc<keel_server::ClientTls>>,
) -> bool {
    let check = async {
        let channel = match tls {
            Some(_) => keel_server::ClientTls::lazy_channel(tls, strip_scheme(addr), None).ok()?,
            None => Channel::from_shared(format!("http://{}", strip_scheme(addr)))
                .ok()?
                .connect_timeout(timeout)
                .connect()
                .await
                .ok()?,
        };
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .ok()?;
        Some(response.into_inner().status == ServingStatus::Serving as i32)
    };
    matches!(tokio::time::timeout(timeout, check).await, Ok(Some(true)))
}

/// True when `pid` is a live (not zombie) process.
pub(super) fn is_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return false,
    }
    // A zombie still accepts signal 0 but is gone for our purposes.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => true,
    }
}

/// True when `pid` is alive and is `program` (so a recycled pid is never
/// signalled). Where /proc is unavailable, liveness alone decides.
pub(super) fn runs(pid: i32, program: &str) -> bool {
    if !is_alive(pid) {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        // Empty while the process is still in exec: its (cut) name is set.
        Ok(cmdline) if cmdline.is_empty() => std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm_runs(comm.trim_end(), program)),
        Ok(cmdline) => cmdline_runs(&cmdline, program),
        Err(_) => !Path::new("/proc/self").exists(),
    }
}

/// The kernel keeps the first 15 bytes of a program's name.
pub(super) fn comm_runs(comm: &str, program: &str) -> bool {
    !comm.is_empty()
        && program.as_bytes().starts_with(comm.as_bytes())
        && (comm.len() >= 15 || comm == program)
}

/// Whether a NUL-separated command line is `program` (directly, or through an
/// interpreter or shim that names it among its first arguments).
pub(super) fn cmdline_runs(cmdline: &[u8], program: &str) -> bool {
    cmdline
        .split(|b| *b == 0)
        .take(3)
        .filter_map(|arg| std::str::from_utf8(arg).ok())
        .any(|arg| Path::new(arg).file_name().is_some_and(|f| f == program))
}

/// SIGTERM to the process group, then SIGKILL if it is still there after
/// [`STOP_GRACE`].
pub(super) async fn stop_process(pid: i32, program: &str) -> Result<()> {
    signal_group(pid, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while is_alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    // Also reaches helpers the component left behind in its group.
    signal_group(pid, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(2);
    while is_alive(pid) {
        if Instant::now() >= deadline {
            bail!("{program} (pid {pid}) did not exit after SIGKILL");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

pub(super) fn signal_group(pid: i32, signal: Signal) {
    // Each component leads its own group (process_group(0) at spawn).
    if killpg(Pid::from_raw(pid), signal).is_err() {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// The last `lines` lines of a log (reading at most its last 64 KiB).
pub(super) fn log_tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if file.seek(SeekFrom::Start(len.saturating_sub(MAX))).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    // Only what the last start wrote (spawn() begins each with a header).
    let text = match text.rfind(LOG_HEADER) {
        Some(start) => &text[start..],
        None => &text[..],
    };
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(super) fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("  {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}
