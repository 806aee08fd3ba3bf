//! What operators do between cycles: answer the reviews waiting in the approval queue, skip a
//! version, snooze an asset, pin it to a constraint. The CLI and the daemon's REST API both call
//! these functions and only translate their results: every rule about what an operator may do
//! lives here, and [`OperatorError`] says which kind of refusal it is (not found, already
//! decided, invalid input, store failure) so each front end can map it (404/409/400/500, or an
//! exit code).
//!
//! Every action is recorded by the store with its audit record, the operator's identity as the
//! actor (`cli:<user>`, `api:<name>`), in one transaction. What this module must not do: decide
//! what an update may do. An approval, rejection, pin or snooze is stored as a fact; the core's
//! `decide` reads it on the next check, and the next cycle acts inside its update window.

use std::cmp::Ordering;
use std::collections::HashMap;

use jiff::{SignedDuration, Span, SpanRelativeTo, Timestamp};
use safe_updater_core::asset::{Asset, AssetKind};
use safe_updater_core::constraint::Constraint;
use safe_updater_core::reference::ImageRef;
use safe_updater_core::tag::{Scheme, Tag, analyze};
use safe_updater_store::{
    Approval, ApprovalOrigin, AssetOverrides, DecisionRecord, PinOverride, SnoozeOverride, Store,
    StoreError, Stored, Verdict,
};
use serde::Serialize;

/// Longest operator identity, reason or version accepted (bytes). Audit records are kept for
/// years; a megabyte pasted by mistake should not be.
const MAX_OPERATOR: usize = 200;
const MAX_REASON: usize = 2_000;
const MAX_VERSION: usize = 128;

/// Why an operator action was refused.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// No such asset, no such pending review, nothing to undo.
    #[error("{0}")]
    NotFound(String),
    /// The candidate already has a verdict; the first one stands.
    #[error("{id} was already {} by {operator} at {at}", verdict.as_str())]
    AlreadyDecided {
        id: String,
        verdict: Verdict,
        operator: String,
        at: Timestamp,
    },
    /// The request itself is wrong: a malformed id, an empty reason, a constraint that does
    /// not parse, a snooze in the past.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A review waiting for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingApproval {
    /// `<asset_id>@<candidate>`: what [`approve`] and [`reject`] take.
    pub id: String,
    pub asset_id: String,
    pub asset_name: String,
    pub kind: AssetKind,
    pub namespace: Option<String>,
    /// The image the asset runs now.
    pub from: String,
    /// The tag (or, for a new digest behind the same tag, the digest) proposed.
    pub candidate: String,
    /// The change class: `patch`, `minor`, `major`, `prerelease`, `build`, `digest`.
    pub change: String,
    pub reason: String,
    pub rule: Option<String>,
    pub decided_at: Timestamp,
    /// The decision record this entry comes from.
    pub decision_id: i64,
}

/// The approval id of a candidate of an asset.
pub fn approval_id(asset_id: &str, candidate: &str) -> String {
    format!("{asset_id}@{candidate}")
}

/// Splits an approval id into (asset id, candidate). Asset ids contain slashes and never an
/// `@`; tags and digests never contain one either, so the last `@` separates them.
pub fn parse_approval_id(id: &str) -> Result<(&str, &str), OperatorError> {
    match id.rsplit_once('@') {
        Some((asset, candidate)) if !asset.is_empty() && !candidate.is_empty() => {
            Ok((asset, candidate))
        }
        _ => Err(OperatorError::Invalid(format!(
            "{id:?} is not an approval id; it looks like <asset id>@<candidate>, e.g. docker/local/web@1.1.0"
        ))),
    }
}

/// The reviews waiting for an operator, oldest first: for each asset and candidate, the latest
/// decision is `pending_review`, no operator has approved or rejected it, the asset is still
/// tracked and the candidate is still newer than what it runs.
pub fn pending(store: &Store) -> Result<Vec<PendingApproval>, OperatorError> {
    pending_matching(store, |_| true)
}

