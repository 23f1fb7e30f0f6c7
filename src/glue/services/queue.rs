//! The queue consumer: reads each [`super::jobs::Job`] and runs it (lead enrichment or one
//! delivery attempt), acking or retrying the message.

use worker::{event, Env, MessageBatch, MessageExt, QueueRetryOptionsBuilder};

use super::delivery::deliver;
use super::jobs::{log, Job};
use super::leads::enrich;

/// The queue consumer: one job per message; a failed job is retried after 2 s.
#[event(queue)]
async fn queue(batch: MessageBatch<String>, env: Env, _ctx: worker::Context) -> worker::Result<()> {
    for message in batch.messages()? {
        let outcome = match serde_json::from_str::<Job>(message.body()) {
            Ok(Job::Enrich { lead_id }) => enrich(&env, &lead_id).await,
            Ok(Job::Deliver {
                notification_id,
                attempt,
            }) => deliver(&env, &notification_id, attempt).await,
            Ok(Job::PusherWebhook {
                app_id,
                url,
                body,
                attempt,
            }) => crate::glue::pusher::deliver_webhook(&env, &app_id, &url, body, attempt).await,
            Err(e) => {
                // A body no version of this Worker can read is dropped, loudly.
                log("job_unreadable", &e.to_string());
                Ok(())
            }
        };
        match outcome {
            Ok(()) => message.ack(),
            Err(e) => {
                log("job_failed", &e.log_text());
                message.retry_with_options(
                    &QueueRetryOptionsBuilder::new()
                        .with_delay_seconds(2)
                        .build(),
                );
            }
        }
    }
    Ok(())
}
