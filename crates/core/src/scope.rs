//! What one instance manages: its scope, and the selection a command narrows it to.
//!
//! **Scope** (Watchtower's): an asset's scope is its `safe-updater.io/scope` label (or
//! annotation), else Watchtower's `com.centurylinklabs.watchtower.scope`; `none` or empty is no
//! scope. An instance with a scope manages only assets with that scope; an instance without
//! one manages only assets without one. So several instances (and every test) share one
//! engine or cluster without touching each other's work. Discovery applies it: what is out of
//! scope is never stored, checked or changed.
//!
//! **Selection** (the command line's `--name`, `--label`): narrows a command to some of the
//! assets in scope.
//!
//! This module only matches; it does not read labels from anywhere but the asset it is given.

use std::collections::BTreeMap;

use regex::Regex;

use crate::policy::{AssetView, glob_regex};

/// Our scope label.
pub const SCOPE_LABEL: &str = "safe-updater.io/scope";
/// Watchtower's scope label.
pub const WATCHTOWER_SCOPE_LABEL: &str = "com.centurylinklabs.watchtower.scope";

/// An asset's scope from its labels and annotations (`None`: unscoped).
pub fn scope_of<'a>(
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
) -> Option<&'a str> {
    scope_in(|k| {
        labels
            .get(k)
            .or_else(|| annotations.get(k))
            .map(String::as_str)
    })
}

/// The scope `get` (a label lookup) gives (`None`: unscoped).
pub fn scope_in<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<&'a str> {
    [SCOPE_LABEL, WATCHTOWER_SCOPE_LABEL]
        .iter()
        .find_map(|k| get(k))
        .map(str::trim)
        .filter(|s| !is_none(s))
}

fn is_none(scope: &str) -> bool {
    scope.is_empty() || scope.eq_ignore_ascii_case("none")
}

/// The scope of this instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// Manages only assets without a scope.
    #[default]
    Unscoped,
    /// Manages only assets with this scope.
    Named(String),
}

impl Scope {
    /// From the setting: empty or `none` is [`Scope::Unscoped`].
    pub fn from_setting(value: Option<&str>) -> Scope {
        match value.map(str::trim) {
            Some(s) if !is_none(s) => Scope::Named(s.to_owned()),
            _ => Scope::Unscoped,
        }
    }

    /// Whether an asset with these labels and annotations is this instance's.
    pub fn admits(
        &self,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) -> bool {
        self.admits_scope(scope_of(labels, annotations))
    }

    /// Whether an asset whose scope is `theirs` is this instance's.
    pub fn admits_scope(&self, theirs: Option<&str>) -> bool {
        match (self, theirs) {
            (Scope::Unscoped, None) => true,
            (Scope::Named(mine), Some(theirs)) => mine == theirs,
            _ => false,
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Unscoped => f.write_str("(no scope)"),
            Scope::Named(s) => f.write_str(s),
        }
    }
}

/// One `--label` selector.
#[derive(Debug, Clone)]
pub enum LabelSelector {
    /// `key`: the label (or annotation) exists.
    Has(String),
    /// `!key`: it does not.
    Lacks(String),
    /// `key=value`.
    Is(String, String),
    /// `key!=value`: absent, or another value.
    IsNot(String, String),
}

impl LabelSelector {
    /// Parses `key`, `!key`, `key=value` or `key!=value`.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let text = text.trim();
        let bad = || {
            format!("{text:?} is not a label selector; write key, !key, key=value or key!=value")
        };
        let key_ok = |k: &str| !k.is_empty() && !k.contains(char::is_whitespace);
        if let Some((k, v)) = text.split_once("!=") {
            return key_ok(k)
                .then(|| LabelSelector::IsNot(k.to_owned(), v.to_owned()))
                .ok_or_else(bad);
        }
        if let Some((k, v)) = text.split_once('=') {
            return key_ok(k)
                .then(|| LabelSelector::Is(k.to_owned(), v.to_owned()))
                .ok_or_else(bad);
        }
        if let Some(k) = text.strip_prefix('!') {
            return key_ok(k)
                .then(|| LabelSelector::Lacks(k.to_owned()))
                .ok_or_else(bad);
        }
        key_ok(text)
            .then(|| LabelSelector::Has(text.to_owned()))
            .ok_or_else(bad)
    }

    fn matches(&self, asset: &AssetView<'_>) -> bool {
        let get = |k: &str| {
            asset
                .labels
                .and_then(|l| l.get(k))
                .or_else(|| asset.annotations.and_then(|a| a.get(k)))
        };
        match self {
            LabelSelector::Has(k) => get(k).is_some(),
            LabelSelector::Lacks(k) => get(k).is_none(),
            LabelSelector::Is(k, v) => get(k) == Some(v),
            LabelSelector::IsNot(k, v) => get(k) != Some(v),
        }
    }
}

