#include "harness.hpp"

#include <gtest/gtest.h>
#include <libvirt/libvirt.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
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
        // forky's pool, as the first `forky up` would make it: every test finds it there.
        CommandResult pool = run_forky({"--create-pool", "gc"});
        ASSERT_EQ(pool.rc, 0) << "could not create forky's pool: " << pool.all();
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

namespace {

Background spawn(const std::vector<std::string>& argv, const Env& env) {
    static int counter = 0;
    fs::path base = (g_dir.empty() ? fs::temp_directory_path() : g_dir) /
                    ("cmd-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    Background bg;
    bg.out_file = base.string() + ".out";
    bg.err_file = base.string() + ".err";
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, bg.out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0600);
    posix_spawn_file_actions_addopen(&actions, 2, bg.err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0600);
    std::vector<char*> args;
    for (const auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    std::vector<char*> envp;
    for (char** e = environ; *e != nullptr; ++e)
        envp.push_back(*e);
    for (const auto& e : env)
        envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    pid_t pid = 0;
    if (posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), envp.data()) == 0)
        bg.pid = pid;
    posix_spawn_file_actions_destroy(&actions);
    return bg;
}

} // namespace

CommandResult finish(Background& bg, std::chrono::seconds timeout) {
    CommandResult result;
    if (bg.pid < 0) {
        result.err = "could not start the command";
        return result;
    }
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        pid_t done = ::waitpid(bg.pid, &status, WNOHANG);
        if (done == bg.pid || (done < 0 && errno != EINTR))
            break;
        if (std::chrono::steady_clock::now() >= deadline) {
            ::kill(bg.pid, SIGKILL);
            ::waitpid(bg.pid, &status, 0);
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    bg.pid = -1;
    result.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    result.out = slurp(bg.out_file);
    result.err = slurp(bg.err_file);
    fs::remove(bg.out_file);
    fs::remove(bg.err_file);
    return result;
}

CommandResult run(const std::vector<std::string>& argv, const Env& env) {
    Background bg = spawn(argv, env);
    return finish(bg);
}

namespace {
ForkyWrapper g_wrapper;
} // namespace

UsingWrapper::UsingWrapper(ForkyWrapper w) {
    g_wrapper = std::move(w);
}

UsingWrapper::~UsingWrapper() {
    g_wrapper = {};
}

Background start_forky(const std::vector<std::string>& args, const Env& env) {
    std::vector<std::string> argv = g_wrapper.prefix;
    argv.push_back(FORKY_BINARY);
    argv.insert(argv.end(), g_wrapper.args.begin(), g_wrapper.args.end());
    argv.insert(argv.end(), args.begin(), args.end());
    return spawn(argv, env);
}

Background start_command(const std::vector<std::string>& argv, const Env& env) {
    return spawn(argv, env);
}

CommandResult run_forky(const std::vector<std::string>& args, const Env& env) {
    Background bg = start_forky(args, env);
    return finish(bg);
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

void type_on_console(const std::string& vm, const std::string& text) {
    const std::string uri = g_wrapper.console_uri ? g_wrapper.console_uri(vm) : g_uri;
    virConnectPtr conn = virConnectOpen(uri.c_str());
    ASSERT_NE(conn, nullptr);
    virDomainPtr dom = virDomainLookupByName(conn, vm.c_str());
    ASSERT_NE(dom, nullptr) << vm;
    virStreamPtr st = virStreamNew(conn, 0);
    ASSERT_EQ(virDomainOpenConsole(dom, nullptr, st, VIR_DOMAIN_CONSOLE_FORCE), 0);
    // A serial port takes a few characters at a time: type slowly, as a person would.
    for (std::size_t i = 0; i < text.size(); i += 8) {
        std::string part = text.substr(i, 8);
        ASSERT_EQ(virStreamSend(st, part.data(), part.size()), static_cast<int>(part.size()));
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    // QEMU's pty backend looks for a connected reader once a second and leaves input
    // unread until it sees one: keep the console open until it has.
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    virStreamFinish(st);
    virStreamFree(st);
    virDomainFree(dom);
    virConnectClose(conn);
}

std::string guest_eval(const std::string& vm, const std::string& command) {
    static int counter = 0;
    std::string tag = "R" + std::to_string(::getpid()) + "x" + std::to_string(counter++);
    // The echoed input shows "TAG=$(", never "TAG=<value>=END".
    type_on_console(vm, "echo " + tag + "=$(" + command + ")=END\n");
    std::string log = wait_for_console(vm, tag + "=[A-Za-z0-9_.-]*=END", std::chrono::seconds(30));
    std::smatch m;
    std::regex re(tag + "=([A-Za-z0-9_.-]*)=END");
    if (!std::regex_search(log, m, re))
        return "<no answer>";
    return m[1];
}

std::string boot_token(const std::string& vm) {
    std::string log = wait_for_console(vm, "FORKY-BOOT token=[0-9a-f]{16}");
    std::smatch m;
    std::regex_search(log, m, std::regex("FORKY-BOOT token=([0-9a-f]{16})"));
    return m.size() > 1 ? std::string(m[1]) : "";
}

unsigned long last_counter(const std::string& vm) {
    std::string log = run_forky({"logs", vm}).out;
    unsigned long last = 0;
    std::regex re("FORKY-TICK token=[0-9a-f]+ counter=([0-9]+)");
    for (auto it = std::sregex_iterator(log.begin(), log.end(), re); it != std::sregex_iterator();
         ++it)
        last = std::stoul((*it)[1]);
    return last;
}

Tick first_tick(const std::string& vm, std::size_t after) {
    const std::regex re("FORKY-TICK token=([0-9a-f]{16}) counter=([0-9]+) ");
    for (int i = 0; i < 600; ++i) {
        std::string log = run_forky({"logs", vm}).out;
        if (log.size() > after) {
            std::string tail = log.substr(after);
            std::smatch m;
            if (std::regex_search(tail, m, re))
                return {m[1], std::stoul(m[2])};
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << vm << " printed no tick";
    return {};
}

std::size_t pool_ready(const std::string& pool) {
    CommandResult ls = run_forky({"pool", "ls", "--json"});
    EXPECT_EQ(ls.rc, 0) << ls.all();
    for (const auto& p : nlohmann::json::parse(ls.out, nullptr, /*allow_exceptions=*/false))
        if (p.is_object() && p["name"] == pool)
            return p["ready"].get<std::size_t>();
    return 0;
}

void up_tiny(const std::string& name) {
    CommandResult up =
        run_forky({"up", "-f", (source_dir() / "domains/tiny.yaml").string(), "--name", name});
    ASSERT_EQ(up.rc, 0) << up.all();
    wait_for_console(name, "FORKY-TICK token=[0-9a-f]+ counter=[0-9]+ disk=[0-9a-f]{16}");
}

bool has(const std::vector<std::string>& v, const std::string& x) {
    return std::find(v.begin(), v.end(), x) != v.end();
}

std::vector<std::string> lines(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);)
        if (!l.empty())
            out.push_back(l);
    return out;
}

void remove_all(const std::vector<std::string>& vms) {
    for (auto it = vms.rbegin(); it != vms.rend(); ++it)
        run_forky({"rm", "--force", *it});
}

std::string slurp_file(const fs::path& file) {
    return slurp(file);
}

bool eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
        if (std::chrono::steady_clock::now() >= deadline)
            return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return true;
}

int disconnect_clients_of(int pid) {
    const std::string admin =
        "libvirtd:///system?socket=" + (g_dir / "libvirt/run/libvirt-admin-sock").string();
    CommandResult list = run({"virt-admin", "-c", admin, "srv-clients-list", "libvirtd"});
    EXPECT_EQ(list.rc, 0) << list.all();
    int dropped = 0;
    std::istringstream in(list.out);
    for (std::string line; std::getline(in, line);) {
        std::istringstream f(line);
        std::string id;
        if (!(f >> id) || id.find_first_not_of("0123456789") != std::string::npos)
            continue;
        CommandResult info = run({"virt-admin", "-c", admin, "client-info", "libvirtd", id});
        std::smatch m;
        if (std::regex_search(info.out, m, std::regex("unix_process_id\\s*:\\s*([0-9]+)")) &&
            std::stoi(m[1]) == pid &&
            run({"virt-admin", "-c", admin, "client-disconnect", "libvirtd", id}).rc == 0)
            ++dropped;
    }
    return dropped;
}

CommandResult run_in_daemon_ns(std::vector<std::string> argv) {
    std::string daemon = slurp(g_dir / "libvirt/libvirtd.pid");
    daemon = daemon.substr(0, daemon.find('\n'));
    const std::vector<std::string> ns{"nsenter", "-t", daemon, "-m", "--"};
    argv.insert(argv.begin(), ns.begin(), ns.end());
    return run(argv);
}

void restart_libvirtd() {
    const auto pid_of = [](const char* file) {
        std::string pid = slurp(g_dir / "libvirt" / file);
        return pid.substr(0, pid.find('\n'));
    };
    const std::string daemon = pid_of("libvirtd.pid");
    const std::string logd = pid_of("virtlogd.pid");
    ASSERT_FALSE(daemon.empty());
    ASSERT_EQ(::kill(std::stoi(daemon), SIGTERM), 0);
    ASSERT_TRUE(
        eventually([&] { return ::kill(std::stoi(daemon), 0) != 0; }, std::chrono::seconds(30)));
    // virtlogd stays; the new libvirtd joins its mount namespace (the bind mounts).
    CommandResult r = run({"nsenter", "-t", logd, "-m", "--", "libvirtd", "-d", "-p",
                           (g_dir / "libvirt/libvirtd.pid").string()});
    ASSERT_EQ(r.rc, 0) << r.all();
    ASSERT_TRUE(eventually(
        [] {
            return run({"virsh", "-q", "-c", g_uri, "version"}).rc == 0;
        },
        std::chrono::seconds(30)));
}

std::vector<std::string> domain_names() {
    CommandResult r = run({"virsh", "-q", "-c", g_uri, "list", "--all", "--name"});
    EXPECT_EQ(r.rc, 0) << r.all();
    std::vector<std::string> names;
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);)
        if (!line.empty())
            names.push_back(line);
    std::sort(names.begin(), names.end());
    return names;
}

std::vector<std::string> pool_files() {
    std::vector<std::string> files;
    if (fs::exists(g_pool_dir))
        for (const auto& e : fs::directory_iterator(g_pool_dir))
            files.push_back(e.path().filename().string());
    std::sort(files.begin(), files.end());
    return files;
}

std::string domain_state_of(const std::string& vm) {
    CommandResult r = run({"virsh", "-c", g_uri, "domstate", vm});
    return r.rc == 0 ? r.out.substr(0, r.out.find('\n')) : "absent";
}

std::string disk_of(const std::string& vm) {
    CommandResult r = run({"virsh", "-q", "-c", g_uri, "domblklist", vm});
    std::istringstream in(r.out);
    std::string target;
    std::string source;
    while (in >> target >> source)
        if (target == "vda")
            return source;
    return "";
}

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

CommandResult virsh(std::vector<std::string> args) {
    args.insert(args.begin(), {"virsh", "-q", "-c", libvirt_uri()});
    return run(args);
}

} // namespace forky::it

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    ::testing::AddGlobalTestEnvironment(new forky::it::PrivateLibvirtd);
    return RUN_ALL_TESTS();
}
