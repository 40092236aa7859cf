#![allow(clippy::unwrap_used)]

use super::*;

fn temp_state(tag: &str) -> StateDir {
    let dir = std::env::temp_dir().join(format!("keel-stack-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    StateDir::resolve(Some(&dir)).unwrap()
}

#[test]
fn host_port_parsing() {
    assert_eq!(
        split_host_port("127.0.0.1:7233"),
        Some(("127.0.0.1".to_string(), 7233))
    );
    assert_eq!(
        split_host_port("http://localhost:80/"),
        Some(("localhost".to_string(), 80))
    );
    assert_eq!(split_host_port("[::1]:9"), Some(("::1".to_string(), 9)));
    assert_eq!(split_host_port("127.0.0.1:0"), None);
    assert_eq!(split_host_port("127.0.0.1"), None);
    assert_eq!(split_host_port(":80"), None);
    assert_eq!(split_host_port("h:99999"), None);
}

#[test]
fn only_loopback_hosts_are_started_locally() {
    assert_eq!(local_bind_ip("127.0.0.1").as_deref(), Some("127.0.0.1"));
    assert_eq!(local_bind_ip("localhost").as_deref(), Some("127.0.0.1"));
    assert_eq!(local_bind_ip("::1").as_deref(), Some("::1"));
    assert_eq!(local_bind_ip("10.0.0.1"), None);
    assert_eq!(local_bind_ip("temporal.example.com"), None);
}

#[test]
fn cmdline_matching() {
    assert!(cmdline_runs(
        b"/work/target/debug/keel-worker\0--listen\x00127.0.0.1:0\0",
        "keel-worker"
    ));
    assert!(cmdline_runs(
        b"/usr/bin/python3\0/usr/local/bin/temporal\0server\0start-dev\0",
        "temporal"
    ));
    assert!(!cmdline_runs(b"/usr/bin/vim\0notes.txt\0", "keel-worker"));
    assert!(comm_runs("keel-session-ap", "keel-session-api"));
    assert!(comm_runs("sleep", "sleep"));
    assert!(!comm_runs("slee", "sleep"));
    assert!(!comm_runs("", "sleep"));
    assert!(!cmdline_runs(
        b"/bin/sh\0-c\0sleep 1\0keel-worker\0",
        "keel-worker"
    ));
}

#[test]
fn liveness() {
    assert!(is_alive(std::process::id() as i32));
    assert!(!is_alive(0));
    assert!(!is_alive(-1));
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    // Exited but not yet reaped: a zombie counts as dead.
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!is_alive(pid));
    child.wait().unwrap();
    assert!(!is_alive(pid));
}

#[tokio::test]
async fn stop_process_terminates_a_process_group() {
    let child = Command::new("sleep")
        .arg("30")
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    assert!(runs(pid, "sleep"));
    stop_process(pid, "sleep").await.unwrap();
    assert!(!is_alive(pid));
    drop(child);
}

#[tokio::test]
async fn status_with_nothing_running() {
    let state = temp_state("status");
    // A port nothing listens on: bind, read, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stack = Stack::new(state.clone(), Some(format!("127.0.0.1:{port}")));
    let statuses = stack.status().await;
    let json = status_json(&statuses);
    let object = json.as_object().unwrap();
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "mcp-broker",
            "model-proxy",
            "session-api",
            "temporal",
            "tool-runner",
            "worker"
        ]
    );
    assert_eq!(
        object["temporal"],
        json!({"address": format!("127.0.0.1:{port}"), "pid": null, "healthy": false})
    );
    for name in [
        "session-api",
        "model-proxy",
        "tool-runner",
        "mcp-broker",
        "worker",
    ] {
        assert_eq!(
            object[name],
            json!({"address": null, "pid": null, "healthy": false}),
            "{name}"
        );
    }
    let table = status_table(&statuses);
    assert!(table.starts_with("COMPONENT"), "{table}");
    assert!(table.contains("worker"), "{table}");
    assert!(table.contains("stopped"), "{table}");
}

