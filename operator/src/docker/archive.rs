//! Archive copy and scratch containers: TODO(helper-d)
