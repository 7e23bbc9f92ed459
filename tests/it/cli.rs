//! The `sitewatch validate` command on the example config and on a corpus of
//! broken configs (`tests/configs/bad/`), each of which states in
//! `# expect:` lines what its error must say.

use std::path::Path;
use std::process::Command;

fn validate(path: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sitewatch"))
        .args(["validate", "--config"])
        .arg(path)
        .env_remove("SITEWATCH_CONFIG")
        .output()
        .expect("run sitewatch")
}

#[test]
fn example_config_validates_with_summary() {
    let out = validate(Path::new("config/sitewatch.example.toml"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("6 sites"), "summary: {stdout}");
}

#[test]
fn every_broken_config_is_rejected_naming_file_site_and_field() {
    let mut checked = 0;
    for entry in std::fs::read_dir("tests/configs/bad").unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expects.is_empty(),
            "{} has no `# expect:` line",
            path.display()
        );

        let out = validate(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{}: {stderr}", path.display());
        assert!(
            stderr.contains(&path.display().to_string()),
            "{}: error does not name the file: {stderr}",
            path.display()
        );
        for e in expects {
            assert!(
                stderr.contains(e),
                "{}: expected {e:?} in:\n{stderr}",
                path.display()
            );
        }
        // What one problem must not make the rest of the file say.
        for r in text.lines().filter_map(|l| l.strip_prefix("# refute: ")) {
            assert!(
                !stderr.contains(r),
                "{}: did not expect {r:?} in:\n{stderr}",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 15, "corpus shrank to {checked} files");
}

/// `sitewatch validate … | head`: a reader that left early ends the
/// command quietly (status 141, as for `cat`), never with a panic.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::os::fd::FromRawFd;
    let mut fds = [0i32; 2];
    // SAFETY: `pipe` fills both descriptors; the read end is closed at
    // once, so the first write to the other end fails with EPIPE.
    let stdout = unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        libc::close(fds[0]);
        std::process::Stdio::from_raw_fd(fds[1])
    };
    let out = Command::new(env!("CARGO_BIN_EXE_sitewatch"))
        .args(["validate", "--config", "config/sitewatch.example.toml"])
        .env_remove("SITEWATCH_CONFIG")
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run sitewatch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}

#[test]
fn secrets_never_reach_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[postgres]\npassword = \"s3cr3t-pg\"\npool_size = 0\n[[sites]]\nname = \"x\"\nurl = \"https://example.com/\"\nheaders = { Authorization = \"Bearer s3cr3t-token\" }\nregex = \"(\"\n",
    )
    .unwrap();
    let out = validate(&path);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(all.contains("pool_size"), "{all}");
    assert!(!all.contains("s3cr3t"), "secret leaked: {all}");
}

/// `sitewatch check` against the local target: up, down, regex miss.
#[tokio::test]
async fn check_command_reports_up_down_and_regex_miss() {
    let target = crate::target::Target::start().await;
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_sitewatch"))
                .arg("check")
                .args(args)
                .output()
                .expect("run sitewatch check")
        })
    };
    let up = run(vec![target.url("/ok"), "--regex".into(), "hello".into()])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&up.stdout);
    assert!(up.status.success(), "{text}");
    assert!(
        text.contains("outcome:      up") && text.contains("status:       200 over HTTP/1.1"),
        "{text}"
    );
    assert!(text.contains("regex:        matched"), "{text}");
    // The breakdown: no DNS for an IP literal, no TLS over plain HTTP.
    assert!(
        text.contains("timing:       dns - | connect ") && text.contains("| tls - | ttfb "),
        "{text}"
    );

    let down = run(vec![target.url("/500")]).await.unwrap();
    let text = String::from_utf8_lossy(&down.stdout);
    assert_eq!(down.status.code(), Some(1), "{text}");
    assert!(
        text.contains("outcome:      down (unexpected_status)")
            && text.contains("status:       500"),
        "{text}"
    );
    assert!(text.contains("unexpected_status"), "{text}");

    let miss = run(vec![target.url("/ok"), "--regex".into(), "absent".into()])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&miss.stdout);
    assert_eq!(miss.status.code(), Some(1), "{text}");
    assert!(
        text.contains("regex:        not matched") && text.contains("regex_mismatch"),
        "{text}"
    );

    let port = crate::target::closed_port().await;
    let refused = run(vec![format!("http://127.0.0.1:{port}/")])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&refused.stdout);
    assert_eq!(refused.status.code(), Some(1), "{text}");
    assert!(text.contains("error:        connect"), "{text}");
}

/// `check --site` without `--config` reads the default config file, as the
/// other commands do, and names it when it cannot.
#[test]
fn check_site_falls_back_to_the_default_config_file() {
    if Path::new("/etc/sitewatch/sitewatch.toml").exists() {
        eprintln!("skipped: this machine has /etc/sitewatch/sitewatch.toml");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_sitewatch"))
        .args(["check", "--site", "example-home"])
        .env_remove("SITEWATCH_CONFIG")
        .output()
        .expect("run sitewatch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("/etc/sitewatch/sitewatch.toml"), "{stderr}");
}
