//! Setup shared by several of this crate's test binaries.

pub mod child;
