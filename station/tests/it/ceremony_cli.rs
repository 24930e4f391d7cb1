//! Integration tests: `station user` and the interactive `station ceremony`, driven through a
//! real pseudo-terminal the way people type at the station: names echo, passwords and key parts
//! do not.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};

const PASSWORDS: [(&str, &str); 5] = [
    ("admin", "admin-pass-1234"),
    ("alice", "alice-pass-5678"),
    ("bob", "bob-pass-90123"),
    ("dave", "dave-pass-45678"),
    ("carol", "carol-pass-24680"),
];

/// How long one expected output may take: cluster start, argon2 in a debug build.
const WAIT: Duration = Duration::from_secs(60);

fn password(name: &str) -> &'static str {
    PASSWORDS
        .iter()
        .find(|(user, _)| *user == name)
        .map(|(_, password)| *password)
        .unwrap()
}

/// One `station` process on the slave side of a new pseudo-terminal.
struct Session {
    child: Child,
    master: File,
    output: Arc<Mutex<Vec<u8>>>,
    /// How far `expect` has read.
    cursor: usize,
    /// Everything typed, to check what the terminal echoed.
    typed: Vec<String>,
}

impl Session {
    fn start(data_dir: &Path, args: &[&str]) -> Self {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let slave_path = ptsname(&master, Vec::new()).unwrap();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(slave_path.to_str().unwrap())
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_station"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env_remove("DATABASE_URL")
            .env("STATION_ID", "station-cli-test")
            .env("RUST_LOG", "warn")
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .unwrap();
        let master = File::from(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            // The read fails with EIO once the child has exited and closed the slave.
            while let Ok(count) = reader.read(&mut buffer) {
                if count == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buffer[..count]);
            }
        });
        Self {
            child,
            master,
            output,
            cursor: 0,
            typed: Vec::new(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until `wanted` appears after what was already read, and moves past it. Returns the
    /// output up to and including it.
    fn expect(&mut self, wanted: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.text();
            if let Some(position) = text[self.cursor..].find(wanted) {
                let end = self.cursor + position + wanted.len();
                let seen = text[self.cursor..end].to_owned();
                self.cursor = end;
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {wanted:?}; output so far:\n{}",
                &text[self.cursor..]
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, line: &str) {
        self.typed.push(line.to_owned());
        self.master
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    /// Answers a password prompt for `name`.
    fn log_in(&mut self, name: &str) {
        self.expect(&format!("Password for {name}"));
        self.expect(": ");
        self.send(password(name));
    }

    fn finish(mut self) -> (bool, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "station did not exit:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // Let the reader thread drain what the child wrote last.
        std::thread::sleep(Duration::from_millis(200));
        (status.success(), self.text())
    }
}

/// Checks that no password or part typed at a hidden prompt was echoed.
fn assert_not_echoed(output: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !output.contains(secret.as_str()),
            "{secret:?} was echoed:\n{output}"
        );
    }
}

/// A temporary station data folder. Dropping it stops a PostgreSQL server that a killed station
/// process left running there, before the folder is removed.
struct DataDir {
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let pid_file = self.path.join("postgres/data/postmaster.pid");
        let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw)
        else {
            return;
        };
        // SIGINT is PostgreSQL's fast shutdown.
        if rustix::process::kill_process(pid, rustix::process::Signal::INT).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while pid_file.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn data_dir() -> (DataDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("station-data");
    (
        DataDir {
            dir,
            path: path.clone(),
        },
        path,
    )
}

fn add_users(data_dir: &Path) {
    let mut session = Session::start(data_dir, &["user", "add", "admin", "--role", "admin"]);
    session.expect("New password for admin: ");
    session.send(password("admin"));
    session.expect("Repeat the password for admin: ");
    session.send(password("admin"));
    let (ok, output) = session.finish();
    assert!(ok, "{output}");
    assert!(
        output.contains("user admin added with role admin"),
        "{output}"
    );
    assert_not_echoed(&output, &[password("admin").to_owned()]);

    for (name, role) in [
        ("alice", "custodian"),
        ("bob", "custodian"),
        ("dave", "custodian"),
        ("carol", "supervisor"),
    ] {
        let mut session = Session::start(
            data_dir,
            &["user", "add", name, "--role", role, "--as", "admin"],
        );
        session.log_in("admin");
        session.expect(&format!("New password for {name}: "));
        session.send(password(name));
        session.expect("Repeat the password");
        session.send(password(name));
        let (ok, output) = session.finish();
        assert!(ok, "{output}");
        assert_not_echoed(
            &output,
            &[password(name).to_owned(), password("admin").to_owned()],
        );
    }
}

/// Reads a share or component from a printed form: the groups under its heading, joined.
fn part_from_form(form: &str, heading: &str) -> String {
    let mut lines = form
        .lines()
        .skip_while(|line| line.trim() != heading)
        .skip(1);
    let mut part = String::new();
    for line in lines.by_ref() {
        if line.trim().is_empty() {
            break;
        }
        part.extend(line.chars().filter(|c| !c.is_whitespace()));
    }
    part
}

fn value_after(form: &str, label: &str) -> String {
    let line = form
        .lines()
        .find(|line| line.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{form}"));
    line[label.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

struct Form {
    part: String,
    part_kcv: String,
    key_kcv: String,
}

/// Receives the form handed to `custodian`: logs them in, reads it, and clears the screen.
fn receive_form(session: &mut Session, custodian: &str, part_name: &str) -> Form {
    session.log_in(custodian);
    let form = session.expect("press Enter to clear the screen: ");
    session.send("");
    let heading = format!("{}:", capitalise(part_name));
    let form = Form {
        part: part_from_form(&form, &heading),
        part_kcv: value_after(&form, &format!("{} check value:", capitalise(part_name))),
        key_kcv: value_after(&form, "Key check value:"),
    };
    assert!(!form.part.is_empty());
    form
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().unwrap().to_uppercase().chain(chars).collect()
}

fn attest(session: &mut Session) {
    session.expect("witness user name (or 'abort'): ");
    session.send("carol");
    session.log_in("carol");
    session.expect("Type 'yes' to attest, or 'abort': ");
    session.send("yes");
}

/// Logs in the participants at the start of a ceremony, custodians first.
fn log_in_participants(session: &mut Session, custodians: &[&str]) {
    for (index, custodian) in custodians.iter().enumerate() {
        session.expect(&format!(
            "custodian {} of {}, user name: ",
            index + 1,
            custodians.len()
        ));
        session.send(custodian);
        session.log_in(custodian);
    }
    session.expect("witness 1 of 1, user name: ");
    session.send("carol");
    session.log_in("carol");
}

fn enter_part(session: &mut Session, custodian: &str, part_name: &str, form: &Form) {
    session.expect("custodian user name (or 'abort'): ");
    session.send(custodian);
    session.log_in(custodian);
    session.expect(&format!("{custodian}, type your {part_name}"));
    session.expect(": ");
    session.send(&form.part);
    session.expect(&format!("{part_name} check value on your form"));
    session.expect(": ");
    session.send(&form.part_kcv);
    session.expect("key check value on your form");
    session.expect(": ");
    session.send(&form.key_kcv);
}

#[test]
fn interactive_ceremonies_hide_secrets() {
    let (_dir, data_dir) = data_dir();
    add_users(&data_dir);

    // Initialise: three custodians each receive a share form once.
    let mut session = Session::start(
        &data_dir,
        &["ceremony", "run", "ceremony-scripts/initialise.toml"],
    );
    log_in_participants(&mut session, &["alice", "bob", "dave"]);
    attest(&mut session);
    let mut shares = Vec::new();
    for custodian in ["alice", "bob", "dave"] {
        shares.push(receive_form(&mut session, custodian, "share"));
    }
    attest(&mut session);
    let typed = session.typed.clone();
    let (ok, output) = session.finish();
    assert!(ok, "{output}");
    assert!(output.contains("station-master-key"), "{output}");
    assert!(output.contains("initialised"), "{output}");
    let passwords: Vec<String> = PASSWORDS.iter().map(|(_, p)| (*p).to_owned()).collect();
    assert_not_echoed(&output, &passwords);
    assert!(typed.contains(&"alice".to_owned()));
    assert!(
        output.contains("custodian 1 of 3, user name: alice"),
        "names echo:\n{output}"
    );
    // The screen was cleared after each form.
    assert_eq!(output.matches("\x1b[3J").count(), 3);

    // Generate a BDK: alice and bob unseal with their shares, typed without echo, and receive
    // component forms.
    let mut session = Session::start(
        &data_dir,
        &["ceremony", "run", "ceremony-scripts/generate-bdk.toml"],
    );
    log_in_participants(&mut session, &["alice", "bob"]);
    attest(&mut session);
    enter_part(&mut session, "alice", "share", &shares[0]);
    // A wrong password is rejected and the custodian may try again.
    session.expect("custodian user name (or 'abort'): ");
    session.send("bob");
    session.expect("Password for bob: ");
    session.send("not-bobs-password");
    session.expect("Wrong password for bob (attempt 1 of 3)");
    session.log_in("bob");
    session.expect("bob, type your share");
    session.expect(": ");
    session.send(&shares[1].part);
    session.expect("share check value on your form");
    session.expect(": ");
    session.send(&shares[1].part_kcv);
    session.expect("key check value on your form");
    session.expect(": ");
    session.send(&shares[1].key_kcv);
    let alice_component = receive_form(&mut session, "alice", "component");
    let bob_component = receive_form(&mut session, "bob", "component");
    attest(&mut session);
    let (ok, output) = session.finish();
    assert!(ok, "{output}");
    assert!(output.contains("line-bdk"), "{output}");
    let mut hidden = passwords.clone();
    hidden.push(shares[0].part.clone());
    hidden.push(shares[1].part.clone());
    assert_not_echoed(&output, &hidden);
    assert_eq!(alice_component.key_kcv, bob_component.key_kcv);
    assert_ne!(alice_component.part, bob_component.part);
    let id = output
        .lines()
        .find_map(|line| line.strip_prefix("Ceremony ID "))
        .and_then(|rest| rest.split('.').next())
        .unwrap()
        .to_owned();

    // The record of the ceremony: participants, check values and signature lines.
    let output = Command::new(env!("CARGO_BIN_EXE_station"))
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["ceremony", "record", &id])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let record = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{record}");
    assert!(record.contains("KEY CEREMONY RECORD"), "{record}");
    assert!(record.contains("State:      completed"), "{record}");
    assert!(record.contains(&alice_component.key_kcv), "{record}");
    assert!(record.contains("(cmac)"), "{record}");
    assert_eq!(record.matches("signature: ____").count(), 4, "{record}");
    assert_not_echoed(&record, std::slice::from_ref(&alice_component.part));
}

#[test]
fn participant_aborts_at_prompt() {
    let (_dir, data_dir) = data_dir();
    add_users(&data_dir);
    let mut session = Session::start(
        &data_dir,
        &["ceremony", "run", "ceremony-scripts/destroy-key.toml"],
    );
    log_in_participants(&mut session, &["alice", "bob"]);
    session.expect("witness user name (or 'abort'): ");
    session.send("abort");
    session.expect("Name of the participant who aborts: ");
    session.send("bob");
    session.log_in("bob");

    let (ok, output) = session.finish();

    assert!(!ok, "{output}");
    assert!(
        output.contains("the ceremony was aborted by \"bob\" at step 1"),
        "{output}"
    );
}

#[test]
fn same_person_cannot_log_in_twice() {
    let (_dir, data_dir) = data_dir();
    add_users(&data_dir);
    let mut session = Session::start(
        &data_dir,
        &["ceremony", "run", "ceremony-scripts/destroy-key.toml"],
    );
    session.expect("custodian 1 of 2, user name: ");
    session.send("alice");
    session.log_in("alice");
    session.expect("custodian 2 of 2, user name: ");
    session.send("alice");

    let (ok, output) = session.finish();

    assert!(!ok, "{output}");
    assert!(
        output.contains("\"alice\" has already logged in to this ceremony"),
        "{output}"
    );
}

#[test]
fn supervisor_cannot_be_custodian() {
    let (_dir, data_dir) = data_dir();
    add_users(&data_dir);
    let mut session = Session::start(
        &data_dir,
        &["ceremony", "run", "ceremony-scripts/destroy-key.toml"],
    );
    session.expect("custodian 1 of 2, user name: ");
    session.send("carol");

    let (ok, output) = session.finish();

    assert!(!ok, "{output}");
    assert!(
        output.contains("user \"carol\" is a supervisor and cannot take part as a custodian"),
        "{output}"
    );
}

/// A ceremony of three attestations, which needs no key and no vault.
const ATTEST_ONLY: &str = r#"
name = "three-attestations"
purpose = "Attest three facts"
idle-timeout-seconds = IDLE

[roles]
custodian = 2
witness = 1

[[steps]]
kind = "attest"
role = "witness"
statement = "First fact."

[[steps]]
kind = "attest"
role = "witness"
statement = "Second fact."

[[steps]]
kind = "attest"
role = "witness"
statement = "Third fact."
"#;

fn write_script(dir: &Path, idle_seconds: u32) -> String {
    let path = dir.join("three-attestations.toml");
    std::fs::write(
        &path,
        ATTEST_ONLY.replace("IDLE", &idle_seconds.to_string()),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn killed_ceremony_resumes_after_restart() {
    let (dir, data_dir) = data_dir();
    add_users(&data_dir);
    let script = write_script(dir.dir.path(), 900);
    let mut session = Session::start(&data_dir, &["ceremony", "run", &script]);
    log_in_participants(&mut session, &["alice", "bob"]);
    let started = session.expect("station ceremony resume ");
    let id = session.expect("`");
    let id = id.trim_end_matches('`').to_owned();
    assert!(started.contains("Ceremony ID"), "{started}");
    attest(&mut session);
    session.expect("Step 2 of 3");

    // The station process dies between two steps, as in a power cut.
    session.child.kill().unwrap();
    let (_, output) = session.finish();
    assert!(!output.contains("completed"), "{output}");

    let mut session = Session::start(&data_dir, &["ceremony", "resume", &id]);
    session.expect("steps on record: 1");
    for name in ["alice", "bob", "carol"] {
        session.log_in(name);
    }
    session.expect("Step 2 of 3");
    attest(&mut session);
    session.expect("Step 3 of 3");
    attest(&mut session);
    let (ok, output) = session.finish();

    assert!(ok, "{output}");
    assert!(
        output.contains(&format!("ceremony {id} completed")),
        "{output}"
    );
    let record = Command::new(env!("CARGO_BIN_EXE_station"))
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["ceremony", "record", &id])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let record = String::from_utf8_lossy(&record.stdout);
    assert!(record.contains("ceremony.resumed"), "{record}");
    assert_eq!(record.matches("ceremony.attested").count(), 3, "{record}");
}

#[test]
fn idle_prompt_times_out() {
    let (dir, data_dir) = data_dir();
    add_users(&data_dir);
    let script = write_script(dir.dir.path(), 2);
    let mut session = Session::start(&data_dir, &["ceremony", "run", &script]);
    log_in_participants(&mut session, &["alice", "bob"]);
    session.expect("witness user name (or 'abort'): ");

    let (ok, output) = session.finish();

    assert!(!ok, "{output}");
    assert!(
        output.contains("the ceremony timed out at step 1: no input for 2 seconds"),
        "{output}"
    );
}

#[test]
fn killed_ceremony_is_aborted_by_participant() {
    let (dir, data_dir) = data_dir();
    add_users(&data_dir);
    let script = write_script(dir.dir.path(), 900);
    let mut session = Session::start(&data_dir, &["ceremony", "run", &script]);
    log_in_participants(&mut session, &["alice", "bob"]);
    session.expect("station ceremony resume ");
    let id = session.expect("`").trim_end_matches('`').to_owned();
    session.expect("witness user name (or 'abort'): ");
    session.child.kill().unwrap();
    session.finish();

    let mut session = Session::start(&data_dir, &["ceremony", "abort", &id, "--by", "bob"]);
    session.log_in("bob");
    let (ok, output) = session.finish();
    assert!(ok, "{output}");
    assert!(
        output.contains(&format!("ceremony {id} aborted by bob")),
        "{output}"
    );

    let mut session = Session::start(&data_dir, &["ceremony", "resume", &id]);
    for name in ["alice", "bob", "carol"] {
        session.log_in(name);
    }
    let (ok, output) = session.finish();
    assert!(!ok, "{output}");
    assert!(
        output.contains(&format!(
            "ceremony {id} is aborted and cannot be resumed or aborted"
        )),
        "{output}"
    );
}

#[test]
fn only_admins_add_users() {
    let (_dir, data_dir) = data_dir();
    let session = Session::start(&data_dir, &["user", "add", "alice", "--role", "custodian"]);
    let (ok, output) = session.finish();
    assert!(!ok, "{output}");
    assert!(
        output.contains("the first user must be an admin"),
        "{output}"
    );

    add_users(&data_dir);
    let mut session = Session::start(
        &data_dir,
        &[
            "user",
            "add",
            "mallory",
            "--role",
            "custodian",
            "--as",
            "alice",
        ],
    );
    session.log_in("alice");
    let (ok, output) = session.finish();
    assert!(!ok, "{output}");
    assert!(
        output.contains("\"alice\" is a custodian, and only an admin can add users"),
        "{output}"
    );

    let session = Session::start(&data_dir, &["user", "add", "Mallory", "--role", "admin"]);
    let (ok, output) = session.finish();
    assert!(!ok, "{output}");
    assert!(output.contains("invalid user name \"Mallory\""), "{output}");
}
