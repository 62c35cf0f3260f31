//! Setup shared by several of this crate's test binaries (each uses a part of it).
#![allow(dead_code)]

pub mod child;
pub mod redis;
