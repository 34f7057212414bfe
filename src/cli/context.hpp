// What every subcommand shares: the global options and a lazily opened Host.
#pragma once

#include "host.hpp"

#include <optional>
#include <string>

namespace forky::cli {

struct GlobalOptions {
    std::string uri; // --connect, else $FORKY_URI, else qemu:///system
    std::string pool = default_pool;
    std::string pool_dir = default_pool_dir;
    int verbosity = 0;
};

class Context {
public:
    GlobalOptions options;
    Host& host(); // connects on first use

private:
    std::optional<Host> host_;
};

} // namespace forky::cli