/// What a command acts on: the instance's [`Scope`], narrowed by names (globs, any may
/// match) and label selectors (all must match).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub scope: Scope,
    names: Vec<Regex>,
    labels: Vec<LabelSelector>,
}

impl Selection {
    /// Everything in `scope`.
    pub fn scoped(scope: Scope) -> Selection {
        Selection {
            scope,
            names: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// `scope`, narrowed by `--name` globs and `--label` selectors; the error names the bad
    /// one.
    pub fn new(scope: Scope, names: &[String], labels: &[String]) -> Result<Selection, String> {
        let names = names
            .iter()
            .map(|n| glob_regex(n).map_err(|e| format!("--name {n:?}: {e}")))
            .collect::<Result<_, _>>()?;
        let labels = labels
            .iter()
            .map(|l| LabelSelector::parse(l))
            .collect::<Result<_, _>>()?;
        Ok(Selection {
            scope,
            names,
            labels,
        })
    }

    /// Whether names or labels narrow the scope.
    pub fn narrows(&self) -> bool {
        !self.names.is_empty() || !self.labels.is_empty()
    }

    /// Whether the selection takes this asset (in scope, and matching the names and labels).
    pub fn selects(&self, asset: &AssetView<'_>) -> bool {
        let get = |k: &str| {
            asset
                .labels
                .and_then(|l| l.get(k))
                .or_else(|| asset.annotations.and_then(|a| a.get(k)))
                .map(String::as_str)
        };
        self.scope.admits_scope(scope_in(get))
            && (self.names.is_empty() || self.names.iter().any(|n| n.is_match(asset.name)))
            && self.labels.iter().all(|l| l.matches(asset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asset::AssetKind;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn an_instance_manages_its_own_scope_only() {
        let none = BTreeMap::new();
        let wt = labels(&[(WATCHTOWER_SCOPE_LABEL, "team-a")]);
        let ours = labels(&[(SCOPE_LABEL, "team-b"), (WATCHTOWER_SCOPE_LABEL, "team-a")]);
        let explicit_none = labels(&[(WATCHTOWER_SCOPE_LABEL, "none")]);
        let a = Scope::from_setting(Some("team-a"));
        let b = Scope::from_setting(Some("team-b"));
        let unscoped = Scope::from_setting(None);
        assert!(a.admits(&wt, &none) && !a.admits(&none, &none) && !a.admits(&ours, &none));
        assert!(b.admits(&ours, &none), "our label wins over Watchtower's");
        assert!(unscoped.admits(&none, &none) && unscoped.admits(&explicit_none, &none));
        assert!(!unscoped.admits(&wt, &none));
        assert_eq!(Scope::from_setting(Some(" none ")), Scope::Unscoped);
        assert_eq!(Scope::from_setting(Some("")), Scope::Unscoped);
        // Kubernetes resources may carry it as an annotation.
        assert!(a.admits(&none, &wt));
    }

    #[test]
    fn selections_take_names_and_labels() {
        let l = labels(&[("tier", "web"), ("team", "a")]);
        let view = |name| AssetView {
            kind: AssetKind::Container,
            namespace: None,
            name,
            labels: Some(&l),
            annotations: None,
        };
        let any = Scope::Unscoped;
        let s = Selection::new(
            any.clone(),
            &["web-*".into(), "db".into()],
            &["tier=web".into()],
        )
        .expect("parses");
        assert!(s.narrows());
        assert!(s.selects(&view("web-1")) && s.selects(&view("db")));
        assert!(!s.selects(&view("api")));
        let s = Selection::new(
            any.clone(),
            &[],
            &["team".into(), "!canary".into(), "tier!=db".into()],
        )
        .expect("parses");
        assert!(s.selects(&view("anything")));
        let s = Selection::new(any.clone(), &[], &["team!=a".into()]).expect("parses");
        assert!(!s.selects(&view("x")));
        assert!(Selection::new(any.clone(), &[], &["=x".into()]).is_err());
        assert!(Selection::new(any, &[], &["!".into()]).is_err());
        assert!(!Selection::default().narrows());
        // The scope comes first: a name that matches does not reach across scopes.
        let other =
            Selection::new(Scope::Named("b".into()), &["web-*".into()], &[]).expect("parses");
        assert!(!other.selects(&view("web-1")));
    }
}
