//! Starting reprow for the ported sqsd suites: with a config file (Elastic Beanstalk's sqsd
//! mode, `sqsd: true`) or from taiyoh/sqsd's variables in a `.env` file (`reprow -e`).

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::{sqs::*, Reprow, Worker};

/// reprow with `queue:` keys `queue_extra` (the URL, endpoint, region and a 1 s long poll are
/// given) and `runner:` keys `runner_extra`.
pub fn start_config(
    dir: &Path,
    url: &str,
    worker: &Worker,
    queue_extra: &str,
    runner_extra: &str,
) -> Reprow {
    let text = format!(
        "queue:\n  type: sqs\n  url: {url}\n  endpoint_url: {ep}\n  region: us-east-1\n  wait_time: 1\n{queue_extra}runner:\n  type: http_proxy\n  url: {w}\n{runner_extra}shutdown_timeout: 2s\n",
        ep = endpoint(),
        w = worker.url(),
    );
    let cfg = dir.join("reprow.yaml");
    std::fs::write(&cfg, text).unwrap();
    spawn(dir, &["-c", cfg.to_str().unwrap()], &[], &[])
}

/// reprow in taiyoh/sqsd's environment mode: `env_text` written to `.env`, read with `-e`;
/// `remove` are variables taken out of the environment first.
pub fn start_env(dir: &Path, env_text: &str, remove: &[&str]) -> Reprow {
    let env_file = dir.join(".env");
    std::fs::write(&env_file, env_text).unwrap();
    spawn(dir, &["-e", env_file.to_str().unwrap()], remove, &[])
}

/// reprow with `args`, moto's credentials, and `extra` variables, its stderr in `dir`.
pub fn spawn(dir: &Path, args: &[&str], remove: &[&str], extra: &[(&str, &str)]) -> Reprow {
    let log = dir.join("reprow.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reprow"));
    cmd.envs(CREDENTIALS)
        .env_remove("INVOKER_URL")
        .env_remove("QUEUE_URL");
    for r in remove {
        cmd.env_remove(r);
    }
    let child = cmd
        .envs(extra.iter().copied())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Reprow::adopt(child, log)
}

/// Waits up to `within` for reprow to exit; its exit status, or `None` if still running.
pub fn exited_within(r: &mut Reprow, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = r.child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `url`'s depth is `want` or `within` passed; whether it got there.
pub fn depth_within(sqs: &Sqs, url: &str, want: (u64, u64), within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if sqs.depth(url) == want {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The requests `worker` received once `pred` holds on them, or after `within`.
pub fn received_until(
    worker: &Worker,
    within: Duration,
    pred: impl Fn(&[crate::common::Received]) -> bool,
) -> Vec<crate::common::Received> {
    let deadline = Instant::now() + within;
    loop {
        let got = worker.received();
        if pred(&got) || Instant::now() >= deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The deliveries of the message whose body contains `tag`.
pub fn of<'a>(got: &'a [crate::common::Received], tag: &str) -> Vec<&'a crate::common::Received> {
    got.iter().filter(|r| r.body_str().contains(tag)).collect()
}
