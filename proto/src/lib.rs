//! Keel's gRPC contracts. The `.proto` files under `keel/v1/` are the source of
//! truth and their comments are the API documentation.

pub mod errors;
pub mod invocation;

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("keel.v1");
}

/// The encoded FileDescriptorSet of every Keel proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/keel_descriptor.bin"));
