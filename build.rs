//! Embeds the default policy pack (`policies/`) into the binary, so `portcullis` decides with
//! it from any directory. Every `.rego`, `.json`, `.yaml` and `.yml` file is included.
//!
//! It also compiles the pack's decision modules to RVM bytecode, so that a process using the
//! default pack deserializes a program (well under a millisecond) instead of parsing and
//! compiling 2 000 lines of Rego on every start (10 ms or more): `run`, `mcp` and `policy eval`
//! start that much sooner. The program is built here, from the same files, by the same regorus;
//! `policy::PolicySet::load` uses it only when the files it is given are exactly these, and a
//! unit test checks that it equals what loading compiles. If regorus cannot compile the pack,
//! nothing is embedded and loading compiles (or falls back to the interpreter) as before.

use std::fmt::Write as _;
use std::path::Path;

/// Must match `policy.entrypoint`'s default in `src/config.rs`.
const ENTRYPOINT: &str = "data.portcullis.decision";

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
    let program = Path::new(&out_dir).join("embedded_program.rvm");
    let bytes = match compile(&dir, &names) {
        Ok(bytes) => bytes,
        Err(e) => {
            println!("cargo:warning=the default pack is not precompiled: {e}");
            Vec::new()
        }
    };
    std::fs::write(&program, bytes)?;
    writeln!(
        out,
        "pub(super) const PROGRAM_ENTRYPOINT: &str = {ENTRYPOINT:?};"
    )?;
    writeln!(
        out,
        "pub(super) const PROGRAM: &[u8] = include_bytes!({:?});",
        program.display().to_string()
    )?;
    std::fs::write(Path::new(&out_dir).join("embedded_policies.rs"), out)?;
    Ok(())
}

/// The decision modules (not the tests) compiled as `PolicyFiles::engine` and
/// `PolicySet::load` do. Data is left out: the program reads `data` at run time.
fn compile(dir: &Path, names: &[String]) -> Result<Vec<u8>, String> {
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(false);
    engine.set_strict_builtin_errors(true);
    for name in names {
        if name.ends_with(".rego") && !name.ends_with("_test.rego") {
            let text = std::fs::read_to_string(dir.join(name)).map_err(|e| e.to_string())?;
            engine
                .add_policy(name.clone(), text)
                .map_err(|e| e.to_string())?;
        }
    }
    let compiled = engine
        .compile_with_entrypoint(&ENTRYPOINT.into())
        .map_err(|e| e.to_string())?;
    let program =
        regorus::languages::rego::compiler::Compiler::compile_from_policy(&compiled, &[ENTRYPOINT])
            .map_err(|e| e.to_string())?;
    program.serialize_binary()
}
