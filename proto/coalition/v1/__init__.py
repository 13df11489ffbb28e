"""Generated from proto/coalition/v1/*.proto by scripts/gen_proto.py. Do not edit."""