/// Reviews read from the store at a time.
const REVIEW_PAGE: usize = 256;

/// One page of [`pending`]: the reviews among the next `limit` pending decisions after the
/// decision id `after`, and the cursor for the page after it (`None` after the last). What
/// the daemon walks, so that thousands of reviews are never held at once.
pub fn pending_page(
    store: &Store,
    after: Option<i64>,
    limit: usize,
) -> Result<(Vec<PendingApproval>, Option<i64>), OperatorError> {
    page_matching(store, after, limit, &|_| true)
}

fn pending_matching(
    store: &Store,
    wanted: impl Fn(&DecisionRecord) -> bool,
) -> Result<Vec<PendingApproval>, OperatorError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = page_matching(store, after, REVIEW_PAGE, &wanted)?;
        out.extend(page);
        match next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

fn page_matching(
    store: &Store,
    after: Option<i64>,
    limit: usize,
    wanted: &dyn Fn(&DecisionRecord) -> bool,
) -> Result<(Vec<PendingApproval>, Option<i64>), OperatorError> {
    let page = store.pending_reviews_page(after, Some(limit))?;
    let next = if page.len() == limit {
        page.last().map(|s| s.id)
    } else {
        None
    };
    Ok((approvals_of(store, page, wanted)?, next))
}

/// The pending reviews of `page` that `wanted` selects, whose asset is still tracked and
/// whose candidate is still newer than what it runs.
fn approvals_of(
    store: &Store,
    page: Vec<Stored<DecisionRecord>>,
    wanted: &dyn Fn(&DecisionRecord) -> bool,
) -> Result<Vec<PendingApproval>, OperatorError> {
    // Per page only: an asset with several candidates is read once.
    let mut assets: HashMap<String, Option<Asset>> = HashMap::new();
    let mut out = Vec::new();
    for stored in page {
        let d = stored.record;
        if !wanted(&d) {
            continue;
        }
        let Some(candidate) = d.candidate.clone() else {
            continue;
        };
        let asset = match assets.get(&d.asset_id) {
            Some(a) => a.clone(),
            None => {
                // Without the parts this does not read (labels, annotations, the adapter's
                // extra).
                let a = store.get_asset(&d.asset_id)?.map(|mut a| {
                    a.labels.clear();
                    a.annotations.clear();
                    a.extra = serde_json::Value::Null;
                    a
                });
                assets.insert(d.asset_id.clone(), a.clone());
                a
            }
        };
        let Some(asset) = asset else { continue };
        if !still_newer(&asset, &d, &candidate) {
            continue;
        }
        out.push(PendingApproval {
            id: approval_id(&asset.id, &candidate),
            asset_id: asset.id,
            asset_name: asset.name,
            kind: asset.kind,
            namespace: asset.namespace,
            from: asset.image,
            candidate,
            change: d.change,
            reason: d.reason,
            rule: d.rule,
            decided_at: d.at,
            decision_id: stored.id,
        });
    }
    Ok(out)
}

/// The tag the asset runs (`latest` when its reference names none).
fn current_tag(asset: &Asset) -> Option<String> {
    ImageRef::parse(&asset.image)
        .ok()
        .map(|r| r.with_default_tag().tag().unwrap_or("latest").to_owned())
}

/// Whether a reviewed candidate still means a move forward for the asset as it runs now: an
/// update applied since (the candidate itself, or a newer version) retires the review.
fn still_newer(asset: &Asset, d: &DecisionRecord, candidate: &str) -> bool {
    let Some(current) = current_tag(asset) else {
        // The reference no longer reads; the next check reports it. Keep the review visible.
        return true;
    };
    if d.change == "digest" {
        // A new digest behind the same tag: pending while the asset still runs that tag and
        // not yet that digest.
        return current == d.current && asset.digest.as_deref() != Some(candidate);
    }
    if current == candidate {
        return false;
    }
    // Read both tags as the default scheme does; tags it cannot order (a custom scheme) stay
    // in the queue, and the next check records a fresh decision about them anyway.
    match (
        analyze(&current, &Scheme::default()),
        analyze(candidate, &Scheme::default()),
    ) {
        (Tag::Version(cur), Tag::Version(cand)) => cand.cmp_precedence(&cur) == Ordering::Greater,
        _ => true,
    }
}

