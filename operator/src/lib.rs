//! The procwatch operator: the ProcessWatch controller, the pod admission webhook and the
//! report endpoint agents post their findings to.

pub mod selector;
pub mod admission;
pub mod tls;
