//! The heartbeat (`queue.heartbeat`): extends the visibility of messages still held (in flight
//! or queued), so a job running longer than the visibility timeout is not delivered twice.

use std::{sync::Arc, time::Duration};

use super::{batch::change_visibility_batch, loop_state::Shared};
use crate::lifecycle::Shutdown;

/// Every third of the visibility timeout, extends the visibility of every held message.
pub(super) async fn heartbeat_loop(shared: Arc<Shared>, shutdown: Shutdown) {
    let every = Duration::from_secs(u64::try_from(shared.visibility).unwrap_or(30).max(3) / 3);
    loop {
        tokio::time::sleep(every).await;
        if shutdown.is_triggered() {
            return;
        }
        let held: Vec<(u64, String)> = shared
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, h)| (*id, h.receipt.clone()))
            .collect();
        change_visibility_batch(&shared, &held, shared.visibility).await;
    }
}
