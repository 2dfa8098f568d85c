#include <nvrtc.h>

#include "absl/strings/str_cat.h"
#include "server/build_info.h"

namespace ligerd {

std::string NvrtcVersionString() {
  int major = 0, minor = 0;
  if (nvrtcVersion(&major, &minor) != NVRTC_SUCCESS) return "";
  return absl::StrCat(major, ".", minor);
}

}  // namespace ligerd
