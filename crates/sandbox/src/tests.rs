//! Policies, writable roots and the tool-runner's own write check, on real
//! temporary directories. What the kernel enforces is tested through the
//! binary (tests/sandbox.rs).

use std::fs;

use super::*;

fn workspace_write() -> SandboxPolicy {
    SandboxPolicy {
        exclude_slash_tmp: true,
        exclude_tmpdir_env_var: true,
        ..SandboxPolicy::new(SandboxMode::WorkspaceWrite)
    }
}

#[test]
fn unset_and_unspecified_take_the_default() {
    let default = SandboxPolicy::new(SandboxMode::ReadOnly);
    assert_eq!(SandboxPolicy::from_proto(None, &default).unwrap(), default);
    let unspecified = proto::SandboxPolicy {
        network_access: true,
        ..Default::default()
    };
    assert_eq!(
        SandboxPolicy::from_proto(Some(&unspecified), &default).unwrap(),
        default
    );
    let ws = proto::SandboxPolicy {
        mode: proto::SandboxMode::WorkspaceWrite.into(),
        writable_roots: vec!["/data".into()],
        network_access: true,
        ..Default::default()
    };
    let got = SandboxPolicy::from_proto(Some(&ws), &default).unwrap();
    assert_eq!(got.mode, SandboxMode::WorkspaceWrite);
    assert_eq!(got.writable_roots, [PathBuf::from("/data")]);
    assert!(!got.restricts_network());
    let bad = proto::SandboxPolicy {
        mode: 42,
        ..Default::default()
    };
    assert_eq!(
        SandboxPolicy::from_proto(Some(&bad), &default),
        Err(SandboxError::UnknownMode(42))
    );
    let relative = proto::SandboxPolicy {
        mode: proto::SandboxMode::WorkspaceWrite.into(),
        writable_roots: vec!["data".into()],
        ..Default::default()
    };
    assert!(SandboxPolicy::from_proto(Some(&relative), &default).is_err());
}

#[test]
fn mode_names_parse() {
    for mode in [
        SandboxMode::ReadOnly,
        SandboxMode::WorkspaceWrite,
        SandboxMode::DangerFullAccess,
    ] {
        assert_eq!(mode.as_str().parse::<SandboxMode>().unwrap(), mode);
    }
    assert!("full".parse::<SandboxMode>().is_err());
}

#[test]
fn writable_roots_protect_git_agents_and_codex() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = fs::canonicalize(tmp.path()).unwrap();
    fs::create_dir(cwd.join(".git")).unwrap();
    fs::create_dir(cwd.join(".agents")).unwrap();
    let extra = cwd.join("extra");
    fs::create_dir_all(extra.join("wt")).unwrap();
    let gitdir = cwd.join(".git/worktrees/wt");
    fs::create_dir_all(&gitdir).unwrap();
    fs::write(
        extra.join(".git"),
        format!("gitdir: {}\n", gitdir.display()),
    )
    .unwrap();
    let policy = SandboxPolicy {
        writable_roots: vec![extra.clone(), cwd.join("missing")],
        ..workspace_write()
    };
    let roots = policy.writable_roots(&cwd, None);
    assert_eq!(
        roots,
        [
            WritableRoot {
                root: extra.clone(),
                read_only_subpaths: vec![gitdir.clone(), extra.join(".git")],
            },
            WritableRoot {
                root: cwd.clone(),
                read_only_subpaths: vec![cwd.join(".git"), cwd.join(".agents"), cwd.join(".codex")],
            },
        ]
    );
    assert!(roots[1].allows(&cwd.join("src/main.rs")));
    assert!(!roots[1].allows(&cwd.join(".git/config")));
    assert!(!roots[1].allows(&cwd.join(".codex/config.toml")));
    assert!(!roots[1].allows(Path::new("/etc/passwd")));
    // Read-only and danger-full-access have no writable roots to report.
    assert!(
        SandboxPolicy::new(SandboxMode::ReadOnly)
            .writable_roots(&cwd, None)
            .is_empty()
    );
}

