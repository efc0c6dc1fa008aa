//! Simulated providers: stateful HTTP servers that behave like the real APIs.
pub mod agentalk;
pub mod dmchamp;
pub mod maiagent;
pub mod seed;
