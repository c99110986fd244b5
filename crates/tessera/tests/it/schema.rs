//! Schema parity: the SQLite and the PostgreSQL migrations must build the
//! same schema. Both are migrated fresh by the server's own `Db::connect`
//! and read back from the catalogs (SQLite: `sqlite_master` and the table
//! pragmas; PostgreSQL: `information_schema` and `pg_catalog`); tables,
//! columns (nullability and a type class), primary keys, unique and plain
//! indexes, foreign keys and CHECK-constrained columns are compared.
//!
//! Needs PostgreSQL: runs with `TESSERA_TEST_BACKEND=postgres` (CI runs the
//! suite once per backend) and says it skipped otherwise.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{Connection, Row};
use tessera_server::store::Db;
use tessera_testkit::{backend, pg_admin_url, Backend, TestDb};

/// A column type as both backends can agree on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TypeClass {
    Integer,
    Real,
    Text,
    Bytes,
    Boolean,
    Other,
}

fn type_class(declared: &str) -> TypeClass {
    let t = declared.to_ascii_lowercase();
    if t.contains("int") {
        TypeClass::Integer
    } else if t.contains("char") || t.contains("text") || t.contains("clob") {
        TypeClass::Text
    } else if t.contains("blob") || t == "bytea" {
        TypeClass::Bytes
    } else if t.contains("real") || t.contains("floa") || t.contains("doub") || t == "numeric" {
        TypeClass::Real
    } else if t.starts_with("bool") {
        TypeClass::Boolean
    } else {
        TypeClass::Other
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Table {
    /// Name -> (type class, nullable).
    columns: BTreeMap<String, (TypeClass, bool)>,
    primary_key: Vec<String>,
    /// Column lists of unique constraints and unique indexes (not the key).
    unique: BTreeSet<Vec<String>>,
    /// Column lists of plain indexes, and whether each is partial.
    indexes: BTreeSet<(Vec<String>, bool)>,
    /// (columns, referenced table, referenced columns).
    foreign_keys: BTreeSet<(Vec<String>, String, Vec<String>)>,
    /// Columns some CHECK constraint names.
    checked: BTreeSet<String>,
}

type Schema = BTreeMap<String, Table>;

/// A foreign key as SQLite lists it: columns, referenced table, referenced
/// columns (none named: the referenced table's key).
type SqliteForeignKey = (Vec<String>, String, Vec<Option<String>>);

/// A PostgreSQL constraint: table, kind, columns, referenced table and
/// columns.
type PgConstraint = (String, String, Vec<String>, String, Vec<String>);

/// Whether `expr` names `column` as a whole word.
fn mentions(expr: &str, column: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    expr.match_indices(column).any(|(i, _)| {
        let before = expr[..i].chars().next_back();
        let after = expr[i + column.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// `expr` with its string literals emptied, so a value never passes for a
/// column name.
fn without_literals(expr: &str) -> String {
    let mut out = String::new();
    let mut in_literal = false;
    for c in expr.chars() {
        if c == '\'' {
            in_literal = !in_literal;
            out.push(c);
        } else if !in_literal {
            out.push(c);
        }
    }
    out
}

/// The parenthesised expressions after each `CHECK` in a CREATE TABLE.
fn check_clauses(sql: &str) -> Vec<String> {
    let upper = sql.to_ascii_uppercase();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = upper[from..].find("CHECK") {
        let start = from + at + "CHECK".len();
        let word_before = sql[..from + at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let rest = &sql[start..];
        let open = start + (rest.len() - rest.trim_start().len());
        if word_before || !sql[open..].starts_with('(') {
            // A word that merely contains "check", or one in a comment.
            from = start;
            continue;
        }
        let mut depth = 0;
        let mut end = open;
        for (i, c) in sql[open..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push(sql[open + 1..end].to_owned());
        from = end.max(start);
    }
    out
}

async fn sqlite_schema(url: &str) -> Schema {
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut schema = Schema::new();
    for (name, sql) in &tables {
        let mut t = Table::default();
        let mut pk = Vec::new();
        for row in sqlx::query(&format!("PRAGMA table_info(\"{name}\")"))
            .fetch_all(&mut conn)
            .await
            .unwrap()
        {
            let col: String = row.get("name");
            let ty: String = row.get("type");
            let notnull: i64 = row.get("notnull");
            let pk_pos: i64 = row.get("pk");
            // PostgreSQL makes key columns NOT NULL; so does the server's use.
            let nullable = notnull == 0 && pk_pos == 0;
            if pk_pos > 0 {
                pk.push((pk_pos, col.clone()));
            }
            t.columns.insert(col, (type_class(&ty), nullable));
        }
        pk.sort();
        t.primary_key = pk.into_iter().map(|(_, c)| c).collect();
        for row in sqlx::query(&format!("PRAGMA index_list(\"{name}\")"))
            .fetch_all(&mut conn)
            .await
            .unwrap()
        {
            let index: String = row.get("name");
            let unique: i64 = row.get("unique");
            let origin: String = row.get("origin");
            let partial: i64 = row.get("partial");
            if origin == "pk" {
                continue;
            }
            let cols: Vec<String> = sqlx::query(&format!("PRAGMA index_info(\"{index}\")"))
                .fetch_all(&mut conn)
                .await
                .unwrap()
                .iter()
                // An expression (`lower(name)`) has no name: "" on both sides.
                .map(|r| r.get::<Option<String>, _>("name").unwrap_or_default())
                .collect();
            if unique == 1 {
                t.unique.insert(cols);
            } else {
                t.indexes.insert((cols, partial == 1));
            }
        }
        let mut fks: BTreeMap<i64, SqliteForeignKey> = BTreeMap::new();
        for row in sqlx::query(&format!("PRAGMA foreign_key_list(\"{name}\")"))
            .fetch_all(&mut conn)
            .await
            .unwrap()
        {
            let id: i64 = row.get("id");
            let e = fks.entry(id).or_default();
            e.0.push(row.get("from"));
            e.1 = row.get("table");
            e.2.push(row.get("to"));
        }
        for (_, (from, table, to)) in fks {
            t.foreign_keys.insert((
                from,
                table,
                // No column named: the referenced table's key (resolved below).
                to.into_iter().map(Option::unwrap_or_default).collect(),
            ));
        }
        for clause in check_clauses(sql) {
            let clause = without_literals(&clause);
            for col in t.columns.keys() {
                if mentions(&clause, col) {
                    t.checked.insert(col.clone());
                }
            }
        }
        schema.insert(name.clone(), t);
    }
    // A foreign key naming no column refers to the referenced table's key.
    let keys: BTreeMap<String, Vec<String>> = schema
        .iter()
        .map(|(n, t)| (n.clone(), t.primary_key.clone()))
        .collect();
    for t in schema.values_mut() {
        t.foreign_keys = std::mem::take(&mut t.foreign_keys)
            .into_iter()
            .map(|(from, table, to)| {
                let to = if to.iter().all(String::is_empty) {
                    keys.get(&table).cloned().unwrap_or(to)
                } else {
                    to
                };
                (from, table, to)
            })
            .collect();
    }
    schema
}

async fn postgres_schema(url: &str) -> Schema {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let mut schema = Schema::new();
    let columns: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text, c.is_nullable::text \
         FROM information_schema.columns c \
         JOIN information_schema.tables t \
           ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
         WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' \
           AND c.table_name NOT LIKE '\\_sqlx%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for (table, column, ty, nullable) in columns {
        schema
            .entry(table)
            .or_default()
            .columns
            .insert(column, (type_class(&ty), nullable == "YES"));
    }
    let constraints: Vec<PgConstraint> = sqlx::query_as(
        "SELECT c.conrelid::regclass::text, c.contype::text, \
           ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i) \
                 JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n \
                 ORDER BY k.i), \
           COALESCE(c.confrelid::regclass::text, ''), \
           ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i) \
                 JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n \
                 ORDER BY k.i) \
         FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
         WHERE n.nspname = 'public' AND c.conrelid <> 0",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for (table, kind, cols, referenced, referenced_cols) in constraints {
        let Some(t) = schema.get_mut(&table) else {
            continue;
        };
        match kind.as_str() {
            "p" => t.primary_key = cols,
            "f" => {
                t.foreign_keys.insert((cols, referenced, referenced_cols));
            }
            "c" => t.checked.extend(cols),
            // Unique constraints are read as the unique indexes behind them.
            _ => {}
        }
    }
    let indexes: Vec<(String, bool, bool, bool, Vec<String>)> = sqlx::query_as(
        "SELECT t.relname::text, ix.indisunique, ix.indisprimary, ix.indpred IS NOT NULL, \
           ARRAY(SELECT COALESCE(a.attname::text, '') \
                 FROM unnest(ix.indkey::int2[]) WITH ORDINALITY k(n, i) \
                 LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.n \
                 ORDER BY k.i) \
         FROM pg_index ix \
         JOIN pg_class t ON t.oid = ix.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = 'public'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    for (table, unique, primary, partial, cols) in indexes {
        let Some(t) = schema.get_mut(&table) else {
            continue;
        };
        if primary {
            continue;
        }
        if unique {
            t.unique.insert(cols);
        } else {
            t.indexes.insert((cols, partial));
        }
    }
    schema
}

/// Every way `pg` differs from `sqlite`, one line each.
fn differences(sqlite: &Schema, pg: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    let names: BTreeSet<&String> = sqlite.keys().chain(pg.keys()).collect();
    for name in names {
        let (Some(s), Some(p)) = (sqlite.get(name), pg.get(name)) else {
            out.push(format!(
                "{name}: only on {}",
                if sqlite.contains_key(name) {
                    "sqlite"
                } else {
                    "postgres"
                }
            ));
            continue;
        };
        let cols: BTreeSet<&String> = s.columns.keys().chain(p.columns.keys()).collect();
        for col in cols {
            let (a, b) = (s.columns.get(col), p.columns.get(col));
            if a != b {
                out.push(format!("{name}.{col}: sqlite {a:?}, postgres {b:?}"));
            }
        }
        if s.primary_key != p.primary_key {
            out.push(format!(
                "{name}: primary key sqlite {:?}, postgres {:?}",
                s.primary_key, p.primary_key
            ));
        }
        for u in s.unique.symmetric_difference(&p.unique) {
            let side = if s.unique.contains(u) {
                "sqlite"
            } else {
                "postgres"
            };
            out.push(format!("{name}: unique {u:?} only on {side}"));
        }
        for i in s.indexes.symmetric_difference(&p.indexes) {
            let side = if s.indexes.contains(i) {
                "sqlite"
            } else {
                "postgres"
            };
            out.push(format!("{name}: index {i:?} only on {side}"));
        }
        for f in s.foreign_keys.symmetric_difference(&p.foreign_keys) {
            let side = if s.foreign_keys.contains(f) {
                "sqlite"
            } else {
                "postgres"
            };
            out.push(format!("{name}: foreign key {f:?} only on {side}"));
        }
        for c in s.checked.symmetric_difference(&p.checked) {
            let side = if s.checked.contains(c) {
                "sqlite"
            } else {
                "postgres"
            };
            out.push(format!("{name}: CHECK on {c} only on {side}"));
        }
    }
    out
}

/// Differences between today's migrations that are known and accepted
/// (the migrations are not changed by a test). Empty: none.
const KNOWN_DIFFERENCES: &[&str] = &[];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_and_postgres_migrations_build_the_same_schema() {
    if backend() != Backend::Postgres {
        println!("skip: schema parity needs PostgreSQL (TESSERA_TEST_BACKEND=postgres)");
        return;
    }
    let lite = TestDb::create(Backend::Sqlite, "", "").await.unwrap();
    let prefix =
        std::env::var("TESSERA_TEST_PG_PREFIX").unwrap_or_else(|_| "tessera_test_".to_owned());
    let pg = TestDb::create(Backend::Postgres, &pg_admin_url(), &prefix)
        .await
        .unwrap();
    // The server's own migrations, as it runs them at start.
    drop(Db::connect(&lite.url).await.expect("migrate SQLite"));
    drop(Db::connect(&pg.url).await.expect("migrate PostgreSQL"));

    let sqlite = sqlite_schema(&lite.url).await;
    let postgres = postgres_schema(&pg.url).await;
    assert!(sqlite.len() > 5, "read the SQLite tables: {sqlite:?}");
    assert!(
        sqlite
            .values()
            .any(|t| !t.checked.is_empty() && !t.foreign_keys.is_empty()),
        "read CHECKs and foreign keys"
    );
    assert!(
        sqlite.values().any(|t| !t.unique.is_empty())
            && sqlite.values().any(|t| !t.indexes.is_empty()),
        "read unique and plain indexes"
    );
    println!(
        "compared {} tables, {} columns, {} foreign keys, {} CHECK-constrained columns",
        sqlite.len(),
        sqlite.values().map(|t| t.columns.len()).sum::<usize>(),
        sqlite.values().map(|t| t.foreign_keys.len()).sum::<usize>(),
        sqlite.values().map(|t| t.checked.len()).sum::<usize>(),
    );
    let found = differences(&sqlite, &postgres);
    let known: Vec<String> = KNOWN_DIFFERENCES.iter().map(|s| s.to_string()).collect();
    assert_eq!(found, known, "the two migrations differ");
}

#[test]
fn check_clauses_and_column_mentions_are_read_from_create_table() {
    let sql = "CREATE TABLE t (a TEXT CHECK (a IN ('x', 'y')), ab INTEGER, \
               b INTEGER PRIMARY KEY CHECK (b = 1), CHECK ((ab > 0)))";
    let clauses = check_clauses(sql);
    assert_eq!(clauses, ["a IN ('x', 'y')", "b = 1", "(ab > 0)"]);
    assert!(mentions(&clauses[0], "a"));
    assert!(!mentions(&without_literals("a IN ('ab')"), "ab"));
    assert!(check_clauses("CREATE TABLE t (a TEXT -- checked later (maybe)\n)").is_empty());
    assert!(!mentions(&clauses[2], "a"));
    assert!(mentions(&clauses[2], "ab"));
    assert_eq!(type_class("BIGINT"), TypeClass::Integer);
    assert_eq!(type_class("bytea"), TypeClass::Bytes);
    assert_eq!(type_class("character varying"), TypeClass::Text);
}

#[test]
fn a_difference_in_any_part_is_reported() {
    let table = |nullable: bool, checked: &[&str]| Table {
        columns: [("a".to_owned(), (TypeClass::Text, nullable))].into(),
        primary_key: vec!["a".into()],
        checked: checked.iter().map(|c| c.to_string()).collect(),
        ..Table::default()
    };
    let sqlite: Schema = [("t".to_owned(), table(false, &["a"]))].into();
    let pg: Schema = [
        ("t".to_owned(), table(true, &[])),
        ("u".to_owned(), Table::default()),
    ]
    .into();
    assert_eq!(
        differences(&sqlite, &pg),
        [
            "t.a: sqlite Some((Text, false)), postgres Some((Text, true))",
            "t: CHECK on a only on sqlite",
            "u: only on postgres",
        ]
    );
}
