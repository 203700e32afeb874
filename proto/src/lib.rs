//! Portcullis's gRPC protocols, generated from the `.proto` files beside this crate.

/// The limiter, version 1: `portcullis.limiter.v1`.
pub mod limiter {
    pub mod v1 {
        #![allow(missing_docs, unreachable_pub, clippy::all)]
        tonic::include_proto!("portcullis.limiter.v1");
    }
}
