//! The dev stack's scripts: `scripts/kafka-up` and `scripts/pg-up` refuse
//! to report success when another process holds their port, and say which.

use std::process::Command;

/// Runs `script` with the stack moved to `port` and its data in a fresh
/// directory, while a listener of the test's holds that port.
fn up_on_a_held_port(script: &str, port_var: &str) -> (bool, String) {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(format!("{}/scripts/{script}", env!("CARGO_MANIFEST_DIR")))
        .env(port_var, port.to_string())
        .env("SITEWATCH_DATA_DIR", data.path())
        .output()
        .expect("run the script");
    drop(held);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn kafka_up_fails_when_another_process_holds_its_port() {
    let (ok, stderr) = up_on_a_held_port("kafka-up", "SITEWATCH_KAFKA_PORT");
    assert!(!ok, "kafka-up reported success: {stderr}");
    assert!(stderr.contains("held by another process"), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", std::process::id())),
        "{stderr}"
    );
}

#[test]
fn pg_up_fails_when_another_process_holds_its_port() {
    let (ok, stderr) = up_on_a_held_port("pg-up", "SITEWATCH_PG_PORT");
    assert!(!ok, "pg-up reported success: {stderr}");
    assert!(stderr.contains("held by another process"), "{stderr}");
}
