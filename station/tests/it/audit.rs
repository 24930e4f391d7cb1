//! Integration tests: the hash-chained audit trail, against real PostgreSQL.

use serde_json::json;
use station::audit::{self, AuditError, AuditEvent, AuditRecord, GENESIS_HASH, Outcome, Problem};
use station::db::{self, testing::TestDatabase};

/// Builds an event by `operator:test` on subject `test`.
pub(crate) fn event(action: &str, details: serde_json::Value) -> AuditEvent {
    AuditEvent {
        actor: "operator:test".to_owned(),
        action: action.to_owned(),
        subject: "test".to_owned(),
        outcome: Outcome::Success,
        details,
    }
}

async fn record_many(pool: &sqlx::PgPool, station_id: &str, count: usize) -> Vec<AuditRecord> {
    let mut records = Vec::new();
    for n in 0..count {
        let details = json!({"kcv": format!("A1B2{n:02X}"), "n": n});
        records.push(
            audit::record(pool, station_id, &event("test.step", details))
                .await
                .expect("record"),
        );
    }
    records
}

/// Runs `sql` with the audit table's triggers disabled, as a superuser who bypasses them would.
async fn tamper(pool: &sqlx::PgPool, sql: &str) {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("ALTER TABLE audit_event DISABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .expect("disable triggers");
    sqlx::query(sql).execute(&mut *tx).await.expect("tamper");
    sqlx::query("ALTER TABLE audit_event ENABLE TRIGGER USER")
        .execute(&mut *tx)
        .await
        .expect("enable triggers");
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn events_chain_by_hash() {
    let test_db = TestDatabase::new().await;
    let records = record_many(test_db.pool(), "line-1", 3).await;
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(records[0].prev_hash, GENESIS_HASH);
    assert_eq!(records[1].prev_hash, records[0].hash);
    assert_eq!(records[2].prev_hash, records[1].hash);
    assert!(records[0].occurred_at <= records[2].occurred_at);

    let stored: Vec<u8> = sqlx::query_scalar("SELECT hash FROM audit_event WHERE id = $1")
        .bind(records[2].id)
        .fetch_one(test_db.pool())
        .await
        .expect("read hash");
    assert_eq!(stored, records[2].hash.to_vec());

    let report = audit::verify(test_db.pool()).await.expect("verify");
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.events_checked(), 3);
    assert_eq!(report.to_string(), "station line-1: 3 events verified");
}

#[tokio::test]
async fn empty_trail_verifies() {
    let test_db = TestDatabase::new().await;
    let report = audit::verify(test_db.pool()).await.expect("verify");
    assert!(report.is_intact());
    assert_eq!(report.to_string(), "the audit trail is empty");
}

#[tokio::test]
async fn update_delete_truncate_rejected() {
    let test_db = TestDatabase::new().await;
    let pool = test_db.pool();
    record_many(pool, "line-1", 2).await;
    for sql in [
        "UPDATE audit_event SET actor = 'someone-else'",
        "UPDATE audit_event SET actor = 'x' WHERE false",
        "DELETE FROM audit_event WHERE seq = 2",
        "TRUNCATE audit_event",
    ] {
        let err = sqlx::query(sql).execute(pool).await.expect_err(sql);
        assert!(
            err.to_string().contains("audit_event is append-only"),
            "{sql}: {err}"
        );
    }
    let report = audit::verify(pool).await.expect("verify");
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.events_checked(), 2);
}

