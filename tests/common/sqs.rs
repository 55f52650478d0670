//! A test's view of an SQS-compatible server (moto's, `REPROW_TEST_SQS_ENDPOINT`, default
//! `http://127.0.0.1:5100`): queues of its own, sends, depths and receives, for the SQS tests
//! and the ported sqsd suites.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use aws_sdk_sqs::types::QueueAttributeName;

use super::DEADLINE;

pub fn endpoint() -> String {
    std::env::var("REPROW_TEST_SQS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5100".into())
}

/// moto accepts any credentials; reprow's chain reads these from its environment.
pub const CREDENTIALS: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// A test's view of the server.
pub struct Sqs {
    pub rt: tokio::runtime::Runtime,
    pub client: aws_sdk_sqs::Client,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Sqs {
    pub fn new() -> Sqs {
        Sqs::new_in("us-east-1")
    }

    /// A client of the server's `region` (moto keeps queues per region).
    pub fn new_in(region: &str) -> Sqs {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conf = rt.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .endpoint_url(endpoint())
                .region(aws_config::Region::new(region.to_string()))
                .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                    "test", "test", None, None, "test",
                ))
                .load(),
        );
        let client = aws_sdk_sqs::Client::new(&conf);
        let sqs = Sqs { rt, client };
        sqs.rt
            .block_on(sqs.client.list_queues().send())
            .unwrap_or_else(|e| panic!("no SQS-compatible server at {}: {e:?}", endpoint()));
        sqs
    }

    pub fn queue(&self, attrs: &[(QueueAttributeName, String)]) -> String {
        let name = format!(
            "reprow-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut req = self.client.create_queue().queue_name(name);
        for (k, v) in attrs {
            req = req.attributes(k.clone(), v);
        }
        self.rt.block_on(req.send()).unwrap().queue_url.unwrap()
    }

    /// A FIFO queue (`.fifo`), deduplicating by content.
    pub fn fifo_queue(&self) -> String {
        let name = format!(
            "reprow-{}-{}.fifo",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let req = self
            .client
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::ContentBasedDeduplication, "true");
        self.rt.block_on(req.send()).unwrap().queue_url.unwrap()
    }

    /// Sends each (group, body) to a FIFO queue, in order.
    pub fn send_grouped(&self, url: &str, messages: &[(String, String)]) {
        for (group, body) in messages {
            self.rt
                .block_on(
                    self.client
                        .send_message()
                        .queue_url(url)
                        .message_group_id(group)
                        .message_body(body)
                        .send(),
                )
                .unwrap();
        }
    }

    pub fn arn(&self, url: &str) -> String {
        let out = self
            .rt
            .block_on(
                self.client
                    .get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(QueueAttributeName::QueueArn)
                    .send(),
            )
            .unwrap();
        out.attributes.unwrap()[&QueueAttributeName::QueueArn].clone()
    }

    pub fn send(&self, url: &str, bodies: &[String]) {
        for b in bodies {
            self.rt
                .block_on(
                    self.client
                        .send_message()
                        .queue_url(url)
                        .message_body(b)
                        .send(),
                )
                .unwrap();
        }
    }

    /// (visible, in flight) as the server counts them.
    pub fn depth(&self, url: &str) -> (u64, u64) {
        let out = self
            .rt
            .block_on(
                self.client
                    .get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(QueueAttributeName::All)
                    .send(),
            )
            .unwrap();
        let a = out.attributes.unwrap();
        let n = |k: QueueAttributeName| a.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
        (
            n(QueueAttributeName::ApproximateNumberOfMessages),
            n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    pub fn wait_depth(&self, url: &str, want: (u64, u64)) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let d = self.depth(url);
            if d == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "queue depth {d:?}, wanted {want:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn receive_bodies(&self, url: &str) -> Vec<String> {
        let out = self
            .rt
            .block_on(
                self.client
                    .receive_message()
                    .queue_url(url)
                    .max_number_of_messages(10)
                    .send(),
            )
            .unwrap();
        out.messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.body)
            .collect()
    }
}
