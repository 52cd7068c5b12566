//! Embeds the SQL layer (`sql/*.sql`, applied in file-name order) with a
//! fingerprint of its text, and names the test harness's template database
//! after everything `Store::migrate()` applies.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

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
        "cargo:rustc-env=LOYALTY_MIGRATIONS_HASH={}",
        &fingerprint(&everything)[..16]
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
         pub(crate) const SQL_LAYER_FINGERPRINT: &str = \"{layer_hash}\";\n"
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("sql_layer.rs"), generated).expect("writing sql_layer.rs");
}

/// SHA-256 over each file's path (with `/` separators) and bytes, as hex:
/// the same files give the same fingerprint on any machine and toolchain.
fn fingerprint(files: &[PathBuf]) -> String {
    let mut hasher = Sha256::new();
    for file in files {
        let name: Vec<String> = file
            .components()
            .map(|part| part.as_os_str().to_string_lossy().into_owned())
            .collect();
        let bytes = std::fs::read(file).expect("a readable file");
        for part in [name.join("/").as_bytes(), &bytes] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
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
