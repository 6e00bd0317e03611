//! main.cf and master.cf: parsing, the parameter table, expansion.
//!
//! Every Postern program reads its configuration through this crate:
//! [`MainCf`] (main.cf plus per-service `-o` overrides, with `$name`
//! expansion and typed accessors), [`MasterCf`] (the service table master
//! runs) and [`PARAMETERS`], the one table of every parameter with its
//! default, kind and documentation, from which `postern config` and
//! docs/configuration.md are generated.
//!
//! Errors are [`ConfigError`]s carrying file, line and reason, so a bad
//! configuration stops start-up with a precise message.
#![forbid(unsafe_code)]

mod error;
mod main_cf;
mod master_cf;
mod params;

pub use error::ConfigError;
pub use main_cf::MainCf;
pub use master_cf::{MasterCf, ServiceEntry, ServiceType, Unpriv};
pub use params::{
    PARAMETERS, ParamDef, ParamKind, TimeUnit, default_hostname, domain_of_hostname, is_param_name,
    param_def, parameter_table_markdown, parse_bool, parse_int, parse_size, parse_time,
    parse_time_in, split_list,
};

#[cfg(test)]
mod shipped_tests;
#[cfg(test)]
mod workspace_tests;
