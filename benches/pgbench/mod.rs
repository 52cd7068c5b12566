//! What the benches that compare with pgbench share: workers timed through
//! the crate, latency summaries, and pgbench runs of a script.

use std::process::Command;
use std::time::{Duration, Instant};

use loyalty_store::testing::{TestDb, pg_tool};

/// Throughput and latency of one run.
pub struct Measured {
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// Milliseconds with two decimals, for the tables.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Runs `workers` tasks for `run`, each calling `one(n)` back to back, with
/// `n` stepping through `0..spread` in a scattered order that differs per
/// worker, and summarizes every call's latency.
pub async fn measure<F, Fut>(workers: usize, run: Duration, spread: usize, one: F) -> Measured
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let one = one.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let end = Instant::now() + run;
            let mut n = worker;
            while Instant::now() < end {
                n = (n * 7919 + 13) % spread;
                let started = Instant::now();
                one(n).await;
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    summarize(all, run)
}

fn summarize(mut latencies: Vec<Duration>, run: Duration) -> Measured {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Measured {
        per_second: latencies.len() as f64 / run.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
    }
}

/// Runs `script` with pgbench for `run` on `clients` connections, each
/// `defines` entry passed as `-D name=value`, and reads every
/// transaction's latency from pgbench's per-transaction log.
pub fn pgbench(
    db: &TestDb,
    script: &str,
    clients: usize,
    run: Duration,
    defines: &[(&str, String)],
) -> Measured {
    let logs = tempfile::tempdir().unwrap();
    let prefix = logs.path().join("tx");
    let mut command = Command::new(pg_tool("pgbench"));
    command
        .args(["-n", "-M", "simple", "-c", &clients.to_string()])
        .args(["-j", &clients.min(2).to_string()])
        .args([
            "-T",
            &run.as_secs().to_string(),
            "-f",
            script,
            "-l",
            "--log-prefix",
        ])
        .arg(&prefix);
    for (name, value) in defines {
        command.args(["-D", &format!("{name}={value}")]);
    }
    let out = command.arg(db.url()).output().expect("running pgbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Per-transaction log lines: client, transaction, latency in µs, ...
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(logs.path()).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        latencies.extend(text.lines().filter_map(|line| {
            line.split_whitespace()
                .nth(2)?
                .parse::<u64>()
                .ok()
                .map(Duration::from_micros)
        }));
    }
    summarize(latencies, run)
}
