"""TF-Serving-compatible REST/gRPC server and clients for exported CoopHash models."""
