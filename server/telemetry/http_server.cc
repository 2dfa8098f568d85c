#include "server/telemetry/http_server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdarg>
#include <cstdio>


#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/telemetry/dashboard_assets.h"

namespace ligerd::telemetry {

absl::StatusOr<MetricsAddress> ParseMetricsAddress(const std::string& text) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("--metrics_address='", text, "': ", why,
                                                   " (expected HOST:PORT with an IP address or localhost, "
                                                   "e.g. 127.0.0.1:9464, [::1]:9464; or 'off')"));
  };
  MetricsAddress out;
  std::string host;
  std::string port;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') return bad("bad [IPv6]:PORT");
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    out.ipv6 = true;
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0) return bad("no HOST:PORT");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string::npos) return bad("an IPv6 address must be in brackets");
  }
  if (host == "localhost") host = "127.0.0.1";
  unsigned char buf[sizeof(in6_addr)];
  if (inet_pton(out.ipv6 ? AF_INET6 : AF_INET, host.c_str(), buf) != 1) {
    return bad(absl::StrCat("'", host, "' is not an IP address"));
  }
  int value = -1;
  if (port.empty() || !absl::SimpleAtoi(port, &value) || value < 0 || value > 65535) {
    return bad(absl::StrCat("'", port, "' is not a port (0-65535)"));
  }
  out.host = host;
  out.port = value;
  return out;
}

namespace {

MHD_Result Send(MHD_Connection* conn, unsigned status, const char* mime, const std::string& body) {
  MHD_Response* response = MHD_create_response_from_buffer(body.size(), const_cast<char*>(body.data()),
                                                           MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;
  MHD_add_response_header(response, "Content-Type", mime);
  MHD_add_response_header(response, "Cache-Control", "no-store");
  MHD_add_response_header(response, "X-Content-Type-Options", "nosniff");
  const MHD_Result r = MHD_queue_response(conn, status, response);
  MHD_destroy_response(response);
  return r;
}

MHD_Result Handle(void* cls, MHD_Connection* conn, const char* url, const char* method, const char*,
                  const char*, size_t* upload_size, void**) {
  const HttpHandlers& h = *static_cast<const HttpHandlers*>(cls);
  const std::string m = method != nullptr ? method : "";
  if (m != "GET" && m != "HEAD") return Send(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
  if (*upload_size != 0) return MHD_NO;  // a GET with a body: not ours to read
  const std::string uri = url != nullptr ? url : "/";
  if (uri == "/metrics") return Send(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", h.metrics_text());
  if (uri == "/api/v1/snapshot") return Send(conn, MHD_HTTP_OK, "application/json", h.snapshot_json());
  if (uri == "/api/v1/history") return Send(conn, MHD_HTTP_OK, "application/json", h.history_json());
  const std::string path = uri == "/" ? "/index.html" : uri;
  if (const DashboardAsset* asset = FindDashboardAsset(std::string_view(path).substr(1)); asset != nullptr) {
    return Send(conn, MHD_HTTP_OK, asset->mime, std::string(asset->data, asset->size));
  }
  return Send(conn, MHD_HTTP_NOT_FOUND, "text/plain", "not found: see /metrics, or / for the dashboard\n");
}

// libmicrohttpd's error lines, kept for the error Start returns.
void Collect(void* cls, const char* format, va_list args) {
  char line[256];
  std::vsnprintf(line, sizeof(line), format, args);
  std::string& out = *static_cast<std::string*>(cls);
  if (out.size() < 1024) out += line;
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const MetricsAddress& address, HttpHandlers handlers) {
  std::unique_ptr<HttpServer> server(new HttpServer());
  server->address_ = address;
  server->handlers_ = std::move(handlers);
  sockaddr_storage addr{};
  if (address.ipv6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(address.port));
    inet_pton(AF_INET6, address.host.c_str(), &a->sin6_addr);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&addr);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(address.port));
    inet_pton(AF_INET, address.host.c_str(), &a->sin_addr);
  }
  std::string errors;
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
  if (address.ipv6) flags |= MHD_USE_IPv6;
  server->daemon_ = MHD_start_daemon(
      flags, static_cast<uint16_t>(address.port), nullptr, nullptr, &Handle, &server->handlers_,
      MHD_OPTION_SOCK_ADDR, reinterpret_cast<sockaddr*>(&addr),
      MHD_OPTION_THREAD_POOL_SIZE, 2u,           // a few scrapers and dashboards at once
      MHD_OPTION_CONNECTION_TIMEOUT, 10u,        // seconds an idle connection is kept
      MHD_OPTION_CONNECTION_LIMIT, 64u,
      MHD_OPTION_EXTERNAL_LOGGER, &Collect, &errors,
      MHD_OPTION_END);
  const std::string where = address.ipv6 ? absl::StrCat("[", address.host, "]:", address.port)
                                         : absl::StrCat(address.host, ":", address.port);
  if (server->daemon_ == nullptr) {
    while (!errors.empty() && (errors.back() == '\n' || errors.back() == ' ')) errors.pop_back();
    return absl::InvalidArgumentError(absl::StrCat("--metrics_address=", where, ": cannot serve there: ",
                                                   errors.empty() ? "the HTTP server failed to start" : errors));
  }
  const MHD_DaemonInfo* info = MHD_get_daemon_info(server->daemon_, MHD_DAEMON_INFO_BIND_PORT);
  server->port_ = info != nullptr ? info->port : address.port;
  return server;
}

HttpServer::~HttpServer() {
  if (daemon_ != nullptr) MHD_stop_daemon(daemon_);
}

std::string HttpServer::url() const {
  return address_.ipv6 ? absl::StrCat("http://[", address_.host, "]:", port_)
                       : absl::StrCat("http://", address_.host, ":", port_);
}

}  // namespace ligerd::telemetry
