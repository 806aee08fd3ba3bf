//! Every Kubernetes API call this crate makes, in one table ([`API_CALLS`]), and the reading of
//! an HTTP request as an RBAC (group, resource, verb) triple.
//!
//! The table is what the shipped manifests in `deploy/rbac/` are checked against (see the tests
//! below), and [`crate::guard`] refuses any request not in it, so the manifests cannot fall
//! behind the code unnoticed. This module must not grant or reason about permissions of its
//! own beyond that: the API server's RBAC is the authority.

/// Whether a call is needed for read-only work or only for updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Discovery, detection, status: the read-only role must grant it.
    Read,
    /// Changing workloads: only the update role grants it.
    Update,
}

/// One API call: the RBAC group (`""` for core), resource (with `/subresource`), verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiCall {
    pub group: &'static str,
    pub resource: &'static str,
    pub verb: &'static str,
    pub need: Need,
    /// What the code makes the call for.
    pub why: &'static str,
}

const fn read(
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
    why: &'static str,
) -> ApiCall {
    ApiCall {
        group,
        resource,
        verb,
        need: Need::Read,
        why,
    }
}

const fn update(
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
    why: &'static str,
) -> ApiCall {
    ApiCall {
        group,
        resource,
        verb,
        need: Need::Update,
        why,
    }
}

/// Every API call the Rust code makes. (The `helm` CLI's own calls are governed by the charts it
/// installs; `deploy/rbac/update.yaml` grants what the e2e charts need and says so.)
pub const API_CALLS: &[ApiCall] = &[
    read("apps", "deployments", "list", "discovery"),
    read(
        "apps",
        "deployments",
        "get",
        "rollout status, snapshot before a patch",
    ),
    read("apps", "statefulsets", "list", "discovery"),
    read(
        "apps",
        "statefulsets",
        "get",
        "rollout status, snapshot before a patch",
    ),
    read("apps", "daemonsets", "list", "discovery"),
    read(
        "apps",
        "daemonsets",
        "get",
        "rollout status, snapshot before a patch",
    ),
    read(
        "apps",
        "replicasets",
        "list",
        "owner chain Pod -> ReplicaSet -> Deployment",
    ),
    read("batch", "jobs", "list", "discovery"),
    read("batch", "cronjobs", "list", "discovery"),
    read("batch", "cronjobs", "get", "snapshot before a patch"),
    read(
        "",
        "pods",
        "list",
        "running digests, readiness, owner chain",
    ),
    read(
        "",
        "secrets",
        "list",
        "Helm release records (type helm.sh/release.v1)",
    ),
    read("", "secrets", "get", "image pull secrets of a workload"),
    read(
        "",
        "serviceaccounts",
        "get",
        "image pull secrets of a workload's service account",
    ),
    read(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "list",
        "CRD versions report",
    ),
    update(
        "apps",
        "deployments",
        "patch",
        "set an image, restore a template",
    ),
    update(
        "apps",
        "statefulsets",
        "patch",
        "set an image, restore a template",
    ),
    update(
        "apps",
        "daemonsets",
        "patch",
        "set an image, restore a template",
    ),
    update(
        "batch",
        "cronjobs",
        "patch",
        "set an image, restore a template",
    ),
    // A WebSocket exec is an HTTP GET; RBAC reads it as `create` (Kubernetes 1.31+, see
    // `request_attributes`).
    update(
        "",
        "pods/exec",
        "create",
        "exec health checks in the new revision's pods",
    ),
    update(
        "",
        "pods",
        "delete",
        "StatefulSet forced rollback: pods stuck on the failed template",
    ),
];

/// Whether `verb` changes anything.
pub fn is_write(verb: &str) -> bool {
    !matches!(verb, "get" | "list" | "watch")
}

/// The declared call for a triple, if any.
pub fn declared(group: &str, resource: &str, verb: &str) -> Option<&'static ApiCall> {
    API_CALLS
        .iter()
        .find(|c| c.group == group && c.resource == resource && c.verb == verb)
}