#[tokio::test]
async fn status_ignores_a_stale_pid_and_reports_a_recorded_address() {
    let state = temp_state("stale");
    state.create_dirs().unwrap();
    // A pid that is alive but is not the worker must not be reported.
    std::fs::write(state.pid_file("worker"), std::process::id().to_string()).unwrap();
    std::fs::write(state.addr_file("worker"), "127.0.0.1:1").unwrap();
    let stack = Stack::new(state.clone(), Some("127.0.0.1:1".to_string()));
    let statuses = stack.status().await;
    let worker = statuses
        .iter()
        .find(|s| s.component == Component::Worker)
        .unwrap();
    assert_eq!(worker.pid, None);
    assert_eq!(worker.address.as_deref(), Some("127.0.0.1:1"));
    assert!(!worker.healthy);
    std::fs::remove_dir_all(state.root()).unwrap();
}

#[tokio::test]
async fn down_with_nothing_running_is_harmless() {
    let state = temp_state("down");
    let stack = Stack::new(state.clone(), None);
    stack.down().await.unwrap();
    state.create_dirs().unwrap();
    stack.down().await.unwrap();
    // Stale files are cleaned up without signalling anything.
    std::fs::write(state.pid_file("worker"), std::process::id().to_string()).unwrap();
    std::fs::write(state.addr_file("worker"), "127.0.0.1:1").unwrap();
    stack.down().await.unwrap();
    assert!(!state.pid_file("worker").exists());
    assert!(!state.addr_file("worker").exists());
    assert!(is_alive(std::process::id() as i32));
    std::fs::remove_dir_all(state.root()).unwrap();
}

#[tokio::test]
async fn health_checks() {
    let (reporter, service) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let timeout = Duration::from_secs(2);
    assert!(grpc_healthy(&addr, timeout).await);
    // Not Temporal: the WorkflowService is unknown there.
    assert!(!temporal_answers(&addr, timeout).await);
    reporter
        .set_service_status(
            TEMPORAL_HEALTH_SERVICE,
            tonic_health::ServingStatus::Serving,
        )
        .await;
    assert!(temporal_answers(&addr, timeout).await);
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    assert!(!grpc_healthy(&addr, timeout).await);
    // Something that is not gRPC, and nothing at all.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_addr = plain.local_addr().unwrap().to_string();
    assert!(!grpc_healthy(&plain_addr, Duration::from_millis(300)).await);
    drop(plain);
    assert!(!grpc_healthy(&plain_addr, timeout).await);
    assert!(!grpc_healthy("not an address", timeout).await);
}

#[test]
fn temporal_address_precedence() {
    let state = temp_state("precedence");
    state.create_dirs().unwrap();
    let stack = Stack::new(state.clone(), None);
    assert_eq!(stack.temporal_address(), DEFAULT_TEMPORAL_ADDRESS);
    std::fs::write(state.addr_file("temporal"), "127.0.0.1:9999").unwrap();
    assert_eq!(stack.temporal_address(), "127.0.0.1:9999");
    let stack = Stack::new(state.clone(), Some("http://127.0.0.1:8888".to_string()));
    assert_eq!(stack.temporal_address(), "127.0.0.1:8888");
    let stack = Stack::new(state.clone(), Some("  ".to_string()));
    assert_eq!(stack.temporal_address(), "127.0.0.1:9999");
    std::fs::remove_dir_all(state.root()).unwrap();
}

#[test]
fn log_tail_keeps_the_last_lines() {
    let state = temp_state("tail");
    state.create_dirs().unwrap();
    let path = state.log_file("worker");
    let text: String = (1..=50).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&path, text).unwrap();
    let tail = log_tail(&path, 3);
    assert_eq!(tail, "line 48\nline 49\nline 50");
    let runs = format!("{LOG_HEADER}1\nold failure\n\n{LOG_HEADER}2\nnew failure\n");
    std::fs::write(&path, runs).unwrap();
    assert_eq!(log_tail(&path, 20), format!("{LOG_HEADER}2\nnew failure"));
    assert_eq!(log_tail(&state.log_file("missing"), 3), "");
    std::fs::remove_dir_all(state.root()).unwrap();
}

