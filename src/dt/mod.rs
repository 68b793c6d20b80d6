//! placeholder, replaced by the dt work
