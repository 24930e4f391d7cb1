//! Integration tests of the terminal link, protocol and simulator over real pseudo-terminals.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use serialport::{SerialPort, TTYPort};
use station::crypto::dukpt::aes::InitialKeyId;
use station::crypto::kcv::{Kcv, KcvMethod};
use station::crypto::tr31::{self, KeyBlockHeader};
use station::crypto::{KeyAlgorithm, SecretKey};
use station::link::{
    Frame, FramedLink, Link, LinkError, LinkTimeouts, START_BYTE, SerialLink, SerialStream,
    TcpByteStream, TcpLink,
};
use station::protocol::{
    ErrorCode, Hello, LoadStatus, Message, MessageType, ProtocolError, SessionConfig, SessionError,
    StationSession,
};
use station::terminal::{
    DeviceState, Simulator, SimulatorConfig, SimulatorFaults, SimulatorHandle, TerminalIdentity,
    spawn_pty_simulator,
};

/// A pseudo-terminal pair: the device side (master), the slave fd that `TTYPort::pair` opened,
/// and the slave's path for the station to open by name.
struct Pty {
    device: TTYPort,
    _slave: TTYPort,
    path: String,
}

fn pty() -> Pty {
    let (mut device, slave) = TTYPort::pair().expect("pseudo-terminal pair");
    device
        .set_timeout(Duration::from_secs(2))
        .expect("timeout on the device side");
    let path = slave.name().expect("the slave side has a path");
    Pty {
        device,
        _slave: slave,
        path,
    }
}

fn frame(sequence: u8, payload: &[u8]) -> Vec<u8> {
    Frame::new(sequence, 0x02, payload.to_vec())
        .expect("small payload")
        .encode()
}

fn open_station(path: &str) -> SerialLink {
    SerialLink::open(path, 115_200).expect("open the pseudo-terminal by path")
}

fn in_a_second() -> Instant {
    Instant::now() + Duration::from_secs(1)
}

/// Every byte value crosses the pseudo-terminal unchanged in both directions, which shows raw
/// mode: no echo, no CR/LF translation, no XON/XOFF and no signal characters.
#[test]
fn frame_round_trips_both_directions() {
    let mut pty = pty();
    let mut station = open_station(&pty.path);
    let every_byte: Vec<u8> = (0..=255).collect();

    let sent = Frame::new(9, 0x01, every_byte.clone()).expect("small payload");
    station.send(&sent).expect("send to the device");

    let mut device = FramedLink::new(
        SerialStream::from_port(pty.device.try_clone_native().expect("dup"), "device side"),
        LinkTimeouts::default(),
    );
    assert_eq!(
        device.receive(in_a_second()).expect("device receives"),
        sent
    );

    pty.device
        .write_all(&frame(9, &every_byte))
        .expect("device writes");
    let reply = station.receive(in_a_second()).expect("station receives");
    assert_eq!(reply.sequence(), 9);
    assert_eq!(reply.payload(), every_byte.as_slice());
    let echoed = device.receive(Instant::now() + Duration::from_millis(200));
    assert!(
        matches!(echoed, Err(LinkError::Timeout { .. })),
        "the line echoed: {echoed:?}"
    );
}

#[test]
fn noise_before_frame_is_skipped() {
    let mut pty = pty();
    let mut station = open_station(&pty.path);
    let mut bytes = vec![0x00, 0xFF, START_BYTE, 0x7E, 0x03, 0x55];
    bytes.extend(frame(1, b"after noise"));
    pty.device.write_all(&bytes).expect("device writes");

    let received = station.receive(in_a_second()).expect("frame after noise");
    assert_eq!(received.payload(), b"after noise");
}

#[test]
fn corrupted_frame_then_good_frame() {
    let mut pty = pty();
    let mut station = open_station(&pty.path);
    let mut corrupted = frame(1, b"corrupted");
    corrupted[8] ^= 0x10;
    pty.device.write_all(&corrupted).expect("device writes");
    pty.device
        .write_all(&frame(2, b"intact"))
        .expect("device writes");

    let received = station.receive(in_a_second()).expect("the intact frame");
    assert_eq!(received.sequence(), 2);
    assert_eq!(received.payload(), b"intact");
    let (_, rejected) = station.discard_counts();
    assert!(
        rejected >= 1,
        "the corrupted frame was not counted as rejected"
    );
}

#[test]
fn split_reads_form_one_frame() {
    let mut pty = pty();
    let mut station = open_station(&pty.path);
    let bytes = frame(3, b"sent in pieces");
    let writer = thread::spawn(move || {
        for piece in bytes.chunks(3) {
            pty.device.write_all(piece).expect("device writes");
            thread::sleep(Duration::from_millis(20));
        }
        pty
    });

    let received = station.receive(in_a_second()).expect("frame from pieces");
    assert_eq!(received.payload(), b"sent in pieces");
    drop(writer.join().expect("writer thread"));
}

/// A device sends a 100-byte reply one byte every 109 ms. Each byte arrives inside the 110 ms
/// inter-byte timeout, so only the overall deadline can stop the wait.
#[test]
fn trickling_device_fails_at_overall_deadline() {
    let pty = pty();
    let timeouts = LinkTimeouts {
        inter_byte: Duration::from_millis(110),
        write: Duration::from_secs(1),
    };
    let mut station =
        SerialLink::open_with(&pty.path, 115_200, timeouts).expect("open the pseudo-terminal");

    let Pty {
        mut device, _slave, ..
    } = pty;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer_stop = stop.clone();
    let writer = thread::spawn(move || {
        let reply = frame(1, &[0x41; 90]);
        assert_eq!(reply.len(), 100);
        for byte in reply {
            if writer_stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            device.write_all(&[byte]).expect("device writes");
            thread::sleep(Duration::from_millis(109));
        }
    });

    let started = Instant::now();
    let result = station.receive(started + Duration::from_millis(1000));
    let elapsed = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("writer thread");

    assert!(
        matches!(result, Err(LinkError::Timeout { .. })),
        "expected a timeout at the deadline, got {result:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(1000),
        "gave up before the deadline: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(1300),
        "the deadline of 1000 ms was overrun: {elapsed:?}"
    );
}

