//! Assets as discovered, and the tags observed in each repository.

use jiff::Timestamp;
use rusqlite::types::Type;
use rusqlite::{OptionalExtension as _, Row, TransactionBehavior, params};
use safe_updater_core::asset::{Asset, AssetKind};

use crate::error::{Context as _, Result};
use crate::types::{AssetFilter, ObservedTag, ObservedTagInput, RepositoryTag};
use crate::{Store, json_col, ts_col, ts_to_sql};

pub(crate) const ASSET_COLUMNS: &str = "id, kind, location, namespace, name, container, image, \
     digest, labels, annotations, extra, first_seen, last_seen";

pub(crate) fn asset_from_row(row: &Row<'_>) -> rusqlite::Result<Asset> {
    let kind_text: String = row.get(1)?;
    let kind = AssetKind::parse(&kind_text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            Type::Text,
            format!("unknown asset kind {kind_text:?}").into(),
        )
    })?;
    let extra: Option<String> = row.get(10)?;
    let extra = match extra {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(10, Type::Text, Box::new(e)))?,
        None => serde_json::Value::Null,
    };
    Ok(Asset {
        id: row.get(0)?,
        kind,
        location: row.get(2)?,
        namespace: row.get(3)?,
        name: row.get(4)?,
        container: row.get(5)?,
        image: row.get(6)?,
        digest: row.get(7)?,
        labels: json_col(row, 8)?,
        annotations: json_col(row, 9)?,
        extra,
        first_seen: ts_col(row, 11)?,
        last_seen: ts_col(row, 12)?,
    })
}

/// Inserts `asset` as is (`keep_first_seen = false`: an import), or inserts it or updates the
/// stored one except its `first_seen` (a scan).
pub(crate) fn upsert_asset(
    conn: &rusqlite::Connection,
    label: &str,
    op: &'static str,
    asset: &Asset,
    keep_first_seen: bool,
) -> Result<()> {
    let labels = serde_json::to_string(&asset.labels).during(label, op)?;
    let annotations = serde_json::to_string(&asset.annotations).during(label, op)?;
    let extra = if asset.extra.is_null() {
        None
    } else {
        Some(serde_json::to_string(&asset.extra).during(label, op)?)
    };
    let insert = "INSERT INTO assets (id, kind, location, namespace, name, container, image, \
         digest, labels, annotations, extra, first_seen, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";
    let upsert = "INSERT INTO assets (id, kind, location, namespace, name, container, image, \
         digest, labels, annotations, extra, first_seen, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (id) DO UPDATE SET
             kind = excluded.kind, location = excluded.location,
             namespace = excluded.namespace, name = excluded.name,
             container = excluded.container, image = excluded.image,
             digest = excluded.digest, labels = excluded.labels,
             annotations = excluded.annotations, extra = excluded.extra,
             last_seen = excluded.last_seen";
    let mut stmt = conn
        .prepare_cached(if keep_first_seen { upsert } else { insert })
        .during(label, op)?;
    stmt.execute(params![
        asset.id,
        asset.kind.as_str(),
        asset.location,
        asset.namespace,
        asset.name,
        asset.container,
        asset.image,
        asset.digest,
        labels,
        annotations,
        extra,
        ts_to_sql(&asset.first_seen),
        ts_to_sql(&asset.last_seen),
    ])
    .during(label, op)?;
    Ok(())
}

impl Store {
    /// Inserts or updates assets, all in one transaction. An asset already stored keeps its
    /// `first_seen`; everything else is replaced by what was discovered. Returns how many
    /// assets were written.
    pub fn upsert_assets(&mut self, assets: &[Asset]) -> Result<usize> {
        let label = &self.label;
        let op = "upsert assets";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during(label, op)?;
        for asset in assets {
            upsert_asset(&tx, label, op, asset, true)?;
        }
        tx.commit().during(label, op)?;
        Ok(assets.len())
    }

