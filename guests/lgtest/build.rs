//! Link the kernel with its own script (only when building for the bare-metal target: the library
//! is also unit-tested on the host).
fn main() {
    println!("cargo:rerun-if-changed=link.ld");
    if std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-none") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
        for arg in [
            format!("-T{dir}/link.ld"),
            "--no-dynamic-linker".into(),
            "-zmax-page-size=0x1000".into(),
            "--gc-sections".into(),
        ] {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
    }
}
