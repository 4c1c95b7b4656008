//! Network egress limit (stub).
