//! Logs as a log shipper sees them: plain text when stderr is not a terminal (no ANSI colour
//! codes in journald, files or `docker logs`), JSON lines with `HASHSHIFT_LOG_FORMAT=json`.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_hashshift");

/// Runs the proxy (pool unreachable: it logs connection failures) with stderr piped, until it
/// says it is up plus a little, and returns what it logged.
async fn logs(format: Option<&str>) -> String {
    let dir = std::env::temp_dir().join(format!(
        "hashshift-logs-{}-{}",
        std::process::id(),
        format.unwrap_or("text")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // A closed port on loopback: the pool connection fails and is logged.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pool = closed.local_addr().unwrap();
    drop(closed);
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        format!(
            "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n[[upstream]]\nurl = \"stratum+tcp://{pool}\"\nuser = \"u\"\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .arg("--config")
        .arg(&file)
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match format {
        Some(f) => cmd.env("HASHSHIFT_LOG_FORMAT", f),
        None => cmd.env_remove("HASHSHIFT_LOG_FORMAT"),
    };
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut out = String::new();
    let mut up = false;
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            out.push_str(&line);
            out.push('\n');
            if line.contains("hashshift is up") {
                up = true;
            }
            // Up, and the failed pool connection logged too.
            if up && (line.contains("WARN") || line.contains("\"WARN\"")) {
                break;
            }
        }
    })
    .await;
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(up, "the proxy never said it was up:\n{out}");
    out
}

#[tokio::test]
async fn logs_are_plain_text_when_stderr_is_not_a_terminal() {
    let out = logs(None).await;
    assert!(
        !out.contains('\u{1b}'),
        "ANSI escape codes in piped logs:\n{out}"
    );
    assert!(out.contains(" INFO "), "{out}");
}

#[tokio::test]
async fn json_log_format_gives_one_object_per_line() {
    let out = logs(Some("json")).await;
    let mut n = 0;
    for line in out.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        n += 1;
    }
    assert!(n >= 2, "{out}");
    assert!(out.contains("\"hashshift is up\""), "{out}");
}

#[test]
fn an_unknown_log_format_is_refused() {
    let out = std::process::Command::new(BIN)
        .args(["check-config", "/nonexistent"])
        .env("HASHSHIFT_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HASHSHIFT_LOG_FORMAT"), "{err}");
}
