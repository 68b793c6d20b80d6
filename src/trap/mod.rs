//! placeholder, replaced by the trap work
