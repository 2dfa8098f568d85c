#include "client/default_paths.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace ligerd {

EnvLookup ProcessEnv() {
  return [](const char* name) -> std::optional<std::string> {
    const char* value = std::getenv(name);
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

namespace {
std::optional<std::string> NonEmpty(const EnvLookup& env, const char* name) {
  auto value = env(name);
  if (value && !value->empty()) return value;
  return std::nullopt;
}
}  // namespace

std::string DefaultSocketPath(const EnvLookup& env, uid_t uid) {
  if (auto runtime = NonEmpty(env, "XDG_RUNTIME_DIR")) return absl::StrCat(*runtime, "/ligerd/ligerd.sock");
  return absl::StrCat("/tmp/ligerd-", uid, "/ligerd.sock");
}

std::string DefaultCacheDir(const EnvLookup& env, uid_t uid) {
  if (auto cache = NonEmpty(env, "XDG_CACHE_HOME")) return absl::StrCat(*cache, "/ligerd");
  if (auto home = NonEmpty(env, "HOME")) return absl::StrCat(*home, "/.cache/ligerd");
  return absl::StrCat("/tmp/ligerd-", uid, "/cache");
}

}  // namespace ligerd
