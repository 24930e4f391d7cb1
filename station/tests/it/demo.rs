//! Integration tests: the `station` command end to end, as an operator runs it.

use std::path::Path;
use std::process::{Command, Output};

fn station(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_station"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("DATABASE_URL")
        .env("STATION_ID", "station-demo-test")
        .output()
        .expect("the station binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn demo_runs_twice_and_audit_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("station-data");

    for run in 1..=2 {
        let output = station(&data_dir, &["demo"]);
        let stdout = text(&output.stdout);
        assert!(
            output.status.success(),
            "demo run {run} failed:\n{stdout}\n{}",
            text(&output.stderr)
        );
        assert_eq!(
            stdout.matches("key matches").count(),
            4,
            "run {run}:\n{stdout}"
        );
        assert_eq!(
            stdout.matches("ECDH P-384 session").count(),
            3,
            "run {run}:\n{stdout}"
        );
        assert_eq!(
            stdout.matches("pre-shared line-transport").count(),
            1,
            "run {run}:\n{stdout}"
        );
        assert!(stdout.contains("Demo complete"), "run {run}:\n{stdout}");
    }

    let output = station(&data_dir, &["audit", "verify"]);
    assert!(
        output.status.success(),
        "audit verify failed:\n{}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );

    let output = station(&data_dir, &["keys", "list"]);
    let listing = text(&output.stdout);
    assert!(output.status.success(), "{listing}");
    assert!(listing.contains("line-bdk"), "{listing}");
    assert!(listing.contains("5A1E0001"), "{listing}");
    assert!(listing.contains("line-transport"), "{listing}");

    let output = station(&data_dir, &["keys", "inventory"]);
    let inventory = text(&output.stdout);
    assert!(output.status.success(), "{inventory}");
    assert!(
        inventory.contains("ceremony    load-line-keys"),
        "{inventory}"
    );
    assert!(inventory.contains("custodians  alice, bob"), "{inventory}");
    // Both demo runs loaded the BDK: the first stored it, the second found it present.
    assert!(inventory.contains("vault.key-stored"), "{inventory}");
    assert!(
        inventory.contains("vault.key-already-present"),
        "{inventory}"
    );
}

#[test]
fn provision_names_a_missing_port() {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("unused.toml");
    std::fs::write(&component, "").unwrap();

    let output = station(
        &dir.path().join("station-data"),
        &[
            "provision",
            "--port",
            "/dev/ttyNOSUCHPORT9",
            "--bdk",
            "line-bdk",
            "--participant",
            "alice=custodian",
            "--component",
            component.to_str().unwrap(),
        ],
    );

    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("/dev/ttyNOSUCHPORT9"), "{stderr}");
}

#[test]
fn ceremony_check_prints_the_procedure() {
    let dir = tempfile::tempdir().unwrap();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ceremony-scripts/load-line-keys.toml");

    let output = station(dir.path(), &["ceremony", "check", script.to_str().unwrap()]);

    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(stdout.contains("2 custodians, 1 witness"), "{stdout}");
    assert!(
        stdout.contains("  3. 2 custodians each enter their component of bdk \"line-bdk\""),
        "{stdout}"
    );
}

/// `station terminal-sim --ecc` runs a version 2 terminal whose injected CRC error the station
/// recovers from with NAK.
#[test]
fn terminal_sim_runs_version_2_terminal() {
    use std::io::BufRead;
    use std::process::Stdio;

    use station::link::SerialLink;
    use station::protocol::{SessionConfig, StationSession};

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_station"))
        .args([
            "terminal-sim",
            "--ecc",
            "--serial",
            "SN-CLI",
            "--model",
            "OTW-PP200",
        ])
        .args(["--corrupt-responses", "1", "--state"])
        .arg(dir.path().join("terminal.json"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the station binary runs");
    let mut path = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut path)
        .unwrap();

    let mut link = SerialLink::open(path.trim(), 115_200).unwrap();
    let hello = StationSession::new(&mut link, SessionConfig::default())
        .hello()
        .expect("HELLO after one NAK");
    drop(link);
    drop(child.stdin.take());
    let status = child.wait().unwrap();

    assert_eq!(hello.protocol_version, 2);
    assert!(hello.capabilities.key_exchange);
    assert_eq!(hello.serial_number, "SN-CLI");
    assert!(status.success(), "{status}");
}

#[test]
fn read_only_commands_need_existing_data() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("mistyped-data-dir");

    for args in [
        &["audit", "verify"][..],
        &["keys", "list"],
        &["keys", "inventory"],
    ] {
        let output = station(&missing, args);

        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("no station database in"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("mistyped-data-dir"), "{args:?}: {stderr}");
        assert!(!missing.exists(), "{args:?} created the data folder");
    }
}

#[test]
fn unreachable_database_names_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on loopback has no server, so the connection is refused at once.
    let output = Command::new(env!("CARGO_BIN_EXE_station"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["keys", "list"])
        .env("DATABASE_URL", "postgres://station@127.0.0.1:1/station")
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
}

#[test]
fn port_that_is_no_serial_device() {
    let dir = tempfile::tempdir().unwrap();

    let output = station(
        &dir.path().join("station-data"),
        &[
            "provision",
            "--port",
            "/dev/null",
            "--bdk",
            "line-bdk",
            "--participant",
            "alice=custodian",
            "--component",
            "/dev/null",
        ],
    );

    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("/dev/null"), "{stderr}");
    assert!(stderr.contains("not a serial port"), "{stderr}");
}

#[test]
fn logs_have_no_colour_codes_in_files() {
    let dir = tempfile::tempdir().unwrap();

    // -v logs the database start; stderr is a pipe here, as in a log file.
    let output = station(
        &dir.path().join("station-data"),
        &["-v", "demo", "--terminals", "1"],
    );

    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("INFO"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
}

#[test]
fn ceremony_id_error_says_where_to_look() {
    let dir = tempfile::tempdir().unwrap();

    let output = station(dir.path(), &["ceremony", "record", "nope"]);

    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("invalid ceremony ID \"nope\""), "{stderr}");
    assert!(stderr.contains("station ceremony list"), "{stderr}");
}