#[tokio::test]
async fn changed_detail_named() {
    let test_db = TestDatabase::new().await;
    let pool = test_db.pool();
    let records = record_many(pool, "line-1", 5).await;
    tamper(
        pool,
        &format!("UPDATE audit_event SET details_json = replace(details_json, 'A1B202', 'FFFFFF') WHERE id = {}", records[2].id),
    )
    .await;
    let changed: serde_json::Value =
        sqlx::query_scalar("SELECT details FROM audit_event WHERE id = $1")
            .bind(records[2].id)
            .fetch_one(pool)
            .await
            .expect("read");
    assert_eq!(changed["kcv"], "FFFFFF", "the tampering did not take");

    let report = audit::verify(pool).await.expect("verify");
    assert!(!report.is_intact());
    let mismatch = report.first_mismatch().expect("a mismatch");
    assert_eq!(mismatch.id, records[2].id);
    assert_eq!(mismatch.station_id, "line-1");
    assert_eq!(mismatch.seq, 3);
    assert_eq!(mismatch.problem, Problem::Hash);
    assert_eq!(report.chains[0].events_checked, 2);
    assert_eq!(
        report.to_string(),
        format!(
            "station line-1: 2 events verified, then event {} (station line-1, seq 3) does not match: its hash \
             does not cover its stored fields, so it was changed after it was written",
            records[2].id
        )
    );
}

#[tokio::test]
async fn changed_outcome_named() {
    let test_db = TestDatabase::new().await;
    let pool = test_db.pool();
    let records = record_many(pool, "line-1", 3).await;
    tamper(
        pool,
        &format!(
            "UPDATE audit_event SET outcome = 'failure' WHERE id = {}",
            records[1].id
        ),
    )
    .await;
    let report = audit::verify(pool).await.expect("verify");
    let mismatch = report.first_mismatch().expect("a mismatch");
    assert_eq!((mismatch.id, mismatch.seq), (records[1].id, 2));
    assert_eq!(mismatch.problem, Problem::Hash);
}

#[tokio::test]
async fn rehashed_event_breaks_link() {
    let test_db = TestDatabase::new().await;
    let pool = test_db.pool();
    let records = record_many(pool, "line-1", 3).await;
    // A forger who rewrites an event's hash as well still breaks the next event's link.
    tamper(
        pool,
        &format!(
            "UPDATE audit_event SET hash = sha384(hash) WHERE id = {}",
            records[1].id
        ),
    )
    .await;
    let report = audit::verify(pool).await.expect("verify");
    let mismatch = report.first_mismatch().expect("a mismatch");
    assert_eq!((mismatch.id, mismatch.seq), (records[1].id, 2));
    assert_eq!(mismatch.problem, Problem::Hash);

    tamper(
        pool,
        &format!(
            "UPDATE audit_event SET prev_hash = sha384(prev_hash) WHERE id = {}",
            records[2].id
        ),
    )
    .await;
    let report = audit::verify(pool).await.expect("verify");
    assert_eq!(
        report.first_mismatch().map(|m| m.seq),
        Some(2),
        "the earliest mismatch comes first"
    );
}

#[tokio::test]
async fn deleted_event_detected() {
    let test_db = TestDatabase::new().await;
    let pool = test_db.pool();
    let records = record_many(pool, "line-1", 4).await;
    tamper(
        pool,
        &format!("DELETE FROM audit_event WHERE id = {}", records[1].id),
    )
    .await;
    let report = audit::verify(pool).await.expect("verify");
    let mismatch = report.first_mismatch().expect("a mismatch");
    assert_eq!((mismatch.id, mismatch.seq), (records[2].id, 3));
    assert_eq!(mismatch.problem, Problem::SeqGap { expected: 2 });
    assert!(
        mismatch.to_string().contains("expected seq 2"),
        "{mismatch}"
    );
}

#[tokio::test]
async fn chains_are_per_station() {
    let test_db = TestDatabase::new().await;
    let pool = test_db.pool();
    let mut line_1 = Vec::new();
    for _ in 0..3 {
        line_1.extend(record_many(pool, "line-1", 1).await);
        let line_2 = record_many(pool, "line-2", 1).await;
        assert_eq!(line_2[0].seq, i64::try_from(line_1.len()).expect("small"));
    }
    tamper(
        pool,
        &format!(
            "UPDATE audit_event SET actor = 'mallory' WHERE id = {}",
            line_1[0].id
        ),
    )
    .await;

    let report = audit::verify(pool).await.expect("verify");
    assert_eq!(report.chains.len(), 2);
    assert_eq!(report.chains[0].station_id, "line-1");
    assert_eq!(
        report.chains[0].first_mismatch.as_ref().map(|m| m.seq),
        Some(1)
    );
    assert_eq!(report.chains[1].station_id, "line-2");
    assert!(report.chains[1].first_mismatch.is_none(), "{report}");
    assert_eq!(report.chains[1].events_checked, 3);
}

