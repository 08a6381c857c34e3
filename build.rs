//! Embeds the default policy pack (`policies/`) into the binary, so `portcullis` decides with
//! it from any directory. Every `.rego`, `.json`, `.yaml` and `.yml` file is included.

use std::fmt::Write as _;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let wanted = [".rego", ".json", ".yaml", ".yml"]
            .iter()
            .any(|e| name.ends_with(e));
        if path.is_file() && wanted {
            println!("cargo:rerun-if-changed={}", path.display());
            names.push(name);
        }
    }
    names.sort();
    let mut out = String::from("pub(super) const FILES: &[(&str, &str)] = &[\n");
    for name in &names {
        let full = dir.join(name);
        writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            full.display().to_string()
        )?;
    }
    out.push_str("];\n");
    let out_dir = std::env::var("OUT_DIR")?;
    std::fs::write(Path::new(&out_dir).join("embedded_policies.rs"), out)?;
    Ok(())
}
