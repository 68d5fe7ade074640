//! `kubectl procwatch`: what runs in the pods a ProcessWatch selects, printed the way `ps`,
//! `ss -lx` and `sha256sum` would, from the watch's status alone.
//!
//! Everything here is pure: a [`view::Watch`] (a ProcessWatch and the pods its selector
//! matches) in, table text out. The binary (`main.rs`) reads the cluster and writes the text.

pub mod age;
pub mod create;
pub mod files;
pub mod message;
pub mod ps;
pub mod sockets;
pub mod table;
pub mod top;
pub mod view;
