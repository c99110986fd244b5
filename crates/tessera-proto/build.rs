//! Compiles `proto/*.proto` with protox (a pure-Rust protobuf compiler) and
//! prost-build, so no `protoc` binary is needed to build Tessera.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/tessera.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    prost_build::Config::new()
        // Relay payloads are sliced out of the frame they arrived in, not copied.
        .bytes(["."])
        // Carries a device key: its Debug is written by hand, redacted.
        .skip_debug(["tessera.v1.RotateKeyOffer", "tessera.v1.SessionKeyGrant"])
        .compile_fds(fds)?;
    Ok(())
}
