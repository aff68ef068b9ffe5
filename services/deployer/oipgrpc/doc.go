// Package oipgrpc is the Open Inference Protocol v2's gRPC API —
// inference.GRPCInferenceService — generated from KServe's
// grpc_predict_v2.proto (beside it, verbatim; Apache License 2.0,
// LICENSE.kserve) by scripts/generate.sh with the protoc-gen-go and
// protoc-gen-go-grpc that services/deployer/go.mod pins as tools. The
// deployer serves it (--grpc; `gyre up`: 127.0.0.1:8081), and clients in Go
// call it with NewGRPCInferenceServiceClient.
package oipgrpc
