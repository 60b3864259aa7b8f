//! The app's job types.
pub mod mail;
pub mod report;
