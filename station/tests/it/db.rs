//! Integration tests: the private PostgreSQL cluster, against real PostgreSQL server programs.

mod identity;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use station::audit;
use station::db::testing::TestDatabase;
use station::db::{self, Database, DbError, DbOptions};
use station::store::{self, DeviceInfo};

use crate::audit::event;

/// Environment variable that makes [`crash_child`] open a database in the folder it names.
const CHILD_DATA_DIR: &str = "STATION_TEST_CHILD_DATA_DIR";

/// Creates a temporary folder the `postgres` account can pass through (tempfile makes mode 0700).
pub(crate) fn reachable_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary folder");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod temporary folder");
    dir
}

pub(crate) async fn open(data_dir: &Path) -> Result<Database, DbError> {
    Database::open_with(data_dir, None, &TestDatabase::options()).await
}

pub(crate) fn device(serial: &str) -> DeviceInfo {
    DeviceInfo {
        vendor: "Acme".to_owned(),
        model: "T100".to_owned(),
        serial: serial.to_owned(),
        firmware: "1.0.0".to_owned(),
    }
}

fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit(')')
                .next()
                .map(|rest| rest.trim_start().chars().next())
        })
        .flatten()
        .is_some_and(|state| state != 'Z' && state != 'X')
}

fn wait_until_dead(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while process_alive(pid) {
        assert!(
            Instant::now() < deadline,
            "process {pid} still runs after 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill(pid: i32) {
    let pid = rustix::process::Pid::from_raw(pid).expect("positive PID");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("send SIGKILL");
}

/// Waits until no process whose parent is `pid` remains: the backends of a killed postmaster exit
/// on their own once they notice, and a new server refuses shared memory they still hold.
fn wait_for_backends(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let children = std::fs::read_dir("/proc")
            .expect("read /proc")
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter(|child| {
                let stat =
                    std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
                let rest = stat.rsplit(')').next().unwrap_or("");
                let mut fields = rest.split_whitespace();
                let state = fields.next().unwrap_or("Z");
                let parent = fields.next().and_then(|p| p.parse::<i32>().ok());
                stat.contains("(postgres)") && state != "Z" && parent == Some(pid)
            })
            .count();
        if children == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backends of {pid} still run after 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Report of [`crash_child`], printed before it was killed.
///
/// Dropping it sends SIGINT (fast shutdown) to the server the child left running, if the test did
/// not stop it, so that a failing test leaves no server behind.
pub(crate) struct ChildReport {
    pub server_pid: i32,
    pub injection_id: Option<i64>,
    pub derivation_id: Option<String>,
}

impl Drop for ChildReport {
    fn drop(&mut self) {
        if process_alive(self.server_pid) {
            let pid = rustix::process::Pid::from_raw(self.server_pid).expect("positive PID");
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
    }
}

/// Runs [`crash_child`] in a new process of this test binary, waits for its report, then kills it
/// with SIGKILL: the station process dies without closing anything, as in a crash.
pub(crate) fn run_and_kill_child(data_dir: &Path, allocate: bool) -> ChildReport {
    // /proc/self/exe still runs when a concurrent build has replaced the binary on disk.
    let mut child: Child = Command::new("/proc/self/exe")
        .args([
            "--exact",
            "db::crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DATA_DIR, data_dir)
        .env(
            "STATION_TEST_CHILD_ALLOCATE",
            if allocate { "1" } else { "0" },
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child test process");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut report = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read child output");
        // libtest may print "test db::crash_child ... " on the same line first.
        if let Some((_, rest)) = line.split_once("CHILD-READY ") {
            let fields: Vec<&str> = rest.split(' ').collect();
            report = Some(ChildReport {
                server_pid: fields[0].parse().expect("server PID"),
                injection_id: fields.get(1).and_then(|f| f.parse().ok()),
                derivation_id: fields.get(2).map(|f| (*f).to_owned()),
            });
            break;
        }
    }
    child.kill().expect("kill the child");
    child.wait().expect("reap the child");
    report.expect("the child exited without printing its report; its error output is above")
}

/// Not a test: the station process that [`run_and_kill_child`] starts and kills. Does nothing
/// unless the parent set its environment.
#[tokio::test]
#[ignore = "helper process for the crash tests, started by them"]
async fn crash_child() {
    let Some(data_dir) = std::env::var_os(CHILD_DATA_DIR) else {
        return;
    };
    let database = open(Path::new(&data_dir))
        .await
        .expect("child opens the database");
    let server_pid = database
        .cluster()
        .and_then(|c| c.server_pid())
        .expect("server PID");
    let mut line = format!("CHILD-READY {server_pid}");
    if std::env::var("STATION_TEST_CHILD_ALLOCATE").as_deref() == Ok("1") {
        let injection = store::allocate_identity(
            &database.pool,
            "line-1",
            "station:line-1",
            "BDK-A",
            [0, 0, 0, 7],
            &device("SN-CRASH"),
            "/dev/ttyCRASH",
        )
        .await
        .expect("child allocates");
        line.push_str(&format!(
            " {} {}",
            injection.id,
            hex::encode_upper(injection.derivation_id)
        ));
    }
    println!("{line}");
    // The parent kills this process now; the sleep only bounds a parent that died first.
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test]
async fn private_cluster_socket_only() {
    let test_db = TestDatabase::new().await;
    let pool = test_db.pool();

    let listen: String = sqlx::query_scalar("SHOW listen_addresses")
        .fetch_one(pool)
        .await
        .expect("query");
    assert_eq!(listen, "");
    let user: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(pool)
        .await
        .expect("query");
    assert_eq!(user, "station");
    let database: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(pool)
        .await
        .expect("query");
    assert_eq!(database, "station");

    let cluster = test_db.database().cluster().expect("private cluster");
    let root = test_db
        .data_dir()
        .canonicalize()
        .expect("resolve")
        .join("postgres");
    assert_eq!(cluster.root(), root);
    assert_eq!(cluster.socket_dir(), root);
    let meta = std::fs::metadata(&root).expect("cluster folder");
    assert_eq!(meta.mode() & 0o777, 0o700);
    if rustix::process::geteuid().is_root() {
        let postgres_uid = std::fs::metadata(root.join("data")).expect("PGDATA").uid();
        assert_eq!(meta.uid(), postgres_uid);
        assert_ne!(meta.uid(), 0, "the server must not run as root");
    }
}

#[tokio::test]
async fn migrations_applied() {
    let test_db = TestDatabase::new().await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name",
    )
    .fetch_all(test_db.pool()).await.expect("query");
    for table in ["audit_event", "derivation_id_counter", "injection"] {
        assert!(
            tables.iter().any(|t| t == table),
            "{table} missing from {tables:?}"
        );
    }
}

#[tokio::test]
async fn cluster_restarts_with_data() {
    let dir = reachable_tempdir();
    let database = open(dir.path()).await.expect("first start");
    audit::record(
        &database.pool,
        "line-1",
        &event("test.first", json!({"n": 1})),
    )
    .await
    .expect("record");
    let pgdata = database
        .cluster()
        .expect("private cluster")
        .root()
        .join("data");
    database.close().await;
    assert!(
        !pgdata.join("postmaster.pid").exists(),
        "close leaves the server running"
    );

    let database = open(dir.path()).await.expect("second start");
    let record = audit::record(
        &database.pool,
        "line-1",
        &event("test.second", json!({"n": 2})),
    )
    .await
    .expect("record");
    assert_eq!(record.seq, 2);
    let report = audit::verify(&database.pool).await.expect("verify");
    assert!(report.is_intact(), "{report}");
    database.close().await;
}

#[tokio::test]
async fn drop_stops_server() {
    let dir = reachable_tempdir();
    let database = open(dir.path()).await.expect("start");
    let pid = database
        .cluster()
        .and_then(|c| c.server_pid())
        .expect("server PID");
    assert!(process_alive(pid));
    drop(database);
    wait_until_dead(pid);
}

#[tokio::test]
async fn second_open_names_holder_pid() {
    let dir = reachable_tempdir();
    let database = open(dir.path()).await.expect("first open");
    let err = open(dir.path())
        .await
        .expect_err("second open of the same folder");
    assert!(matches!(err, DbError::InUse { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "in use by another station process (PID {})",
            std::process::id()
        )),
        "{text}"
    );
    // The refused open must not have stopped the first one's server.
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&database.pool)
        .await
        .expect("query");
    assert_eq!(one, 1);
    database.close().await;
}

#[tokio::test]
async fn deep_data_dir_uses_short_socket() {
    let dir = reachable_tempdir();
    let mut deep: PathBuf = dir.path().to_owned();
    for level in 0..6 {
        deep.push(format!("a-rather-long-folder-name-{level}"));
    }
    std::fs::create_dir_all(&deep).expect("create deep folder");
    for ancestor in deep.ancestors().take(6) {
        std::fs::set_permissions(ancestor, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    }
    assert!(
        deep.as_os_str().len() > 107,
        "the test folder must be too deep for a socket"
    );

    let database = open(&deep).await.expect("start in a deep folder");
    let socket_dir = database
        .cluster()
        .expect("private cluster")
        .socket_dir()
        .to_owned();
    assert!(
        socket_dir.as_os_str().len() + "/.s.PGSQL.5432".len() <= 107,
        "{}",
        socket_dir.display()
    );
    let name = socket_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("folder name");
    assert!(name.starts_with("station-pg-"), "{name}");
    assert_eq!(
        std::fs::metadata(&socket_dir)
            .expect("socket folder")
            .mode()
            & 0o777,
        0o700
    );

    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&database.pool)
        .await
        .expect("query");
    assert_eq!(one, 1);
    database.close().await;
    assert!(
        !socket_dir.exists(),
        "the short socket folder outlives the server"
    );
}

#[tokio::test]
async fn awkward_data_dir_name() {
    let dir = reachable_tempdir();
    let awkward = dir.path().join("it's a dir, ok");
    std::fs::create_dir(&awkward).expect("create");
    std::fs::set_permissions(&awkward, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let database = open(&awkward).await.expect("start");
    let cluster = database.cluster().expect("private cluster");
    assert_eq!(cluster.socket_dir(), cluster.root());
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&database.pool)
        .await
        .expect("query");
    assert_eq!(one, 1);
    database.close().await;
}

#[tokio::test]
async fn shell_characters_in_path_rejected() {
    let dir = reachable_tempdir();
    let quoted = dir.path().join("say \"hi\"");
    let err = open(&quoted)
        .await
        .expect_err("pg_ctl cannot quote this path");
    assert!(
        matches!(err, DbError::UnsupportedPath { character: '"', .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("choose a path without double quotes"),
        "{err}"
    );
}

#[tokio::test]
async fn missing_binaries_name_package() {
    let dir = reachable_tempdir();
    let options = DbOptions {
        search_path: Some("".into()),
        lib_root: dir.path().join("no-postgresql-here"),
        ..TestDatabase::options()
    };
    let err = Database::open_with(dir.path(), None, &options)
        .await
        .expect_err("no server programs");
    assert!(
        matches!(err, DbError::ServerBinariesMissing { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("apt-get install postgresql"), "{text}");
    assert!(text.contains("no-postgresql-here"), "{text}");
}

#[tokio::test]
async fn unreachable_data_dir_named() {
    if !rustix::process::geteuid().is_root() {
        // As an ordinary user the server runs as that user, so every folder it made is reachable.
        return;
    }
    let dir = tempfile::tempdir().expect("temporary folder");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let err = open(dir.path())
        .await
        .expect_err("postgres cannot enter a 0700 root folder");
    let text = err.to_string();
    assert!(matches!(err, DbError::DataDirUnreachable { .. }), "{text}");
    assert!(
        text.contains(
            &dir.path()
                .canonicalize()
                .expect("resolve")
                .display()
                .to_string()
        ),
        "{text}"
    );
    assert!(text.contains("mode 700"), "{text}");
}

#[tokio::test]
async fn start_failure_shows_log_tail() {
    let dir = reachable_tempdir();
    let database = open(dir.path()).await.expect("first start");
    let pgdata = database
        .cluster()
        .expect("private cluster")
        .root()
        .join("data");
    database.close().await;

    let auto_conf = pgdata.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto_conf).expect("read postgresql.auto.conf");
    text.push_str("shared_buffers = 'plenty'\n");
    std::fs::write(&auto_conf, text).expect("write postgresql.auto.conf");

    let err = open(dir.path())
        .await
        .expect_err("start with an invalid setting");
    assert!(matches!(err, DbError::StartFailed { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("failed to start"), "{text}");
    assert!(text.contains("last lines of its log"), "{text}");
    assert!(text.contains("shared_buffers"), "{text}");
    assert!(
        !pgdata.join("postmaster.pid").exists(),
        "a failed start left a server"
    );
}

#[tokio::test]
async fn database_url_skips_cluster() {
    let test_db = TestDatabase::new().await;
    let socket_dir = test_db
        .database()
        .cluster()
        .expect("private cluster")
        .socket_dir()
        .to_owned();
    let url = format!(
        "postgres://station@localhost/station?host={}",
        socket_dir.display()
    );
    let unused_dir = reachable_tempdir();

    let database = Database::open(unused_dir.path(), Some(&url))
        .await
        .expect("open through the URL");
    assert!(database.cluster().is_none());
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'audit_event'",
    )
    .fetch_one(&database.pool)
    .await
    .expect("query");
    assert_eq!(tables, 1);
    database.close().await;
    assert!(
        !unused_dir.path().join("postgres").exists(),
        "a URL must not start a private cluster"
    );

    // The server behind the URL belongs to someone else: closing must not stop it.
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(test_db.pool())
        .await
        .expect("the test server still runs");
    assert_eq!(one, 1);
}

#[tokio::test]
async fn database_url_errors_hide_password() {
    let dir = reachable_tempdir();
    let err = Database::open(
        dir.path(),
        Some("mysql://station:hunter2@localhost/station"),
    )
    .await
    .expect_err("not a PostgreSQL URL");
    assert!(matches!(err, DbError::InvalidUrl { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("invalid DATABASE_URL: the scheme is \"mysql\""),
        "{err}"
    );
    assert!(!err.to_string().contains("hunter2"), "{err}");

    let err = Database::open(
        dir.path(),
        Some("postgres://station:hunter2@localhost:port/station"),
    )
    .await
    .expect_err("port is not a number");
    assert!(matches!(err, DbError::InvalidUrl { .. }), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");

    let missing = dir.path().join("no-server-here");
    let url = format!(
        "postgres://station:hunter2@localhost/station?host={}",
        missing.display()
    );
    let err = Database::open(dir.path(), Some(&url))
        .await
        .expect_err("no server at the URL");
    let text = err.to_string();
    assert!(
        text.starts_with("failed to connect to database `station`"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn cluster_problems_named() {
    let dir = reachable_tempdir();
    let database = open(dir.path()).await.expect("first start");
    let pgdata = database
        .cluster()
        .expect("private cluster")
        .root()
        .join("data");
    database.close().await;

    std::fs::write(pgdata.join("PG_VERSION"), "9\n").expect("write PG_VERSION");
    let err = open(dir.path())
        .await
        .expect_err("cluster from another major version");
    assert!(
        matches!(
            err,
            DbError::ServerVersionMismatch {
                cluster_major: 9,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("install postgresql-9, or upgrade the cluster with pg_upgrade"),
        "{err}"
    );

    std::fs::remove_file(pgdata.join("PG_VERSION")).expect("remove PG_VERSION");
    let err = open(dir.path())
        .await
        .expect_err("cluster without PG_VERSION");
    assert!(matches!(err, DbError::IncompleteCluster { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("move the folder away and start again"),
        "{err}"
    );
}

#[tokio::test]
async fn foreign_cluster_folder_named() {
    if !rustix::process::geteuid().is_root() {
        // As an ordinary user the folder belongs to the server account by construction.
        return;
    }
    let dir = reachable_tempdir();
    std::fs::create_dir(dir.path().join("postgres")).expect("create a root-owned cluster folder");
    let err = open(dir.path())
        .await
        .expect_err("cluster folder owned by root");
    assert!(matches!(err, DbError::WrongOwner { owner: 0, .. }), "{err}");
    assert!(
        err.to_string()
            .contains("give the folder to that account with `chown -R"),
        "{err}"
    );
}

#[tokio::test]
async fn restart_after_server_crash() {
    let dir = reachable_tempdir();
    let database = open(dir.path()).await.expect("first start");
    audit::record(
        &database.pool,
        "line-1",
        &event("test.before-crash", json!({})),
    )
    .await
    .expect("record");
    let cluster = database.cluster().expect("private cluster");
    let pgdata = cluster.root().join("data");
    let pid = cluster.server_pid().expect("server PID");

    kill(pid);
    wait_until_dead(pid);
    wait_for_backends(pid);
    database.close().await;

    // After a reboot the stale PID can belong to an unrelated live process, here this one.
    let pid_file = pgdata.join("postmaster.pid");
    let stale = std::fs::read_to_string(&pid_file).expect("a killed server leaves postmaster.pid");
    let rest = stale.split_once('\n').expect("multi-line file").1;
    std::fs::write(&pid_file, format!("{}\n{rest}", std::process::id())).expect("rewrite PID");

    let database = open(dir.path()).await.expect("start after the crash");
    assert_eq!(database.cluster().and_then(|c| c.adopted_pid()), None);
    let record = audit::record(
        &database.pool,
        "line-1",
        &event("test.after-crash", json!({})),
    )
    .await
    .expect("record");
    assert_eq!(
        record.seq, 2,
        "the committed event before the crash was lost"
    );
    database.close().await;
}

#[tokio::test]
async fn orphaned_server_adopted() {
    let dir = reachable_tempdir();
    let report = run_and_kill_child(dir.path(), false);
    assert!(
        process_alive(report.server_pid),
        "the server should outlive the killed station"
    );

    let database = open(dir.path())
        .await
        .expect("open after the station crashed");
    assert_eq!(
        database.cluster().and_then(|c| c.adopted_pid()),
        Some(report.server_pid)
    );
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&database.pool)
        .await
        .expect("query");
    assert_eq!(one, 1);
    database.close().await;
    wait_until_dead(report.server_pid);
}

#[tokio::test]
async fn pool_of_one_reports_busy() {
    let options = DbOptions {
        max_connections: 1,
        acquire_timeout: Duration::from_millis(300),
        ..TestDatabase::options()
    };
    let test_db = TestDatabase::with_options(&options).await;
    let pool = test_db.pool();

    // Two concurrent queries share the one connection in turn.
    let first = sqlx::query_scalar::<_, i32>("SELECT 1 FROM pg_sleep(0.1)").fetch_one(pool);
    let second = sqlx::query_scalar::<_, i32>("SELECT 2 FROM pg_sleep(0.1)").fetch_one(pool);
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.expect("first query"), 1);
    assert_eq!(second.expect("second query"), 2);

    let only_connection = db::acquire(pool).await.expect("the only connection");
    let started = Instant::now();
    let err = db::acquire(pool).await.expect_err("no connection is free");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited {:?}",
        started.elapsed()
    );
    assert!(matches!(err, DbError::Busy { .. }), "{err}");
    assert!(err.to_string().starts_with("database busy"), "{err}");

    let started = Instant::now();
    let err = store::allocate_identity(
        pool,
        "line-1",
        "station:line-1",
        "BDK-A",
        [0, 0, 0, 1],
        &device("SN-1"),
        "/dev/ttyS0",
    )
    .await
    .expect_err("allocation needs a connection");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited {:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("database busy"), "{err}");

    drop(only_connection);
    let injection = store::allocate_identity(
        pool,
        "line-1",
        "station:line-1",
        "BDK-A",
        [0, 0, 0, 1],
        &device("SN-1"),
        "/dev/ttyS0",
    )
    .await
    .expect("allocation once the connection is free");
    assert_eq!(injection.derivation_id, [0, 0, 0, 1]);
}
