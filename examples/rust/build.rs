// Links libttfs: from $TTFS_LIB_DIR, else the checkout's build/ directory. The run-time search
// path is set to the same directory, so the program runs without LD_LIBRARY_PATH.
use std::env;
use std::path::PathBuf;

fn main() {
    let dir = match env::var("TTFS_LIB_DIR") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../build"),
    };
    let dir = dir.canonicalize().unwrap_or(dir);
    println!("cargo:rerun-if-env-changed=TTFS_LIB_DIR");
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=dylib=ttfs");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
}
