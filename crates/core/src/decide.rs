//! The decision: `(effective policy, what runs, what the registry offers, now) → Evaluation`.
//!
//! A pure function. It picks, inside the asset's tag family, the best candidate of each change
//! class, looks up the gate, applies approvals, the cooldown and the update windows, and says
//! in words why. It never reads a clock, a file or the network, and never executes anything:
//! the executor carries out what an evaluation allowed, nothing else.
//!
//! Invariants: a tag that cannot be analysed never proceeds automatically; a version that
//! failed before is never proposed again (a newer one must appear); a frozen asset proceeds
//! with nothing.
//!
//! Operator overrides are facts too: a pin restricts candidates like a policy constraint (and
//! the reason names who pinned), a snooze defers whatever would proceed until it ends.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::constraint::Constraint;
use crate::policy::{EffectivePolicy, Gate, GateClass, OnFailure, VariantMatch};
use crate::semver::Version;
use crate::tag::{Change, Family, Scheme, Tag, TagVersion, analyze, classify};

/// A tag the registry offers, with when it was first seen (for the cooldown). Unknown first
/// sighting counts as "seen just now", so a cooldown makes it wait rather than rush.
#[derive(Debug, Clone)]
pub struct Available {
    pub tag: String,
    pub first_seen: Option<Timestamp>,
}

/// Tags of one repository analysed once under one scheme, shared by every asset that uses
/// that repository in a cycle.
///
/// Families are numbered here, once per repository: every version carries the id of its
/// family (and of its loosened family), so an evaluation matches families by comparing
/// integers instead of comparing (or, for `variant: loose`, building) them per tag.
#[derive(Debug, Clone)]
pub struct AnalyzedTags {
    versions: Vec<(TagVersion, Option<Timestamp>)>,
    /// Per entry of `versions`: (its family's id, its loosened family's id).
    family_ids: Vec<(usize, usize)>,
    /// Per family id (distinct families in order of first appearance): the index in
    /// `versions` of its first tag, and its loosened family's id, which is the id of the first
    /// family that loosens to the same.
    families: Vec<(usize, usize)>,
    not_versions: usize,
}

impl AnalyzedTags {
    pub fn new<'a>(tags: impl IntoIterator<Item = &'a Available>, scheme: &Scheme) -> AnalyzedTags {
        let mut versions: Vec<(TagVersion, Option<Timestamp>)> = Vec::new();
        let mut not_versions = 0;
        // A tag listed twice is one tag, first seen at its earliest known sighting; otherwise
        // it could be proposed twice, once cooling down and once not.
        let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for a in tags {
            if let Some(&i) = seen.get(a.tag.as_str()) {
                let earliest = match (versions.get(i).and_then(|v| v.1), a.first_seen) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
                if let Some(v) = versions.get_mut(i) {
                    v.1 = earliest;
                }
                continue;
            }
            match analyze(&a.tag, scheme) {
                Tag::Version(v) => {
                    seen.insert(a.tag.as_str(), versions.len());
                    versions.push((v, a.first_seen));
                }
                Tag::NotVersion { .. } => {
                    seen.insert(a.tag.as_str(), usize::MAX);
                    not_versions += 1;
                }
            }
        }
        // Number the families, and the loosened ones once per distinct family.
        let mut family_ids = Vec::with_capacity(versions.len());
        let mut families: Vec<(usize, usize)> = Vec::new();
        let mut index: BTreeMap<&Family, usize> = BTreeMap::new();
        for (i, (v, _)) in versions.iter().enumerate() {
            let id = match index.get(&v.family) {
                Some(&id) => id,
                None => {
                    let id = families.len();
                    index.insert(&v.family, id);
                    let loose_id = families
                        .iter()
                        .find(|&&(first, _)| versions[first].0.family.loosely_equals(&v.family))
                        .map_or(id, |&(_, loose_id)| loose_id);
                    families.push((i, loose_id));
                    id
                }
            };
            family_ids.push((id, families[id].1));
        }
        drop(index);
        AnalyzedTags {
            versions,
            family_ids,
            families,
            not_versions,
        }
    }
}

/// The digest facts for the current tag: what runs and what the registry serves now.
#[derive(Debug, Clone)]
pub struct DigestDrift {
    pub running: String,
    pub latest: String,
    pub first_seen: Option<Timestamp>,
}

/// An operator's verdict on one candidate.
#[derive(Debug, Clone)]
pub struct ApprovalFact {
    pub candidate: String,
    pub approved: bool,
    pub operator: String,
}

