// The daemon's cache directory (NVRTC JIT cache + tuning DB) at start.
//
// Without --socket_group it is private: created 0700, and an existing one of ours is made 0700
// again. With --socket_group the node's jobs share it read-only: the directory and tuning/ are
// made group <socket group>, mode 02750 (setgid: entries written later inherit the group), and
// the entries already in them 0640 (JitCache and TuningDb write 0640 files in a group-readable
// directory), so that a job of another user in that group can load the node's kernels and tuned
// configs without being able to change them (kernels/jit/cache_entry.h, OpenCacheDirectory).
// A directory this user cannot write (a read-only mount of a precompiled cache, root's) is
// accepted as it is: read-only, logged, nothing changed.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/jit/cache_entry.h"

namespace ligerd {

absl::StatusOr<kernels::CacheDirAccess> PrepareCacheDir(const std::string& dir, std::optional<gid_t> group);

}  // namespace ligerd
