//! Tool facets (DESIGN §2): which tool arguments are paths, commands or URLs, shared by every
//! front end that sees tool calls (MCP calls, a model's tool calls), so the same file, exec and
//! network rules apply whichever way a call came in.

use serde_json::Value;

use crate::action::{Action, ExecFacet, FileFacet, HttpFacet};
use crate::config::{ArgMapping, Facet};

/// A facet built from an argument.
pub enum Built {
    File(FileFacet),
    Exec(ExecFacet),
    Http(HttpFacet),
}

/// The facets that mapping `m` makes of `args` (none when the argument is absent or null).
pub fn mapped(m: &ArgMapping, args: &Value) -> Result<Vec<Built>, String> {
    let values: Vec<&str> = match args.get(&m.arg) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad_arg(m))?,
        Some(_) => return Err(bad_arg(m)),
    };
    Ok(values
        .into_iter()
        .map(|s| match m.facet {
            Facet::File(op) => Built::File(FileFacet {
                op,
                path: s.to_string(),
                canonical: String::new(),
            }),
            Facet::Exec => Built::Exec(ExecFacet {
                command: s.to_string(),
                ..ExecFacet::default()
            }),
            Facet::Http => Built::Http(HttpFacet {
                url: s.to_string(),
                ..HttpFacet::default()
            }),
        })
        .collect())
}

fn bad_arg(m: &ArgMapping) -> String {
    format!(
        "argument {:?} of tool {:?} names a path, command or URL and must be a string or an array of strings",
        m.arg, m.tool
    )
}

/// One Action per facet (each a copy of `base` with that facet), or `base` alone when there is
/// none. All of them must allow for the call to go ahead.
pub fn actions(base: Action, facets: Vec<Built>) -> Vec<Action> {
    if facets.is_empty() {
        return vec![base];
    }
    facets
        .into_iter()
        .map(|f| {
            let mut a = base.clone();
            match f {
                Built::File(file) => a.file = Some(file),
                Built::Exec(exec) => a.exec = Some(exec),
                Built::Http(http) => a.http = Some(http),
            }
            a
        })
        .collect()
}
