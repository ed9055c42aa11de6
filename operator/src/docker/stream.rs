//! Streaming exec: TODO(helper-c)