fn check_operator(operator: &str) -> Result<(), OperatorError> {
    if operator.trim().is_empty()
        || operator.len() > MAX_OPERATOR
        || operator.chars().any(char::is_control)
    {
        return Err(OperatorError::Invalid(format!(
            "the operator identity must be 1 to {MAX_OPERATOR} printable characters (like cli:alice or api:deploy-bot)"
        )));
    }
    Ok(())
}

/// A reason as stored: trimmed; `None` when blank.
fn check_reason(reason: Option<&str>) -> Result<Option<String>, OperatorError> {
    let Some(r) = reason.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if r.len() > MAX_REASON {
        return Err(OperatorError::Invalid(format!(
            "the reason is {} bytes long; keep it under {MAX_REASON}",
            r.len()
        )));
    }
    Ok(Some(r.to_owned()))
}

fn existing_asset(store: &Store, asset_id: &str) -> Result<Asset, OperatorError> {
    tracked_asset(store, asset_id)
}

/// The tracked asset with this id; `NotFound` naming the closest ids when there is none (a
/// bare container name, a typo), so the operator sees what they meant.
pub fn tracked_asset(store: &Store, asset_id: &str) -> Result<Asset, OperatorError> {
    if let Some(a) = store.get_asset(asset_id)? {
        return Ok(a);
    }
    let close = close_ids(store, asset_id)?;
    let hint = if close.is_empty() {
        "; see `safe-updater list-assets` (run `safe-updater scan` first if it is new)".to_owned()
    } else {
        format!("; did you mean {}?", close.join(", "))
    };
    Err(OperatorError::NotFound(format!(
        "no tracked asset has the id {asset_id}{hint}"
    )))
}

/// Up to three asset ids close to `given`: the same name, a name or id containing it, or
/// within a few edits of it.
fn close_ids(store: &Store, given: &str) -> Result<Vec<String>, OperatorError> {
    let given_lower = given.to_ascii_lowercase();
    let tail = given_lower
        .rsplit('/')
        .next()
        .unwrap_or(&given_lower)
        .to_owned();
    let mut scored: Vec<(usize, String)> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_assets_page(&Default::default(), after.as_deref(), 512)?;
        let last = page.last().map(|a| a.id.clone());
        for a in &page {
            let id = a.id.to_ascii_lowercase();
            let name = a.name.to_ascii_lowercase();
            let score = if name == tail {
                0
            } else if id.contains(&given_lower) || name.contains(&tail) {
                1
            } else {
                let d = edit_distance(&id, &given_lower).min(edit_distance(&name, &tail));
                if d > 3 {
                    continue;
                }
                1 + d
            };
            scored.push((score, a.id.clone()));
        }
        if page.len() < 512 {
            break;
        }
        after = last;
    }
    scored.sort();
    Ok(scored.into_iter().take(3).map(|(_, id)| id).collect())
}

/// Levenshtein distance, for suggestions only (short strings).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Answers a pending review: the candidate may proceed, in its update window, on the next
/// cycle. `NotFound` if no review waits under `id`; `AlreadyDecided` if it was answered.
pub fn approve(
    store: &mut Store,
    id: &str,
    operator: &str,
    now: Timestamp,
) -> Result<Approval, OperatorError> {
    answer(store, id, operator, Verdict::Approved, None, now)
}

