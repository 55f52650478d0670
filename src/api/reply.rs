//! Asking the store from a handler: [`call`] sends a request and gives its answer, typed by
//! the request (a `Write` or `Read` variant's reply address), or the response that ends the
//! handler: the store's refusal, or 404 when this reprow has no durable queue.

use super::{http_response::Response, Ctx};
use crate::store::{Command, StoreError, Tx};

/// What a handler returns: the answer, or the answer that ends it early (an error, mostly).
/// Both are sent as they are.
pub(super) type Res = Result<Response, Response>;

/// Sends the request `request` builds around its reply address and gives its answer, e.g.
/// `call(ctx, |tx| Read::Queue(name, tx))` gives the `QueueDef`.
pub(super) async fn call<T: Send + 'static, C: Into<Command>>(
    ctx: &Ctx,
    request: impl FnOnce(Tx<T>) -> C,
) -> Result<T, Response> {
    match &ctx.store {
        Some(store) => store.call(request).await.map_err(Response::from),
        None => Err(Response::error(404, "no durable queue in this reprow")),
    }
}

impl From<StoreError> for Box<Response> {
    fn from(e: StoreError) -> Self {
        Box::new(Response::from(e))
    }
}