#[test]
fn missing_port_names_path_and_fix() {
    let error = SerialLink::open("/dev/ttyUSB-station-test-missing", 9600).unwrap_err();
    assert!(matches!(error, LinkError::PortNotFound { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "serial port /dev/ttyUSB-station-test-missing does not exist; check that the terminal is \
         plugged in and powered, and that the path is right (see `ls /dev/serial/by-id/` and \
         `dmesg`)"
    );
}

/// The tests run as root, which `TIOCEXCL` does not stop; the `flock` must.
#[test]
fn second_open_of_port_is_rejected() {
    let pty = pty();
    let _first = open_station(&pty.path);

    let error = SerialLink::open(&pty.path, 115_200).unwrap_err();
    assert!(matches!(error, LinkError::PortInUse { .. }), "{error:?}");
    assert!(
        error.to_string().starts_with(&format!(
            "serial port {} is in use by another job or process",
            pty.path
        )),
        "{error}"
    );

    drop(_first);
    SerialLink::open(&pty.path, 115_200).expect("the port opens again once released");
}

#[test]
fn far_side_close_reports_disconnected() {
    let pty = pty();
    let mut station = open_station(&pty.path);
    let path = pty.path.clone();
    drop(pty);

    let error = station.receive(in_a_second()).unwrap_err();
    assert!(matches!(error, LinkError::Disconnected { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "terminal on {path} disconnected; check the cable and power, then reconnect the \
             terminal"
        )
    );

    let send_error = station
        .send(&Frame::new(1, 1, vec![]).expect("empty payload"))
        .unwrap_err();
    assert!(
        matches!(send_error, LinkError::Disconnected { .. }),
        "{send_error:?}"
    );
}

#[test]
fn oversized_length_is_skipped_on_the_line() {
    let mut pty = pty();
    let mut station = open_station(&pty.path);
    let mut bytes = vec![START_BYTE, 0xFF, 0xFF, 0x01, 0x02];
    bytes.extend(frame(6, b"next"));
    pty.device.write_all(&bytes).expect("device writes");

    let received = station
        .receive(in_a_second())
        .expect("the frame after the bad length");
    assert_eq!(received.sequence(), 6);
}

#[test]
fn silent_device_times_out() {
    let pty = pty();
    let mut station = open_station(&pty.path);
    let started = Instant::now();
    let error = station
        .receive(started + Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(error, LinkError::Timeout { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_millis(600));
}

// Session and simulator tests: the station side against the simulated terminal, both over a
// pseudo-terminal.

const TRANSPORT_KEY: &str = "88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6";
const OTHER_TRANSPORT_KEY: &str =
    "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF";
const DEVICE_KEY: &str = "1273671EA26AC29AFA4D1084127652A1";
const INITIAL_KEY_ID: &str = "1234567890123456";

fn transport_key(hex: &str) -> SecretKey {
    SecretKey::from_hex(KeyAlgorithm::Aes256, hex).expect("valid AES-256 key")
}

fn identity() -> TerminalIdentity {
    TerminalIdentity {
        vendor: "Example Payments".to_owned(),
        model: "SIM-1".to_owned(),
        serial_number: "SN-0001".to_owned(),
        firmware_version: "1.0.0".to_owned(),
    }
}

struct SimulatedTerminal {
    handle: SimulatorHandle,
    state_path: std::path::PathBuf,
    _directory: tempfile::TempDir,
}

fn simulated_terminal(configure: impl FnOnce(&mut SimulatorConfig)) -> SimulatedTerminal {
    let directory = tempfile::tempdir().expect("temporary directory");
    let state_path = directory.path().join("terminal.json");
    let mut config =
        SimulatorConfig::new(identity(), transport_key(TRANSPORT_KEY), state_path.clone());
    configure(&mut config);
    let handle = spawn_pty_simulator(config).expect("simulator starts");
    SimulatedTerminal {
        handle,
        state_path,
        _directory: directory,
    }
}

fn quick_session() -> SessionConfig {
    SessionConfig {
        response_timeout: Duration::from_millis(500),
        attempts: 3,
    }
}

fn device_key() -> SecretKey {
    SecretKey::from_hex(KeyAlgorithm::Aes128, DEVICE_KEY).expect("valid AES-128 key")
}

fn initial_key_id() -> InitialKeyId {
    InitialKeyId::from_hex(INITIAL_KEY_ID).expect("valid initial key ID")
}

/// Wraps the device key in a version D block with usage `usage` and, if given, an IK block.
fn key_block(kbpk_hex: &str, usage: &str, ik: Option<&str>) -> String {
    let mut header: KeyBlockHeader = format!("D0000{usage}AX00N0000")
        .parse()
        .expect("valid header");
    if let Some(ik) = ik {
        header.add_optional_block("IK", ik).expect("valid IK block");
    }
    tr31::wrap(&transport_key(kbpk_hex), &header, &device_key()).expect("wraps")
}

fn expect_device_error(result: Result<impl std::fmt::Debug, SessionError>) -> (ErrorCode, String) {
    match result {
        Err(SessionError::DeviceReported { code, text, .. }) => (code, text),
        other => panic!("expected an ERROR from the terminal, got {other:?}"),
    }
}

#[test]
fn hello_returns_simulator_identity() {
    let terminal = simulated_terminal(|_| {});
    let mut link = open_station(terminal.handle.device_path());
    let mut session = StationSession::new(&mut link, quick_session());

    let hello = session.hello().expect("HELLO");
    assert_eq!(
        hello,
        Hello::version_1("Example Payments", "SIM-1", "SN-0001", "1.0.0")
    );
}

#[test]
fn load_key_stores_key_and_reports_kcv() {
    let terminal = simulated_terminal(|_| {});
    let mut link = open_station(terminal.handle.device_path());
    let mut session = StationSession::new(&mut link, quick_session());
    let block = key_block(TRANSPORT_KEY, "B1", Some(INITIAL_KEY_ID));

    let result = session
        .load_key(&block, 2, &initial_key_id())
        .expect("LOAD_KEY");
    assert_eq!(result.status, LoadStatus::Stored);
    let expected = Kcv::compute(&device_key(), KcvMethod::Cmac);
    assert_eq!(result.kcv.method(), KcvMethod::Cmac);
    assert_eq!(result.kcv.value().len(), 3);
    assert!(
        result
            .kcv
            .matches(&expected)
            .expect("same method and length")
    );

    let state = DeviceState::load(&terminal.state_path).expect("state file");
    let stored = state.key_in_slot(2).expect("slot 2 filled");
    assert_eq!(stored.initial_key_id, initial_key_id());
    assert!(stored.key.ct_eq(&device_key()), "stored key differs");
    let stored_kcv = terminal
        .handle
        .stored_key_kcv(2, KcvMethod::Cmac)
        .expect("state file")
        .expect("slot 2 filled");
    assert_eq!(stored_kcv.to_hex(), expected.to_hex());
    let empty = terminal
        .handle
        .stored_key_kcv(3, KcvMethod::Cmac)
        .expect("state file");
    assert!(empty.is_none());

    let again = session
        .load_key(&block, 2, &initial_key_id())
        .expect("second LOAD_KEY");
    assert_eq!(again.status, LoadStatus::Replaced);
}

#[test]
fn wrong_transport_key_gets_mac_error() {
    let terminal = simulated_terminal(|_| {});
    let mut link = open_station(terminal.handle.device_path());
    let mut session = StationSession::new(&mut link, quick_session());
    let block = key_block(OTHER_TRANSPORT_KEY, "B1", Some(INITIAL_KEY_ID));

    let result = session.load_key(&block, 0, &initial_key_id());
    let message = match &result {
        Err(error) => error.to_string(),
        Ok(_) => String::new(),
    };
    let (code, _) = expect_device_error(result);
    assert_eq!(code, ErrorCode::KeyBlockMacInvalid);
    assert!(
        message.contains("rejected LOAD_KEY with error 0x0101 (key block MAC invalid)"),
        "{message}"
    );
    assert!(
        message.contains(
            "the terminal's transport key differs from the one the station wrapped under"
        ),
        "{message}"
    );

    let state = DeviceState::load(&terminal.state_path).expect("state file");
    assert!(state.keys().is_empty(), "a rejected key was stored");
}

#[test]
fn initial_key_id_mismatch_is_rejected() {
    let terminal = simulated_terminal(|_| {});
    let mut link = open_station(terminal.handle.device_path());
    let mut session = StationSession::new(&mut link, quick_session());
    let block = key_block(TRANSPORT_KEY, "B1", Some("1234567890123457"));

    let (code, text) = expect_device_error(session.load_key(&block, 0, &initial_key_id()));
    assert_eq!(code, ErrorCode::InitialKeyIdMismatch);
    assert_eq!(
        text,
        "the key block's IK is 1234567890123457 but the message says 1234567890123456"
    );
}

#[test]
fn missing_ik_block_is_rejected() {
    let terminal = simulated_terminal(|_| {});
    let mut link = open_station(terminal.handle.device_path());
    let mut session = StationSession::new(&mut link, quick_session());
    let block = key_block(TRANSPORT_KEY, "B1", None);

    let (code, _) = expect_device_error(session.load_key(&block, 0, &initial_key_id()));
    assert_eq!(code, ErrorCode::InitialKeyIdMismatch);
}

#[test]
fn usage_other_than_b1_is_rejected() {
    let terminal = simulated_terminal(|_| {});
    let mut link = open_station(terminal.handle.device_path());
    let mut session = StationSession::new(&mut link, quick_session());
    let block = key_block(TRANSPORT_KEY, "B0", Some(INITIAL_KEY_ID));

    let (code, text) = expect_device_error(session.load_key(&block, 0, &initial_key_id()));
    assert_eq!(code, ErrorCode::KeyUsageNotAllowed);
    assert!(text.starts_with("key usage is B0"), "{text}");
}

#[test]
fn slot_beyond_terminal_is_rejected() {
    let terminal = simulated_terminal(|config| config.slot_count = 2);
    let mut link = open_station(terminal.handle.device_path());
    let mut session = StationSession::new(&mut link, quick_session());
    let block = key_block(TRANSPORT_KEY, "B1", Some(INITIAL_KEY_ID));

    let (code, text) = expect_device_error(session.load_key(&block, 2, &initial_key_id()));
    assert_eq!(code, ErrorCode::SlotInvalid);
    assert_eq!(
        text,
        "slot 2 does not exist; this terminal has slots 0 to 1"
    );
}

#[test]
fn simulator_rejects_unknown_message_type() {
    let terminal = simulated_terminal(|_| {});
    let mut link = open_station(terminal.handle.device_path());
    link.send(&Frame::new(7, 0x42, vec![1, 2]).expect("small payload"))
        .expect("send");

    let reply = link.receive(in_a_second()).expect("a response");
    assert_eq!(reply.sequence(), 7);
    let Message::Error(error) = Message::from_frame(&reply).expect("decodes") else {
        panic!("expected ERROR, got type 0x{:02X}", reply.message_type());
    };
    assert_eq!(error.code, ErrorCode::UnsupportedMessageType);
    assert_eq!(
        error.text,
        "message type 0x42 is not defined by protocol versions 1 and 2"
    );
}

#[test]
fn simulator_rejects_malformed_request() {
    let terminal = simulated_terminal(|_| {});
    let mut link = open_station(terminal.handle.device_path());
    let hello_request_with_extra_byte =
        Frame::new(8, MessageType::HelloRequest.code(), vec![1, 0]).expect("small payload");
    link.send(&hello_request_with_extra_byte).expect("send");

    let reply = link.receive(in_a_second()).expect("a response");
    let Message::Error(error) = Message::from_frame(&reply).expect("decodes") else {
        panic!("expected ERROR");
    };
    assert_eq!(error.code, ErrorCode::MalformedMessage);
}

#[test]
fn garbage_before_responses_is_skipped() {
    let terminal = simulated_terminal(|config| {
        config.faults = SimulatorFaults {
            garbage_before_responses: vec![0x00, START_BYTE, 0x0F, 0xFF, 0x55, START_BYTE],
            ..SimulatorFaults::default()
        };
    });
    let mut link = open_station(terminal.handle.device_path());
    let mut session = StationSession::new(&mut link, quick_session());

    assert_eq!(session.hello().expect("HELLO").serial_number, "SN-0001");
    let block = key_block(TRANSPORT_KEY, "B1", Some(INITIAL_KEY_ID));
    let result = session
        .load_key(&block, 0, &initial_key_id())
        .expect("LOAD_KEY");
    assert_eq!(result.status, LoadStatus::Stored);
}

/// The first response is corrupted on the line. The station sends the request again with the
/// same sequence number, and the terminal resends its response without storing the key twice.
#[test]
fn corrupted_load_result_is_sent_again() {
    let terminal = simulated_terminal(|config| config.faults.corrupt_responses = 1);
    let mut link = open_station(terminal.handle.device_path());
    let mut session = StationSession::new(&mut link, quick_session());
    let block = key_block(TRANSPORT_KEY, "B1", Some(INITIAL_KEY_ID));

    let started = Instant::now();
    let result = session
        .load_key(&block, 0, &initial_key_id())
        .expect("LOAD_KEY after a NAK");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "the NAK did not bring the response before the timeout"
    );
    assert_eq!(
        result.status,
        LoadStatus::Stored,
        "the retried request was applied twice"
    );
}

/// Runs a raw device on a pseudo-terminal that sends the frames `respond` returns for each request.
fn raw_device(
    respond: impl Fn(&Frame) -> Vec<Vec<u8>> + Send + 'static,
) -> (String, thread::JoinHandle<()>, TTYPort) {
    let (master, slave) = TTYPort::pair().expect("pseudo-terminal pair");
    let path = slave.name().expect("slave path");
    let mut device = FramedLink::new(
        SerialStream::from_port(master, "raw device"),
        LinkTimeouts::default(),
    );
    let thread = thread::spawn(move || {
        while let Ok(request) = device.receive(Instant::now() + Duration::from_secs(3)) {
            for bytes in respond(&request) {
                device.write_raw(&bytes).expect("device writes");
            }
        }
    });
    (path, thread, slave)
}

#[test]
fn stale_sequence_number_is_discarded() {
    let hello = Hello::version_1("V", "M", "RIGHT", "1");
    let (path, device, slave) = raw_device(move |request| {
        let stale = Hello {
            serial_number: "STALE".to_owned(),
            ..hello.clone()
        };
        vec![
            Message::Hello(stale)
                .to_frame(request.sequence().wrapping_sub(1))
                .expect("encodes")
                .encode(),
            Message::Hello(hello.clone())
                .to_frame(request.sequence())
                .expect("encodes")
                .encode(),
        ]
    });
    let mut link = open_station(&path);
    let mut session = StationSession::new(&mut link, quick_session());

    assert_eq!(session.hello().expect("HELLO").serial_number, "RIGHT");
    drop(session);
    drop(link);
    drop(slave);
    device.join().expect("device thread");
}

#[test]
fn unknown_response_type_is_device_fault() {
    let (path, device, slave) = raw_device(|request| {
        vec![
            Frame::new(request.sequence(), 0x42, vec![])
                .expect("empty")
                .encode(),
        ]
    });
    let mut link = open_station(&path);
    let mut session = StationSession::new(&mut link, quick_session());

    let error = session.hello().unwrap_err();
    assert!(
        matches!(
            error,
            SessionError::MalformedResponse {
                source: ProtocolError::UnknownMessageType { type_byte: 0x42 },
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "terminal on {path} sent a malformed response to HELLO_REQUEST: message type 0x42 is \
             not defined by protocol versions 1 and 2"
        )
    );
    drop(session);
    drop(link);
    drop(slave);
    device.join().expect("device thread");
}

#[test]
fn other_protocol_version_is_rejected() {
    let (path, device, slave) = raw_device(|request| {
        let mut hello = Hello::version_1("V", "M", "S", "F");
        hello.protocol_version = 3;
        vec![
            Message::Hello(hello)
                .to_frame(request.sequence())
                .expect("encodes")
                .encode(),
        ]
    });
    let mut link = open_station(&path);
    let mut session = StationSession::new(&mut link, quick_session());

    let error = session.hello().unwrap_err();
    assert!(
        matches!(
            error,
            SessionError::UnsupportedProtocolVersion { version: 3, .. }
        ),
        "{error:?}"
    );
    drop(session);
    drop(link);
    drop(slave);
    device.join().expect("device thread");
}

#[test]
fn silent_terminal_exhausts_attempts() {
    let pty = pty();
    let mut link = open_station(&pty.path);
    let config = SessionConfig {
        response_timeout: Duration::from_millis(200),
        attempts: 3,
    };
    let mut session = StationSession::new(&mut link, config);

    let started = Instant::now();
    let error = session.hello().unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(error, SessionError::NoResponse { attempts: 3, .. }),
        "{error:?}"
    );
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1200), "{elapsed:?}");

    let mut device = FramedLink::new(
        SerialStream::from_port(pty.device.try_clone_native().expect("dup"), "device side"),
        LinkTimeouts::default(),
    );
    let mut sequences = Vec::new();
    while let Ok(frame) = device.receive(Instant::now() + Duration::from_millis(100)) {
        sequences.push(frame.sequence());
    }
    assert_eq!(sequences.len(), 3, "{sequences:?}");
    assert!(
        sequences.iter().all(|&sequence| sequence == sequences[0]),
        "retries changed the sequence number: {sequences:?}"
    );
}

#[test]
fn paced_simulator_emulates_line_speed() {
    let terminal = simulated_terminal(|config| config.pace_baud = Some(2400));
    let mut link = open_station(terminal.handle.device_path());
    let mut session = StationSession::new(&mut link, quick_session());

    let started = Instant::now();
    let hello = session.hello().expect("HELLO");
    let elapsed = started.elapsed();

    // Each byte takes 10 bit times at 8N1: a start bit, 8 data bits and a stop bit.
    let response_len = Message::Hello(hello)
        .to_frame(0)
        .expect("encodes")
        .encoded_len();
    let line_time = Duration::from_secs(10) * u32::try_from(response_len).expect("small") / 2400;
    assert!(response_len > 40, "{response_len}");
    assert!(elapsed >= line_time, "{elapsed:?} < {line_time:?}");
}

#[test]
fn stopped_simulator_disconnects_station() {
    let terminal = simulated_terminal(|_| {});
    let mut link = open_station(terminal.handle.device_path());
    let SimulatedTerminal {
        handle, _directory, ..
    } = terminal;
    assert!(handle.is_running());
    handle.stop().expect("simulator stops cleanly");

    let mut session = StationSession::new(&mut link, quick_session());
    let error = session.hello().unwrap_err();
    assert!(
        matches!(error, SessionError::Link(LinkError::Disconnected { .. })),
        "{error:?}"
    );
}

#[test]
fn simulator_keeps_keys_across_restart() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let state_path = directory.path().join("terminal.json");
    let block = key_block(TRANSPORT_KEY, "B1", Some(INITIAL_KEY_ID));
    for expected in [LoadStatus::Stored, LoadStatus::Replaced] {
        let config =
            SimulatorConfig::new(identity(), transport_key(TRANSPORT_KEY), state_path.clone());
        let handle = spawn_pty_simulator(config).expect("simulator starts");
        let mut link = open_station(handle.device_path());
        let mut session = StationSession::new(&mut link, quick_session());
        let result = session
            .load_key(&block, 1, &initial_key_id())
            .expect("LOAD_KEY");
        assert_eq!(result.status, expected);
    }
}

/// A key block made by the PyPI package psec 1.x (`tr31.KeyBlock(kbpk, header).wrap(key)`), the
/// one shown in the worked exchange of `docs/protocol.md`.
const PSEC_KEY_BLOCK: &str = "D0176B1AX00N0200IK141234567890123456PB0C000000003183586DC6EF67542E07\
                              0B0FDF9C6E6DDB285450AB82E601F39464143A21AF2F9B4C1EFB9F3573158A99A1\
                              0441E80FD5EF6420939FE3FD23BA0DE360EE419CEC";

#[test]
fn simulator_loads_psec_key_block() {
    let terminal = simulated_terminal(|_| {});
    let mut link = open_station(terminal.handle.device_path());
    let mut session = StationSession::new(&mut link, quick_session());

    let result = session
        .load_key(PSEC_KEY_BLOCK, 0, &initial_key_id())
        .expect("LOAD_KEY");
    assert_eq!(result.kcv.to_hex(), "05EF45");

    let state = DeviceState::load(&terminal.state_path).expect("state file");
    let stored = state.key_in_slot(0).expect("slot 0 filled");
    assert!(stored.key.ct_eq(&device_key()), "stored key differs");
}

#[test]
fn tcp_link_round_trips_and_detects_close() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let address = listener.local_addr().expect("local address").to_string();
    let device = thread::spawn(move || {
        let (socket, _) = listener.accept().expect("accept");
        let stream = TcpByteStream::from_socket(socket).expect("socket");
        let mut device = FramedLink::new(stream, LinkTimeouts::default());
        let request = device.receive(in_a_second()).expect("device receives");
        device.write_raw(&[0xFF, 0x00]).expect("noise");
        device
            .send(&Frame::new(request.sequence(), 0x81, b"pong".to_vec()).expect("small"))
            .expect("device sends");
    });

    let mut station = TcpLink::connect(&address, Duration::from_secs(1), LinkTimeouts::default())
        .expect("connect over loopback");
    station
        .send(&Frame::new(5, 0x01, b"ping".to_vec()).expect("small"))
        .expect("station sends");
    let reply = station.receive(in_a_second()).expect("station receives");
    assert_eq!(reply.sequence(), 5);
    assert_eq!(reply.payload(), b"pong");

    device.join().expect("device thread");
    let error = station.receive(in_a_second()).unwrap_err();
    assert!(matches!(error, LinkError::Disconnected { .. }), "{error:?}");
}