/// Refuses a pending review, for a reason (required): the candidate is never proposed again
/// for this asset. `NotFound` if no review waits under `id`; `AlreadyDecided` if it was
/// answered.
pub fn reject(
    store: &mut Store,
    id: &str,
    operator: &str,
    reason: &str,
    now: Timestamp,
) -> Result<Approval, OperatorError> {
    let reason = check_reason(Some(reason))?.ok_or_else(|| {
        OperatorError::Invalid(
            "a rejection needs a reason: say why this version must not run".into(),
        )
    })?;
    answer(store, id, operator, Verdict::Rejected, Some(reason), now)
}

fn answer(
    store: &mut Store,
    id: &str,
    operator: &str,
    verdict: Verdict,
    reason: Option<String>,
    now: Timestamp,
) -> Result<Approval, OperatorError> {
    check_operator(operator)?;
    let (asset_id, candidate) = parse_approval_id(id)?;
    if let Some(a) = store.approval_for(asset_id, candidate)? {
        // A version rejected outright (skipped, or rolled away from) is lifted by an explicit
        // approval; an answer to a review stands (two operators answering at once must not
        // overrule each other).
        if verdict == Verdict::Approved
            && a.verdict == Verdict::Rejected
            && a.origin.may_be_lifted()
        {
            let approval = Approval {
                asset_id: asset_id.to_owned(),
                candidate: candidate.to_owned(),
                verdict,
                operator: operator.to_owned(),
                reason: Some(format!(
                    "lifts the {} rejection by {} at {}",
                    a.origin.as_str(),
                    a.operator,
                    a.at.strftime("%Y-%m-%dT%H:%M:%SZ")
                )),
                at: now,
                origin: ApprovalOrigin::Review,
            };
            store.record_approval(&approval)?;
            return Ok(approval);
        }
        return Err(already(id, a));
    }
    let waiting = pending_matching(store, |d| {
        d.asset_id == asset_id && d.candidate.as_deref() == Some(candidate)
    })?;
    if waiting.is_empty() {
        return Err(OperatorError::NotFound(format!(
            "no update waits for approval as {id}"
        )));
    }
    let approval = Approval {
        asset_id: asset_id.to_owned(),
        candidate: candidate.to_owned(),
        verdict,
        operator: operator.to_owned(),
        reason,
        at: now,
        origin: ApprovalOrigin::Review,
    };
    // Checked again under the write lock: another operator may have answered meanwhile.
    match store.record_approval_if_undecided(&approval)? {
        None => Ok(approval),
        Some(first) => Err(already(id, first)),
    }
}

fn already(id: &str, a: Approval) -> OperatorError {
    OperatorError::AlreadyDecided {
        id: id.to_owned(),
        verdict: a.verdict,
        operator: a.operator,
        at: a.at,
    }
}

/// Never proposes `version` (a tag as the registry lists it, or a digest) for the asset again:
/// a rejection of that candidate, whether or not it waits for review. It also withdraws an
/// earlier approval of it. `AlreadyDecided` if it is rejected already.
pub fn skip_version(
    store: &mut Store,
    asset_id: &str,
    version: &str,
    operator: &str,
    reason: Option<&str>,
    now: Timestamp,
) -> Result<Approval, OperatorError> {
    check_operator(operator)?;
    let reason = check_reason(reason)?;
    let version = version.trim();
    if !is_tag_or_digest(version) {
        return Err(OperatorError::Invalid(format!(
            "{version:?} is not a tag or digest; give the version exactly as the registry lists it (e.g. 1.1.0)"
        )));
    }
    let asset = existing_asset(store, asset_id)?;
    if current_tag(&asset).as_deref() == Some(version) || asset.digest.as_deref() == Some(version) {
        return Err(OperatorError::Invalid(format!(
            "{asset_id} runs {version} now; skipping it would change nothing (roll back instead)"
        )));
    }
    if let Some(a) = store.approval_for(asset_id, version)?
        && a.verdict == Verdict::Rejected
    {
        return Err(already(&approval_id(asset_id, version), a));
    }
    let approval = Approval {
        asset_id: asset_id.to_owned(),
        candidate: version.to_owned(),
        verdict: Verdict::Rejected,
        operator: operator.to_owned(),
        reason,
        at: now,
        origin: ApprovalOrigin::Skip,
    };
    store.record_approval(&approval)?;
    Ok(approval)
}

