// Running a helper program on this machine (qemu-img for what libvirt cannot tell about a
// file outside any pool). argv is passed as is, never through a shell.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace forky {

struct ProcessResult {
    int rc = -1; // exit status; 128 + signal when killed
    std::string out;
    std::string err;
};

// Runs argv[0] (looked up in PATH) with stdin from /dev/null; kills it after `timeout`.
// Throws Error when it cannot be started.
ProcessResult run_process(const std::vector<std::string>& argv,
                          std::chrono::milliseconds timeout = std::chrono::seconds(60));

} // namespace forky
