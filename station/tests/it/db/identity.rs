//! Integration tests: device identity allocation and the injection state machine.

use std::collections::BTreeMap;

use sqlx::postgres::PgPoolOptions;
use station::audit;
use station::db::testing::TestDatabase;
use station::store::{self, Injection, InjectionState, StoreError};

use super::{device, open, reachable_tempdir, run_and_kill_child};

const STATION: &str = "line-1";
const ACTOR: &str = "station:line-1";
const BDK_A: [u8; 4] = [0x12, 0x34, 0x56, 0x78];
const BDK_B: [u8; 4] = [0x9A, 0xBC, 0xDE, 0xF0];

/// Allocates an identity on station `line-1`, port `/dev/ttyS0`.
async fn allocate(
    pool: &sqlx::PgPool,
    bdk_label: &str,
    bdk_id: [u8; 4],
    serial: &str,
) -> Result<Injection, StoreError> {
    store::allocate_identity(
        pool,
        STATION,
        ACTOR,
        bdk_label,
        bdk_id,
        &device(serial),
        "/dev/ttyS0",
    )
    .await
}

async fn actions(pool: &sqlx::PgPool, station_id: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT action FROM audit_event WHERE station_id = $1 ORDER BY seq")
        .bind(station_id)
        .fetch_all(pool)
        .await
        .expect("read audit actions")
}

#[tokio::test]
async fn derivation_ids_count_from_one() {
    let test_db = TestDatabase::new().await;
    let pool = test_db.pool();
    for expected in 1u32..=3 {
        let injection = allocate(pool, "BDK-A", BDK_A, &format!("SN-{expected}"))
            .await
            .expect("allocate");
        assert_eq!(injection.derivation_id, expected.to_be_bytes());
        assert_eq!(injection.bdk_id, BDK_A);
        assert_eq!(injection.state, InjectionState::Allocated);
        assert_eq!(
            injection.initial_key_id(),
            [0x12, 0x34, 0x56, 0x78, 0, 0, 0, expected as u8]
        );
    }
    // Another BDK has its own counter.
    let other = store::allocate_identity(
        pool,
        STATION,
        ACTOR,
        "BDK-B",
        BDK_B,
        &device("SN-9"),
        "/dev/ttyS1",
    )
    .await
    .expect("allocate");
    assert_eq!(other.derivation_id, [0, 0, 0, 1]);
    assert_eq!(actions(pool, STATION).await, vec!["injection.allocated"; 4]);
}