#[test]
fn tcp_connect_failure_names_address() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let address = listener.local_addr().expect("local address").to_string();
    drop(listener);

    let error =
        TcpLink::connect(&address, Duration::from_secs(1), LinkTimeouts::default()).unwrap_err();
    assert!(matches!(error, LinkError::Connect { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("failed to connect to terminal at {address}: ")),
        "{text}"
    );
    assert!(
        text.ends_with("check the address and that the terminal is listening"),
        "{text}"
    );
}

#[test]
fn simulator_serves_over_tcp() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let address = listener.local_addr().expect("local address").to_string();
    let directory = tempfile::tempdir().expect("temporary directory");
    let config = SimulatorConfig::new(
        identity(),
        transport_key(TRANSPORT_KEY),
        directory.path().join("terminal.json"),
    );
    let mut simulator = Simulator::new(config).expect("simulator");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let thread_stop = std::sync::Arc::clone(&stop);
    let server = thread::spawn(move || {
        let (socket, _) = listener.accept().expect("accept");
        let stream = TcpByteStream::from_socket(socket).expect("socket");
        let mut link = FramedLink::new(stream, LinkTimeouts::default());
        simulator.serve(&mut link, &thread_stop)
    });

    let mut link = TcpLink::connect(&address, Duration::from_secs(1), LinkTimeouts::default())
        .expect("connect over loopback");
    let mut session = StationSession::new(&mut link, quick_session());
    assert_eq!(session.hello().expect("HELLO").serial_number, "SN-0001");
    drop(session);
    drop(link);

    // The simulator returns once the station closes the connection.
    server
        .join()
        .expect("server thread")
        .expect("simulator ends cleanly");
    assert!(!stop.load(std::sync::atomic::Ordering::Relaxed));
}

