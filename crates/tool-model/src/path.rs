//! Working directories, resolved without the filesystem.

/// `dir` resolved against the absolute directory `base`, lexically: an
/// absolute `dir` replaces `base`, a relative one is appended, and `.` and
/// `..` are resolved on the text (`..` stops at `/`). `None` or an empty
/// `dir` is `base` itself (normalised too). The tool-runner canonicalises
/// the result and checks it against its workspace before anything runs
/// there; deciding on the lexical form means a `..` cannot make the
/// directory shown to a person differ from the one the text names.
pub fn resolve_dir(base: &str, dir: Option<&str>) -> String {
    let joined = match dir.filter(|d| !d.is_empty()) {
        Some(dir) if dir.starts_with('/') => dir.to_string(),
        Some(dir) => format!("{base}/{dir}"),
        None => base.to_string(),
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_lexically() {
        assert_eq!(resolve_dir("/w", None), "/w");
        assert_eq!(resolve_dir("/w/", Some("")), "/w");
        assert_eq!(resolve_dir("/w", Some("sub")), "/w/sub");
        assert_eq!(resolve_dir("/w", Some("./sub/./x/")), "/w/sub/x");
        assert_eq!(resolve_dir("/w/a", Some("../b")), "/w/b");
        assert_eq!(resolve_dir("/w", Some("../../../../etc")), "/etc");
        assert_eq!(resolve_dir("/w", Some("/tmp//x/..")), "/tmp");
        assert_eq!(resolve_dir("/", Some("..")), "/");
    }
}
