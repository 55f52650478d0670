//! Queue definitions through the public API: the allow-list's CIDR prefixes at their bounds
//! (`/0`, `/32`, `/128`, one past), IPv6 blocks, a v4 block never matching a v6 host and the
//! reverse, names matched without case. Written for mutants cargo-mutants missed in
//! `src/store/queue.rs` with `--lib --test store_model`.

use reprow::{http::url::WorkerUrl, store::queue::QueueDef};

fn url(u: &str) -> WorkerUrl {
    WorkerUrl::parse(u).unwrap()
}

fn with_origins(origins: &[&str]) -> QueueDef {
    let mut d = QueueDef::named("q");
    d.allowed_origins = origins.iter().map(|s| s.to_string()).collect();
    d
}

fn valid(origin: &str) -> bool {
    with_origins(&[origin]).validate().is_ok()
}

#[test]
fn prefix_lengths_are_valid_up_to_the_address_width() {
    assert!(valid("10.0.0.0/0"));
    assert!(valid("10.0.0.1/32"));
    assert!(!valid("10.0.0.1/33"));
    assert!(valid("::/0"));
    assert!(valid("fd00::1/128"));
    assert!(!valid("fd00::1/129"));
    assert!(!valid("fd00::1/x"));
    assert!(!valid("not-an-ip/8"));
    assert!(valid(" 10.0.0.0/8 "), "entries are trimmed");
}

#[test]
fn host_names_may_hold_letters_digits_dots_and_dashes_only() {
    assert!(valid("worker-1.example"));
    assert!(!valid("worker_1"));
    assert!(!valid("worker 1"));
    assert!(!valid("worker/1"));
    assert!(!valid(""));
}

#[test]
fn a_zero_prefix_matches_every_address_of_its_family() {
    let d = with_origins(&["10.0.0.0/0"]);
    for u in [
        "http://10.0.0.1/",
        "http://192.168.7.9/",
        "http://255.255.255.255/",
    ] {
        assert!(d.allows(&url(u)), "{u}");
    }
    assert!(!d.allows(&url("http://[::1]/")), "v4 block, v6 host");
    assert!(
        !d.allows(&url("http://localhost/")),
        "a name is never in a block"
    );

    let d = with_origins(&["::/0"]);
    assert!(d.allows(&url("http://[::1]/")));
    assert!(d.allows(&url("http://[fd00::7]/")));
    assert!(!d.allows(&url("http://127.0.0.1/")), "v6 block, v4 host");
}

#[test]
fn a_full_prefix_matches_one_address() {
    let d = with_origins(&["10.0.0.1/32"]);
    assert!(d.allows(&url("http://10.0.0.1/")));
    assert!(!d.allows(&url("http://10.0.0.2/")));
    assert!(!d.allows(&url("http://11.0.0.1/")));

    let d = with_origins(&["10.0.0.1"]);
    assert!(d.allows(&url("http://10.0.0.1/")));
    assert!(!d.allows(&url("http://10.0.0.3/")));

    let d = with_origins(&["fd00::1/128"]);
    assert!(d.allows(&url("http://[fd00::1]/")));
    assert!(!d.allows(&url("http://[fd00::2]/")));

    let d = with_origins(&["[fd00::1]"]);
    assert!(d.allows(&url("http://[fd00::1]:8080/")));
    assert!(!d.allows(&url("http://[fd00::3]/")));
}

#[test]
fn v4_blocks_match_their_prefix_only() {
    let d = with_origins(&["10.1.0.0/16"]);
    assert!(d.allows(&url("http://10.1.0.0/")));
    assert!(d.allows(&url("http://10.1.255.255/")));
    assert!(!d.allows(&url("http://10.0.255.255/")));
    assert!(!d.allows(&url("http://10.2.0.0/")));
    assert!(!d.allows(&url("http://0.0.0.0/")));
    let d = with_origins(&["192.168.4.0/22"]);
    assert!(d.allows(&url("http://192.168.7.255/")));
    assert!(d.allows(&url("http://192.168.4.0/")));
    assert!(!d.allows(&url("http://192.168.8.0/")));
    assert!(!d.allows(&url("http://192.168.3.255/")));
}

#[test]
fn v6_blocks_match_their_prefix_only() {
    let d = with_origins(&["fd00:1::/32"]);
    assert!(d.allows(&url("http://[fd00:1::5]/")));
    assert!(d.allows(&url("http://[fd00:1:ffff::1]/")));
    assert!(!d.allows(&url("http://[fd00:2::5]/")));
    assert!(!d.allows(&url("http://[fd01:1::5]/")));
    assert!(!d.allows(&url("http://[::]/")));
    let d = with_origins(&["fd00::/8"]);
    assert!(d.allows(&url("http://[fdff::1]/")));
    assert!(!d.allows(&url("http://[fe00::1]/")));
    assert!(!d.allows(&url("http://[fc00::1]/")));
}

#[test]
fn names_match_whole_and_without_case() {
    let d = with_origins(&["Worker.Internal"]);
    assert!(d.allows(&url("http://worker.internal/")));
    assert!(d.allows(&url("http://WORKER.INTERNAL:8080/")));
    assert!(!d.allows(&url("http://worker.internal.evil/")));
    assert!(!d.allows(&url("http://127.0.0.1/")));
    let none = with_origins(&[]);
    assert!(!none.allows(&url("http://127.0.0.1/")));
    assert!(!none.allows(&url("http://localhost/")));
}