#[test]
fn temp_directories_are_roots_unless_excluded() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = fs::canonicalize(tmp.path()).unwrap();
    let tmpdir = cwd.join("t");
    fs::create_dir(&tmpdir).unwrap();
    let policy = SandboxPolicy::new(SandboxMode::WorkspaceWrite);
    let roots: Vec<PathBuf> = policy
        .writable_roots(&cwd, Some(&tmpdir))
        .into_iter()
        .map(|r| r.root)
        .collect();
    assert!(roots.contains(&PathBuf::from("/tmp")), "{roots:?}");
    assert!(roots.contains(&tmpdir), "{roots:?}");
    let roots = workspace_write().writable_roots(&cwd, Some(&tmpdir));
    assert_eq!(roots.len(), 1);
}

#[test]
fn the_write_check_resolves_links_and_dot_dot() {
    let tmp = tempfile::tempdir().unwrap();
    let base = fs::canonicalize(tmp.path()).unwrap();
    let cwd = base.join("cwd");
    let outside = base.join("outside");
    fs::create_dir_all(cwd.join(".git")).unwrap();
    fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, cwd.join("link")).unwrap();
    let sandbox = CallSandbox::new(workspace_write(), &cwd, None, false);
    sandbox
        .check_write(&cwd, Path::new("new/file.txt"))
        .unwrap();
    for path in ["../outside/x", "link/x", "/etc/x"] {
        let err = sandbox.check_write(&cwd, Path::new(path)).unwrap_err();
        assert!(err.contains("outside the writable roots"), "{path}: {err}");
        assert!(err.contains("sandbox"), "{err}");
    }
    let err = sandbox
        .check_write(&cwd, Path::new(".git/config"))
        .unwrap_err();
    assert!(err.contains("protected path"), "{err}");
    let read_only = CallSandbox::new(SandboxPolicy::new(SandboxMode::ReadOnly), &cwd, None, false);
    let err = read_only.check_write(&cwd, Path::new("a.txt")).unwrap_err();
    assert!(err.contains("read-only sandbox"), "{err}");
    CallSandbox::unrestricted()
        .check_write(&cwd, Path::new("/etc/x"))
        .unwrap();
    assert!(CallSandbox::unrestricted().confinement().is_none());
    let confinement = sandbox.confinement().unwrap();
    assert!(confinement.restrict_network);
    assert_eq!(confinement.writable.len(), 1);
}

fn full_report() -> helper::ProbeReport {
    helper::ProbeReport {
        landlock_abi: 7,
        landlock_enforced: true,
        mounts_enforced: true,
        hidden_enforced: true,
        processes_isolated: true,
        devices_minimal: true,
        capabilities_dropped: true,
        seccomp_enforced: true,
        network_refused: true,
        ..Default::default()
    }
}

fn settings(report: &helper::ProbeReport, allow_partial: bool) -> SandboxSettings {
    SandboxSettings {
        default_policy: SandboxPolicy::new(SandboxMode::WorkspaceWrite),
        allow_partial,
        hidden_paths: Vec::new(),
        status: status::SandboxStatus::from_report(report),
    }
}

#[test]
fn a_complete_host_refuses_nothing() {
    let status = status::SandboxStatus::from_report(&full_report());
    assert!(status.complete());
    assert!(status.filesystem_enforced && status.network_enforced);
    assert!(status.protected_paths_enforced && status.processes_isolated);
    assert!(status.hidden_paths_enforced && status.privileges_dropped);
    assert_eq!(
        status.mechanism,
        "landlock abi 7, mount namespace, hidden paths, pid namespace, minimal /dev, reduced capabilities, seccomp"
    );
    assert_eq!(status.detail(), "");
    let settings = settings(&full_report(), false);
    for mode in [SandboxMode::ReadOnly, SandboxMode::WorkspaceWrite] {
        assert!(settings.refusal(&SandboxPolicy::new(mode)).is_none());
    }
}

