// Test helper: a separate client process that opens a session on device 0, prints
// "<session id> <ring name>" on stdout, then waits to be killed. The session tests SIGKILL it to
// check that the daemon tears the session down and keeps serving others.
#include <unistd.h>

#include <cstdio>

#include "client/control_client.h"
#include "ligerd/v1/sessions.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: session_client SOCKET\n");
    return 2;
  }
  ligerd::ControlClient client(argv[1]);
  auto stub = ligerd::v1::Sessions::NewStub(client.channel());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  ligerd::v1::OpenSessionRequest request;
  request.set_protocol_version(2);
  request.set_client_pid(getpid());
  request.set_device(0);
  request.set_client_name("session_client_main");
  ligerd::v1::OpenSessionResponse response;
  grpc::Status status = stub->OpenSession(&context, request, &response);
  if (!status.ok()) {
    std::fprintf(stderr, "OpenSession: %s\n", status.error_message().c_str());
    return 1;
  }
  std::printf("%llu %s\n", static_cast<unsigned long long>(response.session_id()), response.ring_name().c_str());
  std::fflush(stdout);
  pause();
  return 0;
}