/// An operator's pin: every version candidate must satisfy the constraint, as with a policy
/// `constraint`, and the reasons name the operator who set it.
#[derive(Debug, Clone)]
pub struct PinFact {
    pub constraint: Constraint,
    pub operator: String,
}

/// An eligible candidate: the version, when it was first seen, and the change it makes.
type Eligible<'a> = (&'a TagVersion, Option<Timestamp>, Change);

/// Everything the decision looks at besides policy and time.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub current: String,
    pub digest: Option<DigestDrift>,
    /// Tags (or digests) whose update failed before.
    pub failed: Vec<String>,
    pub approvals: Vec<ApprovalFact>,
    /// Why the asset is frozen, if it is.
    pub frozen: Option<String>,
    /// Tags that must not be proposed for a reason found outside policy — no image for the
    /// platform the asset runs on, say — each with that reason.
    pub unavailable: Vec<(String, String)>,
    /// An operator's pin on this asset.
    pub pin: Option<PinFact>,
    /// Until when an operator snoozed this asset's updates, and who did. A snooze that has
    /// ended (`until <= now`) changes nothing.
    pub snoozed_until: Option<(Timestamp, String)>,
    /// Why nothing may proceed for this asset for a reason that is neither policy nor a failed
    /// update (an operator override the store holds but that cannot be read, say).
    pub blocked: Option<String>,
}

/// What the engine may do with a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// May proceed now, by itself.
    Approve,
    /// Waits for an approval.
    PendingReview,
    /// Only an operator may start it.
    ManualApproval,
    /// Ignored by policy.
    Skip,
    /// Allowed, but not yet: cooldown or outside the update windows (`not_before` says when).
    Defer,
    /// Refused: rejected by an operator, or the asset is frozen.
    Reject,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::PendingReview => "pending_review",
            Verdict::ManualApproval => "manual_approval",
            Verdict::Skip => "skip",
            Verdict::Defer => "defer",
            Verdict::Reject => "reject",
        }
    }
}

/// The decision for one candidate.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub tag: String,
    /// `digest` when the candidate is a new digest behind the current tag.
    pub change: String,
    pub gate: Gate,
    pub decision: Verdict,
    pub rule: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
}

/// The outcome of evaluating one asset.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub current: String,
    /// The tag family of the current tag, or null when it is not a version.
    pub family: Option<String>,
    pub candidates: Vec<Candidate>,
    /// The candidate the engine would act on by itself now (the highest approved one).
    pub act_on: Option<String>,
    /// What the executor must do if the update fails its checks, and the rule that says so.
    pub on_failure: FailurePlan,
    /// Things worth knowing that are not decisions: skipped failed versions, policy problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The failure action resolved for the asset.
#[derive(Debug, Clone, Serialize)]
pub struct FailurePlan {
    pub action: OnFailure,
    pub rule: String,
}

fn gate_class(change: Change) -> GateClass {
    match change {
        Change::Major => GateClass::Major,
        Change::Minor => GateClass::Minor,
        Change::Prerelease => GateClass::Prerelease,
        _ => GateClass::Patch,
    }
}

fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3_600 && secs.is_multiple_of(3_600) {
        format!("{}h", secs / 3_600)
    } else if secs >= 3_600 {
        format!("{}h{}m", secs / 3_600, (secs % 3_600) / 60)
    } else if secs >= 60 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Reads the policy's gate for a candidate, then approvals, the freeze, the cooldown and the
