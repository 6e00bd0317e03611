//! The mail queue: directories, queue IDs, the queue file format, durable writes.
