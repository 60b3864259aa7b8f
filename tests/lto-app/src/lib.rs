//! The app's library: its job types, in modules of their own.
pub mod jobs;
