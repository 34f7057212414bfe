// The integration harness: a private libvirtd (scripts/private-libvirtd) for the whole
// test process, torn down at exit and by a watchdog should the process die; helpers
// to run the forky binary and other commands.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace forky::it {

struct CommandResult {
    int rc = -1;
    std::string out;
    std::string err;
    std::string all() const { return out + err; }
};

// Runs argv (argv[0] looked up in PATH), capturing stdout and stderr.
CommandResult run(const std::vector<std::string>& argv);

// Runs the forky binary under test with the private libvirtd's URI and pool dir.
CommandResult run_forky(const std::vector<std::string>& args);

const std::string& libvirt_uri();
const std::filesystem::path& pool_dir(); // the pool's directory on this machine
const std::filesystem::path& test_dir(); // scratch space for this test process
std::filesystem::path source_dir();      // the repository

// Polls `forky logs VM` until `pattern` (ECMAScript regex) matches; returns the whole
// log. Fails the test (and returns "") after `timeout`.
std::string wait_for_console(const std::string& vm, const std::string& pattern,
                             std::chrono::seconds timeout = std::chrono::seconds(90));

std::string sha256_of(const std::filesystem::path& file);

} // namespace forky::it