/// windows, in that order; the first that holds it back decides.
fn judge(
    policy: &EffectivePolicy,
    facts: &Facts,
    now: Timestamp,
    what: String,
    candidate: &str,
    class: GateClass,
    first_seen: Option<Timestamp>,
) -> (Gate, Verdict, String, String, Option<Timestamp>) {
    let gate = policy.gate(class);
    let g = gate.value;
    // "{what}; the gate for {class} is {g} ({rule})", appended to `what` rather than formatted
    // into a new string: this runs for every candidate of every asset.
    let mut head = what;
    for part in [
        "; the gate for ",
        class.as_str(),
        " is ",
        g.as_str(),
        " (",
        &gate.rule,
        ")",
    ] {
        head.push_str(part);
    }
    if let Some(reason) = &facts.frozen {
        return (
            g,
            Verdict::Reject,
            "frozen".into(),
            format!(
                "{head}, but the asset is frozen after a failed update ({reason}); unfreeze it to resume updates"
            ),
            None,
        );
    }
    if let Some(why) = &facts.blocked {
        return (
            g,
            Verdict::Reject,
            "operator".into(),
            format!("{head}, but nothing proceeds for this asset: {why}"),
            None,
        );
    }
    if g == Gate::Skip {
        return (
            g,
            Verdict::Skip,
            gate.rule.to_string(),
            format!("{head}: it is ignored"),
            None,
        );
    }
    let approval = facts
        .approvals
        .iter()
        .rev()
        .find(|a| a.candidate == candidate);
    if let Some(a) = approval
        && !a.approved
    {
        return (
            g,
            Verdict::Reject,
            "approval".into(),
            format!("{head}, and {} rejected it", a.operator),
            None,
        );
    }
    let approved_by = approval.filter(|a| a.approved).map(|a| a.operator.as_str());
    let (mut rule, mut reason) = match (g, approved_by) {
        (Gate::Review, None) => {
            return (
                g,
                Verdict::PendingReview,
                gate.rule.to_string(),
                format!("{head}: it waits for an approval"),
                None,
            );
        }
        (Gate::Manual, None) => {
            return (
                g,
                Verdict::ManualApproval,
                gate.rule.to_string(),
                format!("{head}: it never runs by itself; an operator must start it"),
                None,
            );
        }
        (_, Some(op)) if g != Gate::Auto => (
            "approval".to_owned(),
            format!("{head}, and {op} approved it"),
        ),
        _ => (gate.rule.to_string(), head),
    };
    // A snooze holds back what would otherwise go ahead. Reviews and manual candidates above
    // keep waiting for a person as they were: an approval given during the snooze takes effect
    // when it ends.
    if let Some((until, op)) = &facts.snoozed_until
        && *until > now
    {
        return (
            g,
            Verdict::Defer,
            "snooze".into(),
            format!("{reason}, but {op} snoozed updates of this asset until {until}"),
            Some(*until),
        );
    }
    // The cooldown guards against releases that are pulled or fixed within hours. An explicit
    // approval is a person taking that risk knowingly, so it is not held back by it.
    if approved_by.is_none() || g == Gate::Auto {
        let min_age = policy.min_age.value;
        if !min_age.is_zero() {
            let seen = first_seen.unwrap_or(now);
            let ready = seen
                .checked_add(
                    jiff::SignedDuration::try_from(min_age).unwrap_or(jiff::SignedDuration::MAX),
                )
                .unwrap_or(Timestamp::MAX);
            if ready > now {
                let age = now.duration_since(seen).unsigned_abs();
                return (
                    g,
                    Verdict::Defer,
                    policy.min_age.rule.to_string(),
                    format!(
                        "{reason}, but it was first seen {} ago and the policy wants {} ({}): it waits until {ready}",
                        fmt_duration(age),
                        fmt_duration(min_age),
                        policy.min_age.rule
                    ),
                    Some(ready),
                );
            }
        }
    }
    let windows = &policy.windows.value;
    if !windows.is_empty() && !windows.iter().any(|w| w.contains(now)) {
        let next = windows.iter().filter_map(|w| w.next_open(now)).min();
        let when = next.map_or_else(
            || "no window ever opens".to_owned(),
            |t| format!("the next one opens at {t}"),
        );
        return (
            g,
            Verdict::Defer,
            policy.windows.rule.to_string(),
            format!(
                "{reason}, but now is outside every update window ({}); {when}",
                policy.windows.rule
            ),
            next,
        );
    }
    if rule.is_empty() {
        rule = gate.rule.to_string();
    }
    reason.push_str(": it may proceed");
    (g, Verdict::Approve, rule, reason, None)
}

fn to_semver(v: &TagVersion) -> Version {
    let n = |i: usize| v.release.get(i).copied().unwrap_or(0);
    Version {
        major: n(0),
        minor: n(1),
        patch: n(2),
        pre: v.pre.clone(),
        build: Vec::new(),
    }
}

/// Evaluates one asset against raw tag strings.
pub fn evaluate(
    policy: &EffectivePolicy,
    facts: &Facts,
    available: &[Available],
    now: Timestamp,
) -> Evaluation {
    let analyzed = AnalyzedTags::new(available, &policy.versioning.value);
    evaluate_analyzed(policy, facts, &analyzed, now)
}

