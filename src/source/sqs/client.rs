//! The SDK client for the configured queue (region from the queue URL when not configured,
//! endpoint from `queue.endpoint_url` or `SQS_ENDPOINT_URL`; credentials always from the
//! standard AWS chain), and the queue's own visibility timeout when none is configured.

use aws_sdk_sqs::{types::QueueAttributeName, Client};

use super::config::SqsConfig;
use crate::source::SourceError;

/// # Errors
/// A [`SourceError`] when no region is found (the configured one, the standard chain's, or the
/// one in the queue URL): the SDK would otherwise fail each request with less to go on.
pub(super) async fn client(config: &SqsConfig) -> Result<Client, SourceError> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    let region = config.region.clone().or_else(|| region_of(&config.url));
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r));
    }
    let endpoint = config.endpoint_url.clone().or_else(|| {
        std::env::var("SQS_ENDPOINT_URL")
            .ok()
            .filter(|e| !e.is_empty())
    });
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        return Err(SourceError::sqs(format!(
            "{}: no AWS region: set queue.region (AWS_REGION in sqsd environment mode), AWS_REGION, or a profile's region",
            config.url
        )));
    }
    Ok(Client::new(&sdk))
}

/// `us-east-1` from `https://sqs.us-east-1.amazonaws.com/...`.
fn region_of(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split('/').next()?;
    let mut parts = host.split('.');
    (parts.next()? == "sqs").then(|| parts.next().map(str::to_string))?
}

pub(super) async fn queue_visibility(client: &Client, url: &str) -> Result<i32, SourceError> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::VisibilityTimeout)
        .send()
        .await
        .map_err(|e| {
            SourceError::sqs(format!(
                "{url}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            ))
        })?;
    Ok(out
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::VisibilityTimeout))
        .and_then(|v| v.parse().ok())
        .unwrap_or(30))
}

#[cfg(test)]
mod tests {
    #[test]
    fn regions_from_urls() {
        assert_eq!(
            super::region_of("https://sqs.ap-northeast-1.amazonaws.com/1234/q").as_deref(),
            Some("ap-northeast-1")
        );
        assert_eq!(super::region_of("http://127.0.0.1:5000/1234/q"), None);
    }
}
