"""The gRPC edge: servicers convert proto <-> domain and call one service function each."""
