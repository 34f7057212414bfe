// One file per subcommand: each has an options struct, a setup_* that registers it with
// CLI11 and a run_* that calls libforky and prints.
#pragma once

#include "context.hpp"

#include <CLI/CLI.hpp>

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

} // namespace forky::cli
