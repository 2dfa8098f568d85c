// The dashboard's files (server/telemetry/dashboard/ and the chart library, dygraphs, taken from
// Debian's libjs-dygraphs at build time), embedded in the binary: the page works with no network.
#pragma once

#include <cstddef>
#include <string_view>

namespace ligerd::telemetry {

struct DashboardAsset {
  const char* name;  // "index.html", "dygraph.min.js", ...
  const char* mime;
  const char* data;
  size_t size;
};

// nullptr when there is no such file.
const DashboardAsset* FindDashboardAsset(std::string_view name);

}  // namespace ligerd::telemetry
