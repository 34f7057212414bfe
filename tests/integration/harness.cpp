#include "harness.hpp"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

extern char** environ;

namespace fs = std::filesystem;

namespace forky::it {

namespace {

std::string g_uri;
fs::path g_dir;
fs::path g_pool_dir;

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

class PrivateLibvirtd : public ::testing::Environment {
public:
    void SetUp() override {
        if (::geteuid() != 0)
            FAIL() << "integration tests start a libvirtd and QEMU: run them as root";
        for (const char* f : {"vmlinuz", "initrd.img", "data.qcow2"})
            ASSERT_TRUE(fs::exists(source_dir() / "domains/images" / f))
                << "the test guest is missing; run scripts/build-test-guest";
        char tmpl[] = "/tmp/forky-it-XXXXXX"; // short: a unix socket path lives here
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        g_dir = tmpl;
        g_pool_dir = g_dir / "pool";
        CommandResult r =
            run({(source_dir() / "scripts/private-libvirtd").string(), "start",
                 (g_dir / "libvirt").string(), "--watch", std::to_string(::getpid())});
        ASSERT_EQ(r.rc, 0) << "private libvirtd did not start: " << r.all();
        g_uri = r.out.substr(0, r.out.find('\n'));
        ::setenv("FORKY_URI", g_uri.c_str(), 1);
        ::setenv("FORKY_POOL", "forky-it", 1);
        ::setenv("FORKY_POOL_DIR", g_pool_dir.c_str(), 1);
        ::unsetenv("LIBVIRT_DEFAULT_URI");
        std::cerr << "[harness] private libvirtd at " << g_uri << '\n';
    }
    void TearDown() override {
        if (g_dir.empty())
            return;
        CommandResult r = run({(source_dir() / "scripts/private-libvirtd").string(), "stop",
                               (g_dir / "libvirt").string()});
        EXPECT_EQ(r.rc, 0) << r.all();
        if (!std::getenv("FORKY_KEEP_TEST_DIR"))
            fs::remove_all(g_dir);
    }
};

} // namespace

fs::path source_dir() {
    return FORKY_SOURCE_DIR;
}
const std::string& libvirt_uri() {
    return g_uri;
}
const fs::path& pool_dir() {
    return g_pool_dir;
}
const fs::path& test_dir() {
    return g_dir;
}

CommandResult run(const std::vector<std::string>& argv) {
    static int counter = 0;
    fs::path base = (g_dir.empty() ? fs::temp_directory_path() : g_dir) /
                    ("cmd-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::string out_file = base.string() + ".out";
    std::string err_file = base.string() + ".err";
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0600);
    posix_spawn_file_actions_addopen(&actions, 2, err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0600);
    std::vector<char*> args;
    for (const auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = 0;
    CommandResult result;
    int spawned = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (spawned != 0) {
        result.err = "cannot run '" + argv[0] + "'";
        return result;
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    result.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    result.out = slurp(out_file);
    result.err = slurp(err_file);
    fs::remove(out_file);
    fs::remove(err_file);
    return result;
}

CommandResult run_forky(const std::vector<std::string>& args) {
    std::vector<std::string> argv{FORKY_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
}

std::string wait_for_console(const std::string& vm, const std::string& pattern,
                             std::chrono::seconds timeout) {
    std::regex re(pattern);
    auto deadline = std::chrono::steady_clock::now() + timeout;
    CommandResult r;
    while (std::chrono::steady_clock::now() < deadline) {
        r = run_forky({"logs", vm});
        if (r.rc == 0 && std::regex_search(r.out, re))
            return r.out;
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    ADD_FAILURE() << "console of '" << vm << "' never matched /" << pattern << "/ within "
                  << timeout.count() << " s; rc=" << r.rc << "\n--- console ---\n"
                  << r.out.substr(r.out.size() > 3000 ? r.out.size() - 3000 : 0) << r.err;
    return "";
}

std::string sha256_of(const fs::path& file) {
    CommandResult r = run({"sha256sum", file.string()});
    return r.rc == 0 ? r.out.substr(0, 64) : "";
}

} // namespace forky::it

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    ::testing::AddGlobalTestEnvironment(new forky::it::PrivateLibvirtd);
    return RUN_ALL_TESTS();
}
