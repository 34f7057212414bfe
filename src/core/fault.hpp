// Test seam: FORKY_FAULT=<step>[:<n>] makes the step fail (n: only for the n-th child,
// 1-based) and FORKY_FAULT_SLEEP=<step>[:<n>] makes forky sleep there, so tests can kill
// it, interrupt it or act behind its back mid-way. The sleep lasts FORKY_FAULT_SLEEP_S
// seconds (default 60) and ends early, interrupted, when `cancel` is requested.
// Steps of a fork: lock, memory-volume, parent-overlay, snapshot, parent-metadata,
// child-overlay, child-console, header, restore, define, commit.
// Steps of an up: up-volumes, up-define, up-start.
#pragma once

#include "cancel.hpp"

namespace forky {

void fault_point(const char* step, unsigned index = 0, const CancelToken& cancel = {});

} // namespace forky