#[tokio::test]
async fn injection_confirmed_lifecycle() {
    let test_db = TestDatabase::new().await;
    let pool = test_db.pool();
    let allocated = allocate(pool, "BDK-A", BDK_A, "SN-1")
        .await
        .expect("allocate");
    store::mark_sent(pool, STATION, ACTOR, allocated.id)
        .await
        .expect("sent");
    assert_eq!(
        store::injection(pool, allocated.id)
            .await
            .expect("read")
            .state,
        InjectionState::Sent
    );
    store::mark_confirmed(pool, STATION, ACTOR, allocated.id, "7ad386", "cmac")
        .await
        .expect("confirmed");

    let done = store::injection(pool, allocated.id).await.expect("read");
    assert_eq!(done.state, InjectionState::Confirmed);
    let kcv = done.kcv.expect("a confirmed injection has a KCV");
    assert_eq!(kcv.hex, "7AD386");
    assert_eq!(kcv.method, "cmac");
    assert!(done.sent_at.is_some());
    assert!(done.finished_at.is_some());
    assert_eq!(done.error, None);
    assert_eq!(done.device, device("SN-1"));
    assert_eq!(done.port, "/dev/ttyS0");

    assert_eq!(
        actions(pool, STATION).await,
        vec![
            "injection.allocated",
            "injection.sent",
            "injection.confirmed"
        ]
    );
    let details: serde_json::Value =
        sqlx::query_scalar("SELECT details FROM audit_event WHERE action = 'injection.confirmed'")
            .fetch_one(pool)
            .await
            .expect("read details");
    assert_eq!(details["kcv"], "7AD386");
    assert_eq!(details["initial_key_id"], "1234567800000001");
    assert!(
        store::unconfirmed_injections(pool, STATION)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(audit::verify(pool).await.expect("verify").is_intact());
}

#[tokio::test]
async fn failure_burns_identity() {
    let test_db = TestDatabase::new().await;
    let pool = test_db.pool();
    let first = allocate(pool, "BDK-A", BDK_A, "SN-1")
        .await
        .expect("allocate");
    store::mark_sent(pool, STATION, ACTOR, first.id)
        .await
        .expect("sent");
    store::mark_failed(
        pool,
        STATION,
        ACTOR,
        first.id,
        "terminal rejected the key block: MAC\u{0} invalid",
    )
    .await
    .expect("failed");

    let burned = store::injection(pool, first.id).await.expect("read");
    assert!(burned.is_burned());
    assert_eq!(
        burned.error.as_deref(),
        Some("terminal rejected the key block: MAC\u{FFFD} invalid")
    );
    assert_eq!(burned.kcv, None);

    let err = store::mark_confirmed(pool, STATION, ACTOR, first.id, "7AD386", "cmac")
        .await
        .expect_err("a failed injection cannot be confirmed");
    assert_eq!(
        err.to_string(),
        format!(
            "injection {} is failed and cannot become confirmed: an injection goes from allocated to sent \
             to confirmed or failed, and confirmed and failed are final",
            first.id
        )
    );

    let second = allocate(pool, "BDK-A", BDK_A, "SN-1")
        .await
        .expect("allocate again for the same device");
    assert_eq!(
        second.derivation_id,
        [0, 0, 0, 2],
        "a burned identity was handed out again"
    );

    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM audit_event WHERE action = 'injection.failed'")
            .fetch_all(pool)
            .await
            .expect("read outcomes");
    assert_eq!(outcomes, vec!["failure"]);
}

#[tokio::test]
async fn invalid_transitions_rejected() {
    let test_db = TestDatabase::new().await;
    let pool = test_db.pool();
    let injection = allocate(pool, "BDK-A", BDK_A, "SN-1")
        .await
        .expect("allocate");

    let err = store::mark_confirmed(pool, STATION, ACTOR, injection.id, "7AD386", "cmac")
        .await
        .expect_err("confirm before send");
    assert!(
        matches!(
            err,
            StoreError::InvalidTransition {
                from: InjectionState::Allocated,
                ..
            }
        ),
        "{err}"
    );

    store::mark_sent(pool, STATION, ACTOR, injection.id)
        .await
        .expect("sent");
    let err = store::mark_sent(pool, STATION, ACTOR, injection.id)
        .await
        .expect_err("sent twice");
    let expected = format!("injection {} is sent and cannot become sent:", injection.id);
    assert!(err.to_string().starts_with(&expected), "{err}");

    let err = store::mark_sent(pool, "line-2", "station:line-2", injection.id)
        .await
        .expect_err("another station");
    assert_eq!(
        err.to_string(),
        format!(
            "injection {} belongs to station \"line-1\", not \"line-2\"; reconcile it from that station",
            injection.id
        )
    );

    store::mark_confirmed(pool, STATION, ACTOR, injection.id, "7AD386", "cmac")
        .await
        .expect("confirmed");
    let err = store::mark_failed(pool, STATION, ACTOR, injection.id, "late failure")
        .await
        .expect_err("fail after confirm");
    assert!(
        matches!(
            err,
            StoreError::InvalidTransition {
                from: InjectionState::Confirmed,
                to: InjectionState::Failed,
                ..
            }
        ),
        "{err}"
    );

    let err = store::mark_sent(pool, STATION, ACTOR, 999_999)
        .await
        .expect_err("unknown injection");
    assert_eq!(err.to_string(), "injection 999999 not found");

    // Rejected steps write no audit events.
    assert_eq!(
        actions(pool, STATION).await,
        vec![
            "injection.allocated",
            "injection.sent",
            "injection.confirmed"
        ]
    );
}

#[tokio::test]
async fn bad_arguments_named() {
    let test_db = TestDatabase::new().await;
    let pool = test_db.pool();
    let err = allocate(pool, "BDK-A", BDK_A, "")
        .await
        .expect_err("empty serial");
    assert_eq!(
        err.to_string(),
        "invalid device serial number \"\": it must not be empty"
    );

    let err = allocate(pool, "", BDK_A, "SN-1")
        .await
        .expect_err("empty label");
    assert_eq!(
        err.to_string(),
        "invalid BDK label \"\": it must not be empty"
    );

    let injection = allocate(pool, "BDK-A", BDK_A, "SN-1")
        .await
        .expect("allocate");
    assert_eq!(
        injection.derivation_id,
        [0, 0, 0, 1],
        "rejected arguments consumed an identity"
    );
    store::mark_sent(pool, STATION, ACTOR, injection.id)
        .await
        .expect("sent");
    for bad in ["7AD38", "7AD3ZZ", "7A", "00112233445566"] {
        let err = store::mark_confirmed(pool, STATION, ACTOR, injection.id, bad, "cmac")
            .await
            .expect_err("malformed KCV");
        assert_eq!(
            err.to_string(),
            format!("invalid KCV {bad:?}: a KCV is 2 to 5 bytes written as 4 to 10 hex digits")
        );
    }
    let err = store::mark_failed(pool, STATION, ACTOR, injection.id, "  ")
        .await
        .expect_err("blank reason");
    assert!(
        err.to_string().contains("say why the injection failed"),
        "{err}"
    );
}

#[tokio::test]
async fn bdk_id_bound_to_one_label() {
    let test_db = TestDatabase::new().await;
    let pool = test_db.pool();
    allocate(pool, "BDK-A", BDK_A, "SN-1")
        .await
        .expect("allocate");

    let err = allocate(pool, "BDK-OTHER", BDK_A, "SN-2")
        .await
        .expect_err("second label for one BDK ID");
    assert_eq!(
        err.to_string(),
        "BDK ID 12345678 already belongs to BDK \"BDK-A\", not \"BDK-OTHER\"; every BDK needs its own BDK ID, \
         or devices get the same initial key IDs"
    );

    let next = allocate(pool, "BDK-A", BDK_A, "SN-3")
        .await
        .expect("allocate");
    assert_eq!(next.derivation_id, [0, 0, 0, 2]);
}

#[tokio::test]
async fn derivation_ids_exhausted() {
    let test_db = TestDatabase::new().await;
    let pool = test_db.pool();
    allocate(pool, "BDK-A", BDK_A, "SN-1")
        .await
        .expect("allocate");
    sqlx::query(
        "UPDATE derivation_id_counter SET last_derivation_id = 4294967294 WHERE bdk_id = $1",
    )
    .bind(&BDK_A[..])
    .execute(pool)
    .await
    .expect("move the counter near its end");

    let last = allocate(pool, "BDK-A", BDK_A, "SN-2")
        .await
        .expect("the last derivation ID");
    assert_eq!(last.derivation_id, [0xFF, 0xFF, 0xFF, 0xFF]);

    let err = allocate(pool, "BDK-A", BDK_A, "SN-3")
        .await
        .expect_err("no derivation IDs left");
    assert!(
        matches!(err, StoreError::IdentitiesExhausted { .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "BDK \"BDK-A\" (BDK ID 12345678) has no derivation IDs left: all 4294967295 are used; load a new BDK \
         with another BDK ID"
    );
}

#[tokio::test]
async fn concurrent_allocations_unique() {
    let test_db = TestDatabase::new().await;
    let second_pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(test_db.connect_options().clone())
        .await
        .expect("second pool");
    let pools = [test_db.pool().clone(), second_pool];

    let mut tasks = Vec::new();
    for task in 0..48usize {
        let pool = pools[task % 2].clone();
        let station = if task % 3 == 0 { "line-1" } else { "line-2" };
        let (label, bdk_id) = if task % 4 < 2 {
            ("BDK-A", BDK_A)
        } else {
            ("BDK-B", BDK_B)
        };
        tasks.push(tokio::spawn(async move {
            let injection = store::allocate_identity(
                &pool,
                station,
                &format!("station:{station}"),
                label,
                bdk_id,
                &device(&format!("SN-{task}")),
                "/dev/ttyS0",
            )
            .await
            .expect("allocate");
            store::mark_sent(&pool, station, "operator:test", injection.id)
                .await
                .expect("sent");
            if task % 5 == 0 {
                store::mark_failed(
                    &pool,
                    station,
                    "operator:test",
                    injection.id,
                    "simulated failure",
                )
                .await
                .expect("failed");
            } else {
                store::mark_confirmed(
                    &pool,
                    station,
                    "operator:test",
                    injection.id,
                    "A1B2C3",
                    "cmac",
                )
                .await
                .expect("confirmed");
            }
            (label, u32::from_be_bytes(injection.derivation_id))
        }));
    }
    let mut by_bdk: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for task in tasks {
        let (label, id) = task.await.expect("task");
        by_bdk.entry(label).or_default().push(id);
    }
    for (label, mut ids) in by_bdk {
        ids.sort_unstable();
        let expected: Vec<u32> = (1..=u32::try_from(ids.len()).expect("small")).collect();
        assert_eq!(ids, expected, "derivation IDs of {label} repeat or skip");
    }

    let report = audit::verify(&pools[0]).await.expect("verify");
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.chains.len(), 2);
    assert_eq!(report.events_checked(), 48 * 3);
}

#[tokio::test]
async fn audit_failure_rolls_back_allocation() {
    let test_db = TestDatabase::new().await;
    let pool = test_db.pool();
    sqlx::raw_sql(
        "CREATE FUNCTION reject_audit_insert() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'audit storage unavailable'; END $$; \
         CREATE TRIGGER reject_audit_insert BEFORE INSERT ON audit_event \
         FOR EACH ROW EXECUTE FUNCTION reject_audit_insert();",
    )
    .execute(pool)
    .await
    .expect("install a failing trigger");

    let err = allocate(pool, "BDK-A", BDK_A, "SN-1")
        .await
        .expect_err("the audit event cannot be written");
    assert!(
        err.to_string().contains("audit storage unavailable"),
        "{err}"
    );
    let injections: i64 = sqlx::query_scalar("SELECT count(*) FROM injection")
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(
        injections, 0,
        "an injection without its audit event was committed"
    );

    sqlx::query("DROP TRIGGER reject_audit_insert ON audit_event")
        .execute(pool)
        .await
        .expect("drop trigger");
    let injection = allocate(pool, "BDK-A", BDK_A, "SN-1")
        .await
        .expect("allocate");
    assert_eq!(
        injection.derivation_id,
        [0, 0, 0, 1],
        "the rolled-back allocation consumed an identity"
    );
}

#[tokio::test]
async fn identity_not_reused_after_crash() {
    let dir = reachable_tempdir();
    let report = run_and_kill_child(dir.path(), true);
    let crashed_id = report.injection_id.expect("the child allocated");
    assert_eq!(report.derivation_id.as_deref(), Some("00000001"));

    let database = open(dir.path())
        .await
        .expect("open after the station crashed");
    let pool = &database.pool;
    let unconfirmed = store::unconfirmed_injections(pool, STATION)
        .await
        .expect("list");
    assert_eq!(unconfirmed.len(), 1);
    assert_eq!(unconfirmed[0].id, crashed_id);
    assert_eq!(unconfirmed[0].state, InjectionState::Allocated);
    assert_eq!(unconfirmed[0].device.serial, "SN-CRASH");

    let next = store::allocate_identity(
        pool,
        STATION,
        ACTOR,
        "BDK-A",
        [0, 0, 0, 7],
        &device("SN-CRASH"),
        "/dev/ttyCRASH",
    )
    .await
    .expect("allocate after the crash");
    assert_eq!(
        next.derivation_id,
        [0, 0, 0, 2],
        "the crashed allocation's identity was handed out again"
    );

    store::mark_failed(
        pool,
        STATION,
        ACTOR,
        crashed_id,
        "abandoned: station restarted before sending",
    )
    .await
    .expect("burn the abandoned identity");
    let unconfirmed = store::unconfirmed_injections(pool, STATION)
        .await
        .expect("list");
    assert_eq!(
        unconfirmed.iter().map(|i| i.id).collect::<Vec<_>>(),
        vec![next.id]
    );

    let report = audit::verify(pool).await.expect("verify");
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.events_checked(), 3);
    database.close().await;
}
