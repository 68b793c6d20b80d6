//! aarch64 implementations of the hardware traits (filled in by the integrator).
