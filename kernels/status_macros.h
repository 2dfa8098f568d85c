// Small helpers for errors-as-values code (abseil ships no RETURN_IF_ERROR macros).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LIGERD_STATUS_CONCAT_INNER_(a, b) a##b
#define LIGERD_STATUS_CONCAT_(a, b) LIGERD_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define LIGERD_RETURN_IF_ERROR(expr)                      \
  do {                                                    \
    ::absl::Status ligerd_status_ = (expr);               \
    if (!ligerd_status_.ok()) return ligerd_status_;      \
  } while (0)

// `lhs = value of expr` (an absl::StatusOr<T>), or returns its status.
#define LIGERD_ASSIGN_OR_RETURN(lhs, expr) \
  LIGERD_ASSIGN_OR_RETURN_IMPL_(LIGERD_STATUS_CONCAT_(ligerd_statusor_, __LINE__), lhs, expr)
#define LIGERD_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return std::move(tmp).status();      \
  lhs = std::move(tmp).value()
