//! The FIFO's path changed under a running reprow: unlinked, renamed, replaced by another FIFO,
//! by a regular file, its directory removed. Writers find reprow by that name, so reprow must
//! make (or open) the FIFO there again, go on reading the old one for writers that still hold
//! it, and say when it cannot (an error line, `/readyz` 503) without touching what is there.

mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use common::*;

/// Waits until `path` is a FIFO again (reprow made or opened it); panics after [`DEADLINE`].
fn wait_for_fifo(path: &Path, reprow: &Reprow) {
    use std::os::unix::fs::FileTypeExt;
    let deadline = Instant::now() + DEADLINE;
    while !std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo()) {
        assert!(
            Instant::now() < deadline,
            "{} was not made a FIFO again; log:\n{}",
            path.display(),
            reprow.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `/readyz` until its status is `status`; returns the last answer.
fn wait_ready(api: &Api, status: u16, reprow: &Reprow) -> HttpReply {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let r = api.get("/readyz");
        if r.status == status {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {} ({}); log:\n{}",
            r.status,
            r.text(),
            reprow.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn bodies(worker: &Worker) -> Vec<String> {
    worker.received().iter().map(Received::body_str).collect()
}

#[test]
fn an_unlinked_fifo_is_made_again_and_writers_are_served() {
    use std::io::Write as _;
    let worker = Worker::start(|_, _| Reply::ok());
    let scene = Scene::new();
    let reprow = Reprow::start(&scene.config(&worker.url(), "", "", ""));
    // A writer that opened the FIFO before it was unlinked, and keeps it open.
    let mut early = open_writer(&scene.fifo());
    early.write_all(b"before\n").unwrap();
    worker.wait_for(1);
    std::fs::remove_file(scene.fifo()).unwrap();
    wait_for_fifo(&scene.fifo(), &reprow);
    write_lines(&scene.fifo(), &["after"]);
    early.write_all(b"early writer, after\n").unwrap();
    drop(early);
    worker.wait_for(3);
    let got = bodies(&worker);
    for line in ["before", "after", "early writer, after"] {
        assert!(
            got.iter().any(|b| b == line),
            "{line} not delivered: {got:?}"
        );
    }
    let log_path = reprow.stderr_path().to_path_buf();
    let (status, stats) = reprow.stop();
    assert!(status.success());
    // Read once reprow has exited: the log thread has flushed every line then.
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(
        log.contains("The FIFO's path led elsewhere"),
        "the change is logged:\n{log}"
    );
    assert_eq!(stats["succeeded"], 3);
    assert_eq!(stats["held"], 0);
}

#[test]
fn a_fifo_made_again_in_its_place_is_read() {
    use std::io::Write as _;
    let worker = Worker::start(|_, _| Reply::ok());
    let scene = Scene::new();
    let reprow = Reprow::start(&scene.config(&worker.url(), "", "", ""));
    let mut early = open_writer(&scene.fifo());
    early.write_all(b"one\n").unwrap();
    worker.wait_for(1);
    // `mkfifo` then `mv` over the name: the name never goes missing, so only noticing that it
    // leads to another inode finds the new FIFO. A writer's non-blocking open fails with ENXIO
    // until reprow has opened it.
    let fresh = scene.path("queue.new");
    nix::unistd::mkfifo(&fresh, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::rename(&fresh, scene.fifo()).unwrap();
    write_lines(&scene.fifo(), &["two"]);
    // The old pipe is still read: its writer's lines arrive, and a line it leaves unterminated
    // when it closes is recorded as failed, not dropped.
    early.write_all(b"three\nunterminated").unwrap();
    drop(early);
    worker.wait_for(3);
    let got = bodies(&worker);
    for line in ["one", "two", "three"] {
        assert!(
            got.iter().any(|b| b == line),
            "{line} not delivered: {got:?}"
        );
    }
    let deadline = Instant::now() + DEADLINE;
    while scene.records("failed.jsonl").is_empty() {
        assert!(Instant::now() < deadline, "log:\n{}", reprow.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let failed = scene.records("failed.jsonl");
    assert_eq!(failed[0]["payload"], "unterminated", "{failed:?}");
    // The FIFO someone else made is theirs: its mode is left alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(scene.fifo())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (status, _) = reprow.stop();
    assert!(status.success());
}

#[test]
fn a_regular_file_in_its_place_fails_readyz_and_is_left_alone() {
    let worker = Worker::start(|_, _| Reply::ok());
    let scene = Scene::new();
    let reprow =
        Reprow::start(&scene.config(&worker.url(), "", "", "monitor_listen: 127.0.0.1:0\n"));
    let api = Api::new(reprow.monitor_addr());
    write_lines(&scene.fifo(), &["first"]);
    worker.wait_for(1);
    wait_ready(&api, 200, &reprow);
    // What `echo job > queue` leaves when the FIFO is gone: a regular file holding the line.
    let file = scene.path("queue.tmp");
    std::fs::write(&file, "job\n").unwrap();
    std::fs::rename(&file, scene.fifo()).unwrap();
    let r = wait_ready(&api, 503, &reprow);
    assert!(r.text().contains("regular file"), "{}", r.text());
    assert_eq!(api.get("/healthz").status, 200, "alive all the same");
    // An error line says so (written by the log thread, so perhaps a moment later).
    let deadline = Instant::now() + DEADLINE;
    while !reprow.log().contains("not ready") {
        assert!(
            Instant::now() < deadline,
            "no error line:\n{}",
            reprow.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        std::fs::read_to_string(scene.fifo()).unwrap(),
        "job\n",
        "the file is neither read nor removed"
    );
    // Once it is moved away, the FIFO is made again and reprow is ready.
    std::fs::rename(scene.fifo(), scene.path("saved-by-the-operator")).unwrap();
    wait_for_fifo(&scene.fifo(), &reprow);
    wait_ready(&api, 200, &reprow);
    write_lines(&scene.fifo(), &["second"]);
    worker.wait_for(2);
    assert_eq!(bodies(&worker), ["first", "second"]);
    let (status, _) = reprow.stop();
    assert!(status.success());
}

#[test]
fn a_removed_directory_fails_readyz_until_it_is_back() {
    let worker = Worker::start(|_, _| Reply::ok());
    let scene = Scene::new();
    let dir = scene.path("spool");
    std::fs::create_dir(&dir).unwrap();
    let fifo = dir.join("queue");
    let cfg = scene.config(&worker.url(), "", "", "monitor_listen: 127.0.0.1:0\n");
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        &format!("path: {}\n", scene.fifo().display()),
        &format!("path: {}\n", fifo.display()),
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    let reprow = Reprow::start(&cfg);
    let api = Api::new(reprow.monitor_addr());
    write_lines(&fifo, &["first"]);
    worker.wait_for(1);
    // `rm -r` in one step: moved away first, so reprow cannot make the FIFO again in between.
    let gone = scene.path("spool.gone");
    std::fs::rename(&dir, &gone).unwrap();
    std::fs::remove_dir_all(&gone).unwrap();
    let r = wait_ready(&api, 503, &reprow);
    assert!(r.text().contains("cannot be made again"), "{}", r.text());
    std::fs::create_dir(&dir).unwrap();
    wait_for_fifo(&fifo, &reprow);
    wait_ready(&api, 200, &reprow);
    write_lines(&fifo, &["second"]);
    worker.wait_for(2);
    assert_eq!(bodies(&worker), ["first", "second"]);
    let (status, _) = reprow.stop();
    assert!(status.success());
}

#[test]
fn a_fifo_replaced_just_before_sigterm_is_read_out_and_reprow_exits() {
    use std::io::Write as _;
    // The old FIFO's last writer writes and closes just before the signal: at shutdown the old
    // pipe holds a line and then reports EOF; reprow saves the line and stops reading it.
    let worker = Worker::start(|_, _| Reply::ok());
    let scene = Scene::new();
    let mut reprow = Reprow::start(&scene.config(&worker.url(), "", "", ""));
    let mut early = open_writer(&scene.fifo());
    early.write_all(b"one\n").unwrap();
    worker.wait_for(1);
    let fresh = scene.path("queue.new");
    nix::unistd::mkfifo(&fresh, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::rename(&fresh, scene.fifo()).unwrap();
    write_lines(&scene.fifo(), &["two"]); // reprow reads the new FIFO: the old one is retired
    worker.wait_for(2);
    early.write_all(b"three\n").unwrap();
    drop(early);
    reprow.signal(nix::sys::signal::Signal::SIGTERM);
    let status = reprow.wait();
    assert!(status.success(), "log:\n{}", reprow.log());
    let delivered = bodies(&worker);
    let saved: Vec<String> = scene
        .records("pending.jsonl")
        .iter()
        .map(|r| r["payload"].as_str().unwrap().to_string())
        .collect();
    assert!(
        delivered.iter().chain(&saved).any(|b| b == "three"),
        "delivered {delivered:?}, saved {saved:?}"
    );
}

#[test]
fn lines_left_in_a_replaced_fifo_at_sigterm_are_saved() {
    use std::io::Write as _;
    // The only slot is busy and max_held_jobs is 1, so reprow stops reading once it holds a
    // line from the new FIFO: a line then written to the old one stays in that pipe until
    // SIGTERM, when it must be read out (up to the EOF its last writer's close leaves) and
    // saved like the rest.
    let worker = Worker::start(|_, _| Reply::After(Duration::from_secs(10), Box::new(Reply::ok())));
    let scene = Scene::new();
    let mut reprow = Reprow::start(&scene.config(
        &worker.url(),
        "  max_held_jobs: 1\n",
        "  concurrency: 1\n",
        "threads: 1\nshutdown_timeout: 200ms\n",
    ));
    let mut early = open_writer(&scene.fifo());
    early.write_all(b"one\n").unwrap();
    worker.wait_for(1);
    let fresh = scene.path("queue.new");
    nix::unistd::mkfifo(&fresh, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::rename(&fresh, scene.fifo()).unwrap();
    // Opens once reprow has opened the new FIFO, which it does as it retires the old one.
    write_lines(&scene.fifo(), &["two"]);
    std::thread::sleep(Duration::from_millis(300));
    // The old FIFO's last writer closes too: at shutdown its pipe holds a line, then EOF.
    early.write_all(b"three\nfour").unwrap();
    drop(early);
    reprow.signal(nix::sys::signal::Signal::SIGTERM);
    let status = reprow.wait();
    assert!(status.success(), "log:\n{}", reprow.log());
    let saved: Vec<String> = scene
        .records("pending.jsonl")
        .iter()
        .map(|r| r["payload"].as_str().unwrap().to_string())
        .collect();
    // "four" has no newline: it is saved as the unterminated line it is.
    for line in ["one", "two", "three", "four"] {
        assert!(
            saved.iter().any(|s| s == line),
            "{line} not saved: {saved:?}"
        );
    }
}

#[test]
fn the_fifos_directory_is_watched_by_inotify() {
    use std::os::unix::fs::MetadataExt;
    // inotify makes reprow notice a change of the path at once; the stat every second would
    // find it too, later (and a later re-creation leaves a longer window for `echo > queue`
    // to make a regular file). The kernel lists each inotify watch in the descriptor's
    // fdinfo: its inode (hex) and its mask.
    let worker = Worker::start(|_, _| Reply::ok());
    let scene = Scene::new();
    let reprow = Reprow::start(&scene.config(&worker.url(), "", "", ""));
    write_lines(&scene.fifo(), &["first"]);
    worker.wait_for(1);
    let dir_ino = std::fs::metadata(scene.dir.path()).unwrap().ino();
    let pid = reprow.child.id();
    let mut watches = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let link = std::fs::read_link(fd.path()).unwrap_or_default();
        if link.to_string_lossy() != "anon_inode:inotify" {
            continue;
        }
        let name = fd.file_name().to_string_lossy().into_owned();
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{name}")).unwrap();
        for line in info.lines().filter(|l| l.starts_with("inotify ")) {
            let field = |key: &str| {
                line.split(' ')
                    .find_map(|f| f.strip_prefix(key))
                    .map(|v| u64::from_str_radix(v, 16).unwrap())
                    .unwrap()
            };
            watches.push((field("ino:"), field("mask:")));
        }
    }
    // IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
    let wanted = 0x100 | 0x200 | 0x40 | 0x80;
    assert!(
        watches
            .iter()
            .any(|&(ino, mask)| ino == dir_ino && mask & wanted == wanted),
        "no inotify watch on the FIFO's directory (inode {dir_ino:x}) for its names: {watches:x?}"
    );
    let (status, _) = reprow.stop();
    assert!(status.success());
}