// ---------------------------------------------------------------------------------------------
// Protocol version 2: certificates, the authenticated key exchange, NAK and line faults.

use station::link::Received;
use station::protocol::{DeviceCredentials, StationCredentials};
use station::provision::StationPki;
use station::terminal::EccSettings;

/// An in-process link to a real [`Simulator`] that lets a test alter or replace the frames in
/// either direction, as an attacker on the line would.
struct TamperingLink {
    simulator: Simulator,
    pending: Vec<Frame>,
    /// Called on each request before the simulator handles it.
    on_request: Box<dyn FnMut(&mut Frame) + Send>,
    /// Called on each response before the station receives it.
    on_response: Box<dyn FnMut(&mut Frame) + Send>,
}

impl TamperingLink {
    fn new(simulator: Simulator) -> Self {
        Self {
            simulator,
            pending: Vec::new(),
            on_request: Box::new(|_| {}),
            on_response: Box::new(|_| {}),
        }
    }
}

impl Link for TamperingLink {
    fn peer(&self) -> &str {
        "in-process simulator"
    }

    fn send(&mut self, frame: &Frame) -> Result<(), LinkError> {
        let mut request = frame.clone();
        (self.on_request)(&mut request);
        let mut response = self.simulator.handle_frame(&request);
        (self.on_response)(&mut response);
        self.pending.push(response);
        Ok(())
    }

    fn receive(&mut self, _deadline: Instant) -> Result<Frame, LinkError> {
        if self.pending.is_empty() {
            return Err(LinkError::Timeout {
                peer: "in-process simulator".to_owned(),
                waited: Duration::ZERO,
            });
        }
        Ok(self.pending.remove(0))
    }

    fn receive_or_damaged(&mut self, deadline: Instant) -> Result<Received, LinkError> {
        self.receive(deadline).map(Received::Frame)
    }
}

/// Replaces byte `offset` of a frame's payload with its complement, keeping the frame valid.
fn flip_payload_byte(frame: &mut Frame, offset: usize) {
    let mut payload = frame.payload().to_vec();
    payload[offset] ^= 0xFF;
    *frame = Frame::new(frame.sequence(), frame.message_type(), payload).expect("same length");
}

fn ecc_config(state_path: std::path::PathBuf) -> SimulatorConfig {
    let mut config = SimulatorConfig::with_ecc(identity(), state_path);
    config.ecc = Some(EccSettings::default());
    config
}

/// A station PKI shared by the tests of one terminal.
fn station_pki() -> StationPki {
    StationPki::create_in_memory("station-test").expect("factory CA")
}

/// Runs HELLO, CSR and CERTIFICATE, returning the terminal's credentials.
fn certify<L>(session: &mut StationSession<L>, pki: &StationPki) -> DeviceCredentials
where
    L: std::ops::DerefMut,
    L::Target: Link,
{
    let hello = session.hello().expect("HELLO");
    assert_eq!(hello.protocol_version, 2);
    assert!(hello.capabilities.key_exchange);
    assert!(hello.capabilities.csr);
    assert!(hello.certificate_chain.is_empty());
    let csr = session.request_csr().expect("CSR");
    let identity = station::pki::DeviceIdentity {
        serial_number: hello.serial_number.clone(),
        model: hello.model.clone(),
    };
    let checked = station::pki::check_csr(&csr, &identity).expect("the CSR passes its checks");
    let certificate = pki
        .ca
        .issue_device_certificate(
            &checked,
            station::pki::ValidityPeriod::from_now(Duration::from_secs(3600)),
        )
        .expect("the CA certifies the CSR");
    let chain = vec![
        certificate.der().to_vec(),
        pki.ca.certificate().der().to_vec(),
    ];
    session.install_certificate(&chain).expect("CERTIFICATE");
    DeviceCredentials {
        certificate_der: certificate.der().to_vec(),
        certificate_fingerprint: certificate.fingerprint(),
        public_key: *checked.public_key(),
    }
}

