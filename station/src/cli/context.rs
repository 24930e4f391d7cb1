//! Settings shared by every command, and the commands that only read the database.

use std::path::PathBuf;

use station::db::Database;
use station::vault::Vault;

use super::Cli;

/// Global settings of one `station` invocation.
pub struct Context {
    /// Folder of the private PostgreSQL cluster.
    pub data_dir: PathBuf,
    /// External PostgreSQL server, if any.
    pub database_url: Option<String>,
    /// This station's identifier in the audit trail.
    pub station_id: String,
}

impl Context {
    pub fn new(cli: &Cli) -> Self {
        let station_id = cli.station_id.clone().unwrap_or_else(host_name);
        Self {
            data_dir: cli.data_dir.clone(),
            database_url: cli.database_url.clone(),
            station_id,
        }
    }

    /// Opens the database: the private cluster in the data folder, or the configured server.
    pub async fn open_database(&self) -> Result<Database, String> {
        std::fs::create_dir_all(&self.data_dir).map_err(|error| {
            format!(
                "cannot create data folder {}: {error}",
                self.data_dir.display()
            )
        })?;
        Database::open(&self.data_dir, self.database_url.as_deref())
            .await
            .map_err(|error| error.to_string())
    }

    /// Opens the database for a command that only reads it. Without `DATABASE_URL`, a data
    /// folder that holds no station cluster is an error rather than a new, empty cluster, so a
    /// mistyped `--data-dir` cannot pass for an empty vault or audit trail.
    pub async fn open_existing_database(&self) -> Result<Database, String> {
        let cluster_dir = self.data_dir.join("postgres");
        if self.database_url.is_none() && !cluster_dir.exists() {
            return Err(format!(
                "no station database in {}; check --data-dir (or STATION_DATA_DIR), or set DATABASE_URL for a shared server",
                self.data_dir.display()
            ));
        }
        self.open_database().await
    }

    /// Runs `station audit verify`.
    pub async fn audit_verify(&self) -> Result<(), String> {
        let database = self.open_existing_database().await?;
        let result = station::audit::verify(&database.pool).await;
        database.close().await;
        let report = result.map_err(|error| error.to_string())?;
        println!("{report}");
        if report.is_intact() {
            Ok(())
        } else {
            Err("the audit trail does not verify".to_owned())
        }
    }

    /// Runs `station keys list`.
    pub async fn list_keys(&self) -> Result<(), String> {
        let database = self.open_existing_database().await?;
        let result = match Vault::open(database.pool.clone(), &self.data_dir) {
            Ok(vault) => {
                if let Some(report) = vault.token_report() {
                    println!("{report}");
                }
                vault.list_keys().await
            }
            Err(error) => Err(error),
        };
        database.close().await;
        let keys = result.map_err(|error| error.to_string())?;
        println!(
            "{}",
            key_row([
                "LABEL", "ALGO", "USAGE", "KCV", "BDK ID", "STATUS", "STORAGE"
            ])
        );
        for key in keys {
            let bdk_id = key.bdk_id.map(hex::encode_upper).unwrap_or_default();
            let kcv = key.kcv.to_string();
            println!(
                "{}",
                key_row([
                    &key.label,
                    key.algorithm.name(),
                    key.usage.name(),
                    &kcv,
                    &bdk_id,
                    key.status.name(),
                    key.storage.name(),
                ])
            );
        }
        Ok(())
    }
}

impl Context {
    /// Runs `station keys inventory`: one block per key, for auditors.
    pub async fn key_inventory(&self) -> Result<(), String> {
        let database = self.open_existing_database().await?;
        let result = match Vault::open(database.pool.clone(), &self.data_dir) {
            Ok(vault) => vault.inventory().await,
            Err(error) => Err(error),
        };
        database.close().await;
        let entries = result.map_err(|error| error.to_string())?;
        if entries.is_empty() {
            println!("the vault holds no keys");
        }
        for entry in entries {
            let key = &entry.key;
            println!("{}", key.label);
            println!("  algorithm   {}", key.algorithm.name());
            println!("  usage       {}", key.usage.name());
            println!("  KCV         {}", key.kcv);
            if let Some(bdk_id) = key.bdk_id {
                println!("  BDK ID      {}", hex::encode_upper(bdk_id));
            }
            println!("  status      {}", key.status.name());
            println!("  storage     {}", key.storage.name());
            println!("  created     {}", entry.created_at.to_rfc3339());
            match &entry.creation_ceremony {
                Some(ceremony) => {
                    println!(
                        "  ceremony    {} {} ({})",
                        ceremony.script_name,
                        ceremony.id,
                        ceremony.started_at.to_rfc3339()
                    );
                    println!("  custodians  {}", ceremony.custodians.join(", "));
                }
                None => println!("  ceremony    none recorded"),
            }
            println!("  history");
            for event in &entry.history {
                println!(
                    "    {}  {:<28} {:<8} by {}",
                    event.occurred_at.to_rfc3339(),
                    event.action,
                    event.outcome,
                    event.actor
                );
            }
        }
        Ok(())
    }
}

/// Formats one line of `station keys list` in fixed-width columns.
fn key_row(columns: [&str; 7]) -> String {
    let [label, algorithm, usage, kcv, bdk_id, status, storage] = columns;
    format!("{label:<24} {algorithm:<8} {usage:<14} {kcv:<16} {bdk_id:<9} {status:<10} {storage}")
}

/// Reads the machine's host name, the default station identifier.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "station".to_owned())
}