#[test]
fn model_credentials_go_only_to_the_model_proxy() {
    let stack = Stack::new(temp_state("env"), None);
    for component in Component::START_ORDER {
        let command = stack.command(component, Path::new("/bin/true"), &[]);
        let removed: Vec<String> = command
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(key, _)| key.to_string_lossy().into_owned())
            .collect();
        if component == Component::ModelProxy {
            assert!(removed.is_empty(), "{removed:?}");
        } else {
            let mut expected = MODEL_ENV.to_vec();
            expected.sort_unstable();
            assert_eq!(removed, expected, "{}", component.name());
        }
    }
}

#[test]
fn service_arguments() {
    let state = temp_state("args");
    let stack = Stack::new(state.clone(), None);
    let addrs = HashMap::from([
        (Component::Temporal, "127.0.0.1:7233".to_string()),
        (Component::ModelProxy, "127.0.0.1:1001".to_string()),
        (Component::ToolRunner, "127.0.0.1:1002".to_string()),
        (Component::McpBroker, "127.0.0.1:1003".to_string()),
        (Component::SessionApi, "127.0.0.1:1004".to_string()),
    ]);
    let root = state.root().display().to_string();
    let worker = stack
        .service_args(Component::Worker, &addrs)
        .unwrap()
        .join(" ");
    assert_eq!(
        worker,
        format!(
            "--listen 127.0.0.1:0 --addr-file {root}/run/worker.addr \
             --temporal-address 127.0.0.1:7233 --namespace default --task-queue keel-agent \
             --model-proxy 127.0.0.1:1001 --tool-runner 127.0.0.1:1002 --mcp-broker 127.0.0.1:1003 \
             --session-api 127.0.0.1:1004 \
             --tls-cert {root}/tls/worker.pem --tls-key {root}/tls/worker.key --tls-ca {root}/tls/ca.pem"
        )
    );
    let api = stack
        .service_args(Component::SessionApi, &addrs)
        .unwrap()
        .join(" ");
    assert_eq!(
        api,
        format!(
            "--listen 127.0.0.1:0 --addr-file {root}/run/session-api.addr \
             --temporal-address 127.0.0.1:7233 --namespace default --task-queue keel-agent \
             --blob-url file://{root}/blobs \
             --internal-listen 127.0.0.1:0 --internal-addr-file {root}/run/session-api.internal.addr \
             --tokens-file {root}/tokens.toml \
             --tls-cert {root}/tls/server.pem --tls-key {root}/tls/server.key --tls-ca {root}/tls/ca.pem"
        )
    );
    let proxy = stack
        .service_args(Component::ModelProxy, &addrs)
        .unwrap()
        .join(" ");
    assert_eq!(
        proxy,
        format!(
            "--listen 127.0.0.1:0 --addr-file {root}/run/model-proxy.addr \
             --blob-url file://{root}/blobs \
             --tls-cert {root}/tls/server.pem --tls-key {root}/tls/server.key --tls-ca {root}/tls/ca.pem"
        )
    );
    let broker = stack
        .service_args(Component::McpBroker, &addrs)
        .unwrap()
        .join(" ");
    assert_eq!(
        broker,
        format!(
            "--listen 127.0.0.1:0 --addr-file {root}/run/mcp-broker.addr \
             --blob-url file://{root}/blobs \
             --tls-cert {root}/tls/server.pem --tls-key {root}/tls/server.key --tls-ca {root}/tls/ca.pem"
        )
    );
    assert!(
        stack
            .service_args(Component::Worker, &HashMap::new())
            .is_err()
    );
}