fn credentials(pki: &StationPki) -> &StationCredentials {
    &pki.credentials
}

/// Loads the device key under the session KBPK and checks the authenticated LOAD_RESULT.
fn load_under_session<L>(session: &mut StationSession<L>) -> Result<Kcv, SessionError>
where
    L: std::ops::DerefMut,
    L::Target: Link,
{
    let kbpk = session.session_kbpk().expect("session KBPK").duplicate();
    let mut header: KeyBlockHeader = "D0000B1AX00N0000".parse().expect("valid header");
    header
        .add_optional_block("IK", INITIAL_KEY_ID)
        .expect("valid IK");
    let block = tr31::wrap(&kbpk, &header, &device_key()).expect("wraps");
    let result = session.load_key(&block, 1, &initial_key_id())?;
    assert!(
        result.mac.is_some(),
        "an authenticated LOAD_RESULT carries a MAC"
    );
    Ok(result.kcv)
}

#[test]
fn key_exchange_loads_under_session_kbpk() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let state_path = directory.path().join("terminal.json");
    let handle = spawn_pty_simulator(ecc_config(state_path.clone())).expect("simulator starts");
    let pki = station_pki();
    let mut link = open_station(handle.device_path());
    let mut session = StationSession::new(&mut link, quick_session());

    let device = certify(&mut session, &pki);
    let authenticated = session
        .key_exchange(credentials(&pki), &device)
        .expect("key exchange");
    assert_eq!(authenticated.transcript_hash.len(), 96);
    let kcv = load_under_session(&mut session).expect("authenticated load");
    assert_eq!(kcv.to_hex(), "05EF45");

    let state = DeviceState::load(&state_path).expect("state file");
    assert_eq!(state.certificate_chain.len(), 1);
    assert!(state.certificate_key.is_some());
    assert!(state.trusted_root.is_some());
    let stored = state.key_in_slot(1).expect("slot 1 holds the key");
    assert!(stored.key.ct_eq(&device_key()));
    drop(session);
    drop(link);
    handle.stop().expect("simulator stops");
}

#[test]
fn terminal_presents_stored_certificate_next_time() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let state_path = directory.path().join("terminal.json");
    let pki = station_pki();
    {
        let mut link = TamperingLink::new(Simulator::new(ecc_config(state_path.clone())).unwrap());
        let mut session = StationSession::new(&mut link, quick_session());
        certify(&mut session, &pki);
    }
    let mut link = TamperingLink::new(Simulator::new(ecc_config(state_path)).unwrap());
    let mut session = StationSession::new(&mut link, quick_session());
    let hello = session.hello().expect("HELLO");
    assert_eq!(hello.certificate_chain.len(), 1);
    let validated = station::pki::validate_chain(
        &hello.certificate_chain,
        &pki.roots,
        std::time::SystemTime::now(),
    )
    .expect("the chain validates");
    let device = DeviceCredentials {
        certificate_der: validated.device_certificate.der().to_vec(),
        certificate_fingerprint: validated.device_certificate.fingerprint(),
        public_key: validated.device_key,
    };
    session
        .key_exchange(credentials(&pki), &device)
        .expect("key exchange with the stored certificate");
    load_under_session(&mut session).expect("authenticated load");
}

/// Builds a certified in-process terminal and a session with tampering hooks.
fn tampered_exchange(
    on_request: impl FnMut(&mut Frame) + Send + 'static,
    on_response: impl FnMut(&mut Frame) + Send + 'static,
    configure: impl FnOnce(&mut SimulatorConfig),
) -> (Result<(), SessionError>, Option<Simulator>) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let mut config = ecc_config(directory.path().join("terminal.json"));
    configure(&mut config);
    let pki = station_pki();
    let mut link = TamperingLink::new(Simulator::new(config).unwrap());
    let device = {
        let mut session = StationSession::new(&mut link, quick_session());
        certify(&mut session, &pki)
    };
    link.on_request = Box::new(on_request);
    link.on_response = Box::new(on_response);
    let mut session = StationSession::new(&mut link, quick_session());
    session.hello().expect("HELLO");
    let result = session.key_exchange(credentials(&pki), &device).map(|_| ());
    drop(session);
    (result, Some(link.simulator))
}

fn is_key_exchange_response(frame: &Frame) -> bool {
    frame.message_type() == MessageType::KeyExchangeResponse.code()
}

#[test]
fn altered_terminal_nonce_fails() {
    let (result, _) = tampered_exchange(
        |_| {},
        |frame| {
            if is_key_exchange_response(frame) {
                flip_payload_byte(frame, 0);
            }
        },
        |_| {},
    );
    assert!(
        matches!(result, Err(SessionError::TerminalSignatureInvalid { .. })),
        "{result:?}"
    );
}

#[test]
fn altered_station_nonce_fails() {
    // The terminal signs the nonce it received; the station's transcript has its own.
    let (result, _) = tampered_exchange(
        |frame| {
            if frame.message_type() == MessageType::KeyExchange.code() {
                flip_payload_byte(frame, 5);
            }
        },
        |_| {},
        |_| {},
    );
    assert!(
        matches!(result, Err(SessionError::TerminalSignatureInvalid { .. })),
        "{result:?}"
    );
}

