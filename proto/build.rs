//! Generates the protocol code with a vendored `protoc`, so building needs no system install.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(
        config,
        &[
            "portcullis/limiter/v1/check.proto",
            "portcullis/limiter/v1/policy.proto",
            "portcullis/limiter/v1/quota.proto",
        ],
        &["."],
    )?;
    println!("cargo:rerun-if-changed=portcullis");
    Ok(())
}
