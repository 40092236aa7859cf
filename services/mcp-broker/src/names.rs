//! The names the model sees for MCP tools: `mcp__<server>__<tool>`,
//! sanitised, unique and at most 64 bytes, chosen deterministically from the
//! raw names (Codex: `codex-rs/codex-mcp/src/mcp_tool_names.rs`). The raw
//! server and tool names are kept beside each name for `tools/call`: a
//! qualified name is never split (a server name holding `__` would make that
//! ambiguous).

use std::collections::{BTreeMap, BTreeSet};

const DELIMITER: &str = "__";
const MAX_NAME_LENGTH: usize = 64;
const HASH_LENGTH: usize = 12;

/// One tool by its raw names, and the name the model calls it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qualified {
    pub server: String,
    pub tool: String,
    pub name: String,
}

/// ASCII letters, digits and `_` stay; every other character becomes `_`;
/// an empty name becomes `_` (Codex: `sanitize_responses_api_tool_name`).
pub fn sanitize(name: &str) -> String {
    if name.is_empty() {
        return "_".into();
    }
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn sha1_hex(s: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, s.as_bytes());
    hex::encode(digest.as_ref())
}

fn hash_suffix(identity: &str) -> String {
    let hash = sha1_hex(identity);
    format!("_{}", &hash[..HASH_LENGTH])
}

fn namespace_with_hash(namespace: &str, identity: &str) -> String {
    match namespace.strip_suffix(DELIMITER) {
        Some(stem) => format!("{stem}{}{DELIMITER}", hash_suffix(identity)),
        None => format!("{namespace}{}", hash_suffix(identity)),
    }
}

fn truncate(value: &str, max: usize) -> String {
    value.chars().take(max).collect()
}

fn fit_with_hash(namespace: &str, tool: &str, identity: &str) -> (String, String) {
    let suffix = hash_suffix(identity);
    let max_tool = MAX_NAME_LENGTH.saturating_sub(namespace.len());
    if max_tool >= suffix.len() {
        let keep = max_tool - suffix.len();
        return (
            namespace.to_string(),
            format!("{}{suffix}", truncate(tool, keep)),
        );
    }
    (truncate(namespace, MAX_NAME_LENGTH - suffix.len()), suffix)
}

fn unique(namespace: &str, tool: &str, identity: &str, used: &mut BTreeSet<String>) -> String {
    let name = format!("{namespace}{tool}");
    if name.len() <= MAX_NAME_LENGTH && used.insert(name.clone()) {
        return name;
    }
    let mut attempt = 0_u32;
    loop {
        let input = if attempt == 0 {
            identity.to_string()
        } else {
            format!("{identity}\0{attempt}")
        };
        let (ns, t) = fit_with_hash(namespace, tool, &input);
        let name = format!("{ns}{t}");
        if used.insert(name.clone()) {
            return name;
        }
        attempt = attempt.saturating_add(1);
    }
}

struct Candidate {
    server: String,
    tool: String,
    namespace_identity: String,
    tool_identity: String,
    namespace: String,
    name: String,
}

