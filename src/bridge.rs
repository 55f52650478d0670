//! Everything that crosses from one thread to another goes through here: the job channel from
//! a source thread to the cores. The compile-time test below keeps these types `Send`.

use crate::job::Job;

/// Sending side of the job channel, held by the source thread.
pub type JobSender = async_channel::Sender<Job>;
/// Receiving side, cloned into every core.
pub type JobReceiver = async_channel::Receiver<Job>;

/// A bounded job channel. Its capacity is the backpressure point: when the cores are busy the
/// source blocks on `send` and stops reading.
pub fn job_channel(capacity: usize) -> (JobSender, JobReceiver) {
    async_channel::bounded(capacity.max(1))
}

#[cfg(test)]
mod tests {
    fn assert_send<T: Send + 'static>() {}

    #[test]
    fn bridge_types_are_send() {
        assert_send::<super::JobSender>();
        assert_send::<super::JobReceiver>();
        assert_send::<super::Job>();
        assert_send::<crate::lifecycle::Shutdown>();
        assert_send::<std::sync::Arc<dyn crate::source::Settle>>();
    }
}
