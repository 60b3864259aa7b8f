//! Progress a person can watch: `ctx.progress(0.42, "resized 42 of 100")`
//! from inside `perform` writes the job's latest value here, in memory, with
//! no message per call; the worker's next heartbeat carries it (the
//! dashboard's Workers page, `/api/workers`, `/api/running/<id>`), and a job
//! that ends dead keeps its last value in `x-progress` (per mille) and
//! `x-progress-text`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// The longest progress text kept, in bytes (cut at a character's edge):
/// it rides on every heartbeat while the job runs.
pub const MAX_PROGRESS_TEXT: usize = 200;

/// No progress said yet.
const NONE: u32 = u32::MAX;

/// A running job's latest progress: written by the job, read by heartbeats.
#[derive(Debug)]
pub struct ProgressCell {
    /// The fraction done, as an `f32`'s bits; `NONE` before the first call.
    fraction: AtomicU32,
    text: Mutex<String>,
}

impl Default for ProgressCell {
    fn default() -> Self {
        ProgressCell { fraction: AtomicU32::new(NONE), text: Mutex::new(String::new()) }
    }
}

impl ProgressCell {
    /// Sets the latest progress: `done` from 0.0 to 1.0 (clamped; a NaN is
    /// ignored), and `text` (cut at [`MAX_PROGRESS_TEXT`] bytes).
    pub fn set(&self, done: f64, text: &str) {
        if done.is_nan() {
            return;
        }
        let done = done.clamp(0.0, 1.0) as f32;
        let text = crate::message::prefix(text, MAX_PROGRESS_TEXT);
        let mut kept = self.text.lock().unwrap_or_else(|e| e.into_inner());
        if *kept != text {
            kept.clear();
            kept.push_str(text);
        }
        self.fraction.store(done.to_bits(), Ordering::Release);
    }

    /// The latest progress, once the job said any: the fraction done and the text.
    pub fn get(&self) -> Option<(f32, String)> {
        let bits = self.fraction.load(Ordering::Acquire);
        if bits == NONE {
            return None;
        }
        let text = self.text.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Some((f32::from_bits(bits), text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_value_is_kept_clamped_and_cut() {
        let cell = ProgressCell::default();
        assert_eq!(cell.get(), None, "nothing said yet");
        cell.set(0.25, "a quarter");
        cell.set(0.5, "half");
        assert_eq!(cell.get(), Some((0.5, "half".to_owned())));
        cell.set(f64::NAN, "ignored");
        cell.set(7.0, "past the end");
        assert_eq!(cell.get(), Some((1.0, "past the end".to_owned())));
        cell.set(-1.0, &"é".repeat(150));
        let (done, text) = cell.get().unwrap();
        assert_eq!(done, 0.0);
        assert!(text.len() <= MAX_PROGRESS_TEXT && text.chars().all(|c| c == 'é'), "{}", text.len());
    }
}
