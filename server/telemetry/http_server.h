// The HTTP side of telemetry, on --metrics_address (GNU libmicrohttpd, Debian's libmicrohttpd-dev;
// civetweb, which prometheus-cpp's own exposer uses, starts its threads with a 100 KiB stack that
// ligerd's thread-local storage does not fit in):
//   /metrics            Prometheus text format
//   /api/v1/snapshot    the same snapshot as JSON (Telemetry.Snapshot's message, protobuf JSON)
//   /api/v1/history     recent samples for the dashboard's charts (telemetry/history.h)
//   /                   the dashboard (telemetry/dashboard/, assets embedded at build time)
// Read-only: nothing served here changes the daemon.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "ligerd/v1/telemetry.pb.h"

struct MHD_Daemon;

namespace ligerd::telemetry {

// host and port from "127.0.0.1:9464", "localhost:0" or "[::1]:9464". INVALID_ARGUMENT naming the
// problem for anything else (a DNS name other than localhost, a port out of range, junk).
struct MetricsAddress {
  std::string host;  // an IP literal ("127.0.0.1", "::1")
  int port = 0;      // 0 = any free port
  bool ipv6 = false;
};
absl::StatusOr<MetricsAddress> ParseMetricsAddress(const std::string& text);

struct HttpHandlers {
  std::function<std::string()> metrics_text;
  std::function<std::string()> snapshot_json;
  std::function<std::string()> history_json;
};

class HttpServer {
 public:
  // Binds and starts serving. INVALID_ARGUMENT when the address cannot be bound (in use, not an
  // address of this machine), with libmicrohttpd's reason.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const MetricsAddress& address, HttpHandlers handlers);
  ~HttpServer();  // stops serving; in-flight requests finish first

  int port() const { return port_; }
  // "http://127.0.0.1:9464"
  std::string url() const;

 private:
  HttpServer() = default;
  MetricsAddress address_;
  HttpHandlers handlers_;
  MHD_Daemon* daemon_ = nullptr;
  int port_ = 0;
};

}  // namespace ligerd::telemetry
