//! cleanup: canonicalizes headers and writes queue files durably.
