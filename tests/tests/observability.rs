//! What an administrator watches: `fsserver status` on the control socket, the Prometheus
//! endpoints of both sides scraped during a copy, `fsmount status --json`.

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use e2e_tests::{
    bin_dir, http_get as get, poll_until, random_file, require_mount_support,
    sample_value as value, Mount, Server,
};

/// `fsmount status --json MOUNTPOINT`, parsed.
fn status_json(mount: &Mount) -> serde_json::Value {
    let status = || {
        Command::new(bin_dir().join("fsmount"))
            .args(["status", "--json"])
            .arg(&mount.path)
            .output()
            .unwrap()
    };
    // The mount shows in /proc/mounts a moment before its control socket exists.
    let out = e2e_tests::poll_until(std::time::Duration::from_secs(5), || {
        Some(status()).filter(|o| o.status.success())
    })
    .unwrap_or_else(status);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fsserver(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin_dir().join("fsserver"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn status_and_metrics_of_both_sides_during_a_copy() {
    require_mount_support();
    let server = Server::start(&["--metrics", "127.0.0.1:0"]);
    let server_metrics = server.printed("fsserver: metrics on http://");
    let server_metrics = server_metrics.trim_end_matches("/metrics").to_string();
    let mount = Mount::new(&server, "data", &["metrics=127.0.0.1:0"]);
    let client_metrics = status_json(&mount)["metrics"]
        .as_str()
        .expect("fsmount status shows the metrics address")
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();

    // A 64 MiB copy into the mount, scraped while it runs.
    let src = server.dir.path().join("src.bin");
    random_file(&src, 64 << 20);
    let dst = mount.path.join("copy.bin");
    let copy = std::thread::spawn(move || {
        let out = Command::new("cp").arg(&src).arg(&dst).output().unwrap();
        assert!(out.status.success(), "{out:?}");
    });
    let during = poll_until(Duration::from_secs(30), || {
        let (_, m) = get(&client_metrics, "/metrics");
        value(&m, "fsxp_client_requests_total{command=\"Write\"}").map(|_| m)
    })
    .expect("Write requests show in fsmount's metrics during the copy");
    assert!(during.contains("# TYPE fsxp_client_request_duration_seconds histogram"));
    copy.join().unwrap();
    assert!(e2e_tests::fsmount_sync(&mount.path).status.success());

    // The server's view.
    let (status, m) = get(&server_metrics, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let writes = value(&m, "fsxp_server_requests_total{command=\"Write\"}").unwrap();
    assert!(writes >= 64.0, "{m}");
    let received = value(&m, "fsxp_server_received_bytes_total").unwrap();
    assert!(received >= (64 << 20) as f64, "{m}");
    let count = value(
        &m,
        "fsxp_server_request_duration_seconds_count{command=\"Write\"}",
    );
    assert_eq!(count, Some(writes));
    assert_eq!(value(&m, "fsxp_server_connections"), Some(1.0), "{m}");
    assert_eq!(get(&server_metrics, "/other").0, "HTTP/1.1 404 Not Found");

    // The client's view, after the copy: nothing dirty, every write counted.
    let (_, m) = get(&client_metrics, "/metrics");
    assert_eq!(value(&m, "fsxp_client_dirty_bytes"), Some(0.0), "{m}");
    assert_eq!(value(&m, "fsxp_client_connected"), Some(1.0));
    assert!(value(&m, "fsxp_client_sent_bytes_total").unwrap() >= (64 << 20) as f64);
    assert!(m.contains("fsxp_client_cache_hits_total"), "{m}");
    assert!(m.contains("fsxp_client_reconnects_total 0"), "{m}");

    // `fsserver status`, found from the token file as the server was started.
    let token = server.token_file.to_str().unwrap();
    let (ok, out, err) = fsserver(&["status", "--token-file", token]);
    assert!(ok, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("a row for the mount: {out}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!((cols[1], cols[2]), ("data", "default"), "{out}");
    let requests: u64 = cols[4].parse().unwrap();
    let bytes_in: u64 = cols[5].parse().unwrap();
    assert!(requests >= 64 && bytes_in >= 64 << 20, "{out}");
    // The copy's file is closed: no open files held.
    assert_eq!(cols[7], "0", "{out}");
    // The same as JSON.
    let (ok, out, err) = fsserver(&["status", "--json", "--token-file", token]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["exports"], serde_json::json!(["data"]), "{status}");
    let conn = &status["connections"][0];
    assert_eq!(
        (&conn["export"], &conn["token"]),
        (&serde_json::json!("data"), &serde_json::json!("default"))
    );
    assert!(conn["bytes_in"].as_u64().unwrap() >= 64 << 20, "{status}");
    assert_eq!(conn["open_files"], 0, "{status}");

    let json = status_json(&mount);
    assert_eq!(json["connected"], true, "{json}");
    assert_eq!(json["writeback"]["dirty_bytes"], 0, "{json}");
    assert!(json["bytes_sent"].as_u64().unwrap() >= 64 << 20, "{json}");
}

#[test]
fn a_hostile_scraper_cannot_stop_the_metrics_endpoint() {
    let server = Server::start(&["--metrics", "127.0.0.1:0"]);
    let addr = server.printed("fsserver: metrics on http://");
    let addr = addr.trim_end_matches("/metrics").to_string();
    // Endless headers, and connections that send nothing, fill no memory and block no one.
    let mut junk = TcpStream::connect(&addr).unwrap();
    let _ = junk.write_all(&vec![b'x'; 1 << 20]);
    let idle: Vec<TcpStream> = (0..32)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let (status, body) = poll_until(Duration::from_secs(10), || {
        let r = get(&addr, "/metrics");
        (r.0 == "HTTP/1.1 200 OK").then_some(r)
    })
    .expect("the endpoint answers while 32 idle connections wait to time out");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("fsxp_server_connections 0"), "{body}");
    drop(idle);
    assert!(
        server.log().is_empty() || !server.log().contains("panicked"),
        "{}",
        server.log()
    );
}

#[test]
fn status_without_a_running_server_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    let (ok, _, err) = fsserver(&["status", "--token-file", token.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("no fsserver answers on"), "{err}");
}
