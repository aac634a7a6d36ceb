//! Shared helpers for the end-to-end tests (namespaces, daemon processes, real clients).
