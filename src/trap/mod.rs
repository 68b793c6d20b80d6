//! Exceptions taken to EL2 from the host: decoding, SMCCC routing, PSCI mediation and fault
//! containment.

pub mod frame;

pub use frame::TrapFrame;
