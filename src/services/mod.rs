//! Stateless services: leads, property valuation and notifications. Their Workers glue (D1,
//! KV, the job queue) is `src/glue/services/`.
//!
//! Dependencies run one way: `notify` uses `leads`; `leads` and `valuation` share only
//! [`fields::FieldError`].

pub mod fields;
pub mod leads;
pub mod notify;
pub mod valuation;
