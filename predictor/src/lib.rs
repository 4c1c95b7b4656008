//! predictor: see docs/ARCHITECTURE.md.
