//! Station users and their roles.
//!
//! Every person who takes part in a ceremony or runs the station has a user account with one
//! role and a password, stored only as an argon2id hash (PHC string with its salt and
//! parameters). The CLI ceremony authenticates people against these accounts, so each
//! participant acts as themselves.

mod error;
mod password;
mod role;

pub use error::UserError;
pub use password::{hash_password, verify_password};
pub use role::UserRole;

use sqlx::{PgPool, Row};
use zeroize::Zeroizing;

use crate::audit::{self, AuditEvent, Outcome};

/// The shortest password the station accepts, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// A user account, without its password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name: a lowercase letter, then up to 62 lowercase letters, digits, `.`, `_` or `-`.
    pub name: String,
    /// The user's one role.
    pub role: UserRole,
}

/// Checks a login name against the rule the `users` table also enforces.
pub fn validate_name(name: &str) -> Result<(), UserError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(UserError::InvalidName(name.to_owned()))
    }
}

/// Creates a user, hashing `password` with argon2id on a blocking thread, and records the
/// creation in the audit trail in the same transaction. `actor` is who created the account.
pub async fn add_user(
    pool: &PgPool,
    station_id: &str,
    actor: &str,
    name: &str,
    role: UserRole,
    password: Zeroizing<String>,
) -> Result<User, UserError> {
    validate_name(name)?;
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(UserError::PasswordTooShort {
            min: MIN_PASSWORD_CHARS,
        });
    }
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|error| UserError::Hashing(error.to_string()))??;

    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO users (name, role, password_hash) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(role.name())
    .bind(&hash)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(UserError::NameTaken(name.to_owned()));
    }
    let event = AuditEvent {
        actor: actor.to_owned(),
        action: "user.added".to_owned(),
        subject: name.to_owned(),
        outcome: Outcome::Success,
        details: serde_json::json!({ "role": role.name() }),
    };
    audit::append(&mut tx, station_id, &event).await?;
    tx.commit().await?;
    tracing::info!(user = name, role = role.name(), "user added");
    Ok(User {
        name: name.to_owned(),
        role,
    })
}

/// Looks up a user by name.
pub async fn find_user(pool: &PgPool, name: &str) -> Result<User, UserError> {
    let (user, _) = find_with_hash(pool, name).await?;
    Ok(user)
}

/// Lists every user, by name.
pub async fn list_users(pool: &PgPool) -> Result<Vec<User>, UserError> {
    let rows = sqlx::query("SELECT name, role FROM users ORDER BY name")
        .fetch_all(pool)
        .await?;
    rows.iter().map(user_from_row).collect()
}

/// Returns the user and the stored password hash, for checks that run outside async code.
pub async fn find_with_hash(pool: &PgPool, name: &str) -> Result<(User, String), UserError> {
    let row = sqlx::query("SELECT name, role, password_hash FROM users WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| UserError::NotFound(name.to_owned()))?;
    Ok((user_from_row(&row)?, row.get("password_hash")))
}

/// Checks `password` for user `name` on a blocking thread. An unknown name and a wrong password
/// give the same error after the same hashing work, so neither the message nor the time taken
/// shows which names exist.
pub async fn authenticate(
    pool: &PgPool,
    name: &str,
    password: Zeroizing<String>,
) -> Result<User, UserError> {
    let found = match find_with_hash(pool, name).await {
        Ok(found) => Some(found),
        Err(UserError::NotFound(_)) => None,
        Err(error) => return Err(error),
    };
    let hash = match &found {
        Some((_, hash)) => hash.clone(),
        None => unknown_user_hash()?,
    };
    let verified = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .map_err(|error| UserError::Hashing(error.to_string()))??;
    match found {
        Some((user, _)) if verified => Ok(user),
        _ => Err(UserError::AuthenticationFailed(name.to_owned())),
    }
}

/// Returns a hash that no typed password matches, to spend the same time on an unknown name.
fn unknown_user_hash() -> Result<String, UserError> {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(hash) = HASH.get() {
        return Ok(hash.clone());
    }
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|error| UserError::Hashing(error.to_string()))?;
    let hash = hash_password(&hex::encode(random))?;
    Ok(HASH.get_or_init(|| hash).clone())
}

fn user_from_row(row: &sqlx::postgres::PgRow) -> Result<User, UserError> {
    let name: String = row.get("name");
    let role_name: String = row.get("role");
    let role = UserRole::from_name(&role_name).ok_or_else(|| UserError::Corrupt {
        name: name.clone(),
        reason: format!("unknown role {role_name:?}"),
    })?;
    Ok(User { name, role })
}
