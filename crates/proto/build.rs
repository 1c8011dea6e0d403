//! Compiles `proto/sems/v1/*.proto` with protox (pure Rust, no system `protoc`).

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "sems/v1/common.proto",
        "sems/v1/alerts.proto",
        "sems/v1/incidents.proto",
        "sems/v1/cmc.proto",
    ];
    let paths: Vec<PathBuf> = files.iter().map(|f| root.join(f)).collect();
    for p in &paths {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let fds = protox::compile(&paths, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out.join("sems_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        // Ingestion keeps an alert's labels in the order the domain stores them: decoded
        // straight into a BTreeMap, not hashed into a HashMap and copied into one.
        .btree_map(".sems.v1.Alert.labels")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
