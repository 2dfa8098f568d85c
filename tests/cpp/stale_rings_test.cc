// Rings of a dead daemon in /dev/shm are removed at start; nothing else is (issue 17). Runs
// against a private directory laid out as /dev/shm is (shm_open names are files there).
#include "server/dataplane/stale_rings.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/cpp/test_util.h"

namespace ligerd::dataplane {
namespace {

// A pid that existed and is gone now (a reaped child); the kernel does not reuse it this soon.
pid_t DeadPid() {
  pid_t pid = fork();
  if (pid == 0) _exit(0);
  int status = 0;
  waitpid(pid, &status, 0);
  return pid;
}

std::string Random32() { return "0123456789abcdef0123456789abcdef"; }

void Touch(const std::filesystem::path& p) { std::ofstream(p) << "ring"; }

TEST(StaleRings, OnlyOurRingsOfDeadDaemonsAreRemoved) {
  testing::TempDir tmp;
  const std::filesystem::path dir = tmp.path();
  const uid_t me = geteuid();
  const pid_t dead = DeadPid();
  const pid_t dead_but_locked = DeadPid();  // a daemon in another pid namespace with this number
  const auto ring = [&](pid_t pid) { return dir / absl::StrCat("ligerd-", me, "-", pid, "-", Random32()); };

  Touch(ring(dead));
  Touch(dir / absl::StrCat("ligerd-", me, "-", dead, ".alive"));  // its marker, unlocked now
  Touch(ring(getpid()));                                          // ours: alive
  Touch(ring(1));                                                 // init: alive
  Touch(ring(dead_but_locked));
  const auto locked_marker = dir / absl::StrCat("ligerd-", me, "-", dead_but_locked, ".alive");
  Touch(locked_marker);
  UniqueFd held(open(locked_marker.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_EQ(flock(held.get(), LOCK_EX | LOCK_NB), 0);
  // Not ours: another uid in the name, a name that is not a ring's, a symlink with our name.
  Touch(dir / absl::StrCat("ligerd-", me + 1, "-", dead, "-", Random32()));
  Touch(dir / absl::StrCat("ligerd-", me, "-", dead, "-short"));
  Touch(dir / absl::StrCat("other-", me, "-", dead, "-", Random32()));
  const auto target = dir / "target";
  Touch(target);
  const auto link = dir / absl::StrCat("ligerd-", me, "-", DeadPid(), "-", Random32());
  ASSERT_EQ(symlink(target.c_str(), link.c_str()), 0);
  std::filesystem::path foreign;
  if (me == 0) {  // a regular file with our name but another owner
    foreign = dir / absl::StrCat("ligerd-", me, "-", DeadPid(), "-", Random32());
    Touch(foreign);
    ASSERT_EQ(chown(foreign.c_str(), testing::kNobodyUid, testing::kNogroupGid), 0);
  }

  const StaleRingReport report = RemoveStaleRings(dir);
  EXPECT_EQ(report.removed, 2u) << "the dead daemon's ring and marker";
  EXPECT_FALSE(std::filesystem::exists(ring(dead)));
  EXPECT_FALSE(std::filesystem::exists(dir / absl::StrCat("ligerd-", me, "-", dead, ".alive")));
  EXPECT_TRUE(std::filesystem::exists(ring(getpid())));
  EXPECT_TRUE(std::filesystem::exists(ring(1)));
  EXPECT_TRUE(std::filesystem::exists(ring(dead_but_locked)));
  EXPECT_TRUE(std::filesystem::exists(locked_marker));
  EXPECT_TRUE(std::filesystem::exists(dir / absl::StrCat("ligerd-", me + 1, "-", dead, "-", Random32())));
  EXPECT_TRUE(std::filesystem::exists(dir / absl::StrCat("ligerd-", me, "-", dead, "-short")));
  EXPECT_TRUE(std::filesystem::exists(dir / absl::StrCat("other-", me, "-", dead, "-", Random32())));
  EXPECT_TRUE(std::filesystem::is_symlink(link));
  EXPECT_TRUE(std::filesystem::exists(target));
  if (!foreign.empty()) EXPECT_TRUE(std::filesystem::exists(foreign));
  EXPECT_EQ(report.kept_alive, 4u) << "ours, init's, the locked one and its marker";

  held.reset();  // that daemon is gone too now
  EXPECT_EQ(RemoveStaleRings(dir).removed, 2u);
  EXPECT_FALSE(std::filesystem::exists(ring(dead_but_locked)));
}

TEST(StaleRings, MarkerIsLockedWhileHeldAndRemovedAfter) {
  testing::TempDir tmp;
  const std::filesystem::path dir = tmp.path();
  const auto path = dir / absl::StrCat("ligerd-", geteuid(), "-", getpid(), ".alive");
  {
    auto marker = LivenessMarker::Acquire(dir);
    ASSERT_TRUE(marker.ok()) << marker.status();
    UniqueFd probe(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(probe);
    EXPECT_NE(flock(probe.get(), LOCK_EX | LOCK_NB), 0) << "the marker must be locked while held";
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

// A real daemon killed with SIGKILL leaves its marker and rings; the next one removes them.
TEST(StaleRings, KilledProcessRingsAreRemovedByTheNextScan) {
  testing::TempDir tmp;
  const std::filesystem::path dir = tmp.path();
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t pid = fork();
  if (pid == 0) {
    auto marker = LivenessMarker::Acquire(dir);
    if (!marker.ok()) _exit(1);
    Touch(dir / absl::StrCat("ligerd-", geteuid(), "-", getpid(), "-", Random32()));
    (void)!write(ready[1], "x", 1);
    pause();
    _exit(0);
  }
  char c;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  EXPECT_EQ(RemoveStaleRings(dir).removed, 0u) << "alive: nothing to remove";
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_EQ(RemoveStaleRings(dir).removed, 2u) << "its ring and its marker";
  close(ready[0]);
  close(ready[1]);
}

}  // namespace
}  // namespace ligerd::dataplane
