//! `station user`: add and list user accounts.
//!
//! The first account of a station must be an admin, created by whoever installs the station.
//! After that, an admin logs in to add each account.

use clap::Subcommand;
use station::users::{self, UserError, UserRole};
use zeroize::Zeroizing;

use super::Context;
use super::prompt::Terminal;

/// How long the password prompts wait: 5 minutes.
const PROMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user; the password is typed twice at a prompt that does not echo.
    Add {
        /// Login name: a lowercase letter, then lowercase letters, digits, '.', '_' or '-'.
        name: String,
        /// The user's role: admin, custodian, supervisor (the ceremony witness), operator or
        /// auditor.
        #[arg(long, value_parser = parse_role)]
        role: UserRole,
        /// The admin who adds the user; asked for their password. Not needed for the first
        /// user, who must be an admin.
        #[arg(long = "as", value_name = "ADMIN")]
        admin: Option<String>,
    },
    /// List users and their roles.
    List,
}

fn parse_role(text: &str) -> Result<UserRole, String> {
    UserRole::from_name(text).ok_or_else(|| UserError::InvalidRole(text.to_owned()).to_string())
}

pub async fn run(context: &Context, command: UserCommand) -> Result<(), String> {
    let database = context.open_database().await?;
    let pool = database.pool.clone();
    let result = match command {
        UserCommand::Add { name, role, admin } => {
            add(context, &pool, &name, role, admin.as_deref()).await
        }
        UserCommand::List => list(&pool).await,
    };
    database.close().await;
    result
}

async fn add(
    context: &Context,
    pool: &sqlx::PgPool,
    name: &str,
    role: UserRole,
    admin: Option<&str>,
) -> Result<(), String> {
    users::validate_name(name).map_err(|error| error.to_string())?;
    let terminal = Terminal::open();
    let existing = users::list_users(pool)
        .await
        .map_err(|error| error.to_string())?;
    let actor = if existing.is_empty() {
        if role != UserRole::Admin {
            return Err(
                "the station has no users yet, so the first user must be an admin; run `station user add NAME --role admin` first"
                    .to_owned(),
            );
        }
        "station".to_owned()
    } else {
        let admin = admin
            .ok_or_else(|| "an admin must log in to add a user; pass --as ADMIN".to_owned())?;
        let password = terminal
            .secret(&format!("Password for {admin}: "), PROMPT_TIMEOUT)
            .map_err(|error| error.to_string())?;
        let user = users::authenticate(pool, admin, password)
            .await
            .map_err(|error| error.to_string())?;
        if user.role != UserRole::Admin {
            return Err(format!(
                "{admin:?} is a {}, and only an admin can add users",
                user.role
            ));
        }
        admin.to_owned()
    };

    let password = terminal
        .secret(&format!("New password for {name}: "), PROMPT_TIMEOUT)
        .map_err(|error| error.to_string())?;
    let again = terminal
        .secret(&format!("Repeat the password for {name}: "), PROMPT_TIMEOUT)
        .map_err(|error| error.to_string())?;
    if password.as_str() != again.as_str() {
        return Err(UserError::PasswordMismatch.to_string());
    }
    drop(again);
    let user = users::add_user(
        pool,
        &context.station_id,
        &actor,
        name,
        role,
        Zeroizing::new(password.to_string()),
    )
    .await
    .map_err(|error| error.to_string())?;
    println!("user {} added with role {}", user.name, user.role);
    Ok(())
}

async fn list(pool: &sqlx::PgPool) -> Result<(), String> {
    let list = users::list_users(pool)
        .await
        .map_err(|error| error.to_string())?;
    println!("{:<24} ROLE", "NAME");
    for user in list {
        println!("{:<24} {}", user.name, user.role);
    }
    Ok(())
}
