//! The device list at fleet size: search, sort and paging done by the
//! database, so a page of 50 out of 10,000 devices reads about 50 rows.
//!
//! Search terms reach SQL only as bound `LIKE` patterns with `%`, `_` and
//! `\` escaped ([`like_escape`]): a term is always matched literally.
//! The statement text itself is built from fixed pieces only (which
//! clauses, how many words), never from input.
//!
//! "Online first" sorts by the presence the database records (connected,
//! not disconnected since, seen within the grace period), the same rule as
//! [`crate::http::devices::is_online`] minus this node's registry; the page
//! then marks each row online from the registry as well. The two can differ
//! for a device whose connection changed within the last heartbeat.

use sqlx::any::AnyRow;
use tessera_core::Timestamp;

use super::devices::{from_row, DeviceRow, COLUMNS};
use super::{Arg, Built, Columns, Db, StoreResult};

/// How a device list is ordered. Every order ends with the id, so a page
/// boundary never moves between two requests over unchanged rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceSort {
    #[default]
    Name,
    NameDesc,
    SeenNewest,
    SeenOldest,
    OnlineFirst,
    Os,
}

impl DeviceSort {
    pub const ALL: [DeviceSort; 6] = [
        DeviceSort::Name,
        DeviceSort::NameDesc,
        DeviceSort::OnlineFirst,
        DeviceSort::SeenNewest,
        DeviceSort::SeenOldest,
        DeviceSort::Os,
    ];

    /// The word in URLs (`?sort=`); empty is the default.
    pub fn parse(s: &str) -> Option<DeviceSort> {
        Some(match s {
            "" | "name" => DeviceSort::Name,
            "-name" => DeviceSort::NameDesc,
            "seen" => DeviceSort::SeenNewest,
            "-seen" => DeviceSort::SeenOldest,
            "online" => DeviceSort::OnlineFirst,
            "os" => DeviceSort::Os,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceSort::Name => "name",
            DeviceSort::NameDesc => "-name",
            DeviceSort::SeenNewest => "seen",
            DeviceSort::SeenOldest => "-seen",
            DeviceSort::OnlineFirst => "online",
            DeviceSort::Os => "os",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            DeviceSort::Name => "name A–Z",
            DeviceSort::NameDesc => "name Z–A",
            DeviceSort::SeenNewest => "last seen, newest",
            DeviceSort::SeenOldest => "last seen, oldest",
            DeviceSort::OnlineFirst => "online first",
            DeviceSort::Os => "operating system",
        }
    }
}

/// One page of the tenant's enrolled devices.
#[derive(Clone, Debug)]
pub struct DeviceQuery {
    pub tenant: String,
    /// Every word must match the name, hostname or OS (anywhere, any
    /// case), a tag (anywhere), or the id or a live key's prefix (start).
    pub words: Vec<String>,
    pub sort: DeviceSort,
    /// Rows seen at or after this count as online (for `OnlineFirst`).
    pub online_since: Timestamp,
    pub offset: i64,
    pub limit: i64,
}

/// `s` as a `LIKE … ESCAPE '\'` pattern that matches it literally.
pub fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The SQL rule for "online" over the columns of `devices d`.
fn online_sql(since: &str) -> String {
    format!(
        "(d.revoked_at IS NULL AND d.connected_at IS NOT NULL \
         AND (d.disconnected_at IS NULL OR d.connected_at > d.disconnected_at) \
         AND d.last_seen_at >= {since})"
    )
}

/// The `WHERE` clause (tenant, enrolled devices, every word).
fn where_clause(b: &mut Built, q: &DeviceQuery) -> String {
    let tenant = b.arg(Arg::Text(q.tenant.clone()));
    let mut sql = format!("WHERE d.tenant_id = {tenant} AND d.ephemeral = 0");
    for word in &q.words {
        let word = word.to_lowercase();
        let anywhere = b.arg(Arg::Text(format!("%{}%", like_escape(&word))));
        let mut alternatives = vec![
            format!("lower(d.name) LIKE {anywhere} ESCAPE '\\'"),
            format!("lower(d.hostname) LIKE {anywhere} ESCAPE '\\'"),
            format!("lower(d.os) LIKE {anywhere} ESCAPE '\\'"),
        ];
        // Tags are a JSON array of [a-z0-9:._-] words: only such a word can
        // be (part of) a tag, and only it is looked for in the array's text,
        // so `","` never matches the punctuation between tags.
        if word
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ":._-".contains(c))
        {
            alternatives.push(format!("d.tags LIKE {anywhere} ESCAPE '\\'"));
        }
        // Ids are shown grouped (`ABCD-EFGH-…`) and stored upper-case, in
        // base32: only a word in that alphabet can start one.
        let compact: String = word.chars().filter(|c| *c != '-').collect();
        if !compact.is_empty()
            && compact
                .chars()
                .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
        {
            let id = b.arg(Arg::Text(format!("{}%", compact.to_ascii_uppercase())));
            alternatives.push(format!("d.id LIKE {id}"));
        }
        // Key prefixes are `cak_` and eight more characters: only such a
        // word is looked for among the live keys, once for the whole
        // statement (not once per device).
        if word.starts_with("cak_") {
            let key = b.arg(Arg::Text(format!("{}%", like_escape(&word))));
            alternatives.push(format!(
                "d.id IN (SELECT k.device_id FROM device_keys k \
                 WHERE k.revoked_at IS NULL AND lower(k.key_prefix) LIKE {key} ESCAPE '\\')"
            ));
        }
        sql.push_str(&format!(" AND ({})", alternatives.join(" OR ")));
    }
    sql
}

