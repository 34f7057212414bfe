// One file per subcommand: each has an options struct, a setup_* that registers it with
// CLI11 and a run_* that calls libforky and prints.
#pragma once

#include "context.hpp"

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace forky::cli {

void setup_up(CLI::App& app, Context& ctx);
void setup_ls(CLI::App& app, Context& ctx);
void setup_logs(CLI::App& app, Context& ctx);
void setup_stop(CLI::App& app, Context& ctx);
void setup_rm(CLI::App& app, Context& ctx);
void setup_fork(CLI::App& app, Context& ctx);
void setup_gc(CLI::App& app, Context& ctx);
void setup_tree(CLI::App& app, Context& ctx);
void setup_bench(CLI::App& app, Context& ctx);
void setup_snapshot(CLI::App& app, Context& ctx);
void setup_snapshots(CLI::App& app, Context& ctx);
void setup_revert(CLI::App& app, Context& ctx);
void setup_squash(CLI::App& app, Context& ctx);
void setup_hosts(CLI::App& app, Context& ctx);
void setup_gpus(CLI::App& app, Context& ctx);
void setup_pin(CLI::App& app, Context& ctx); // pin and unpin
void setup_stats(CLI::App& app, Context& ctx);
void setup_pool(CLI::App& app, Context& ctx); // pool, acquire and release
void setup_diff(CLI::App& app, Context& ctx);
void setup_export(CLI::App& app, Context& ctx); // export and import

// On stderr, after a start from a stored fork point (fork VM@SNAP, revert): the guests
// whose clock forky could not set, and what that means.
void print_clock_notes(const std::vector<std::string>& clock_not_set);

// Refuses (UsageError) command `what` asked through forkyd, which does not serve it.
[[noreturn]] void not_served(const char* what, const Context& ctx);

// The environment variable `name`, or `fallback` when it is unset or empty.
const char* env_or(const char* name, const char* fallback);

} // namespace forky::cli