#[test]
fn altered_ephemeral_key_fails() {
    let (result, _) = tampered_exchange(
        |_| {},
        |frame| {
            if is_key_exchange_response(frame) {
                // The last byte of the terminal's point: off the curve, or a different point.
                flip_payload_byte(frame, 32 + 96);
            }
        },
        |_| {},
    );
    let error = result.unwrap_err();
    assert!(
        matches!(
            error,
            SessionError::Handshake { .. } | SessionError::TerminalSignatureInvalid { .. }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("ephemeral public key")
            || error.to_string().contains("altered or replayed"),
        "{error}"
    );
}

#[test]
fn signature_by_another_key_fails() {
    let (result, _) = tampered_exchange(
        |_| {},
        |_| {},
        |config| {
            config.faults.wrong_signature = true;
        },
    );
    let error = result.unwrap_err();
    assert!(
        matches!(error, SessionError::TerminalSignatureInvalid { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("no key was sent"), "{error}");
}

#[test]
fn replayed_key_exchange_fails() {
    // Record the KEY_EXCHANGE response of one session, then play it back in the next.
    let recorded = std::sync::Arc::new(std::sync::Mutex::new(None::<Frame>));
    let directory = tempfile::tempdir().expect("temporary directory");
    let pki = station_pki();
    let mut link = TamperingLink::new(
        Simulator::new(ecc_config(directory.path().join("terminal.json"))).unwrap(),
    );
    let device = {
        let mut session = StationSession::new(&mut link, quick_session());
        certify(&mut session, &pki)
    };
    let recorder = std::sync::Arc::clone(&recorded);
    link.on_response = Box::new(move |frame| {
        if is_key_exchange_response(frame) {
            *recorder.lock().unwrap() = Some(frame.clone());
        }
    });
    {
        let mut session = StationSession::new(&mut link, quick_session());
        session.hello().expect("HELLO");
        session
            .key_exchange(credentials(&pki), &device)
            .expect("first session");
    }

    let replay = recorded.lock().unwrap().clone().expect("recorded");
    link.on_response = Box::new(move |frame| {
        if is_key_exchange_response(frame) {
            *frame = Frame::new(
                frame.sequence(),
                replay.message_type(),
                replay.payload().to_vec(),
            )
            .unwrap();
        }
    });
    let mut session = StationSession::new(&mut link, quick_session());
    session.hello().expect("HELLO");
    let error = session
        .key_exchange(credentials(&pki), &device)
        .unwrap_err();
    assert!(
        matches!(error, SessionError::TerminalSignatureInvalid { .. }),
        "{error:?}"
    );
}

#[test]
fn altered_station_signature_is_rejected_by_terminal() {
    let (result, _) = tampered_exchange(
        |frame| {
            if frame.message_type() == MessageType::KeyConfirm.code() {
                let last = frame.payload().len() - 20;
                flip_payload_byte(frame, last);
            }
        },
        |_| {},
        |_| {},
    );
    let (code, _) = expect_device_error(result);
    assert_eq!(code, ErrorCode::SignatureInvalid);
}

#[test]
fn altered_station_confirmation_is_rejected_by_terminal() {
    let (result, _) = tampered_exchange(
        |frame| {
            if frame.message_type() == MessageType::KeyConfirm.code() {
                let last = frame.payload().len() - 1;
                flip_payload_byte(frame, last);
            }
        },
        |_| {},
        |_| {},
    );
    let (code, _) = expect_device_error(result);
    assert_eq!(code, ErrorCode::KeyConfirmationFailed);
}

#[test]
fn altered_load_result_mac_is_rejected() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let pki = station_pki();
    let mut link = TamperingLink::new(
        Simulator::new(ecc_config(directory.path().join("terminal.json"))).unwrap(),
    );
    let device = {
        let mut session = StationSession::new(&mut link, quick_session());
        certify(&mut session, &pki)
    };
    link.on_response = Box::new(|frame| {
        if frame.message_type() == MessageType::LoadResult.code() {
            let last = frame.payload().len() - 1;
            flip_payload_byte(frame, last);
        }
    });
    let mut session = StationSession::new(&mut link, quick_session());
    session.hello().expect("HELLO");
    session
        .key_exchange(credentials(&pki), &device)
        .expect("key exchange");
    let error = load_under_session(&mut session).unwrap_err();
    assert!(
        matches!(error, SessionError::LoadResultMacInvalid { .. }),
        "{error:?}"
    );
}

#[test]
fn station_from_another_factory_is_rejected() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let pki = station_pki();
    let other_factory = station_pki();
    let mut link = TamperingLink::new(
        Simulator::new(ecc_config(directory.path().join("terminal.json"))).unwrap(),
    );
    let mut session = StationSession::new(&mut link, quick_session());
    let device = certify(&mut session, &pki);
    let error = session
        .key_exchange(credentials(&other_factory), &device)
        .unwrap_err();
    let (code, text) = expect_device_error(Err::<(), _>(error));
    assert_eq!(code, ErrorCode::CertificateInvalid);
    assert!(text.contains("certificate chain is invalid"), "{text}");
}

#[test]
fn load_before_key_exchange_is_rejected() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let mut link = TamperingLink::new(
        Simulator::new(ecc_config(directory.path().join("terminal.json"))).unwrap(),
    );
    let mut session = StationSession::new(&mut link, quick_session());
    session.hello().expect("HELLO");
    let block = key_block(TRANSPORT_KEY, "B1", Some(INITIAL_KEY_ID));
    let (code, _) = expect_device_error(session.load_key(&block, 1, &initial_key_id()));
    assert_eq!(code, ErrorCode::NoSession);
}

#[test]
fn full_key_storage_is_reported() {
    let terminal = simulated_terminal(|config| config.faults.storage_full = true);
    let mut link = open_station(terminal.handle.device_path());
    let mut session = StationSession::new(&mut link, quick_session());
    let block = key_block(TRANSPORT_KEY, "B1", Some(INITIAL_KEY_ID));
    let error = session.load_key(&block, 1, &initial_key_id()).unwrap_err();
    assert!(error.to_string().contains("storage is full"), "{error}");
    let (code, _) = expect_device_error(Err::<(), _>(error));
    assert_eq!(code, ErrorCode::StorageFull);
}

