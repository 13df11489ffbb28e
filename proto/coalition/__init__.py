"""Coalition gRPC contract: generated code for the coalition.v1 protos lives in coalition.v1."""
