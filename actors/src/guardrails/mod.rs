//! The rules of the finalize chain, each a pure function over one releasable
//! piece of model output (see [`crate::guardrail_finalizer`]).

pub mod dashes;
pub mod grounding;
