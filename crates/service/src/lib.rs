//! The service skeleton every Postern daemon runs on: sockets from master, logging, privileges, limits.
