//! # jobs-runtime
//!
//! What every daemon of the jobs framework does around its work, in one
//! place: the worker (`jobs-worker`) and the dashboard (`jobs-web`) both use
//! it, and apps that only enqueue need none of it.
//!
//! - `process`: [`run`], the async runtime, one error line and the exit code;
//! - `logging`: [`LogConfig`] (`[log]`), [`init_logging`];
//! - `signal`: [`stop_signal`], SIGTERM or SIGINT, a second one at once.

mod logging;
mod process;
mod signal;

pub use logging::{init_logging, LogConfig, LogFormat, LoggingError};
pub use process::{run, Threads};
pub use signal::stop_signal;