/// Rejects the version an operator just rolled `asset_id` away from, in the operator's name
/// (origin `rollback`), so that no cycle applies it again; an explicit [`approve`] of
/// `<asset>@<version>` lifts it. Nothing is recorded when the version already stands
/// rejected. Returns the rejection recorded, if any.
pub fn reject_rolled_back(
    store: &mut Store,
    asset_id: &str,
    version: &str,
    operator: &str,
    target: &str,
    now: Timestamp,
) -> Result<Option<Approval>, OperatorError> {
    check_operator(operator)?;
    if let Some(a) = store.approval_for(asset_id, version)?
        && a.verdict == Verdict::Rejected
    {
        return Ok(None);
    }
    let approval = Approval {
        asset_id: asset_id.to_owned(),
        candidate: version.to_owned(),
        verdict: Verdict::Rejected,
        operator: operator.to_owned(),
        reason: Some(format!(
            "rolled back from {version} to {target}; `safe-updater approve {}` lifts this",
            approval_id(asset_id, version)
        )),
        at: now,
        origin: ApprovalOrigin::Rollback,
    };
    store.record_approval(&approval)?;
    Ok(Some(approval))
}

/// The rejections that keep versions of assets from running (by `skip` or a rollback), which
/// an explicit approval lifts; newest first.
pub fn rejected_versions(store: &Store) -> Result<Vec<Approval>, OperatorError> {
    Ok(store
        .latest_verdicts()?
        .into_iter()
        .filter(|a| a.verdict == Verdict::Rejected && a.origin.may_be_lifted())
        .collect())
}

