//! Typed, length-framed, versioned messages between Postern processes, with descriptor passing.
