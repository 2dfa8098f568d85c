// Unary RPCs served from raw bytes, so that a request that does not parse is answered
// INVALID_ARGUMENT naming the method (gRPC's generated handlers answer INTERNAL), and so that
// every handler returns an absl::Status whose code maps 1:1 to gRPC's.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/proto_utils.h>

#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace ligerd {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  // absl::StatusCode and grpc::StatusCode share their numbering by design.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// handler: absl::Status(const Request&, Response*).
template <typename Request, typename Response, typename Handler>
grpc::ServerUnaryReactor* ServeRawUnary(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request_bytes,
                                        grpc::ByteBuffer* response_bytes, absl::string_view method,
                                        Handler&& handler) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Request request;
  grpc::ByteBuffer copy(*request_bytes);  // Deserialize consumes its buffer; the copy is a refcount
  if (!grpc::SerializationTraits<Request>::Deserialize(&copy, &request).ok()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 absl::StrCat(method, ": the request is not a valid ",
                                              Request::descriptor()->full_name(), " message")));
    return reactor;
  }
  Response response;
  const absl::Status status = std::forward<Handler>(handler)(request, &response);
  if (!status.ok()) {
    reactor->Finish(ToGrpcStatus(status));
    return reactor;
  }
  bool own_buffer = false;
  reactor->Finish(grpc::SerializationTraits<Response>::Serialize(response, response_bytes, &own_buffer));
  return reactor;
}

}  // namespace ligerd
