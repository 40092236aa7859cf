//! Compiles `keel/v1/*.proto` with protox (pure Rust, no system protoc) and
//! writes the FileDescriptorSet next to the generated code for reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "keel/v1/common.proto",
    "keel/v1/session.proto",
    "keel/v1/model.proto",
    "keel/v1/tool.proto",
    "keel/v1/mcp.proto",
    "keel/v1/live.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("keel_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
