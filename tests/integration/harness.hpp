// The integration harness: a private libvirtd (scripts/private-libvirtd) for the whole
// test process, torn down at exit and by a watchdog should the process die; helpers
// to run the forky binary and other commands.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace forky::it {

struct CommandResult {
    int rc = -1;
    std::string out;
    std::string err;
    std::string all() const { return out + err; }
};

using Env = std::vector<std::string>; // extra "NAME=value" entries

// Runs argv (argv[0] looked up in PATH), capturing stdout and stderr.
CommandResult run(const std::vector<std::string>& argv, const Env& env = {});

// While a fleet test runs: forky is run through `prefix` (a network namespace's exec)
// with `args` first (--hosts FILE), and a VM's console is typed on through the URI
// `console_uri` gives for it. Reset to the default when the object goes.
struct ForkyWrapper {
    std::vector<std::string> prefix;
    std::vector<std::string> args;
    std::function<std::string(const std::string& vm)> console_uri;
};
class UsingWrapper {
public:
    explicit UsingWrapper(ForkyWrapper w);
    ~UsingWrapper();
};

// Runs the forky binary under test with the private libvirtd's URI and pool dir.
CommandResult run_forky(const std::vector<std::string>& args, const Env& env = {});

// The forky binary in the background; finish() waits for it and collects its output.
struct Background {
    int pid = -1;
    std::string out_file;
    std::string err_file;
};
Background start_forky(const std::vector<std::string>& args, const Env& env = {});
// Any command in the background (argv[0] looked up in PATH).
Background start_command(const std::vector<std::string>& argv, const Env& env = {});
// Waits for it; after `timeout` it is killed (SIGKILL) and the result says so (rc 137).
CommandResult finish(Background& bg, std::chrono::seconds timeout = std::chrono::seconds(600));

const std::string& libvirt_uri();
const std::filesystem::path& pool_dir(); // the pool's directory on this machine
const std::filesystem::path& test_dir(); // scratch space for this test process
std::filesystem::path source_dir();      // the repository

// Polls `forky logs VM` until `pattern` (ECMAScript regex) matches; returns the whole
// log. Fails the test (and returns "") after `timeout`.
std::string wait_for_console(const std::string& vm, const std::string& pattern,
                             std::chrono::seconds timeout = std::chrono::seconds(90));

std::string sha256_of(const std::filesystem::path& file);

// Types `text` on the VM's serial console (where the test guest runs a shell), through
// libvirt's console stream.
void type_on_console(const std::string& vm, const std::string& text);

// Runs `command` in the guest's shell and returns what it printed on one line (the
// output must be letters, digits, '-', '_' or '.'). Fails the test on a timeout.
std::string guest_eval(const std::string& vm, const std::string& command);

// The token of the guest's boot, waiting for it.
std::string boot_token(const std::string& vm);

// The last FORKY-TICK counter the VM printed, 0 if none yet.
unsigned long last_counter(const std::string& vm);

// A FORKY-TICK line of the test guest: its boot's token and its counter.
struct Tick {
    std::string token;
    unsigned long counter = 0;
};
// The first FORKY-TICK the VM printed after `after` bytes of its console, waiting for it.
Tick first_tick(const std::string& vm, std::size_t after = 0);

// How many children warm pool `pool` holds ready (forky pool ls --json; 0 when absent).
std::size_t pool_ready(const std::string& pool);

// `forky up` of the tiny test guest under `name`, waiting for its first tick.
void up_tiny(const std::string& name);

// Whether `v` holds `x`.
bool has(const std::vector<std::string>& v, const std::string& x);

// The non-empty lines of `text`.
std::vector<std::string> lines(const std::string& text);

// `forky rm --force` of each VM, last first (children before their parents).
void remove_all(const std::vector<std::string>& vms);

// The whole content of a file ("" when absent).
std::string slurp_file(const std::filesystem::path& file);

// Waits (up to `timeout`) until `done` holds; false when it never did.
bool eventually(const std::function<bool()>& done,
                std::chrono::milliseconds timeout = std::chrono::seconds(60));

// Drops every libvirt connection process `pid` has to the private libvirtd, as
// `virt-admin client-disconnect` does (a libvirtd restart looks the same to a client).
// Returns how many were dropped.
int disconnect_clients_of(int pid);

// Runs a command inside the private libvirtd's mount namespace (where QEMU sees files).
CommandResult run_in_daemon_ns(std::vector<std::string> argv);

// Stops the private libvirtd (SIGTERM; its QEMUs run on) and starts it again in its mount
// namespace, as a libvirtd restart on a host does; returns once it answers.
void restart_libvirtd();

std::vector<std::string> domain_names();            // virsh list --all --name
std::vector<std::string> pool_files();              // what is in the pool directory
std::string domain_state_of(const std::string& vm); // virsh domstate
std::string disk_of(const std::string& vm);         // vda's source file

// Whether `part` occurs in `text`.
bool contains(const std::string& text, const std::string& part);

// virsh -q against the test's libvirtd.
CommandResult virsh(std::vector<std::string> args);

} // namespace forky::it