fn order_by(b: &mut Built, q: &DeviceQuery) -> String {
    let by_name = "lower(d.name), d.id";
    match q.sort {
        DeviceSort::Name => by_name.to_owned(),
        DeviceSort::NameDesc => "lower(d.name) DESC, d.id DESC".to_owned(),
        DeviceSort::SeenNewest => format!("d.last_seen_at DESC NULLS LAST, {by_name}"),
        DeviceSort::SeenOldest => format!("d.last_seen_at ASC NULLS FIRST, {by_name}"),
        DeviceSort::OnlineFirst => {
            let since = b.arg(Arg::Int(q.online_since.as_millis()));
            format!(
                "CASE WHEN {} THEN 0 ELSE 1 END, {by_name}",
                online_sql(&since)
            )
        }
        DeviceSort::Os => format!("d.os, {by_name}"),
    }
}

/// The statement for one page (pure: tests read it, [`page`] runs it).
pub(crate) fn page_sql(q: &DeviceQuery) -> Built {
    let mut b = Built::default();
    let cols = COLUMNS
        .split(", ")
        .map(|c| format!("d.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let filter = where_clause(&mut b, q);
    let order = order_by(&mut b, q);
    let limit = b.arg(Arg::Int(q.limit));
    let offset = b.arg(Arg::Int(q.offset));
    // A search reads every device anyway: it counts its matches in the same
    // pass. The whole list counts from the index instead ([`count_sql`]).
    let counted = if q.words.is_empty() {
        ""
    } else {
        ", COUNT(*) OVER () AS matched"
    };
    b.sql = format!(
        "SELECT {cols}{counted} FROM devices d {filter} ORDER BY {order} \
         LIMIT {limit} OFFSET {offset}"
    );
    b
}

/// The statement counting every match of `q` (pure).
pub(crate) fn count_sql(q: &DeviceQuery) -> Built {
    let mut b = Built::default();
    let filter = where_clause(&mut b, q);
    b.sql = format!("SELECT COUNT(*) AS n FROM devices d {filter}");
    b
}

/// One page of devices, and how many match in all.
pub struct DevicePage {
    pub rows: Vec<DeviceRow>,
    pub matched: i64,
}

pub async fn page(db: &Db, q: &DeviceQuery) -> StoreResult<DevicePage> {
    let built = page_sql(q);
    let raw = built.query().fetch_all(db.pool()).await?;
    let in_pass = match raw.first() {
        Some(r) if !q.words.is_empty() => Some(r.col::<i64>("matched")?),
        _ => None,
    };
    let rows = raw
        .into_iter()
        .map(from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let matched = match in_pass {
        Some(n) => n,
        // The whole list, or a page past the last match.
        None => count_sql(q).query().fetch_one(db.pool()).await?.col("n")?,
    };
    Ok(DevicePage { rows, matched })
}

/// How many enrolled devices the tenant has (revoked ones included).
pub async fn count(db: &Db, tenant: &str) -> StoreResult<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE tenant_id = $1 AND ephemeral = 0")
            .bind(tenant)
            .fetch_one(db.pool())
            .await?,
    )
}

/// The devices the database records as online, by name, at most `limit`.
pub async fn online(
    db: &Db,
    tenant: &str,
    since: Timestamp,
    limit: i64,
) -> StoreResult<Vec<DeviceRow>> {
    let cols = COLUMNS
        .split(", ")
        .map(|c| format!("d.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {cols} FROM devices d WHERE d.tenant_id = $1 AND d.ephemeral = 0 AND {} \
         ORDER BY lower(d.name), d.id LIMIT $3",
        online_sql("$2")
    );
    Ok(sqlx::query(&sql)
        .bind(tenant)
        .bind(since.as_millis())
        .bind(limit)
        .try_map(from_row)
        .fetch_all(db.pool())
        .await?)
}

/// The prefix of each listed device's newest live key, by device id.
pub async fn live_key_prefixes(
    db: &Db,
    ids: &[String],
) -> StoreResult<std::collections::HashMap<String, String>> {
    let mut out = std::collections::HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT device_id, key_prefix FROM device_keys \
         WHERE device_id IN ({}) AND revoked_at IS NULL ORDER BY created_at, id",
        super::placeholders(1, ids.len())
    );
    let rows: Vec<AnyRow> = super::bind_all(sqlx::query(&sql), ids)
        .fetch_all(db.pool())
        .await?;
    // Newest last, so it is the one kept.
    for r in &rows {
        out.insert(r.col("device_id")?, r.col("key_prefix")?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(words: &[&str], sort: DeviceSort) -> DeviceQuery {
        DeviceQuery {
            tenant: "t".to_owned(),
            words: words.iter().map(|w| w.to_string()).collect(),
            sort,
            online_since: Timestamp::from_millis(7),
            offset: 100,
            limit: 50,
        }
    }

    #[test]
    fn like_patterns_match_literally() {
        assert_eq!(like_escape("50%_off\\"), "50\\%\\_off\\\\");
        assert_eq!(like_escape("plain"), "plain");
    }

    #[test]
    fn search_words_are_bound_never_spliced() {
        let b = page_sql(&query(
            &["x'; DROP TABLE devices; --", "cak_%"],
            DeviceSort::Name,
        ));
        assert!(!b.sql.contains("DROP"), "{}", b.sql);
        assert!(!b.sql.contains("cak"), "{}", b.sql);
        assert!(b.args.contains(&Arg::Text("%cak\\_\\%%".to_owned())));
        assert!(b.args.contains(&Arg::Text("cak\\_\\%%".to_owned())));
        // Neither word can be (part of) a tag: no tag clause for them.
        assert_eq!(b.sql.matches("d.tags LIKE").count(), 0);
        let tagged = count_sql(&query(&["lab"], DeviceSort::Name));
        assert_eq!(tagged.sql.matches("d.tags LIKE").count(), 1);
        // Placeholders are numbered in the order the values are bound.
        let last = format!("${}", b.args.len());
        assert!(b.sql.ends_with(&format!("OFFSET {last}")), "{}", b.sql);
        assert_eq!(b.args.last(), Some(&Arg::Int(100)));
    }

    #[test]
    fn grouped_ids_search_by_their_compact_prefix() {
        let b = count_sql(&query(&["abcd-ef"], DeviceSort::Name));
        assert!(b.args.contains(&Arg::Text("ABCDEF%".to_owned())));
        // Not base32 (and no key prefix): neither clause.
        let b = count_sql(&query(&["host01"], DeviceSort::Name));
        assert!(!b.sql.contains("d.id LIKE") && !b.sql.contains("device_keys"));
    }

    #[test]
    fn sorts_parse_and_print_back() {
        for s in DeviceSort::ALL {
            assert_eq!(DeviceSort::parse(s.as_str()), Some(s));
        }
        assert_eq!(DeviceSort::parse(""), Some(DeviceSort::Name));
        assert_eq!(DeviceSort::parse("name; DROP"), None);
        let b = page_sql(&query(&[], DeviceSort::OnlineFirst));
        assert!(b.sql.contains("CASE WHEN"));
        assert_eq!(b.args[1], Arg::Int(7));
    }
}
