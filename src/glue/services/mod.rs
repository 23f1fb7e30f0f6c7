//! The stateless services: valuation, leads and notifications, over D1 (truth), KV (cache)
//! and the job queue (work after the response). wasm32 only.
//!
//! Every decision is in the pure modules ([`crate::services::valuation`], [`crate::services::leads`],
//! [`crate::services::notify`]); these files read and write storage, call the queue and the ops room,
//! and turn outcomes into HTTP responses.
//!
//! One file per part: [`valuation`] (model and estimates), [`leads`] (intake, enrichment,
//! listing), [`notify`] (notifications and their delivery), [`webhook`] (inbound webhooks),
//! [`jobs`] (what travels on the queue), [`queue`] (its consumer) and [`crate::glue::d1`] (D1 helpers).

mod delivery;
pub(crate) mod jobs;
mod leads;
mod notify;
mod queue;
mod valuation;
mod webhook;

pub(crate) use leads::{create_lead, export_leads, get_lead, list_leads, submit_lead, update_lead};
pub(crate) use notify::{create_notification, get_notification, notify};
pub(crate) use valuation::{import_sales, valuation};
pub(crate) use webhook::webhook;
