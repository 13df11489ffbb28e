"""Pure domain code: no gRPC, no SQL, no HTTP. Unit-tested without I/O."""
