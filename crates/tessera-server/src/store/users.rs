//! Operator accounts.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor};
use tessera_core::ids::UserId;
use tessera_core::roles::Role;
use tessera_core::Timestamp;

use super::{changed_one, insert_unique, Columns, Db, StoreResult, Tx};

#[derive(Clone, Debug)]
pub struct UserRow {
    pub id: UserId,
    pub tenant_id: String,
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub disabled_at: Option<Timestamp>,
}

const COLUMNS: &str =
    "id, tenant_id, username, password_hash, role, created_at, updated_at, disabled_at";

fn from_row(r: AnyRow) -> Result<UserRow, sqlx::Error> {
    Ok(UserRow {
        id: r.id("id")?,
        tenant_id: r.col("tenant_id")?,
        username: r.col("username")?,
        password_hash: r.col("password_hash")?,
        role: r.role("role")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
        disabled_at: r.opt_time("disabled_at")?,
    })
}

pub struct NewUser<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub username: &'a str,
    pub password_hash: &'a str,
    pub role: Role,
    pub now: Timestamp,
}

/// Inserts a user; [`super::StoreError::Conflict`] if the name is taken.
pub async fn insert(tx: &mut Tx, u: NewUser<'_>) -> StoreResult<()> {
    let query = sqlx::query(
        "INSERT INTO users (id, tenant_id, username, password_hash, role, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(u.id)
    .bind(u.tenant_id)
    .bind(u.username)
    .bind(u.password_hash)
    .bind(u.role.as_str())
    .bind(u.now.as_millis());
    insert_unique(tx, query).await
}

/// Looks a user up by name, through the pool or inside a transaction.
pub async fn by_username<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    tenant: &str,
    username: &str,
) -> StoreResult<Option<UserRow>> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE tenant_id = $1 AND username = $2");
    let query = sqlx::query(&sql).bind(tenant).bind(username);
    Ok(query.try_map(from_row).fetch_optional(ex).await?)
}

/// Looks a user up by id, through the pool or inside a transaction.
pub async fn by_id<'e, E: Executor<'e, Database = Any>>(
    ex: E,
    tenant: &str,
    id: &str,
) -> StoreResult<Option<UserRow>> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2");
    let query = sqlx::query(&sql).bind(tenant).bind(id);
    Ok(query.try_map(from_row).fetch_optional(ex).await?)
}

pub async fn list(db: &Db, tenant: &str) -> StoreResult<Vec<UserRow>> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE tenant_id = $1 ORDER BY username");
    let query = sqlx::query(&sql).bind(tenant);
    Ok(query.try_map(from_row).fetch_all(db.pool()).await?)
}

/// Sets the role; returns false if no such user.
pub async fn set_role(
    tx: &mut Tx,
    tenant: &str,
    id: &str,
    role: Role,
    now: Timestamp,
) -> StoreResult<bool> {
    let n =
        sqlx::query("UPDATE users SET role = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4")
            .bind(role.as_str())
            .bind(now.as_millis())
            .bind(tenant)
            .bind(id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    Ok(n == 1)
}

/// Disables an enabled user; returns false if no such enabled user.
pub async fn disable(tx: &mut Tx, tenant: &str, id: &str, now: Timestamp) -> StoreResult<bool> {
    let query = sqlx::query(
        "UPDATE users SET disabled_at = $1, updated_at = $1 \
         WHERE tenant_id = $2 AND id = $3 AND disabled_at IS NULL",
    )
    .bind(now.as_millis())
    .bind(tenant)
    .bind(id);
    changed_one(&mut **tx, query).await
}

/// Enables a disabled user; returns false if no such disabled user.
pub async fn enable(tx: &mut Tx, tenant: &str, id: &str, now: Timestamp) -> StoreResult<bool> {
    let query = sqlx::query(
        "UPDATE users SET disabled_at = NULL, updated_at = $1 \
         WHERE tenant_id = $2 AND id = $3 AND disabled_at IS NOT NULL",
    )
    .bind(now.as_millis())
    .bind(tenant)
    .bind(id);
    changed_one(&mut **tx, query).await
}

pub async fn set_password(
    tx: &mut Tx,
    tenant: &str,
    id: &str,
    password_hash: &str,
    now: Timestamp,
) -> StoreResult<bool> {
    let query = sqlx::query(
        "UPDATE users SET password_hash = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4",
    )
    .bind(password_hash)
    .bind(now.as_millis())
    .bind(tenant)
    .bind(id);
    changed_one(&mut **tx, query).await
}

/// How many enabled admins a tenant has; the last one may not be demoted or
/// disabled.
pub async fn count_enabled_admins(tx: &mut Tx, tenant: &str) -> StoreResult<i64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM users WHERE tenant_id = $1 AND role = 'admin' AND disabled_at IS NULL",
    )
    .bind(tenant)
    .fetch_one(&mut **tx)
    .await?;
    Ok(n)
}
