//! Embeds `sql/` and `policies/` into the binary so `ripple migrate` needs no source tree.
//! Files are applied in name order, `sql/` first (policies call its helper functions).

use std::fmt::Write;
use std::path::Path;

fn list(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "sql"));
    files.sort();
    files
}

fn main() {
    // Read at run time, not with env!(): a build script compiled in one checkout and reused
    // by another (a shared target folder) must embed the files of the checkout being built.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest).join("..");
    let mut out = String::new();
    for (konst, dir) in [("SQL_FILES", "sql"), ("POLICY_FILES", "policies")] {
        let dir = root.join(dir);
        println!("cargo:rerun-if-changed={}", dir.display());
        writeln!(out, "pub static {konst}: &[(&str, &str)] = &[").unwrap();
        for f in list(&dir) {
            let name = format!(
                "{}/{}",
                dir.file_name().unwrap().to_string_lossy(),
                f.file_name().unwrap().to_string_lossy()
            );
            let abs = f.canonicalize().unwrap();
            writeln!(
                out,
                "    ({name:?}, include_str!({:?})),",
                abs.display().to_string()
            )
            .unwrap();
        }
        writeln!(out, "];").unwrap();
    }
    println!("cargo:rerun-if-changed={}", root.join("schema").display());
    println!("cargo:rerun-if-changed=build.rs");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("sql_files.rs");
    std::fs::write(dest, out).unwrap();
}
