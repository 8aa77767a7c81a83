//! Reference evaluator: written by a helper session (see the issue note).
