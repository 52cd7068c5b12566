//! Embeds the SQL layer (`sql/*.sql`, applied in file-name order) with a
//! fingerprint of its text, and names the test harness's template database
//! after everything `Store::migrate()` applies.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=sql");
    let mut migrations = Vec::new();
    collect(Path::new("migrations"), &mut migrations);
    let mut layer = Vec::new();
    collect(Path::new("sql"), &mut layer);
    layer.retain(|file| file.extension().is_some_and(|ext| ext == "sql"));

    let layer_hash = fingerprint(&layer);
    let mut everything = migrations;
    everything.extend(layer.iter().cloned());
    println!(
        "cargo:rustc-env=LOYALTY_MIGRATIONS_HASH={:016x}",
        fingerprint(&everything)
    );

    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let files: String = layer
        .iter()
        .map(|file| {
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .expect("a UTF-8 file name");
            format!(
                "    ({name:?}, include_str!({:?})),\n",
                Path::new(&root).join(file)
            )
        })
        .collect();
    let generated = format!(
        "/// The SQL layer's files, in the order they are applied.\n\
         pub(crate) const SQL_LAYER: &[(&str, &str)] = &[\n{files}];\n\
         /// Changes whenever any file of the layer changes.\n\
         pub(crate) const SQL_LAYER_FINGERPRINT: &str = \"{layer_hash:016x}\";\n"
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("sql_layer.rs"), generated).expect("writing sql_layer.rs");
}

fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(file)
            .expect("readable SQL file")
            .hash(&mut hasher);
    }
    hasher.finish()
}

/// Every file under `dir`, sorted by path.
fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("a readable directory")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
    files.sort();
}