    /// The asset with this id (a primary-key lookup).
    pub fn get_asset(&self, id: &str) -> Result<Option<Asset>> {
        let sql = format!("SELECT {ASSET_COLUMNS} FROM assets WHERE id = ?1");
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| stmt.query_row([id], asset_from_row).optional())
            .during(&self.label, "get asset")
    }

    /// The assets matching every field set in `filter`, ordered by id.
    pub fn list_assets(&self, filter: &AssetFilter) -> Result<Vec<Asset>> {
        self.list_assets_from(filter, None, None)
    }

    /// At most `limit` assets matching `filter` whose id sorts after `after`, ordered by id:
    /// one page of the inventory, so that a walk over it holds one page at a time. Pass the
    /// last id of a page to get the next; a page shorter than `limit` is the last.
    pub fn list_assets_page(
        &self,
        filter: &AssetFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Asset>> {
        self.list_assets_from(filter, after, Some(limit))
    }

    fn list_assets_from(
        &self,
        filter: &AssetFilter,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<Asset>> {
        let mut sql = format!("SELECT {ASSET_COLUMNS} FROM assets WHERE 1 = 1");
        let mut args: Vec<String> = Vec::new();
        if let Some(after) = after {
            args.push(after.to_owned());
            sql.push_str(&format!(" AND id > ?{}", args.len()));
        }
        if let Some(kind) = filter.kind {
            args.push(kind.as_str().to_string());
            sql.push_str(&format!(" AND kind = ?{}", args.len()));
        }
        if let Some(namespace) = &filter.namespace {
            args.push(namespace.clone());
            sql.push_str(&format!(" AND namespace = ?{}", args.len()));
        }
        if let Some(location) = &filter.location {
            args.push(location.clone());
            sql.push_str(&format!(" AND location = ?{}", args.len()));
        }
        if let Some(part) = &filter.name_contains {
            // LIKE, so that `%` and `_` typed by a user match themselves.
            args.push(format!("%{}%", escape_like(part)));
            sql.push_str(&format!(" AND name LIKE ?{} ESCAPE '\\'", args.len()));
        }
        sql.push_str(" ORDER BY id");
        if let Some(limit) = limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        let op = "list assets";
        let mut stmt = self.conn.prepare_cached(&sql).during(&self.label, op)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), asset_from_row)
            .during(&self.label, op)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .during(&self.label, op)
    }

    /// How many assets are tracked per (kind, namespace), without reading the assets.
    pub fn count_assets_by_kind_namespace(&self) -> Result<Vec<(AssetKind, Option<String>, u64)>> {
        let op = "count assets";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT kind, namespace, count(*) FROM assets GROUP BY kind, namespace
                 ORDER BY kind, namespace",
            )
            .during(&self.label, op)?;
        let rows = stmt
            .query_map([], |row| {
                let kind: String = row.get(0)?;
                let kind = AssetKind::parse(&kind).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        0,
                        Type::Text,
                        format!("unknown asset kind {kind:?}").into(),
                    )
                })?;
                Ok((kind, row.get(1)?, crate::u64_col(row, 2)?))
            })
            .during(&self.label, op)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .during(&self.label, op)
    }

    /// Removes the assets whose `last_seen` is before `ts` (gone since the last scans).
    /// History, approvals and audit records about them stay. Returns how many were removed.
    pub fn remove_assets_not_seen_since(&mut self, ts: Timestamp) -> Result<usize> {
        self.conn
            .execute("DELETE FROM assets WHERE last_seen < ?1", [ts_to_sql(&ts)])
            .during(&self.label, "remove stale assets")
    }

    /// Replaces what is stored for one place (an engine, a cluster context) and kind with
    /// what a complete discovery of it found: `found` is upserted, and every stored asset of
    /// that place and kind that is not in it is removed (the container is gone). One
    /// transaction; history, approvals and audit records of removed assets stay. Returns the
    /// ids removed.
    pub fn replace_assets_at(
        &mut self,
        location: &str,
        kind: AssetKind,
        found: &[Asset],
    ) -> Result<Vec<String>> {
        self.replace_assets_at_except(location, kind, found, &[], None)
    }

    /// [`Store::replace_assets_at`] that removes none of `keep` (assets whose update is in
    /// progress: their container may be between its old and its new self) and, when `covered`
    /// is given (a discovery narrowed by name or label), only the stored assets it covers.
    pub fn replace_assets_at_except(
        &mut self,
        location: &str,
        kind: AssetKind,
        found: &[Asset],
        keep: &[String],
        covered: Option<&dyn Fn(&Asset) -> bool>,
    ) -> Result<Vec<String>> {
        let label = &self.label;
        let op = "replace assets";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during(label, op)?;
        for asset in found {
            upsert_asset(&tx, label, op, asset, true)?;
        }
        let keep: std::collections::HashSet<&str> = found
            .iter()
            .map(|a| a.id.as_str())
            .chain(keep.iter().map(String::as_str))
            .collect();
        let stored: Vec<String> = match covered {
            None => {
                let mut stmt = tx
                    .prepare("SELECT id FROM assets WHERE location = ?1 AND kind = ?2")
                    .during(label, op)?;
                let rows = stmt
                    .query_map(rusqlite::params![location, kind.as_str()], |r| r.get(0))
                    .during(label, op)?;
                rows.collect::<rusqlite::Result<Vec<String>>>()
                    .during(label, op)?
            }
            Some(covered) => {
                let mut stmt = tx
                    .prepare(&format!(
                        "SELECT {ASSET_COLUMNS} FROM assets WHERE location = ?1 AND kind = ?2"
                    ))
                    .during(label, op)?;
                let rows = stmt
                    .query_map(rusqlite::params![location, kind.as_str()], asset_from_row)
                    .during(label, op)?;
                let mut ids = Vec::new();
                for a in rows {
                    let a = a.during(label, op)?;
                    if covered(&a) {
                        ids.push(a.id);
                    }
                }
                ids
            }
        };
        let gone: Vec<String> = stored
            .into_iter()
            .filter(|id| !keep.contains(id.as_str()))
            .collect();
        for id in &gone {
            tx.execute("DELETE FROM assets WHERE id = ?1", [id])
                .during(label, op)?;
        }
        tx.commit().during(label, op)?;
        Ok(gone)
    }

    pub fn count_assets(&self) -> Result<u64> {
        self.count("SELECT count(*) FROM assets", "count assets")
    }

    /// Records the tags just listed for `repository`: new tags are first seen `now`; known
    /// tags keep their `first_seen` and get `last_seen = now`. A tag whose digest changed
    /// gets `digest_first_seen = now`. One transaction.
    pub fn record_observed_tags(
        &mut self,
        repository: &str,
        tags: &[ObservedTagInput],
        now: Timestamp,
    ) -> Result<()> {
        let label = &self.label;
        let op = "record observed tags";
        let now = ts_to_sql(&now);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during(label, op)?;
        {
            // All SET expressions read the row as it was before the update, so
            // digest_first_seen compares the old digest with the new one.
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO observed_tags
                         (repository, tag, digest, first_seen, last_seen, digest_first_seen)
                     VALUES (?1, ?2, ?3, ?4, ?4, ?4)
                     ON CONFLICT (repository, tag) DO UPDATE SET
                         digest_first_seen = CASE
                             WHEN excluded.digest IS NOT NULL AND digest IS NOT NULL
                                  AND excluded.digest <> digest
                             THEN excluded.last_seen
                             ELSE digest_first_seen END,
                         digest = coalesce(excluded.digest, digest),
                         last_seen = max(last_seen, excluded.last_seen)",
                )
                .during(label, op)?;
            for t in tags {
                stmt.execute(params![repository, t.tag, t.digest, now])
                    .during(label, op)?;
            }
        }
        tx.commit().during(label, op)
    }

    /// The tags seen in `repository`, ordered by tag.
    pub fn observed_tags(&self, repository: &str) -> Result<Vec<ObservedTag>> {
        let op = "read observed tags";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT tag, digest, first_seen, last_seen, digest_first_seen
                 FROM observed_tags WHERE repository = ?1 ORDER BY tag",
            )
            .during(&self.label, op)?;
        let rows = stmt
            .query_map([repository], |row| observed_tag_from_row(row, 0))
            .during(&self.label, op)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .during(&self.label, op)
    }

    pub(crate) fn all_observed_tags(&self) -> Result<Vec<RepositoryTag>> {
        let op = "read observed tags";
        let mut stmt = self
            .conn
            .prepare(
                "SELECT repository, tag, digest, first_seen, last_seen, digest_first_seen
                 FROM observed_tags ORDER BY repository, tag",
            )
            .during(&self.label, op)?;
        let rows = stmt
            .query_map([], |row| {
                Ok(RepositoryTag {
                    repository: row.get(0)?,
                    tag: observed_tag_from_row(row, 1)?,
                })
            })
            .during(&self.label, op)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .during(&self.label, op)
    }

    pub(crate) fn count(&self, sql: &str, op: &'static str) -> Result<u64> {
        self.conn
            .query_row(sql, [], |row| crate::u64_col(row, 0))
            .during(&self.label, op)
    }
}

fn observed_tag_from_row(row: &Row<'_>, first: usize) -> rusqlite::Result<ObservedTag> {
    Ok(ObservedTag {
        tag: row.get(first)?,
        digest: row.get(first + 1)?,
        first_seen: ts_col(row, first + 2)?,
        last_seen: ts_col(row, first + 3)?,
        digest_first_seen: ts_col(row, first + 4)?,
    })
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
