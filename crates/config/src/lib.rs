//! main.cf and master.cf: parsing, the parameter table, expansion.