/// A Docker tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`) or a `sha256:` digest.
fn is_tag_or_digest(s: &str) -> bool {
    if let Some(hex) = s.strip_prefix("sha256:") {
        return hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    let mut bytes = s.bytes();
    s.len() <= MAX_VERSION
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Holds back every update of the asset until `until` (which must lie after `now`), replacing
/// any earlier snooze. Reviews keep waiting for an answer meanwhile.
pub fn snooze(
    store: &mut Store,
    asset_id: &str,
    until: Timestamp,
    operator: &str,
    now: Timestamp,
) -> Result<AssetOverrides, OperatorError> {
    check_operator(operator)?;
    if until <= now {
        return Err(OperatorError::Invalid(format!(
            "{until} is not in the future; snooze until a later time"
        )));
    }
    existing_asset(store, asset_id)?;
    store.set_snooze(asset_id, until, operator, now)?;
    current_overrides(store, asset_id)
}

/// Ends the asset's snooze. `NotFound` if it has none.
pub fn unsnooze(
    store: &mut Store,
    asset_id: &str,
    operator: &str,
    now: Timestamp,
) -> Result<SnoozeOverride, OperatorError> {
    check_operator(operator)?;
    store
        .clear_snooze(asset_id, operator, now)?
        .ok_or_else(|| OperatorError::NotFound(format!("{asset_id} is not snoozed")))
}

/// Restricts the asset's updates to versions satisfying `constraint` (Helm/Masterminds syntax:
/// `~1.2`, `^1`, `>=1.2 <1.5`), replacing any earlier pin.
pub fn pin(
    store: &mut Store,
    asset_id: &str,
    constraint: &str,
    operator: &str,
    now: Timestamp,
) -> Result<AssetOverrides, OperatorError> {
    check_operator(operator)?;
    let constraint = constraint.trim();
    Constraint::parse(constraint).map_err(|e| {
        OperatorError::Invalid(format!(
            "{constraint:?} is not a version constraint ({e}); write it like ~1.2, ^1 or >=1.2 <1.5"
        ))
    })?;
    existing_asset(store, asset_id)?;
    store.set_pin(asset_id, constraint, operator, now)?;
    current_overrides(store, asset_id)
}

/// Removes the asset's pin. `NotFound` if it has none.
pub fn unpin(
    store: &mut Store,
    asset_id: &str,
    operator: &str,
    now: Timestamp,
) -> Result<PinOverride, OperatorError> {
    check_operator(operator)?;
    store
        .clear_pin(asset_id, operator, now)?
        .ok_or_else(|| OperatorError::NotFound(format!("{asset_id} is not pinned")))
}

fn current_overrides(store: &Store, asset_id: &str) -> Result<AssetOverrides, OperatorError> {
    // Just written in the caller's transaction; absent only if something removed it since.
    Ok(store
        .overrides(asset_id)?
        .unwrap_or_else(|| AssetOverrides {
            asset_id: asset_id.to_owned(),
            pin: None,
            snooze: None,
        }))
}

/// What operators have set on one asset, for listings: its pin, its snooze while it lasts, and
/// the versions it must not move to (those whose latest verdict is a rejection or a skip).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OperatorState {
    pub pin: Option<PinOverride>,
    /// Only a snooze that has not ended at `now`.
    pub snooze: Option<SnoozeOverride>,
    /// Sorted.
    pub skipped_versions: Vec<String>,
}

/// The operator state of one asset at `now` (nothing set: the default).
pub fn operator_state(
    store: &Store,
    asset_id: &str,
    now: Timestamp,
) -> Result<OperatorState, OperatorError> {
    let overrides = store.overrides(asset_id)?;
    let (pin, snooze) = overrides.map_or((None, None), |o| (o.pin, o.snooze));
    // The latest verdict per candidate counts (approvals_for is oldest first).
    let mut latest: HashMap<String, Verdict> = HashMap::new();
    for a in store.approvals_for(asset_id)? {
        latest.insert(a.candidate, a.verdict);
    }
    let mut skipped_versions: Vec<String> = latest
        .into_iter()
        .filter(|(_, v)| *v == Verdict::Rejected)
        .map(|(c, _)| c)
        .collect();
    skipped_versions.sort();
    Ok(OperatorState {
        pin,
        snooze: snooze.filter(|s| s.until > now),
        skipped_versions,
    })
}

/// Reads a snooze end as operators write it: an RFC 3339 time (`2026-12-01T00:00:00Z`), a
/// date or date and time (`2026-12-24`, `2026-12-24 09:00`, UTC), `tomorrow` or a weekday
/// (`monday`: the next one; both at 00:00 UTC), or a duration from `now` (`7d`, `12h`, `1w`,
/// `2d 6h`; a day is 24 hours).
pub fn parse_until(text: &str, now: Timestamp) -> Result<Timestamp, OperatorError> {
    let text = text.trim();
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let invalid = || {
        OperatorError::Invalid(format!(
            "{text:?} is not a time: write 2026-12-24, 2026-12-24 09:00, tomorrow, monday, a duration like 7d or 12h, or 2026-12-01T00:00:00Z"
        ))
    };
    let utc = jiff::tz::TimeZone::UTC;
    let today = now.to_zoned(utc.clone()).date();
    let midnight = |d: jiff::civil::Date| {
        d.to_zoned(utc.clone())
            .map(|z| z.timestamp())
            .map_err(|_| invalid())
    };
    let lower = text.to_ascii_lowercase();
    if lower == "tomorrow" {
        return midnight(today.tomorrow().map_err(|_| invalid())?);
    }
    if let Some(day) = weekday(&lower) {
        let mut d = today.tomorrow().map_err(|_| invalid())?;
        while d.weekday() != day {
            d = d.tomorrow().map_err(|_| invalid())?;
        }
        return midnight(d);
    }
    // A date and a time first: a date's parser also reads `2026-12-24 09:30`, dropping the
    // time.
    if text.len() > 10
        && let Ok(dt) = text.replacen(' ', "T", 1).parse::<jiff::civil::DateTime>()
    {
        return dt
            .to_zoned(utc)
            .map(|z| z.timestamp())
            .map_err(|_| invalid());
    }
    if let Ok(d) = text.parse::<jiff::civil::Date>() {
        return midnight(d);
    }
    let span: Span = text.parse().map_err(|_| invalid())?;
    let d: SignedDuration = span
        .to_duration(SpanRelativeTo::days_are_24_hours())
        .map_err(|_| invalid())?;
    if d <= SignedDuration::ZERO {
        return Err(invalid());
    }
    now.checked_add(d).map_err(|_| invalid())
}

fn weekday(name: &str) -> Option<jiff::civil::Weekday> {
    use jiff::civil::Weekday::*;
    Some(match name {
        "monday" | "mon" => Monday,
        "tuesday" | "tue" => Tuesday,
        "wednesday" | "wed" => Wednesday,
        "thursday" | "thu" => Thursday,
        "friday" | "fri" => Friday,
        "saturday" | "sat" => Saturday,
        "sunday" | "sun" => Sunday,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-22T12:00:00Z".parse().expect("timestamp")
    }

    #[test]
    fn approval_ids_split_at_the_last_at_sign() {
        assert_eq!(
            parse_approval_id("docker/local/web@1.1.0").expect("id"),
            ("docker/local/web", "1.1.0")
        );
        assert_eq!(
            parse_approval_id("k8s/prod/default/Deployment/api/app@sha256:ab").expect("id"),
            ("k8s/prod/default/Deployment/api/app", "sha256:ab")
        );
        for bad in ["docker/local/web", "@1.0", "docker/local/web@", ""] {
            assert!(
                matches!(parse_approval_id(bad), Err(OperatorError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn snooze_ends_read_as_times_or_durations() {
        assert_eq!(
            parse_until("2026-12-01T00:00:00Z", now()).expect("time"),
            "2026-12-01T00:00:00Z".parse::<Timestamp>().expect("t")
        );
        assert_eq!(
            parse_until("7d", now()).expect("7d"),
            "2026-11-29T12:00:00Z".parse::<Timestamp>().expect("t")
        );
        assert_eq!(
            parse_until("1w", now()).expect("1w"),
            "2026-11-29T12:00:00Z".parse::<Timestamp>().expect("t")
        );
        assert_eq!(
            parse_until("2d 6h", now()).expect("2d 6h"),
            "2026-11-24T18:00:00Z".parse::<Timestamp>().expect("t")
        );
        // 2026-11-22 is a Sunday.
        for (text, want) in [
            ("tomorrow", "2026-11-23T00:00:00Z"),
            ("Monday", "2026-11-23T00:00:00Z"),
            ("sunday", "2026-11-29T00:00:00Z"),
            ("fri", "2026-11-27T00:00:00Z"),
            ("2026-12-24", "2026-12-24T00:00:00Z"),
            ("2026-12-24 09:30", "2026-12-24T09:30:00Z"),
        ] {
            assert_eq!(
                parse_until(text, now()).expect(text),
                want.parse::<Timestamp>().expect("t"),
                "{text}"
            );
        }
        for bad in ["soon", "", "-3d", "0s", "2026-13-01", "someday"] {
            assert!(
                matches!(parse_until(bad, now()), Err(OperatorError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn versions_are_tags_or_digests() {
        for ok in [
            "1.1.0",
            "v2",
            "1.0.0-alpine",
            "latest",
            &format!("sha256:{}", "a".repeat(64)),
        ] {
            assert!(is_tag_or_digest(ok), "{ok}");
        }
        for bad in ["", "-1", "1.0 beta", "a@b", "sha256:xyz", &"1".repeat(129)] {
            assert!(!is_tag_or_digest(bad), "{bad}");
        }
    }
}
