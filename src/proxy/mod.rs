//! Front ends (DESIGN §6): each parses its protocol, builds Actions, calls the Gate once per
//! action and enforces the verdict in the protocol's own terms. They never import each other;
//! what two of them share (tool facets, redaction) lives beside them here.

pub mod egress;
pub mod facets;
pub mod llm;
pub mod mcp;
pub mod redact;
