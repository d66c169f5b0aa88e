//! Generates the gRPC code for `proto/keyward/v1` (into `OUT_DIR`, included
//! by `src/pb.rs`) with a file descriptor set for server reflection, and for
//! the upstream Kubernetes KMS v2 API (`proto/k8s.io/kms/apis/v2`, included
//! by `src/k8s_pb.rs`, with a descriptor set so metrics know its methods).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // Messages that carry plaintext, data keys, tokens, secrets or shares get
    // a hand-written Debug that redacts them (src/pb.rs, src/k8s_pb.rs).
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("keyward_descriptor.bin"))
        .skip_debug([
            ".keyward.v1.EncryptRequest",
            ".keyward.v1.DecryptResponse",
            ".keyward.v1.GenerateDataKeyResponse",
            ".keyward.v1.GenerateRandomResponse",
            ".keyward.v1.CreateTokenResponse",
            ".keyward.v1.CreateAccessKeyResponse",
            ".keyward.v1.UnsealRequest",
            ".keyward.v1.PeerCredential",
        ])
        .compile_protos(&["proto/keyward/v1/keyward.proto"], &["proto"])?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("k8s_descriptor.bin"))
        .skip_debug([".v2.EncryptRequest", ".v2.DecryptResponse"])
        .compile_protos(&["proto/k8s.io/kms/apis/v2/api.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
