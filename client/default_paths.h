// Where ligerd and its clients meet by default. One definition for the daemon, ligerctl and the
// C++ client (the Python client mirrors it in ligerd/_daemon.py).
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>

namespace ligerd {

// Reads an environment variable; empty optional when unset. Injected so tests need no setenv.
using EnvLookup = std::function<std::optional<std::string>(const char* name)>;
EnvLookup ProcessEnv();

// $XDG_RUNTIME_DIR/ligerd/ligerd.sock, else /tmp/ligerd-<uid>/ligerd.sock (a private directory
// the daemon checks is its own and 0700 before use).
std::string DefaultSocketPath(const EnvLookup& env, uid_t uid);
// $XDG_CACHE_HOME/ligerd, else $HOME/.cache/ligerd, else /tmp/ligerd-<uid>/cache.
std::string DefaultCacheDir(const EnvLookup& env, uid_t uid);

}  // namespace ligerd