/// Every part of the sandbox counts: a sandboxed call is refused by
/// default when any is missing, the network only when the policy turns it
/// off.
#[test]
fn enforcement_is_required_by_default() {
    type Break = fn(&mut helper::ProbeReport);
    let parts: [(&str, Break); 7] = [
        ("filesystem restrictions", |r| r.landlock_enforced = false),
        ("protected paths", |r| r.mounts_enforced = false),
        ("hidden paths", |r| r.hidden_enforced = false),
        ("other processes", |r| r.processes_isolated = false),
        ("minimal /dev", |r| r.devices_minimal = false),
        ("capabilities", |r| r.capabilities_dropped = false),
        ("seccomp", |r| r.seccomp_enforced = false),
    ];
    for (what, break_it) in parts {
        let mut report = full_report();
        break_it(&mut report);
        let strict = settings(&report, false);
        for mode in [SandboxMode::ReadOnly, SandboxMode::WorkspaceWrite] {
            let refusal = strict
                .refusal(&SandboxPolicy::new(mode))
                .unwrap_or_else(|| panic!("{what} missing, {mode} not refused"));
            assert!(
                refusal.starts_with(&format!(
                    "the {mode} sandbox cannot be enforced on this host ("
                )),
                "{refusal}"
            );
            assert!(refusal.contains(what), "{what}: {refusal}");
        }
        assert!(
            strict
                .refusal(&SandboxPolicy::new(SandboxMode::DangerFullAccess))
                .is_none()
        );
        // The insecure mode runs it anyway.
        assert!(
            settings(&report, true)
                .refusal(&SandboxPolicy::new(SandboxMode::ReadOnly))
                .is_none()
        );
    }

    let mut report = full_report();
    report.network_refused = false;
    let settings = settings(&report, false);
    let refusal = settings
        .refusal(&SandboxPolicy::new(SandboxMode::ReadOnly))
        .unwrap();
    assert!(refusal.contains("network"), "{refusal}");
    let with_network = SandboxPolicy {
        network_access: true,
        ..SandboxPolicy::new(SandboxMode::WorkspaceWrite)
    };
    assert!(settings.refusal(&with_network).is_none());
}

#[test]
fn hidden_paths_are_checked_for_the_cwd_and_patches() {
    let tmp = tempfile::tempdir().unwrap();
    let base = fs::canonicalize(tmp.path()).unwrap();
    let cwd = base.join("cwd");
    let state = cwd.join("state");
    fs::create_dir_all(&state).unwrap();
    let settings = SandboxSettings {
        hidden_paths: vec![state.clone(), base.join("missing")],
        ..settings(&full_report(), false)
    };
    assert_eq!(
        settings.existing_hidden_paths(),
        std::slice::from_ref(&state)
    );
    settings.check_cwd(&cwd).unwrap();
    let err = settings.check_cwd(&state.join("sub")).unwrap_err();
    assert!(err.contains("lies inside"), "{err}");

    let sandbox = CallSandbox::new(workspace_write(), &cwd, None, true)
        .with_hidden(settings.existing_hidden_paths());
    assert_eq!(
        sandbox.confinement().unwrap().hidden,
        std::slice::from_ref(&state)
    );
    let err = sandbox
        .check_write(&cwd, Path::new("state/123-4.process"))
        .unwrap_err();
    assert!(err.contains("sandboxed tools cannot see"), "{err}");
    let err = sandbox
        .check_visible(&cwd, Path::new("state/journal"))
        .unwrap_err();
    assert!(err.starts_with("patch rejected: "), "{err}");
    sandbox.check_write(&cwd, Path::new("src/a.rs")).unwrap();
    CallSandbox::unrestricted()
        .check_visible(&cwd, Path::new("state/x"))
        .unwrap();
}
