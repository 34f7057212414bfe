// Between forky.v1's messages and libforky's results, both ways: forkyd fills responses
// from what the core returned, and the CLI (--server) turns them back into the same
// structures, so one printer serves both paths and their output cannot drift.
#pragma once

#include "forky/v1/forky.pb.h"

#include "errors.hpp"
#include "fork.hpp"
#include "gc.hpp"
#include "gpus.hpp"
#include "hosts.hpp"
#include "ksm.hpp"
#include "tree.hpp"
#include "vm.hpp"
#include "warm_pool.hpp"

#include <string>

namespace forky::api {

namespace v1 = forky::v1;

// The trailing metadata key carrying the CLI's exit code with every answer.
inline constexpr const char* exit_code_key = "forky-exit-code";
// ... and each warning the core said during the call, as forky's stderr shows it (a binary
// key: any bytes may travel).
inline constexpr const char* warning_key = "forky-warning-bin";

// Throws the forky error whose exit code is `code` (NotFoundError for 4, ...), with
// `message`: what the CLI would have thrown on its own.
[[noreturn]] void throw_error(int code, const std::string& message);

void fill(v1::Vm& out, const VmInfo& vm, const std::string& host);
VmInfo vm_from(const v1::Vm& in);

void fill(v1::ForkResponse& out, const ForkResult& r);
ForkResult fork_from(const v1::ForkResponse& in);

void fill(v1::TreeResponse& out, const LineageTree& t);
LineageTree tree_from(const v1::TreeResponse& in);

void fill(v1::GcResponse& out, const GcResult& r);
GcResult gc_from(const v1::GcResponse& in);

void fill(v1::Host& out, const HostReport& r);
HostReport host_from(const v1::Host& in);

void fill(v1::GpusResponse& out, const GpuInventory& inv);
GpuInventory gpus_from(const v1::GpusResponse& in);

void fill(v1::StatsResponse& out, const MemoryStats& s);
MemoryStats stats_from(const v1::StatsResponse& in);

void fill(v1::WarmPool& out, const WarmPool& p);
WarmPool warm_pool_from(const v1::WarmPool& in);
void fill(v1::PoolRefillResponse& out, const RefillResult& r);
RefillResult refill_from(const v1::PoolRefillResponse& in);
void fill(v1::PoolView& out, const WarmPoolView& v);
WarmPoolView pool_view_from(const v1::PoolView& in);
void fill(v1::AcquireResponse& out, const Acquired& a);
Acquired acquired_from(const v1::AcquireResponse& in);

} // namespace forky::api
