//! broker: see docs/ARCHITECTURE.md.