/// A request read as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAttributes {
    pub group: String,
    /// `deployments`, or `deployments/status` for a subresource.
    pub resource: String,
    pub verb: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// Reads an API request the way the API server's request-info resolver does. `None` for
/// non-resource URLs (`/version`, `/api`, `/apis`, `/healthz`), which RBAC handles apart.
pub fn request_attributes(
    method: &str,
    path: &str,
    query: Option<&str>,
) -> Option<RequestAttributes> {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        // `/api/v1/namespaces/x` is the namespace object itself.
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some((*ns).to_owned()), tail),
        _ => (None, rest),
    };
    let (resource, name, sub) = match rest {
        [] => return None,
        [r] => (*r, None, None),
        [r, n] => (*r, Some(*n), None),
        [r, n, s, ..] => (*r, Some(*n), Some(*s)),
    };
    let watch = query
        .map(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"))
        .unwrap_or(false);
    // The streaming subresources run a command or open a port: the API server authorizes their
    // WebSocket GET as `create` (AuthorizePodWebsocketUpgradeCreatePermission, on by default
    // since Kubernetes 1.31), so the guard must see the write it is.
    let streaming = resource == "pods" && matches!(sub, Some("exec" | "attach" | "portforward"));
    let verb = match (method, name.is_some()) {
        ("GET" | "HEAD" | "POST", true) if streaming => "create",
        ("GET" | "HEAD", _) if watch => "watch",
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some(RequestAttributes {
        group: group.to_owned(),
        resource: match sub {
            Some(s) => format!("{resource}/{s}"),
            None => resource.to_owned(),
        },
        verb: verb.to_owned(),
        namespace,
        name: name.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn request_attributes_like_the_api_server() {
        let a = |m, p, q| {
            request_attributes(m, p, q).map(|a| (a.group, a.resource, a.verb, a.namespace, a.name))
        };
        let s = |x: &str| x.to_owned();
        assert_eq!(
            a(
                "GET",
                "/apis/apps/v1/namespaces/ns/deployments",
                Some("labelSelector=a")
            ),
            Some((s("apps"), s("deployments"), s("list"), Some(s("ns")), None))
        );
        assert_eq!(
            a("GET", "/apis/apps/v1/deployments", None),
            Some((s("apps"), s("deployments"), s("list"), None, None))
        );
        assert_eq!(
            a(
                "PATCH",
                "/apis/apps/v1/namespaces/ns/deployments/web",
                Some("fieldManager=safe-updater")
            ),
            Some((
                s("apps"),
                s("deployments"),
                s("patch"),
                Some(s("ns")),
                Some(s("web"))
            ))
        );
        assert_eq!(
            a(
                "GET",
                "/api/v1/namespaces/ns/pods",
                Some("watch=true&resourceVersion=1")
            ),
            Some((s(""), s("pods"), s("watch"), Some(s("ns")), None))
        );
        assert_eq!(
            a("GET", "/api/v1/namespaces/ns/secrets/pull", None),
            Some((
                s(""),
                s("secrets"),
                s("get"),
                Some(s("ns")),
                Some(s("pull"))
            ))
        );
        assert_eq!(
            a(
                "PUT",
                "/apis/apps/v1/namespaces/ns/deployments/web/status",
                None
            ),
            Some((
                s("apps"),
                s("deployments/status"),
                s("update"),
                Some(s("ns")),
                Some(s("web"))
            ))
        );
        assert_eq!(
            a("GET", "/api/v1/namespaces/kube-system", None),
            Some((
                s(""),
                s("namespaces"),
                s("get"),
                None,
                Some(s("kube-system"))
            ))
        );
        assert_eq!(
            a("DELETE", "/api/v1/namespaces/ns/pods", None),
            Some((s(""), s("pods"), s("deletecollection"), Some(s("ns")), None))
        );
        assert_eq!(
            a(
                "GET",
                "/api/v1/namespaces/ns/pods/web-1/exec",
                Some("command=true&stdout=true&container=web")
            ),
            Some((
                s(""),
                s("pods/exec"),
                s("create"),
                Some(s("ns")),
                Some(s("web-1"))
            ))
        );
        assert_eq!(a("GET", "/version", None), None);
        assert_eq!(a("GET", "/apis", None), None);
    }

    #[test]
    fn every_update_call_is_a_write_and_every_read_is_not() {
        for c in API_CALLS {
            assert_eq!(is_write(c.verb), c.need == Need::Update, "{c:?}");
        }
        let unique: BTreeSet<_> = API_CALLS
            .iter()
            .map(|c| (c.group, c.resource, c.verb))
            .collect();
        assert_eq!(unique.len(), API_CALLS.len(), "a call is listed twice");
    }

    /// The manifests shipped in deploy/rbac grant every call in the table: the read-only role
    /// every `Read` call and nothing that writes; the update role every call.
    #[test]
    fn shipped_manifests_grant_exactly_what_the_code_needs() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rbac");
        let read_only = load_rules(&dir.join("read-only.yaml"));
        let update = load_rules(&dir.join("update.yaml"));
        for c in API_CALLS {
            let in_update = grants(&update, c.group, c.resource, c.verb);
            assert!(in_update, "update.yaml does not grant {c:?}");
            let in_read = grants(&read_only, c.group, c.resource, c.verb);
            match c.need {
                Need::Read => assert!(in_read, "read-only.yaml does not grant {c:?}"),
                Need::Update => assert!(!in_read, "read-only.yaml grants a write: {c:?}"),
            }
        }
        for rule in &read_only {
            for verb in &rule.verbs {
                assert!(
                    !is_write(verb),
                    "read-only.yaml grants the write verb {verb}: {rule:?}"
                );
            }
        }
        // Least privilege: no wildcard anywhere in either role.
        for rule in read_only.iter().chain(&update) {
            for v in rule.verbs.iter().chain(&rule.resources).chain(&rule.groups) {
                assert_ne!(v, "*", "wildcard in {rule:?}");
            }
        }
    }

    #[derive(Debug)]
    struct Rule {
        groups: Vec<String>,
        resources: Vec<String>,
        verbs: Vec<String>,
    }

    fn grants(rules: &[Rule], group: &str, resource: &str, verb: &str) -> bool {
        rules.iter().any(|r| {
            r.groups.iter().any(|g| g == group)
                && r.resources.iter().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    }

    /// Every rule of every ClusterRole/Role in a multi-document YAML file.
    fn load_rules(path: &std::path::Path) -> Vec<Rule> {
        let text = std::fs::read_to_string(path).expect("manifest readable");
        let mut rules = Vec::new();
        let mut roles = 0;
        // marked-yaml reads one document at a time; Kubernetes files separate them with `---`.
        for doc in text.split("\n---") {
            if doc.trim().is_empty()
                || doc
                    .lines()
                    .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
            {
                continue;
            }
            let node = marked_yaml::parse_yaml(0, doc).expect("manifest is YAML");
            let map = node.as_mapping().expect("a manifest is a mapping");
            let kind = map
                .get_scalar("kind")
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default();
            if kind != "ClusterRole" && kind != "Role" {
                continue;
            }
            roles += 1;
            let Some(list) = map.get_sequence("rules") else {
                continue;
            };
            for rule in list.iter() {
                let rule = rule.as_mapping().expect("a rule is a mapping");
                let strings = |key: &str| -> Vec<String> {
                    rule.get_sequence(key)
                        .map(|s| {
                            s.iter()
                                .filter_map(|n| n.as_scalar().map(|x| x.as_str().to_owned()))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                rules.push(Rule {
                    groups: strings("apiGroups"),
                    resources: strings("resources"),
                    verbs: strings("verbs"),
                });
            }
        }
        assert!(roles > 0, "{} holds no role", path.display());
        rules
    }
}
