//! Hook (stub).
