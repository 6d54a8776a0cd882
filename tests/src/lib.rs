//! Workspace-wide tests of kpl-rs; the library itself is empty.

#![forbid(unsafe_code)]
