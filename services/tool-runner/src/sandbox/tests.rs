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

#[test]
fn require_refuses_what_the_host_cannot_enforce() {
    let full = helper::ProbeReport {
        landlock_abi: 7,
        landlock_enforced: true,
        mounts_enforced: true,
        seccomp_enforced: true,
        network_refused: true,
        ..Default::default()
    };
    let status = status::SandboxStatus::from_report(&full);
    assert!(status.filesystem_enforced && status.network_enforced);
    assert_eq!(status.mechanism, "landlock abi 7, mount namespace, seccomp");
    assert_eq!(status.detail, "");

    let no_landlock = helper::ProbeReport {
        landlock_enforced: false,
        landlock_detail: "landlock abi 0: writes are not confined".into(),
        ..full
    };
    let status = status::SandboxStatus::from_report(&no_landlock);
    assert!(!status.filesystem_enforced && status.network_enforced);
    assert!(
        status
            .detail
            .contains("filesystem restrictions are not enforced")
    );
    let settings = SandboxSettings {
        default_policy: SandboxPolicy::new(SandboxMode::WorkspaceWrite),
        require: true,
        status,
    };
    let refusal = settings
        .refusal(&SandboxPolicy::new(SandboxMode::ReadOnly))
        .unwrap();
    assert!(refusal.contains("--require-sandbox"), "{refusal}");
    assert!(refusal.contains("read-only"), "{refusal}");
    assert!(
        settings
            .refusal(&SandboxPolicy::new(SandboxMode::DangerFullAccess))
            .is_none()
    );
    let lenient = SandboxSettings {
        require: false,
        ..settings
    };
    assert!(
        lenient
            .refusal(&SandboxPolicy::new(SandboxMode::ReadOnly))
            .is_none()
    );
}
