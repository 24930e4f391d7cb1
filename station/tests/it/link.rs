//! Integration tests of the terminal link, protocol and simulator over real pseudo-terminals.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use serialport::{SerialPort, TTYPort};
use station::link::{
    Frame, FramedLink, Link, LinkError, LinkTimeouts, START_BYTE, SerialLink, SerialStream,
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

#[test]
fn frame_round_trips_both_directions() {
    let mut pty = pty();
    let mut station = open_station(&pty.path);

    let sent = Frame::new(9, 0x01, vec![1]).expect("small payload");
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
        .write_all(&frame(9, b"reply"))
        .expect("device writes");
    let reply = station.receive(in_a_second()).expect("station receives");
    assert_eq!(reply.sequence(), 9);
    assert_eq!(reply.payload(), b"reply");
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
