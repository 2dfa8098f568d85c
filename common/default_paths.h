// Where ligerd and its clients meet by default: the control socket and the cache directory (the
// NVRTC JIT cache and the tuning DB). This is the one C++ definition: the daemon's flag defaults
// (server/config.cc), ligerctl, and the kernel library when an executor is given no cache
// directory all call it. The Python package implements the same rule in ligerd/_paths.py;
// tests/cpp/default_paths_test.cc pins this one and tests/python/test_paths.py checks the two
// agree by running `ligerctl paths` under several environments.
//
// The rule:
//   socket     $LIGERD_SOCKET
//              else $XDG_RUNTIME_DIR/ligerd/ligerd.sock
//              else /tmp/ligerd-<uid>/ligerd.sock
//   cache dir  $LIGERD_CACHE_DIR
//              else $XDG_CACHE_HOME/ligerd
//              else $HOME/.cache/ligerd
//              else /tmp/ligerd-<uid>/cache
// Clients (ligerctl, the Python package) look for a running daemon along a search path before
// they start a private one (SocketSearchPath):
//   1. $LIGERD_SOCKET when set: that socket only, nothing else is tried;
//   2. the user's own daemon: $XDG_RUNTIME_DIR/ligerd/ligerd.sock, else /tmp/ligerd-<uid>/ligerd.sock
//      (DefaultSocketPath: where a flagless `ligerd` of this user listens);
//   3. the node service: /run/ligerd/ligerd.sock (kNodeSocketPath, deploy/systemd and deploy/k8s).
// The first socket that answers wins; with none, the Python client starts a private daemon.
// A variable counts when it is set and not blank; its value is used without surrounding ASCII
// whitespace and otherwise as given (no ~ expansion: the shell already expands VAR=~/x). XDG_*
// values that are not absolute are ignored, as the XDG Base Directory spec asks. A trailing '/'
// of a directory that a file name is appended to is dropped. `uid` is the effective uid, the
// one the daemon checks its directories' owner against.
//
// It lives in common/ (target ligerd_common) rather than in client/, server/ or kernels/ because
// all three need it and none of them may depend on another for it: common/ depends on nothing of
// ours, and client/, server/ and kernels/ each link it.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace ligerd {

// Reads an environment variable; empty optional when unset. Injected so tests need no setenv.
using EnvLookup = std::function<std::optional<std::string>(const char* name)>;
// The process environment (std::getenv).
EnvLookup ProcessEnv();

// Where the node service listens (deploy/systemd/ligerd-system.service, deploy/k8s).
inline constexpr char kNodeSocketPath[] = "/run/ligerd/ligerd.sock";

std::string DefaultSocketPath(const EnvLookup& env, uid_t uid);
// The sockets a client tries, in order (see above): {$LIGERD_SOCKET} alone when it is set, else
// {DefaultSocketPath, kNodeSocketPath}.
std::vector<std::string> SocketSearchPath(const EnvLookup& env, uid_t uid);
std::string DefaultCacheDir(const EnvLookup& env, uid_t uid);

}  // namespace ligerd