/// Names every `(server, tool)`; exact duplicates are dropped. The result
/// is sorted by qualified name and does not depend on the input's order.
pub fn qualify<'a>(tools: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<Qualified> {
    let mut seen = BTreeSet::new();
    let mut candidates = Vec::new();
    for (server, tool) in tools {
        let raw_namespace = format!("mcp{DELIMITER}{server}{DELIMITER}");
        // The trailing `\0` stands for Codex's empty connector id.
        let namespace_identity = format!("{server}\0{raw_namespace}\0");
        let tool_identity = format!("{namespace_identity}\0{tool}\0{tool}");
        if !seen.insert(tool_identity.clone()) {
            tracing::warn!(server, tool, "skipping a duplicated MCP tool");
            continue;
        }
        candidates.push(Candidate {
            server: server.to_string(),
            tool: tool.to_string(),
            namespace: sanitize(&raw_namespace),
            name: sanitize(tool),
            namespace_identity,
            tool_identity,
        });
    }
    // Different raw servers that sanitise alike get a hash on the namespace.
    let mut by_namespace: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in &candidates {
        by_namespace
            .entry(c.namespace.clone())
            .or_default()
            .insert(c.namespace_identity.clone());
    }
    for c in &mut candidates {
        if by_namespace
            .get(&c.namespace)
            .is_some_and(|ids| ids.len() > 1)
        {
            c.namespace = namespace_with_hash(&c.namespace, &c.namespace_identity);
        }
    }
    // Different raw tools that sanitise alike in a namespace get a hash on
    // the tool part.
    let mut by_tool: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for c in &candidates {
        by_tool
            .entry((c.namespace.clone(), c.name.clone()))
            .or_default()
            .insert(c.tool_identity.clone());
    }
    for c in &mut candidates {
        let key = (c.namespace.clone(), c.name.clone());
        if by_tool.get(&key).is_some_and(|ids| ids.len() > 1) {
            c.name = format!("{}{}", c.name, hash_suffix(&c.tool_identity));
        }
    }
    candidates.sort_by(|a, b| a.tool_identity.cmp(&b.tool_identity));
    let mut used = BTreeSet::new();
    let mut out: Vec<Qualified> = candidates
        .into_iter()
        .map(|c| Qualified {
            name: unique(&c.namespace, &c.name, &c.tool_identity, &mut used),
            server: c.server,
            tool: c.tool,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tools: &[(&str, &str)]) -> Vec<String> {
        qualify(tools.iter().copied())
            .into_iter()
            .map(|q| q.name)
            .collect()
    }

    #[test]
    fn plain_names_are_sanitised_and_joined() {
        assert_eq!(
            names(&[("everything", "get-sum"), ("everything", "echo")]),
            ["mcp__everything__echo", "mcp__everything__get_sum"]
        );
        assert_eq!(sanitize("a.b c-dé"), "a_b_c_d_");
        assert_eq!(sanitize(""), "_");
    }

    #[test]
    fn colliding_servers_and_tools_get_hashes_and_keep_their_raw_names() {
        let q = qualify([("my-server", "t"), ("my.server", "t")]);
        assert_eq!(q.len(), 2);
        assert_ne!(q[0].name, q[1].name);
        for x in &q {
            assert!(x.name.starts_with("mcp__my_server_"), "{}", x.name);
            assert!(x.name.ends_with("__t"), "{}", x.name);
        }
        let raw: BTreeSet<_> = q.iter().map(|x| x.server.as_str()).collect();
        assert_eq!(raw, BTreeSet::from(["my-server", "my.server"]));

        let q = qualify([("s", "a-b"), ("s", "a.b")]);
        assert_eq!(q.len(), 2);
        assert_ne!(q[0].name, q[1].name);
        assert!(q.iter().all(|x| x.name.starts_with("mcp__s__a_b_")));
    }

    #[test]
    fn long_names_fit_in_64_bytes_deterministically() {
        let long = "x".repeat(100);
        let a = names(&[("server", &long)]);
        let b = names(&[("server", &long)]);
        assert_eq!(a, b);
        assert_eq!(a[0].len(), 64);
        assert!(a[0].starts_with("mcp__server__xxx"));
        let long_server = "s".repeat(80);
        let c = names(&[(&long_server, "tool")]);
        assert!(c[0].len() <= 64, "{}", c[0]);
    }

    #[test]
    fn exact_duplicates_are_dropped_and_order_does_not_matter() {
        assert_eq!(names(&[("s", "t"), ("s", "t")]), ["mcp__s__t"]);
        assert_eq!(
            names(&[("b", "x"), ("a", "y")]),
            names(&[("a", "y"), ("b", "x")])
        );
    }

    #[test]
    fn sha1_matches_the_reference() {
        // sha1("abc"), FIPS 180-1 appendix A.
        assert_eq!(sha1_hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }
}
