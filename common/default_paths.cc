#include "common/default_paths.h"

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace ligerd {

EnvLookup ProcessEnv() {
  return [](const char* name) -> std::optional<std::string> {
    const char* value = std::getenv(name);
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

namespace {

// The variable's value without surrounding whitespace; nullopt when unset or blank.
std::optional<std::string> Get(const EnvLookup& env, const char* name) {
  std::optional<std::string> value = env(name);
  if (!value) return std::nullopt;
  std::string stripped(absl::StripAsciiWhitespace(*value));
  if (stripped.empty()) return std::nullopt;
  return stripped;
}

// An XDG base directory: ignored unless absolute (XDG Base Directory spec).
std::optional<std::string> GetXdg(const EnvLookup& env, const char* name) {
  std::optional<std::string> value = Get(env, name);
  if (!value || value->front() != '/') return std::nullopt;
  return value;
}

// dir + "/" + rest, without doubling a trailing '/' of dir.
std::string Join(absl::string_view dir, absl::string_view rest) {
  while (!dir.empty() && dir.back() == '/') dir.remove_suffix(1);
  return absl::StrCat(dir, "/", rest);
}

std::string PrivateTmpDir(uid_t uid) { return absl::StrCat("/tmp/ligerd-", uid); }

}  // namespace

std::string DefaultSocketPath(const EnvLookup& env, uid_t uid) {
  if (auto explicit_path = Get(env, "LIGERD_SOCKET")) return *explicit_path;
  if (auto runtime = GetXdg(env, "XDG_RUNTIME_DIR")) return Join(*runtime, "ligerd/ligerd.sock");
  return Join(PrivateTmpDir(uid), "ligerd.sock");
}

std::vector<std::string> SocketSearchPath(const EnvLookup& env, uid_t uid) {
  if (auto explicit_path = Get(env, "LIGERD_SOCKET")) return {*explicit_path};
  std::vector<std::string> out = {DefaultSocketPath(env, uid)};
  if (out.front() != kNodeSocketPath) out.push_back(kNodeSocketPath);
  return out;
}

std::string DefaultCacheDir(const EnvLookup& env, uid_t uid) {
  if (auto explicit_dir = Get(env, "LIGERD_CACHE_DIR")) return *explicit_dir;
  if (auto cache = GetXdg(env, "XDG_CACHE_HOME")) return Join(*cache, "ligerd");
  if (auto home = Get(env, "HOME")) return Join(*home, ".cache/ligerd");
  return Join(PrivateTmpDir(uid), "cache");
}

}  // namespace ligerd
