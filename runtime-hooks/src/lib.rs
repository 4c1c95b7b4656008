//! runtime-hooks: see docs/ARCHITECTURE.md.
