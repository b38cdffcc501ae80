//! The rules of the finalize chain, each a pure function over one releasable
//! piece of model output (see [`crate::guardrail_finalizer`]).

pub mod dashes;
pub mod directives;
pub mod grounding;
pub mod prompt_leak;
