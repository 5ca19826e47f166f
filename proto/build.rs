//! Compiles fs.proto with protox (pure Rust, no system protoc) and prost-build.
fn main() {
    println!("cargo:rerun-if-changed=fs.proto");
    let fds = protox::compile(["fs.proto"], ["."]).expect("fs.proto does not compile");
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(fds)
        .expect("prost-build failed on fs.proto");
}
