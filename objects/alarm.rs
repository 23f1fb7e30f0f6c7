//! An object's one alarm, kept no later than the earliest deadline its core asks for. The
//! alarm as last seen is cached, so storage is read at most once per instance.

use std::cell::Cell;

use worker::{ScheduledTime, Storage};

/// The scheduled alarm as last seen: `None` until read from storage.
#[derive(Default)]
pub struct Alarm(Cell<Option<Option<u64>>>);

impl Alarm {
    /// Makes sure the alarm fires no later than `t_ms`.
    pub async fn no_later_than(&self, storage: &Storage, t_ms: u64) -> worker::Result<()> {
        let set = ensure(storage, self.0.get(), t_ms).await?;
        self.0.set(Some(set));
        Ok(())
    }

    /// What is known of the alarm, for a task that schedules it in the background.
    pub fn known(&self) -> Option<Option<u64>> {
        self.0.get()
    }

    /// The alarm just fired: none is scheduled now.
    pub fn fired(&self) {
        self.0.set(Some(None));
    }

    /// Forgets what is known (the alarm fired, or a background task may have moved it).
    pub fn forget(&self) {
        self.0.set(None);
    }
}

/// Sets the alarm to `t_ms` unless one is already due by then (`known`: the alarm as last
/// seen, `None` to read it); answers the alarm as it now is.
pub async fn ensure(
    storage: &Storage,
    known: Option<Option<u64>>,
    t_ms: u64,
) -> worker::Result<Option<u64>> {
    let current = match known {
        Some(a) => a,
        None => storage.get_alarm().await?.map(|v| v as u64),
    };
    if current.is_none_or(|c| c > t_ms) {
        storage.set_alarm(at(t_ms)).await?;
        Ok(Some(t_ms))
    } else {
        Ok(current)
    }
}

/// An absolute alarm time (an `i64` would be read as an offset from now).
fn at(t_ms: u64) -> ScheduledTime {
    ScheduledTime::new(js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(
        t_ms as f64,
    )))
}