#[tokio::test]
async fn concurrent_appends_do_not_fork() {
    let test_db = TestDatabase::new().await;
    let mut tasks = Vec::new();
    for n in 0..40 {
        let pool = test_db.pool().clone();
        tasks.push(tokio::spawn(async move {
            audit::record(
                &pool,
                "line-1",
                &event("test.concurrent", json!({"task": n})),
            )
            .await
            .expect("record")
            .seq
        }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.expect("task"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=40).collect::<Vec<i64>>());
    let report = audit::verify(test_db.pool()).await.expect("verify");
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.events_checked(), 40);
}

#[tokio::test]
async fn append_outside_transaction_rejected() {
    let test_db = TestDatabase::new().await;
    let mut conn = db::acquire(test_db.pool()).await.expect("connection");
    let err = audit::append(&mut conn, "line-1", &event("test.autocommit", json!({})))
        .await
        .expect_err("no transaction");
    assert!(matches!(err, AuditError::NotInTransaction), "{err}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_event")
        .fetch_one(&mut *conn)
        .await
        .expect("count");
    assert_eq!(count, 0);
}

#[tokio::test]
async fn rolled_back_event_leaves_no_gap() {
    let test_db = TestDatabase::new().await;
    let pool = test_db.pool();
    let mut tx = db::begin(pool).await.expect("begin");
    audit::append(&mut tx, "line-1", &event("test.rolled-back", json!({})))
        .await
        .expect("append");
    tx.rollback().await.expect("rollback");
    let records = record_many(pool, "line-1", 1).await;
    assert_eq!(records[0].seq, 1);
    assert!(audit::verify(pool).await.expect("verify").is_intact());
}

#[tokio::test]
async fn details_survive_jsonb() {
    let test_db = TestDatabase::new().await;
    let pool = test_db.pool();
    let details = json!({"z": 1, "a": [1.5, -2, 1e300, "ü\"\\"], "m": {"b": null, "a": true}, "big": 18446744073709551615u64});
    let record = audit::record(pool, "line-1", &event("test.details", details.clone()))
        .await
        .expect("record");
    let (stored, text): (serde_json::Value, String) =
        sqlx::query_as("SELECT details, details_json FROM audit_event WHERE id = $1")
            .bind(record.id)
            .fetch_one(pool)
            .await
            .expect("read");
    assert_eq!(stored, details);
    assert!(text.starts_with("{\"a\":[1.5,-2,1e+300,"), "{text}");
    assert!(audit::verify(pool).await.expect("verify").is_intact());
}

#[tokio::test]
async fn invalid_events_rejected() {
    let test_db = TestDatabase::new().await;
    let pool = test_db.pool();
    let mut bad_actor = event("test.bad", json!({}));
    bad_actor.actor = String::new();
    let err = audit::record(pool, "line-1", &bad_actor)
        .await
        .expect_err("empty actor");
    assert_eq!(
        err.to_string(),
        "invalid audit actor \"\": it must not be empty"
    );

    let err = audit::record(pool, "line\n1", &event("test.bad", json!({})))
        .await
        .expect_err("control character");
    assert_eq!(
        err.to_string(),
        "invalid audit station ID \"line\\n1\": it contains a control character"
    );

    let err = audit::record(
        pool,
        "line-1",
        &event("test.bad", json!({"component": "0123"})),
    )
    .await
    .expect_err("key material");
    assert!(matches!(err, AuditError::SecretLikeDetail { .. }), "{err}");

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_event")
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(count, 0);
}
