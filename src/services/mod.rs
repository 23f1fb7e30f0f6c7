//! Stateless services: leads, property valuation and notifications. Their Workers glue (D1,
//! KV, the job queue) is `src/glue/services/`.

pub mod leads;
pub mod notify;
pub mod valuation;
