//! Compiles `proto/` into Rust (prost) and its proto3 JSON form (pbjson).
//!
//! The .proto files are parsed by `protox`, a pure-Rust compiler, so no
//! system `protoc` is needed.

use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let protos = ["proto/wspool.proto", "proto/cluster.proto"];
    println!("cargo:rerun-if-changed=proto");
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptors = protox::compile(protos, ["proto"])?;
    let descriptor_bytes = prost::Message::encode_to_vec(&descriptors);

    prost_build::Config::new()
        // `bytes` fields as `bytes::Bytes`: cheap to clone and share.
        .bytes(["."])
        .out_dir(&out_dir)
        .compile_fds(descriptors)?;

    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .out_dir(&out_dir)
        // proto3 JSON for the client contract only.
        .build(&[".wspool.SendMsg"])?;
    Ok(())
}
