//! Generated gRPC code for `proto/sems/v1`, the only API schema source, and the
//! encoded file descriptor set that server reflection serves.
//! Depends on nothing of the project.

#![allow(clippy::all, missing_docs)]

/// `sems.v1`: alerts, incidents and their queries.
pub mod v1 {
    tonic::include_proto!("sems.v1");
}

/// The encoded `FileDescriptorSet` of every proto file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sems_descriptor.bin"));
