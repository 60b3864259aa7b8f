//! `#[derive(Job)]` for jobs-core. Use it through `jobs_core::Job`.
//!
//! The derive implements `jobs_core::Job` (the job's name and queue) and
//! registers the type so that workers find it. The type must also implement
//! `jobs_core::Perform`, serde's `Serialize` and `Deserialize`.
//!
//! Attribute keys of `#[job(...)]`:
//! - `queue = "emails"`: the queue (default `"default"`);
//! - `name = "EmailJob"`: the name on the wire (default: the type's name);
//! - `max_attempts = 5`: attempts before the job is dead (default 25);
//! - `timeout = "90s"`: how long one attempt may run (default 25 minutes);
//! - `backoff = path`: a `fn(u32) -> Duration`, the delay after failed attempt `n`;
//! - `rpc`: a call, answered by `jobs_core::Respond` instead of `Perform`;
//! - `step`: a chain's step, run by `jobs_core::Step` instead of `Perform`
//!   (it takes the output of the step before and hands one on).

mod attr;
mod expand;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

/// Derives `jobs_core::Job`. See the crate docs for the `#[job(...)]` keys.
#[proc_macro_derive(Job, attributes(job))]
pub fn derive_job(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).unwrap_or_else(|err| err.to_compile_error()).into()
}