#[test]
fn crc_error_is_answered_with_nak() {
    let terminal = simulated_terminal(|config| config.faults.corrupt_responses = 1);
    let mut link = open_station(terminal.handle.device_path());
    let mut session = StationSession::new(
        &mut link,
        SessionConfig {
            response_timeout: Duration::from_secs(2),
            attempts: 3,
        },
    );
    let started = Instant::now();
    session.hello().expect("HELLO after NAK");
    // The NAK brings the response again at once, long before a 2 s timeout would.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn noise_inside_frame_is_answered_with_nak() {
    let terminal = simulated_terminal(|config| config.faults.noise_inside_responses = 1);
    let mut link = open_station(terminal.handle.device_path());
    let mut session = StationSession::new(
        &mut link,
        SessionConfig {
            response_timeout: Duration::from_secs(2),
            attempts: 3,
        },
    );
    let started = Instant::now();
    session.hello().expect("HELLO after NAK");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn damaged_request_gets_nak_from_terminal() {
    let terminal = simulated_terminal(|_| {});
    let mut link = open_station(terminal.handle.device_path());
    let mut bytes = Frame::new(0x33, MessageType::HelloRequest.code(), vec![2])
        .unwrap()
        .encode();
    bytes[5] ^= 0x40;
    link.write_raw(&bytes).expect("write");
    let reply = link.receive(in_a_second()).expect("a NAK");
    assert_eq!(reply.message_type(), MessageType::Nak.code());
    assert_eq!(reply.sequence(), 0x33);
    assert_eq!(reply.payload(), [0x01]);
}

#[test]
fn line_that_damages_every_frame_fails() {
    let terminal = simulated_terminal(|config| config.faults.corrupt_responses = 100);
    let mut link = open_station(terminal.handle.device_path());
    let mut session = StationSession::new(&mut link, quick_session());
    let error = session.hello().unwrap_err();
    assert!(
        matches!(error, SessionError::DamagedFrames { attempts: 3, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("check the cable"), "{error}");
}

#[test]
fn lost_request_is_retried() {
    let terminal = simulated_terminal(|config| config.faults.ignore_requests = 1);
    let mut link = open_station(terminal.handle.device_path());
    let mut session = StationSession::new(&mut link, quick_session());
    let started = Instant::now();
    session.hello().expect("HELLO on the second attempt");
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[test]
fn split_responses_are_reassembled() {
    let terminal = simulated_terminal(|config| config.faults.split_responses = true);
    let mut link = open_station(terminal.handle.device_path());
    let mut session = StationSession::new(&mut link, quick_session());
    let hello = session.hello().expect("HELLO in pieces");
    assert_eq!(hello.serial_number, "SN-0001");
}

/// Linux discards a pseudo-terminal's unread input when the far side hangs up, so the station
/// may never see the half frame and then reports a plain disconnect.
#[test]
fn disconnect_mid_frame_is_reported() {
    let terminal = simulated_terminal(|config| config.faults.disconnect_mid_load_result = true);
    let mut link = open_station(terminal.handle.device_path());
    let mut session = StationSession::new(&mut link, quick_session());
    let block = key_block(TRANSPORT_KEY, "B1", Some(INITIAL_KEY_ID));
    let error = session.load_key(&block, 1, &initial_key_id()).unwrap_err();
    assert!(
        matches!(
            error,
            SessionError::Link(
                LinkError::DisconnectedMidFrame { .. } | LinkError::Disconnected { .. }
            )
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("disconnected"), "{error}");
}

#[test]
fn unplug_and_replug_on_same_port() {
    // A stable name for the port, as /dev/serial/by-id gives a USB serial terminal.
    let directory = tempfile::tempdir().expect("temporary directory");
    let port = directory.path().join("terminal-port");
    let first = simulated_terminal(|_| {});
    std::os::unix::fs::symlink(first.handle.device_path(), &port).expect("symlink");
    let port_name = port.to_str().expect("UTF-8 path").to_owned();

    let mut link = open_station(&port_name);
    StationSession::new(&mut link, quick_session())
        .hello()
        .expect("first terminal answers");
    first.handle.stop().expect("unplug");
    let error = StationSession::new(&mut link, quick_session())
        .hello()
        .unwrap_err();
    assert!(
        matches!(error, SessionError::Link(LinkError::Disconnected { .. })),
        "{error:?}"
    );
    assert!(error.to_string().contains("disconnected"), "{error}");
    drop(link);

    let second = simulated_terminal(|_| {});
    std::fs::remove_file(&port).expect("unplugged");
    std::os::unix::fs::symlink(second.handle.device_path(), &port).expect("replugged");
    let mut link = open_station(&port_name);
    let hello = StationSession::new(&mut link, quick_session())
        .hello()
        .expect("the next terminal on the port answers");
    assert_eq!(hello.serial_number, "SN-0001");
}

/// The one-step KDF agrees with OpenSSL's SSKDF (`openssl kdf ... SSKDF`), an independent
/// implementation of NIST SP 800-56C revision 2 section 4.1.
#[test]
fn kdf_matches_openssl_sskdf() {
    use station::protocol::handshake::{KeyPurpose, fixed_info, one_step_kdf_sha384};
    let shared_secret: Vec<u8> = (0..48).collect();
    let info = fixed_info(KeyPurpose::Kbpk, &[0xA1; 32], &[0xB2; 32], &[0xC3; 48]);
    let output = std::process::Command::new("openssl")
        .args([
            "kdf",
            "-keylen",
            "32",
            "-kdfopt",
            "digest:SHA384",
            "-kdfopt",
            &format!("hexkey:{}", hex::encode(&shared_secret)),
            "-kdfopt",
            &format!("hexinfo:{}", hex::encode(&info)),
            "SSKDF",
        ])
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = String::from_utf8(output.stdout)
        .expect("text")
        .trim()
        .replace(':', "");
    let derived = one_step_kdf_sha384(&shared_secret, &info);
    assert_eq!(hex::encode_upper(derived.as_slice()), expected);
}

// ---------------------------------------------------------------------------------------------
// The protocol version 2 worked example of docs/protocol.md.

/// Reads `key = value` lines of a data file, skipping comments and blank lines.
fn read_example_inputs() -> std::collections::BTreeMap<String, String> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/protocol_v2_example.txt");
    std::fs::read_to_string(&path)
        .expect("example inputs")
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (name, value) = line.split_once(" = ").expect("name = value");
            (name.to_owned(), value.trim().to_owned())
        })
        .collect()
}

/// The frames and intermediate values of one run of the worked example.
struct ExampleRun {
    /// Frames in the order they crossed the line, named as in the documentation.
    frames: Vec<(String, Vec<u8>)>,
    /// Named intermediate values (shared secret, transcript hash, derived keys, FixedInfo).
    values: Vec<(String, Vec<u8>)>,
    /// The session KBPK, to wrap a new key block when the inputs change.
    kbpk: SecretKey,
}

/// Runs the worked example with the fixed inputs; loads `key_block` if given.
fn run_worked_example(
    inputs: &std::collections::BTreeMap<String, String>,
    key_block: Option<&str>,
) -> ExampleRun {
    use station::pki::{P384PrivateKey, ParsedCertificate, TrustedRoots};
    use station::protocol::handshake::{
        EphemeralKeyPair, KeyPurpose, fixed_info, one_step_kdf_sha384,
    };

    let bytes = |name: &str| hex::decode(&inputs[name]).expect(name);
    let array = |name: &str| -> [u8; 32] { bytes(name).try_into().expect(name) };
    let directory = tempfile::tempdir().expect("temporary directory");
    let state_path = directory.path().join("terminal.json");

    let mut state = DeviceState::default();
    state.serial_number = Some("SN-0001".to_owned());
    state.certificate_key =
        Some(P384PrivateKey::from_scalar(&bytes("terminal_private_key")).expect("scalar"));
    state.certificate_chain = vec![bytes("terminal_certificate")];
    state.trusted_root = Some(bytes("factory_ca_certificate"));
    state.save(&state_path).expect("state file");
    let terminal_scalar: [u8; 48] = bytes("terminal_ephemeral_private_key")
        .try_into()
        .expect("48 bytes");
    let mut config = SimulatorConfig::with_ecc(identity(), state_path);
    config.ecc = Some(EccSettings {
        on_board_key_generation: true,
        fixed_handshake: Some((terminal_scalar, array("terminal_nonce"))),
    });

    let recorded = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let mut link = TamperingLink::new(Simulator::new(config).expect("simulator"));
    let requests = std::sync::Arc::clone(&recorded);
    link.on_request = Box::new(move |frame| requests.lock().unwrap().push(frame.encode()));
    let responses = std::sync::Arc::clone(&recorded);
    link.on_response = Box::new(move |frame| responses.lock().unwrap().push(frame.encode()));

    let station = StationCredentials {
        key: P384PrivateKey::from_scalar(&bytes("station_private_key")).expect("scalar"),
        certificate_chain: vec![
            bytes("station_certificate"),
            bytes("factory_ca_certificate"),
        ],
    };
    let mut roots = TrustedRoots::new();
    roots
        .add(ParsedCertificate::from_der(&bytes("factory_ca_certificate"), 1).expect("root"))
        .expect("root");
    let station_ephemeral =
        EphemeralKeyPair::from_scalar(&bytes("station_ephemeral_private_key")).expect("scalar");
    let first_sequence = u8::from_str_radix(&inputs["first_sequence"], 16).expect("hex byte");

    let mut session =
        StationSession::new(&mut link, quick_session()).with_first_sequence(first_sequence);
    let hello = session.hello().expect("HELLO");
    let validated = station::pki::validate_chain(
        &hello.certificate_chain,
        &roots,
        std::time::SystemTime::now(),
    )
    .expect("the terminal's chain validates");
    let device = DeviceCredentials {
        certificate_der: validated.device_certificate.der().to_vec(),
        certificate_fingerprint: validated.device_certificate.fingerprint(),
        public_key: validated.device_key,
    };
    let authenticated = session
        .key_exchange_with(
            &station,
            &device,
            &station_ephemeral,
            array("station_nonce"),
        )
        .expect("key exchange");
    let kbpk = session.session_kbpk().expect("KBPK").duplicate();
    if let Some(block) = key_block {
        let result = session
            .load_key(block, 0, &initial_key_id())
            .expect("LOAD_KEY");
        assert_eq!(result.kcv.to_hex(), "05EF45");
    }
    drop(session);

    let names = [
        "HELLO_REQUEST",
        "HELLO",
        "KEY_EXCHANGE",
        "KEY_EXCHANGE response",
        "KEY_CONFIRM",
        "KEY_CONFIRMED",
        "LOAD_KEY",
        "LOAD_RESULT",
    ];
    let frames = names
        .iter()
        .map(|name| (*name).to_owned())
        .zip(recorded.lock().unwrap().iter().cloned())
        .collect();

    let terminal_ephemeral = EphemeralKeyPair::from_scalar(&terminal_scalar).expect("scalar");
    let shared_secret = station_ephemeral
        .shared_secret(&terminal_ephemeral.public_key(), "terminal")
        .expect("valid point");
    let transcript_hash: [u8; 48] = hex::decode(&authenticated.transcript_hash)
        .expect("hex")
        .try_into()
        .expect("48 bytes");
    let mut values = vec![
        ("Z".to_owned(), shared_secret.to_vec()),
        ("transcript hash".to_owned(), transcript_hash.to_vec()),
    ];
    for (name, purpose) in [
        ("KBPK", KeyPurpose::Kbpk),
        ("KCK", KeyPurpose::KeyConfirmation),
        ("RMK", KeyPurpose::LoadResultMac),
    ] {
        let info = fixed_info(
            purpose,
            &array("station_nonce"),
            &array("terminal_nonce"),
            &transcript_hash,
        );
        values.push((format!("FixedInfo of {name}"), info.clone()));
        values.push((
            name.to_owned(),
            one_step_kdf_sha384(&shared_secret, &info).to_vec(),
        ));
    }
    ExampleRun {
        frames,
        values,
        kbpk,
    }
}

/// Extracts the hex under each `<!-- example: NAME -->` marker of `docs/protocol.md`.
fn documented_example() -> std::collections::BTreeMap<String, String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md");
    let text = std::fs::read_to_string(path).expect("docs/protocol.md");
    let mut found = std::collections::BTreeMap::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("<!-- example: ") {
        let after = &rest[start + "<!-- example: ".len()..];
        let (name, after) = after.split_once(" -->").expect("closed marker");
        let fence = after.find("```").expect("a code block follows the marker");
        let body = &after[fence + 3..];
        let body = &body[body.find('\n').expect("fence line") + 1..];
        let end = body.find("```").expect("closed code block");
        let hex: String = body[..end].split_whitespace().collect();
        found.insert(name.to_owned(), hex);
        rest = &body[end..];
    }
    found
}

#[test]
fn worked_example_matches_documentation() {
    let inputs = read_example_inputs();
    let run = run_worked_example(&inputs, Some(&inputs["load_key_block"]));
    let documented = documented_example();

    assert_eq!(run.frames.len(), 8, "frames recorded");
    for (name, bytes) in run.frames.iter().chain(run.values.iter()) {
        let actual = hex::encode_upper(bytes);
        assert_eq!(
            documented.get(name).map(String::as_str),
            Some(actual.as_str()),
            "docs/protocol.md example {name:?} differs from a run; the run gives\n{}",
            spaced_hex(bytes)
        );
    }
    assert!(
        run.kbpk.ct_eq(
            &SecretKey::from_slice(
                KeyAlgorithm::Aes256,
                &hex::decode(&documented["KBPK"]).unwrap()
            )
            .unwrap()
        )
    );
}

/// Formats bytes as the documentation shows them: two hex digits per byte, 32 bytes per line.
fn spaced_hex(bytes: &[u8]) -> String {
    bytes
        .chunks(32)
        .map(|line| {
            line.iter()
                .map(|byte| format!("{byte:02X}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The ECDH shared secret agrees with OpenSSL's (`openssl pkeyutl -derive`), an independent
/// implementation, for the worked example's ephemeral keys.
#[test]
fn ecdh_matches_openssl_derive() {
    use p384::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    use station::protocol::handshake::EphemeralKeyPair;

    let inputs = read_example_inputs();
    let station_scalar = hex::decode(&inputs["station_ephemeral_private_key"]).unwrap();
    let terminal_scalar = hex::decode(&inputs["terminal_ephemeral_private_key"]).unwrap();
    let directory = tempfile::tempdir().unwrap();
    let private_path = directory.path().join("station.pem");
    let public_path = directory.path().join("terminal.pem");
    let station_secret = p384::SecretKey::from_slice(&station_scalar).unwrap();
    std::fs::write(
        &private_path,
        station_secret
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    let terminal_public = p384::SecretKey::from_slice(&terminal_scalar)
        .unwrap()
        .public_key();
    std::fs::write(
        &public_path,
        terminal_public.to_public_key_pem(LineEnding::LF).unwrap(),
    )
    .unwrap();

    let output = std::process::Command::new("openssl")
        .args(["pkeyutl", "-derive", "-inkey"])
        .arg(&private_path)
        .arg("-peerkey")
        .arg(&public_path)
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let station = EphemeralKeyPair::from_scalar(&station_scalar).unwrap();
    let terminal = EphemeralKeyPair::from_scalar(&terminal_scalar).unwrap();
    let shared = station
        .shared_secret(&terminal.public_key(), "terminal")
        .unwrap();
    assert_eq!(shared.as_slice(), output.stdout.as_slice());
}

#[test]
fn hang_up_inside_frame_is_typed() {
    let Pty {
        mut device,
        _slave,
        path,
    } = pty();
    let mut station = open_station(&path);
    let bytes = frame(9, b"half of this frame arrives");
    device.write_all(&bytes[..12]).expect("write");
    device.flush().expect("flush");
    // The station reads the first half; its deadline passes before the inter-byte timeout.
    let waiting = station.receive(Instant::now() + Duration::from_millis(100));
    assert!(
        matches!(waiting, Err(LinkError::Timeout { .. })),
        "{waiting:?}"
    );
    drop(device);

    let error = station.receive(in_a_second()).unwrap_err();

    assert!(
        matches!(error, LinkError::DisconnectedMidFrame { buffered: 12, .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "terminal on {path} disconnected in the middle of a frame (12 bytes of it received); \
             check the cable and power, then reconnect the terminal and start again"
        )
    );
}

#[test]
fn replayed_key_confirm_is_rejected_by_terminal() {
    // Record the station's KEY_CONFIRM of one session, then play it back in the next.
    let recorded = std::sync::Arc::new(std::sync::Mutex::new(None::<Vec<u8>>));
    let directory = tempfile::tempdir().expect("temporary directory");
    let pki = station_pki();
    let mut link = TamperingLink::new(
        Simulator::new(ecc_config(directory.path().join("terminal.json"))).unwrap(),
    );
    let device = {
        let mut session = StationSession::new(&mut link, quick_session());
        certify(&mut session, &pki)
    };
    let recorder = std::sync::Arc::clone(&recorded);
    link.on_request = Box::new(move |frame| {
        if frame.message_type() == MessageType::KeyConfirm.code() {
            *recorder.lock().unwrap() = Some(frame.payload().to_vec());
        }
    });
    {
        let mut session = StationSession::new(&mut link, quick_session());
        session.hello().expect("HELLO");
        session
            .key_exchange(credentials(&pki), &device)
            .expect("first session");
    }

    let replay = recorded.lock().unwrap().clone().expect("recorded");
    link.on_request = Box::new(move |frame| {
        if frame.message_type() == MessageType::KeyConfirm.code() {
            *frame = Frame::new(frame.sequence(), frame.message_type(), replay.clone()).unwrap();
        }
    });
    let mut session = StationSession::new(&mut link, quick_session());
    session.hello().expect("HELLO");
    let (code, _) = expect_device_error(session.key_exchange(credentials(&pki), &device));
    assert_eq!(code, ErrorCode::SignatureInvalid);
}

#[test]
fn load_result_without_mac_is_rejected() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let pki = station_pki();
    let mut link = TamperingLink::new(
        Simulator::new(ecc_config(directory.path().join("terminal.json"))).unwrap(),
    );
    let device = {
        let mut session = StationSession::new(&mut link, quick_session());
        certify(&mut session, &pki)
    };
    link.on_response = Box::new(|frame| {
        if frame.message_type() == MessageType::LoadResult.code() {
            let without_mac = frame.payload()[..frame.payload().len() - 17].to_vec();
            *frame = Frame::new(frame.sequence(), frame.message_type(), without_mac).unwrap();
        }
    });
    let mut session = StationSession::new(&mut link, quick_session());
    session.hello().expect("HELLO");
    session
        .key_exchange(credentials(&pki), &device)
        .expect("key exchange");
    let error = load_under_session(&mut session).unwrap_err();
    assert!(
        matches!(error, SessionError::LoadResultMacMissing { .. }),
        "{error:?}"
    );
}

#[test]
fn key_exchange_over_slow_line() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let mut config = ecc_config(directory.path().join("terminal.json"));
    config.pace_baud = Some(19_200);
    let handle = spawn_pty_simulator(config).expect("simulator starts");
    let pki = station_pki();
    let mut link = open_station(handle.device_path());
    let mut session = StationSession::new(
        &mut link,
        SessionConfig {
            response_timeout: Duration::from_secs(3),
            attempts: 1,
        },
    );

    let started = Instant::now();
    let device = certify(&mut session, &pki);
    session
        .key_exchange(credentials(&pki), &device)
        .expect("key exchange at 19200 baud");
    load_under_session(&mut session).expect("authenticated load");

    // The terminal sent at least HELLO, CSR, the KEY_EXCHANGE response and LOAD_RESULT: more
    // than 800 bytes, each 10 bit times of 1/19200 s.
    assert!(
        started.elapsed() >= Duration::from_millis(800 * 10 * 1000 / 19_200),
        "{:?}",
        started.elapsed()
    );
    drop(session);
    drop(link);
    handle.stop().expect("simulator stops");
}

#[test]
fn key_exchange_over_tcp() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let address = listener.local_addr().expect("local address").to_string();
    let directory = tempfile::tempdir().expect("temporary directory");
    let mut simulator =
        Simulator::new(ecc_config(directory.path().join("terminal.json"))).expect("simulator");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let thread_stop = std::sync::Arc::clone(&stop);
    let server = thread::spawn(move || {
        let (socket, _) = listener.accept().expect("accept");
        let stream = TcpByteStream::from_socket(socket).expect("socket");
        let mut link = FramedLink::new(stream, LinkTimeouts::default());
        simulator.serve(&mut link, &thread_stop)
    });
    let pki = station_pki();

    let mut link = TcpLink::connect(&address, Duration::from_secs(1), LinkTimeouts::default())
        .expect("connect over loopback");
    let mut session = StationSession::new(&mut link, quick_session());
    let device = certify(&mut session, &pki);
    session
        .key_exchange(credentials(&pki), &device)
        .expect("key exchange over TCP");
    let kcv = load_under_session(&mut session).expect("authenticated load");
    drop(session);
    drop(link);

    assert_eq!(kcv.to_hex(), "05EF45");
    server
        .join()
        .expect("server thread")
        .expect("simulator ends cleanly");
}
