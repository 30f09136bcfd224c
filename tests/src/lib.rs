//! End-to-end tests of the coffer binary live in tests/.
