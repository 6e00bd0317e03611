//! The master process: reads master.cf, owns listening sockets, spawns and supervises services.