/// Evaluates one asset against tags already analysed under the asset's versioning scheme.
pub fn evaluate_analyzed(
    policy: &EffectivePolicy,
    facts: &Facts,
    tags: &AnalyzedTags,
    now: Timestamp,
) -> Evaluation {
    let mut eval = Evaluation {
        current: facts.current.clone(),
        family: None,
        candidates: Vec::new(),
        act_on: None,
        on_failure: FailurePlan {
            action: policy.on_failure.value,
            rule: policy.on_failure.rule.to_string(),
        },
        notes: Vec::new(),
    };
    if !policy.problems.is_empty() {
        eval.notes.extend(policy.problems.iter().cloned());
        eval.notes
            .push("nothing proceeds for this asset until its labels/annotations are fixed".into());
        return eval;
    }
    if !policy.enabled.value {
        eval.notes.push(format!(
            "updates are disabled for this asset ({})",
            policy.enabled.rule
        ));
        return eval;
    }
    let current = analyze(&facts.current, &policy.versioning.value);
    let mut best_approved: Option<&TagVersion> = None;
    match &current {
        Tag::NotVersion { raw, why } => {
            eval.notes.push(format!(
                "the current tag '{raw}' is {}: no newer version can be chosen by version, only a new digest behind it",
                why.describe()
            ));
        }
        Tag::Version(cur) => {
            let loose = policy.variant.value == VariantMatch::Loose;
            // The interned id of the family candidates must have; `None` when no tag has it.
            let wanted = tags
                .families
                .iter()
                .enumerate()
                .find(|&(_, &(first, _))| {
                    let family = &tags.versions[first].0.family;
                    if loose {
                        family.loosely_equals(&cur.family)
                    } else {
                        *family == cur.family
                    }
                })
                .map(|(id, &(_, loose_id))| if loose { loose_id } else { id });
            eval.family = Some(cur.family.to_string());
            let min_age = policy.min_age.value;
            let mature = |seen: Option<Timestamp>| {
                min_age.is_zero()
                    || seen.is_some_and(|s| {
                        now.duration_since(s).as_secs()
                            >= i64::try_from(min_age.as_secs()).unwrap_or(i64::MAX)
                    })
            };
            // Per change class (patch, build, minor, major, prerelease): the best candidate,
            // and the best one past the cooldown. Among equal versions the first listed wins,
            // exactly as the first element after a stable sort would.
            let mut best: [Option<Eligible<'_>>; 5] = [None; 5];
            let mut best_mature: [Option<Eligible<'_>>; 5] = [None; 5];
            // Versions the operator's pin holds back: how many, and the newest.
            let mut pinned_out: (usize, Option<&TagVersion>) = (0, None);
            for ((v, seen), ids) in tags.versions.iter().zip(&tags.family_ids) {
                let id = if loose { ids.1 } else { ids.0 };
                if Some(id) != wanted || v.cmp_precedence(cur) != Ordering::Greater {
                    continue;
                }
                if facts.failed.iter().any(|f| f == &v.raw) {
                    eval.notes.push(format!(
                        "{} failed before and is not proposed again until a newer version appears",
                        v.raw
                    ));
                    continue;
                }
                if let Some((_, why)) = facts.unavailable.iter().find(|(t, _)| t == &v.raw) {
                    eval.notes.push(format!("{} is not proposed: {why}", v.raw));
                    continue;
                }
                if let Some(inc) = &policy.include
                    && !inc.value.iter().any(|re| re.is_match(&v.raw))
                {
                    continue;
                }
                if let Some(exc) = &policy.exclude
                    && exc.value.iter().any(|re| re.is_match(&v.raw))
                {
                    continue;
                }
                if let Some(c) = &policy.constraint
                    && !c.value.matches(&to_semver(v))
                {
                    continue;
                }
                if let Some(pin) = &facts.pin
                    && !pin.constraint.matches(&to_semver(v))
                {
                    pinned_out.0 += 1;
                    if pinned_out.1.is_none_or(|b| v > b) {
                        pinned_out.1 = Some(v);
                    }
                    continue;
                }
                let change = classify(cur, v);
                let key = match change {
                    Change::Patch => 0,
                    Change::Build => 1,
                    Change::Minor => 2,
                    Change::Major => 3,
                    _ => 4,
                };
                let entry = (v, *seen, change);
                if best[key].is_none_or(|b| v > b.0) {
                    best[key] = Some(entry);
                }
                if mature(*seen) && best_mature[key].is_none_or(|b| v > b.0) {
                    best_mature[key] = Some(entry);
                }
            }
            let mut picked: Vec<Eligible<'_>> = Vec::new();
            for (best, alt) in best.into_iter().zip(best_mature) {
                let Some(best) = best else { continue };
                picked.push(best);
                // If the newest of a class is still cooling down, the newest mature one of the
                // same class can go ahead meanwhile; show both. (When the newest is still
                // cooling down it is not mature, so the best mature one is another entry.)
                if !mature(best.1)
                    && let Some(alt) = alt
                {
                    picked.push(alt);
                }
            }
            if let (Some(pin), (n, Some(newest))) = (&facts.pin, pinned_out) {
                let versions = if n == 1 { "version" } else { "versions" };
                eval.notes.push(format!(
                    "{n} newer {versions} (up to {}) held back by operator pin {} by {}",
                    newest.raw,
                    pin.constraint.as_str(),
                    pin.operator
                ));
            }
            picked.sort_by(|a, b| a.0.cmp(b.0));
            for (v, seen, change) in picked {
                let class = gate_class(change);
                let mut what = [
                    &cur.raw,
                    " → ",
                    &v.raw,
                    " is a ",
                    change.as_str(),
                    " update",
                ]
                .concat();
                if let Some(pin) = &facts.pin {
                    for part in [
                        " within operator pin ",
                        pin.constraint.as_str(),
                        " by ",
                        &pin.operator,
                    ] {
                        what.push_str(part);
                    }
                }
                let (gate, decision, rule, reason, not_before) =
                    judge(policy, facts, now, what, &v.raw, class, seen);
                if decision == Verdict::Approve && best_approved.is_none_or(|b| v > b) {
                    best_approved = Some(v);
                }
                eval.candidates.push(Candidate {
                    tag: v.raw.clone(),
                    change: change.as_str().to_owned(),
                    gate,
                    decision,
                    rule,
                    reason,
                    digest: None,
                    not_before,
                });
            }
            if tags.not_versions > 0 && eval.candidates.is_empty() && tags.versions.is_empty() {
                eval.notes
                    .push("the registry offers no tag that reads as a version".into());
            }
        }
    }
    let mut digest_approved = false;
    if let Some(d) = &facts.digest
        && d.running != d.latest
    {
        if facts.failed.iter().any(|f| f == &d.latest) {
            eval.notes.push(format!(
                "digest {} failed before and is not proposed again",
                d.latest
            ));
        } else {
            let what = format!("{} has a new digest behind the same tag", facts.current);
            let (gate, decision, rule, reason, not_before) = judge(
                policy,
                facts,
                now,
                what,
                &d.latest,
                GateClass::Digest,
                d.first_seen,
            );
            digest_approved = decision == Verdict::Approve;
            eval.candidates.insert(
                0,
                Candidate {
                    tag: facts.current.clone(),
                    change: "digest".into(),
                    gate,
                    decision,
                    rule,
                    reason,
                    digest: Some(d.latest.clone()),
                    not_before,
                },
            );
        }
    }
    // A newer version supersedes a refreshed build of the current one.
    eval.act_on = match best_approved {
        Some(v) => Some(v.raw.clone()),
        None if digest_approved => Some(facts.current.clone()),
        None => None,
    };
    eval
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::policy::{Setting, defaults};

    fn now() -> Timestamp {
        "2026-11-22T12:00:00Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn avail(tags: &[&str]) -> Vec<Available> {
        tags.iter()
            .map(|t| Available {
                tag: (*t).to_owned(),
                first_seen: None,
            })
            .collect()
    }

    fn facts(current: &str) -> Facts {
        Facts {
            current: current.into(),
            ..Facts::default()
        }
    }

    fn summary(e: &Evaluation) -> Vec<(String, String, Verdict)> {
        e.candidates
            .iter()
            .map(|c| (c.tag.clone(), c.change.clone(), c.decision))
            .collect()
    }

    #[test]
    fn defaults_pick_the_patch_and_hold_the_rest() {
        let e = evaluate(
            &defaults(),
            &facts("1.2.3"),
            &avail(&[
                "1.2.4",
                "1.2.5",
                "1.3.0",
                "2.0.0",
                "2.1.0-rc.1",
                "latest",
                "1.2.2",
            ]),
            now(),
        );
        assert_eq!(
            summary(&e),
            vec![
                ("1.2.5".into(), "patch".into(), Verdict::Approve),
                ("1.3.0".into(), "minor".into(), Verdict::PendingReview),
                ("2.0.0".into(), "major".into(), Verdict::ManualApproval),
                ("2.1.0-rc.1".into(), "prerelease".into(), Verdict::Skip),
            ]
        );
        assert_eq!(e.act_on.as_deref(), Some("1.2.5"));
        assert_eq!(e.candidates[0].rule, "default.patch");
    }

    #[test]
    fn never_leaves_the_family() {
        let e = evaluate(
            &defaults(),
            &facts("1.27-alpine"),
            &avail(&["1.28", "1.27.3-alpine", "1.28-alpine", "1.28-bookworm"]),
            now(),
        );
        assert_eq!(
            summary(&e),
            vec![("1.28-alpine".into(), "minor".into(), Verdict::PendingReview)]
        );
        let e = evaluate(
            &defaults(),
            &facts("16-bookworm"),
            &avail(&["17-alpine", "17"]),
            now(),
        );
        assert!(e.candidates.is_empty());
    }

    #[test]
    fn unanalysable_current_never_proceeds_by_version() {
        let e = evaluate(
            &defaults(),
            &facts("latest"),
            &avail(&["1.0.0", "2.0.0"]),
            now(),
        );
        assert!(e.candidates.is_empty());
        assert_eq!(e.act_on, None);
        assert!(e.notes[0].contains("moving name"));
    }

    #[test]
    fn failed_versions_are_not_retried_but_newer_ones_are() {
        let mut f = facts("1.2.3");
        f.failed = vec!["1.2.5".into()];
        let e = evaluate(&defaults(), &f, &avail(&["1.2.4", "1.2.5"]), now());
        assert_eq!(e.act_on.as_deref(), Some("1.2.4"));
        let e = evaluate(&defaults(), &f, &avail(&["1.2.5", "1.2.6"]), now());
        assert_eq!(e.act_on.as_deref(), Some("1.2.6"));
    }

    #[test]
    fn cooldown_defers_the_fresh_and_lets_the_mature_through() {
        let mut p = defaults();
        p.min_age = Setting {
            value: Duration::from_secs(48 * 3600),
            rule: "global.min_age".into(),
        };
        let old: Timestamp = "2026-11-01T00:00:00Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let fresh: Timestamp = "2026-11-22T09:00:00Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let tags = vec![
            Available {
                tag: "1.2.4".into(),
                first_seen: Some(old),
            },
            Available {
                tag: "1.2.5".into(),
                first_seen: Some(fresh),
            },
        ];
        let e = evaluate(&p, &facts("1.2.3"), &tags, now());
        assert_eq!(
            summary(&e),
            vec![
                ("1.2.4".into(), "patch".into(), Verdict::Approve),
                ("1.2.5".into(), "patch".into(), Verdict::Defer)
            ]
        );
        assert_eq!(e.act_on.as_deref(), Some("1.2.4"));
        let deferred = &e.candidates[1];
        assert_eq!(&*deferred.rule, "global.min_age");
        assert!(
            deferred
                .reason
                .contains("first seen 3h ago and the policy wants 48h"),
            "{}",
            deferred.reason
        );
        assert_eq!(
            deferred.not_before,
            Some(
                "2026-11-24T09:00:00Z"
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}"))
            )
        );
    }

    #[test]
    fn unavailable_tags_are_skipped_with_their_reason() {
        let mut f = facts("1.2.3");
        f.unavailable = vec![("1.2.5".into(), "no linux/arm64 image".into())];
        let e = evaluate(&defaults(), &f, &avail(&["1.2.4", "1.2.5"]), now());
        assert_eq!(e.act_on.as_deref(), Some("1.2.4"));
        assert!(
            e.notes
                .iter()
                .any(|n| n == "1.2.5 is not proposed: no linux/arm64 image"),
            "{:?}",
            e.notes
        );
    }

    #[test]
    fn approvals_and_rejections_and_freeze() {
        let mut f = facts("1.2.3");
        f.approvals = vec![ApprovalFact {
            candidate: "1.3.0".into(),
            approved: true,
            operator: "alice".into(),
        }];
        let e = evaluate(&defaults(), &f, &avail(&["1.3.0", "2.0.0"]), now());
        assert_eq!(e.candidates[0].decision, Verdict::Approve);
        assert!(e.candidates[0].reason.contains("alice approved it"));
        assert_eq!(e.act_on.as_deref(), Some("1.3.0"));

        f.approvals.push(ApprovalFact {
            candidate: "1.3.0".into(),
            approved: false,
            operator: "bob".into(),
        });
        let e = evaluate(&defaults(), &f, &avail(&["1.3.0"]), now());
        assert_eq!(e.candidates[0].decision, Verdict::Reject);

        let mut f = facts("1.2.3");
        f.frozen = Some("migration failed".into());
        let e = evaluate(&defaults(), &f, &avail(&["1.2.4"]), now());
        assert_eq!(e.candidates[0].decision, Verdict::Reject);
        assert_eq!(e.act_on, None);
    }

    #[test]
    fn digest_drift_on_a_moving_tag() {
        let mut f = facts("latest");
        f.digest = Some(DigestDrift {
            running: "sha256:aa".into(),
            latest: "sha256:bb".into(),
            first_seen: None,
        });
        let e = evaluate(&defaults(), &f, &[], now());
        assert_eq!(
            summary(&e),
            vec![("latest".into(), "digest".into(), Verdict::PendingReview)]
        );
        let mut p = defaults();
        p.gates[4] = Setting {
            value: Gate::Auto,
            rule: "global.digest".into(),
        };
        let e = evaluate(&p, &f, &[], now());
        assert_eq!(e.act_on.as_deref(), Some("latest"));
    }

    #[test]
    fn include_exclude_and_constraint() {
        let mut p = defaults();
        p.gates[1] = Setting {
            value: Gate::Auto,
            rule: "global.minor".into(),
        };
        p.exclude = Some(Setting {
            value: Arc::new(vec![
                regex::Regex::new(r"^1\.4").unwrap_or_else(|e| panic!("{e}")),
            ]),
            rule: "global.exclude".into(),
        });
        let e = evaluate(&p, &facts("1.2.3"), &avail(&["1.3.0", "1.4.0"]), now());
        assert_eq!(e.act_on.as_deref(), Some("1.3.0"));
        p.exclude = None;
        p.constraint = Some(Setting {
            value: crate::constraint::Constraint::parse("~1.2").unwrap_or_else(|e| panic!("{e}")),
            rule: "global.constraint".into(),
        });
        let e = evaluate(
            &p,
            &facts("1.2.3"),
            &avail(&["1.2.9", "1.3.0", "1.4.0"]),
            now(),
        );
        assert_eq!(e.act_on.as_deref(), Some("1.2.9"));
        assert_eq!(e.candidates.len(), 1);
    }

    fn pin(text: &str, operator: &str) -> PinFact {
        PinFact {
            constraint: crate::constraint::Constraint::parse(text)
                .unwrap_or_else(|e| panic!("{e}")),
            operator: operator.into(),
        }
    }

    fn minor_auto() -> EffectivePolicy {
        let mut p = defaults();
        p.gates[1] = Setting {
            value: Gate::Auto,
            rule: "global.minor".into(),
        };
        p
    }

    #[test]
    fn an_operator_pin_restricts_candidates_and_names_the_operator() {
        let mut f = facts("1.2.3");
        f.pin = Some(pin("~1.2", "cli:alice"));
        let e = evaluate(
            &minor_auto(),
            &f,
            &avail(&["1.2.4", "1.2.9", "1.3.0", "1.4.1", "2.0.0"]),
            now(),
        );
        assert_eq!(
            summary(&e),
            vec![("1.2.9".into(), "patch".into(), Verdict::Approve)]
        );
        assert_eq!(e.act_on.as_deref(), Some("1.2.9"));
        assert!(
            e.candidates[0]
                .reason
                .contains("1.2.3 → 1.2.9 is a patch update within operator pin ~1.2 by cli:alice"),
            "{}",
            e.candidates[0].reason
        );
        assert!(
            e.notes.iter().any(|n| n
                == "3 newer versions (up to 2.0.0) held back by operator pin ~1.2 by cli:alice"),
            "{:?}",
            e.notes
        );

        // Without the pin the same policy moves to the minor.
        f.pin = None;
        let e = evaluate(
            &minor_auto(),
            &f,
            &avail(&["1.2.9", "1.3.0", "1.4.1"]),
            now(),
        );
        assert_eq!(e.act_on.as_deref(), Some("1.4.1"));
    }

    #[test]
    fn a_pin_and_a_policy_constraint_both_hold() {
        let mut p = minor_auto();
        p.constraint = Some(Setting {
            value: crate::constraint::Constraint::parse("!=1.2.9")
                .unwrap_or_else(|e| panic!("{e}")),
            rule: "global.constraint".into(),
        });
        let mut f = facts("1.2.3");
        f.pin = Some(pin("~1.2", "api:ops"));
        let e = evaluate(&p, &f, &avail(&["1.2.5", "1.2.9", "1.3.0"]), now());
        assert_eq!(e.act_on.as_deref(), Some("1.2.5"));
        // 1.2.9 was already out by policy; only 1.3.0 is the pin's doing.
        assert!(
            e.notes
                .iter()
                .any(|n| n
                    == "1 newer version (up to 1.3.0) held back by operator pin ~1.2 by api:ops"),
            "{:?}",
            e.notes
        );
    }

    #[test]
    fn a_pin_that_nothing_newer_satisfies_leaves_no_candidate() {
        let mut f = facts("1.2.3");
        f.pin = Some(pin("1.2.3", "cli:bob"));
        let e = evaluate(&minor_auto(), &f, &avail(&["1.2.4", "1.3.0"]), now());
        assert!(e.candidates.is_empty(), "{:?}", e.candidates);
        assert_eq!(e.act_on, None);
    }

    #[test]
    fn a_snooze_defers_what_would_proceed_until_it_ends() {
        let until: Timestamp = "2026-12-01T00:00:00Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut f = facts("1.2.3");
        f.snoozed_until = Some((until, "cli:carol".into()));
        f.approvals = vec![ApprovalFact {
            candidate: "1.3.0".into(),
            approved: true,
            operator: "cli:dave".into(),
        }];
        let e = evaluate(
            &defaults(),
            &f,
            &avail(&["1.2.4", "1.3.0", "1.4.0", "2.0.0"]),
            now(),
        );
        assert_eq!(
            summary(&e),
            vec![
                ("1.2.4".into(), "patch".into(), Verdict::Defer),
                ("1.4.0".into(), "minor".into(), Verdict::PendingReview),
                ("2.0.0".into(), "major".into(), Verdict::ManualApproval),
            ]
        );
        assert_eq!(e.act_on, None);
        let patch = &e.candidates[0];
        assert_eq!(patch.rule, "snooze");
        assert_eq!(patch.not_before, Some(until));
        assert!(
            patch.reason.ends_with(
                "but cli:carol snoozed updates of this asset until 2026-12-01T00:00:00Z"
            ),
            "{}",
            patch.reason
        );
        // An approved candidate is held too.
        let e = evaluate(&defaults(), &f, &avail(&["1.3.0"]), now());
        assert_eq!(e.candidates[0].decision, Verdict::Defer);
        assert!(e.candidates[0].reason.contains("cli:dave approved it"));

        // Once the snooze has ended, everything is as before.
        let later: Timestamp = "2026-12-01T00:00:01Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let e = evaluate(&defaults(), &f, &avail(&["1.2.4", "1.3.0"]), later);
        assert_eq!(
            summary(&e),
            vec![
                ("1.2.4".into(), "patch".into(), Verdict::Approve),
                ("1.3.0".into(), "minor".into(), Verdict::Approve),
            ]
        );
        assert_eq!(e.act_on.as_deref(), Some("1.3.0"));
    }

    #[test]
    fn a_snooze_defers_a_new_digest_and_a_rejection_still_wins() {
        let until: Timestamp = "2026-11-23T00:00:00Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut p = defaults();
        p.gates[4] = Setting {
            value: Gate::Auto,
            rule: "global.digest".into(),
        };
        let mut f = facts("latest");
        f.snoozed_until = Some((until, "api:ops".into()));
        f.digest = Some(DigestDrift {
            running: "sha256:aa".into(),
            latest: "sha256:bb".into(),
            first_seen: None,
        });
        let e = evaluate(&p, &f, &[], now());
        assert_eq!(e.candidates[0].decision, Verdict::Defer);
        assert_eq!(e.candidates[0].not_before, Some(until));

        let mut f = facts("1.2.3");
        f.snoozed_until = Some((until, "api:ops".into()));
        f.approvals = vec![ApprovalFact {
            candidate: "1.2.4".into(),
            approved: false,
            operator: "cli:erin".into(),
        }];
        let e = evaluate(&defaults(), &f, &avail(&["1.2.4"]), now());
        assert_eq!(e.candidates[0].decision, Verdict::Reject);
    }

    #[test]
    fn a_blocked_asset_proceeds_with_nothing() {
        let mut f = facts("1.2.3");
        f.blocked = Some("its operator pin cannot be read".into());
        let e = evaluate(&defaults(), &f, &avail(&["1.2.4"]), now());
        assert_eq!(e.candidates[0].decision, Verdict::Reject);
        assert_eq!(e.candidates[0].rule, "operator");
        assert!(
            e.candidates[0]
                .reason
                .ends_with("nothing proceeds for this asset: its operator pin cannot be read")
        );
        assert_eq!(e.act_on, None);
    }

    #[test]
    fn labels_with_problems_stop_everything() {
        let mut p = defaults();
        p.problems.push(
            "label safe-updater.io/major=\"x\": expected auto, review, manual or skip".into(),
        );
        let e = evaluate(&p, &facts("1.2.3"), &avail(&["1.2.4"]), now());
        assert_eq!(e.act_on, None);
        assert!(e.candidates.is_empty());
    }
}
