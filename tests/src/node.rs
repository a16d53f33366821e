//! Running the supabase-js client tests in `tests/js` with node's own test runner.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// node's tests do at most a few hundred requests; this only guards against a hang.
const NODE_TIMEOUT: Duration = Duration::from_secs(120);

pub fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Runs `node --test <file>` in `tests/js` with `env`, printing its output, and fails unless
/// exactly `expected_passes` tests passed and none failed, was cancelled, skipped or todo
/// (a run that skipped its tests would also exit 0).
pub async fn run_node_tests(file: &str, env: &[(&str, String)], expected_passes: u32) {
    let dir = js_dir();
    assert!(
        ["@supabase/supabase-js", "ws", "pg"]
            .iter()
            .all(|p| dir.join("node_modules").join(p).is_dir()),
        "the npm packages of tests/js are not installed: run `npm ci --prefix tests/js` \
         (tests/run does it for you)"
    );
    let mut cmd = tokio::process::Command::new("node");
    cmd.current_dir(&dir)
        .args(["--test", "--test-reporter=spec", file])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => panic!("could not run node (node 20 or newer is needed): {e}"),
    };
    let output = tokio::time::timeout(NODE_TIMEOUT, child.wait_with_output())
        .await
        .expect("node's tests did not finish in time")
        .expect("node's output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "node --test {file} failed ({}): see its output above",
        output.status
    );
    assert_eq!(summary(&stdout, "pass"), expected_passes, "tests passed");
    for none in ["fail", "cancelled", "skipped", "todo"] {
        assert_eq!(summary(&stdout, none), 0, "node reported {none} tests");
    }
}

/// A count from the spec reporter's closing lines (`ℹ pass 9`).
fn summary(out: &str, what: &str) -> u32 {
    out.lines()
        .filter_map(|l| l.trim_start_matches(['ℹ', '#', ' ']).strip_prefix(what))
        .filter_map(|rest| rest.trim().parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("node printed no `{what}` count"))
}
