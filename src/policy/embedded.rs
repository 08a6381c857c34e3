//! The default policy pack, embedded at build time by `build.rs` from `policies/`.

include!(concat!(env!("OUT_DIR"), "/embedded_policies.rs"));
