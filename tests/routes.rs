//! The router's table on the real binary: every route answers a wrong method with 405 and its
//! `Allow`, and a reprow without the durable queue (a FIFO with `monitor_listen`) serves only
//! the monitoring routes. (cargo-mutants found these arms deletable unnoticed: a deleted 405
//! arm falls through to 404.)

mod common;

use common::{start_durable, Api, Reprow, Scene, Worker};

#[test]
fn wrong_methods_are_405_with_allow_on_every_route() {
    let (_d, _r, api) = start_durable("");
    for (path, allow) in [
        ("/metrics", "GET"),
        ("/inflight", "GET"),
        ("/queues", "GET"),
        ("/queues/stats", "GET"),
        ("/queue/default/waiting", "GET"),
        ("/queue/default/grabbed", "GET"),
        ("/queue/default/deferred", "GET"),
        ("/queue/default/stats", "GET"),
        ("/queue/default/job/1", "GET, DELETE"),
        ("/queue/default/failed", "GET"),
        ("/queue/default/failed/1", "GET, DELETE"),
        ("/queue/default/failed/1/retry", "POST"),
        ("/queue/default", "GET, PUT, DELETE"),
        ("/job/x", "POST"),
        ("/job/x/y", "POST"),
        ("/settings", "GET"),
        ("/stats", "GET"),
        ("/queue/default/node", "GET"),
        ("/routings", "GET"),
        ("/routing/x", "GET, PUT, DELETE"),
        ("/version", "GET"),
        ("/q/x", "GET, POST, PUT, DELETE"),
        ("/q/x/1", "DELETE"),
        ("/qb/x", "GET, POST"),
        ("/j/x", "GET"),
        ("/w/x", "GET, POST, DELETE"),
        ("/status/x", "GET"),
        ("/control/x", "GET, POST"),
    ] {
        let r = api.call("PATCH", path, Some("{}"));
        assert_eq!(r.status, 405, "PATCH {path}: {}", r.text());
        assert_eq!(r.header("allow"), Some(allow), "{path}");
    }
    for path in ["/metrics", "/inflight", "/queues", "/queues/stats", "/"] {
        assert_eq!(api.get(path).status, 200, "{path}");
    }
    assert_eq!(api.get("/nothing/here").status, 404);
    // `/job/batch` is a job of category `batch` (fireworq's `{category:.+}`), not a batch of
    // no category; `/job` names no category at all.
    let job = r#"{"url":"http://127.0.0.1:9/","payload":1}"#;
    let r = api.post("/job/batch", job);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["category"], "batch");
    assert_eq!(api.post("/job", job).status, 404);
    // `/routing` names no category either: no route, for every method.
    for m in ["GET", "PUT", "DELETE"] {
        let r = api.call(m, "/routing", Some(r#"{"queue_name":"default"}"#));
        assert_eq!(r.status, 404, "{m} /routing: {}", r.text());
        assert!(r.text().contains("no route"), "{m} /routing: {}", r.text());
    }
    // presque refuses PUT and DELETE on a batch route with 400 and names the method.
    for m in ["PUT", "DELETE"] {
        let r = api.call(m, "/qb/x", Some("{}"));
        assert_eq!(r.status, 400, "{m} /qb/x: {}", r.text());
        assert!(
            r.text().contains("not supported in batch mode"),
            "{}",
            r.text()
        );
    }
}

#[test]
fn without_the_durable_queue_only_monitoring_is_served() {
    let worker = Worker::start(|_, _| common::Reply::ok());
    let scene = Scene::new();
    let cfg = scene.config(&worker.url(), "", "", "monitor_listen: 127.0.0.1:0\n");
    let reprow = Reprow::start(&cfg);
    let api = Api::new(reprow.monitor_addr());
    for path in ["/healthz", "/metrics", "/status", "/inflight"] {
        let r = api.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    for path in ["/", "/dashboard", "/queues", "/q/x", "/version"] {
        let r = api.get(path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(r.text().contains("only /healthz"), "{path}: {}", r.text());
    }
    assert_eq!(api.call("POST", "/metrics", Some("")).status, 405);
    assert!(reprow.stop().0.success());
}
