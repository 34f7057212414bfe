// forkyd end to end: the daemon in the foreground against the test's private libvirtd,
// called by a gRPC client forky did not write (tests/daemon/client.py: Python, stubs
// generated from proto/ by protoc and grpc_python_plugin).
#include "harness.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <grp.h>
#include <regex>
#include <set>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>

namespace fs = std::filesystem;
using namespace forky::it;

namespace {

// A folder anyone may enter (mode 0755), removed with the object: where a caller without
// rights can reach the client and the socket itself, so that only the socket's own mode
// stands in its way.
struct PublicDir {
    fs::path path;
    PublicDir() {
        char tmpl[] = "/tmp/forky-pub-XXXXXX";
        if (::mkdtemp(tmpl) != nullptr) {
            path = tmpl;
            ::chmod(tmpl, 0755);
        }
    }
    ~PublicDir() {
        if (!path.empty())
            fs::remove_all(path);
    }
};

// The client and the protos it generates stubs from, copied where anyone can read them.
const fs::path& client_dir() {
    static PublicDir dir;
    static bool copied = false;
    if (!copied) {
        fs::create_directories(dir.path / "tests");
        fs::copy(source_dir() / "tests/daemon", dir.path / "tests/daemon",
                 fs::copy_options::recursive);
        fs::copy(source_dir() / "proto", dir.path / "proto", fs::copy_options::recursive);
        run({"chmod", "-R", "a+rX", dir.path.string()});
        copied = true;
    }
    return dir.path;
}

std::string client() {
    return (client_dir() / "tests/daemon/client.py").string();
}

CommandResult call(const fs::path& socket, std::vector<std::string> args) {
    args.insert(args.begin(), {"/usr/bin/python3", client(), socket.string()});
    return run(args);
}

fs::path write_config(const fs::path& socket, const std::string& extra = "") {
    const fs::path file = test_dir() / "forkyd.yaml";
    std::ofstream(file) << "connect: " << libvirt_uri()
                        << "\npool: forky-it\npool_dir: " << pool_dir().string()
                        << "\nlisten: [unix://" << socket.string() << "]\nspec_dirs: ["
                        << (source_dir() / "domains").string() << "]\n"
                        << extra;
    ::chmod(file.c_str(), 0600);
    return file;
}

// forkyd running in the foreground; stopped (SIGTERM) and waited for when it goes.
struct Daemon {
    Background bg;
    fs::path socket;
    explicit Daemon(const fs::path& config, const fs::path& socket = {}, const Env& env = {})
        : bg(start_command({FORKYD_BINARY, "--config", config.string(), "-v"}, env)),
          socket(socket) {}
    // Once it listens.
    bool ready() const {
        return eventually([&] { return fs::exists(socket); }, std::chrono::seconds(60));
    }
    std::string log() const { return slurp_file(bg.err_file); }
    // The forky CLI through this forkyd (--server).
    CommandResult forky(std::vector<std::string> args, const Env& env = {}) const {
        args.insert(args.begin(), {"--server", "unix://" + socket.string()});
        return run_forky(args, env);
    }
    CommandResult stop() {
        if (bg.pid > 0)
            ::kill(bg.pid, SIGTERM);
        CommandResult r = finish(bg, std::chrono::seconds(90));
        bg.pid = -1;
        return r;
    }
    ~Daemon() {
        if (bg.pid > 0)
            stop();
    }
};

} // namespace

TEST(Daemon, ConfigurationIsCheckedStrictly) {
    const fs::path socket = test_dir() / "check" / "forkyd.sock";
    CommandResult ok = run({FORKYD_BINARY, "--config", write_config(socket).string(), "--check"});
    EXPECT_EQ(ok.rc, 0) << ok.all();
    EXPECT_NE(ok.out.find("is valid"), std::string::npos) << ok.out;
    CommandResult plain =
        run({FORKYD_BINARY, "--config", write_config(socket, "tls_typo: 1\n").string(), "--check"});
    EXPECT_EQ(plain.rc, 3) << plain.all();
    EXPECT_NE(plain.err.find("forkyd.yaml:6: key 'tls_typo'"), std::string::npos) << plain.err;
    // A socket straight in a folder everyone writes (/tmp) is refused by --check already.
    CommandResult tmp =
        run({FORKYD_BINARY, "--config", write_config("/tmp/forkyd-it.sock").string(), "--check"});
    EXPECT_EQ(tmp.rc, 3) << tmp.all();
    EXPECT_NE(tmp.err.find("may be written by others"), std::string::npos) << tmp.err;
    // Plain TCP off loopback is refused; on loopback it is allowed.
    const fs::path tcp = test_dir() / "forkyd.yaml";
    std::ofstream(tcp) << "connect: " << libvirt_uri()
                       << "\nlisten: [unix:///run/x.sock, tcp://0.0.0.0:7443]\n";
    ::chmod(tcp.c_str(), 0600);
    CommandResult open = run({FORKYD_BINARY, "--config", tcp.string(), "--check"});
    EXPECT_EQ(open.rc, 3) << open.all();
    EXPECT_NE(open.err.find("key 'listen[1]': plain TCP on '0.0.0.0:7443'"), std::string::npos)
        << open.err;
    std::ofstream(tcp) << "connect: " << libvirt_uri() << "\nlisten: [tcp://127.0.0.1:7443]\n";
    EXPECT_EQ(run({FORKYD_BINARY, "--config", tcp.string(), "--check"}).rc, 0);
    CommandResult missing = run({FORKYD_BINARY, "--config", "/nonexistent.yaml", "--check"});
    EXPECT_EQ(missing.rc, 3) << missing.all();
    CommandResult version = run({FORKYD_BINARY, "--version"});
    EXPECT_EQ(version.rc, 0);
    EXPECT_EQ(version.out.rfind("forkyd ", 0), 0u) << version.out;
}

TEST(Daemon, APythonClientUpsForksListsFollowsAndRemoves) {
    PublicDir run_dir;
    const fs::path socket = run_dir.path / "forkyd.sock";
    Daemon daemon(write_config(socket));
    ASSERT_TRUE(eventually([&] { return fs::exists(socket); }, std::chrono::seconds(60)))
        << "forkyd never listened: " << slurp_file(daemon.bg.err_file);
    struct stat st {};
    ASSERT_EQ(::stat(socket.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, ::getgrnam("forky") ? 0660u : 0600u);
    EXPECT_EQ(st.st_uid, 0u);

    // Reflection: a generic client finds the service.
    CommandResult reflect = call(socket, {"reflect"});
    EXPECT_EQ(reflect.rc, 0) << reflect.all();
    EXPECT_NE(reflect.out.find("forky.v1.Forky"), std::string::npos) << reflect.out;

    // Events: subscribed before anything happens; 'started' of the new VM, then its
    // child destroyed behind forky's back.
    Background events =
        start_command({"/usr/bin/python3", client(), socket.string(), "events", "40"});
    ASSERT_TRUE(eventually([&] { return contains(slurp_file(events.out_file), "subscribed"); },
                           std::chrono::seconds(60)));

    CommandResult up = call(socket, {"up", (source_dir() / "domains/tiny.yaml").string(), "it-d"});
    ASSERT_EQ(up.rc, 0) << up.all();
    EXPECT_NE(up.out.find("it-d"), std::string::npos);
    const std::string token = boot_token("it-d");
    ASSERT_FALSE(token.empty());
    // The console through the API: the boot's token.
    CommandResult console = call(socket, {"console", "it-d", "FORKY-TICK token=[0-9a-f]{16}"});
    EXPECT_EQ(console.rc, 0) << console.all();
    EXPECT_NE(console.out.find(token), std::string::npos) << console.out;

    CommandResult fork = call(socket, {"fork", "it-d", "2"});
    ASSERT_EQ(fork.rc, 0) << fork.all();
    EXPECT_NE(fork.out.find("it-d-1"), std::string::npos) << fork.out;
    EXPECT_NE(fork.out.find("it-d-2"), std::string::npos) << fork.out;
    // The child carries on with the parent's in-memory token, read through the API.
    CommandResult child = call(socket, {"console", "it-d-1", "FORKY-TICK token=[0-9a-f]{16}"});
    EXPECT_EQ(child.rc, 0) << child.all();
    EXPECT_NE(child.out.find(token), std::string::npos) << child.out;

    CommandResult list = call(socket, {"list"});
    EXPECT_EQ(list.rc, 0) << list.all();
    EXPECT_NE(list.out.find("it-d-2 running it-d"), std::string::npos) << list.out;

    // Behind the daemon's back: its event stream tells.
    ASSERT_EQ(virsh({"destroy", "it-d-2"}).rc, 0);
    EXPECT_TRUE(eventually(
        [&] { return contains(slurp_file(events.out_file), "it-d-2 stopped destroyed forky"); },
        std::chrono::seconds(60)))
        << slurp_file(events.out_file);
    EXPECT_NE(slurp_file(events.out_file).find("it-d started booted forky"), std::string::npos)
        << slurp_file(events.out_file);
    ::kill(events.pid, SIGTERM);
    finish(events, std::chrono::seconds(30));

    // A second forkyd never takes the socket of the first.
    CommandResult second = run({FORKYD_BINARY, "--config", (test_dir() / "forkyd.yaml").string()});
    EXPECT_EQ(second.rc, 5) << second.all();
    EXPECT_NE(second.err.find("Another forkyd serves"), std::string::npos) << second.err;
    // Up takes specs only from spec_dirs: never a file a caller merely names.
    CommandResult shadow = call(socket, {"up", "/etc/shadow"});
    EXPECT_EQ(shadow.rc, 1);
    EXPECT_NE(shadow.out.find("error INVALID_ARGUMENT exit 2: '/etc/shadow' is not in one of "
                              "forkyd's spec_dirs"),
              std::string::npos)
        << shadow.all();
    EXPECT_EQ(shadow.out.find("root:"), std::string::npos) << shadow.all();

    // Errors carry the CLI's message and exit code.
    CommandResult unknown = call(socket, {"rm", "no-such-vm"});
    EXPECT_EQ(unknown.rc, 1);
    EXPECT_NE(unknown.out.find("error NOT_FOUND exit 4: No VM named 'no-such-vm'"),
              std::string::npos)
        << unknown.all();

    // A caller who cannot open the socket never reaches forky.
    CommandResult nobody = run({"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                                "/usr/bin/python3", client(), socket.string(), "list"});
    EXPECT_EQ(nobody.rc, 1) << nobody.all();
    EXPECT_NE(nobody.out.find("calling list"), std::string::npos) << nobody.all();
    EXPECT_NE(nobody.out.find("error UNAVAILABLE"), std::string::npos) << nobody.all();
    EXPECT_NE(nobody.all().find("Permission denied"), std::string::npos) << nobody.all();

    for (const char* vm : {"it-d-2", "it-d-1", "it-d"}) {
        CommandResult rm = call(socket, {"rm", vm});
        EXPECT_EQ(rm.rc, 0) << rm.all();
    }
    EXPECT_FALSE(has(domain_names(), "it-d"));
    EXPECT_FALSE(has(domain_names(), "it-d-1"));

    CommandResult stopped = daemon.stop();
    EXPECT_EQ(stopped.rc, 0) << stopped.all();
    EXPECT_NE(stopped.err.find("forkyd: stopped"), std::string::npos) << stopped.err;
    EXPECT_FALSE(fs::exists(socket));
}

// Policies: a quota refuses a fork before anything is made (the CLI's fork, as forkyd's);
// children get the TTL of policies/ttl.yaml, shown by ls; forkyd's reaper removes the
// expired ones and leaves the pinned one and the parent (no TTL of its own).
TEST(Daemon, QuotasRefuseAndTheReaperRemovesExpiredChildrenButNotPinnedOnes) {
    const fs::path policies = test_dir() / "policies";
    fs::create_directories(policies);
    std::ofstream(policies / "quotas.yaml") << "max_children_per_parent: 2\n";
    std::ofstream(policies / "ttl.yaml") << "children: 4s\n";
    const Env env{"FORKY_POLICIES=" + policies.string()};
    up_tiny("it-r");
    const auto before = domain_names();
    CommandResult over = run_forky({"fork", "it-r", "--count", "3"}, env);
    EXPECT_EQ(over.rc, 5) << over.all();
    EXPECT_NE(over.err.find("Quota 'max_children_per_parent' (" +
                            (policies / "quotas.yaml").string() +
                            "): 'it-r' has 0 children; 3 more would make 3, over 2"),
              std::string::npos)
        << over.err;
    EXPECT_EQ(domain_names(), before);
    CommandResult fork = run_forky({"fork", "it-r", "--count", "2"}, env);
    ASSERT_EQ(fork.rc, 0) << fork.all();
    ASSERT_EQ(run_forky({"pin", "it-r-2"}).rc, 0);
    CommandResult ls = run_forky({"ls"});
    EXPECT_NE(ls.out.find("pinned"), std::string::npos) << ls.out;
    CommandResult json = run_forky({"ls", "--json"});
    EXPECT_NE(json.out.find("\"pinned\":true"), std::string::npos) << json.out;
    EXPECT_TRUE(contains(json.out, "\"ttl_left_s\":")) << json.out;
    CommandResult third = run_forky({"fork", "it-r"}, env);
    EXPECT_EQ(third.rc, 5) << third.all();

    PublicDir run_dir;
    const fs::path socket = run_dir.path / "forkyd.sock";
    Daemon daemon(write_config(socket, "policies: " + policies.string() + "\nreap_every: 1s\n"));
    EXPECT_TRUE(
        eventually([&] { return !has(domain_names(), "it-r-1"); }, std::chrono::seconds(60)))
        << slurp_file(daemon.bg.err_file);
    // Rounds go on; the pinned child and the parent stay.
    std::this_thread::sleep_for(std::chrono::seconds(3));
    EXPECT_TRUE(has(domain_names(), "it-r-2"));
    EXPECT_TRUE(has(domain_names(), "it-r"));
    EXPECT_NE(slurp_file(daemon.bg.err_file).find("Reaped VM 'it-r-1': its TTL of 4s ran out"),
              std::string::npos)
        << slurp_file(daemon.bg.err_file);
    ASSERT_EQ(run_forky({"unpin", "it-r-2"}).rc, 0);
    EXPECT_TRUE(
        eventually([&] { return !has(domain_names(), "it-r-2"); }, std::chrono::seconds(60)));
    EXPECT_EQ(daemon.stop().rc, 0);
    remove_all({"it-r"});
}

// The forky CLI through forkyd (--server, FORKY_SERVER): the same output, byte for byte,
// and the same errors and exit codes as when it calls libvirt itself.
TEST(Daemon, TheCliThroughForkydPrintsAndFailsAsDirectly) {
    up_tiny("it-s");
    const std::string token = boot_token("it-s");
    ASSERT_FALSE(token.empty());
    PublicDir run_dir;
    const fs::path socket = run_dir.path / "forkyd.sock";
    Daemon daemon(write_config(socket), socket);
    ASSERT_TRUE(daemon.ready()) << daemon.log();
    const std::vector<std::vector<std::string>> listings{
        {"ls"}, {"ls", "--json"}, {"tree"}, {"tree", "--json"}, {"gc", "--dry-run", "--json"}};
    for (const auto& args : listings) {
        CommandResult direct = run_forky(args);
        CommandResult served = daemon.forky(args);
        EXPECT_EQ(served.rc, direct.rc) << served.all();
        EXPECT_EQ(served.out, direct.out) << args.front();
    }

    // A fork through FORKY_SERVER; the child carries on with the parent's token.
    const std::string server = "unix://" + socket.string();
    CommandResult fork = run_forky({"fork", "it-s", "--count", "2"}, {"FORKY_SERVER=" + server});
    ASSERT_EQ(fork.rc, 0) << fork.all();
    EXPECT_EQ(lines(fork.out), (std::vector<std::string>{"it-s-1", "it-s-2"}));
    EXPECT_TRUE(contains(fork.err, "Forked 'it-s' at fork point 'it-s@fp1' into 2 children"))
        << fork.err;
    wait_for_console("it-s-1", "FORKY-TICK token=" + token);
    CommandResult logs = daemon.forky({"logs", "it-s-1"});
    EXPECT_EQ(logs.rc, 0) << logs.all();
    EXPECT_TRUE(contains(logs.out, "token=" + token)) << logs.out;
    for (const auto& args : listings) {
        CommandResult direct = run_forky(args);
        CommandResult served = daemon.forky(args);
        EXPECT_EQ(served.out, direct.out) << args.front();
    }

    // Errors: the same message and exit code.
    const std::vector<std::vector<std::string>> wrong{
        {"rm", "no-such-vm"},    {"fork", "no-such-vm"},      {"stop", "bad name!"},
        {"revert", "it-s@nope"}, {"fork", "it-s", "-n", "0"}, {"rm", "it-s"}};
    for (const auto& args : wrong) {
        CommandResult direct = run_forky(args);
        CommandResult served = daemon.forky(args);
        EXPECT_NE(direct.rc, 0) << direct.all();
        EXPECT_EQ(served.rc, direct.rc) << served.all();
        EXPECT_EQ(served.err, direct.err) << served.all();
    }
    CommandResult snap = daemon.forky({"snapshot", "it-s", "s1"});
    EXPECT_EQ(snap.rc, 0) << snap.all();
    EXPECT_EQ(snap.out, "it-s@s1\n");
    CommandResult pin = daemon.forky({"pin", "it-s-2"});
    EXPECT_EQ(pin.out, "VM 'it-s-2' is now pinned\n") << pin.all();
    // The core's warnings come back with the answer.
    CommandResult stop = daemon.forky({"stop", "it-s-2", "--timeout", "0"});
    EXPECT_EQ(stop.out, "Stopped VM 'it-s-2'\n") << stop.all();
    EXPECT_TRUE(contains(stop.err, "forky[vm] warning: VM 'it-s-2' did not shut down within 0 ms"))
        << stop.err;
    EXPECT_EQ(domain_state_of("it-s-2"), "shut off");

    // forkyd turns KSM on while forks run; stats through it name the family.
    if (fs::exists("/sys/kernel/mm/ksm/run")) {
        EXPECT_TRUE(eventually(
            [&] {
                return contains(daemon.forky({"stats", "--json"}).out, "\"tuned_by_forkyd\":true");
            },
            std::chrono::seconds(30)))
            << daemon.log();
        CommandResult stats = daemon.forky({"stats", "--json"});
        EXPECT_EQ(stats.rc, 0) << stats.all();
        EXPECT_TRUE(contains(stats.out, "\"root\":\"it-s\",\"vms\":[\"it-s\",\"it-s-1\"]"))
            << stats.out;
    }

    // Refused: what forkyd does not serve, and options that pick the hypervisor.
    EXPECT_EQ(daemon.forky({"snapshots", "it-s"}).rc, 2);
    CommandResult both = daemon.forky({"--connect", libvirt_uri(), "ls"});
    EXPECT_EQ(both.rc, 2) << both.all();
    EXPECT_TRUE(contains(both.err, "--connect with --server")) << both.err;
    for (const std::string& wrong : std::vector<std::string>{
             "", "http://x", "unix://relative.sock", "tcp://nohost", "tcp://[::1:5", "tcp://::1:1",
             "tcp://a/:80", "unix:///" + std::string(200, 'a')}) {
        CommandResult bad = run_forky({"--server", wrong, "ls"});
        EXPECT_EQ(bad.rc, 2) << bad.all();
        EXPECT_FALSE(contains(bad.err, ".cc:")) << bad.err; // forky's message, no gRPC log
    }
    EXPECT_EQ(daemon.forky({"--pool", "other", "ls"}).rc, 2);
    // A caller who cannot open the socket: exit 6, and why.
    CommandResult nobody = run({"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                                FORKY_BINARY, "--server", server, "ls"});
    EXPECT_EQ(nobody.rc, 6) << nobody.all();
    EXPECT_TRUE(contains(nobody.err, "Cannot reach forkyd at '" + server + "'")) << nobody.err;

    CommandResult rm = daemon.forky({"rm", "it-s", "--recursive"});
    EXPECT_EQ(rm.rc, 0) << rm.all();
    EXPECT_TRUE(contains(rm.out, "Removed VM 'it-s-1'")) << rm.out;
    EXPECT_FALSE(has(domain_names(), "it-s"));
    EXPECT_FALSE(has(domain_names(), "it-s-2"));
    CommandResult stopped = daemon.stop();
    EXPECT_EQ(stopped.rc, 0) << stopped.all();
}

// 16 clients at once: 8 fork the same VM while 8 list. Each fork gets a child of its own.
TEST(Daemon, SixteenClientsForkAndListAtOnce) {
    up_tiny("it-m");
    PublicDir run_dir;
    const fs::path socket = run_dir.path / "forkyd.sock";
    Daemon daemon(write_config(socket), socket);
    ASSERT_TRUE(daemon.ready()) << daemon.log();
    const std::vector<std::string> server{"--server", "unix://" + socket.string()};
    std::vector<Background> forks, lists;
    for (int i = 0; i < 8; ++i) {
        forks.push_back(start_forky({server[0], server[1], "fork", "it-m", "--wait", "600"}));
        lists.push_back(start_forky({server[0], server[1], "ls", "--json"}));
    }
    std::set<std::string> children;
    for (auto& bg : forks) {
        CommandResult r = finish(bg);
        EXPECT_EQ(r.rc, 0) << r.all();
        for (const auto& c : lines(r.out))
            children.insert(c);
    }
    for (auto& bg : lists) {
        CommandResult r = finish(bg);
        EXPECT_EQ(r.rc, 0) << r.all();
        EXPECT_TRUE(contains(r.out, "\"name\":\"it-m\"")) << r.out;
    }
    EXPECT_EQ(children.size(), 8u);
    for (const auto& c : children)
        EXPECT_EQ(domain_state_of(c), "running") << c;
    CommandResult rm = daemon.forky({"rm", "it-m", "--recursive"});
    EXPECT_EQ(rm.rc, 0) << rm.all();
    EXPECT_EQ(daemon.stop().rc, 0);
}

// libvirtd restarted under a running forkyd: it reconnects, says so, and serves on. Then
// SIGTERM while a fork is half made: the fork rolls back, its client hears exit 130, and
// forkyd exits cleanly leaving no child and no child's volume.
TEST(Daemon, OutlivesALibvirtdRestartAndRollsBackAForkOnSigterm) {
    up_tiny("it-t");
    PublicDir run_dir;
    const fs::path socket = run_dir.path / "forkyd.sock";
    Daemon daemon(write_config(socket), socket,
                  {"FORKY_FAULT_SLEEP=restore:2", "FORKY_FAULT_SLEEP_S=60"});
    ASSERT_TRUE(daemon.ready()) << daemon.log();
    restart_libvirtd();
    EXPECT_TRUE(eventually([&] { return contains(daemon.log(), "Reconnected to libvirt"); },
                           std::chrono::seconds(60)))
        << daemon.log();
    EXPECT_TRUE(contains(daemon.log(), "Lost the connection to libvirt")) << daemon.log();
    CommandResult ls = daemon.forky({"ls"});
    EXPECT_EQ(ls.rc, 0) << ls.all();
    EXPECT_TRUE(contains(ls.out, "it-t ")) << ls.out;

    Background fork =
        start_forky({"--server", "unix://" + socket.string(), "fork", "it-t", "--count", "3"});
    ASSERT_TRUE(
        eventually([] { return has(domain_names(), "it-t-1"); }, std::chrono::seconds(120)));
    ASSERT_TRUE(
        eventually([&] { return contains(daemon.log(), "sleeping 60 s at step 'restore'"); },
                   std::chrono::seconds(60)))
        << daemon.log();
    ::kill(daemon.bg.pid, SIGTERM);
    CommandResult f = finish(fork, std::chrono::seconds(120));
    EXPECT_EQ(f.rc, 130) << f.all();
    EXPECT_TRUE(contains(f.err, "interrupted")) << f.err;
    CommandResult stopped = daemon.stop();
    EXPECT_EQ(stopped.rc, 0) << stopped.all();
    for (const char* child : {"it-t-1", "it-t-2", "it-t-3"})
        EXPECT_FALSE(has(domain_names(), child)) << child;
    for (const auto& f : pool_files())
        EXPECT_FALSE(contains(f, "it-t-")) << f;
    EXPECT_EQ(domain_state_of("it-t"), "running");
    remove_all({"it-t"});
}

// Warm pools through forkyd: a pool that policies/pools.yaml declares is made and kept
// filled, also across a restart (with the size the file says then); an acquire through
// forkyd hands out a child that carries on from the snapshot, and forkyd refills behind it.
TEST(Daemon, KeepsTheWarmPoolsOfPoolsYamlFilled) {
    up_tiny("it-w");
    const std::string token = boot_token("it-w");
    ASSERT_EQ(run_forky({"snapshot", "it-w", "s"}).rc, 0);
    const fs::path policies = test_dir() / "pool-policies";
    fs::create_directories(policies);
    std::ofstream(policies / "pools.yaml") << "pools:\n  - {name: dw, from: it-w@s, size: 2}\n";
    PublicDir run_dir;
    const fs::path socket = run_dir.path / "forkyd.sock";
    const fs::path config = write_config(socket, "policies: " + policies.string() + "\n");
    {
        Daemon daemon(config, socket);
        ASSERT_TRUE(daemon.ready()) << daemon.log();
        ASSERT_TRUE(eventually([] { return pool_ready("dw") == 2; }, std::chrono::seconds(180)))
            << daemon.log();
        EXPECT_TRUE(contains(daemon.log(), "Made warm pool 'dw' of 'it-w@s' (2 children)"))
            << daemon.log();
        CommandResult got = daemon.forky({"acquire", "dw"});
        ASSERT_EQ(got.rc, 0) << got.all();
        const std::string child = got.out.substr(0, got.out.find('\n'));
        EXPECT_EQ(first_tick(child).token, token);
        EXPECT_TRUE(eventually([] { return pool_ready("dw") == 2; }, std::chrono::seconds(180)))
            << daemon.log();
        CommandResult listed = daemon.forky({"pool", "ls", "--json"});
        EXPECT_EQ(listed.rc, 0) << listed.all();
        EXPECT_TRUE(contains(listed.out, "\"declared\":true")) << listed.out;
        CommandResult wrong = daemon.forky({"release", "it-w"});
        EXPECT_EQ(wrong.rc, 5) << wrong.all();
        CommandResult released = daemon.forky({"release", child});
        EXPECT_EQ(released.rc, 0) << released.all();
        EXPECT_FALSE(has(domain_names(), child));
        EXPECT_EQ(daemon.stop().rc, 0);
    }
    std::ofstream(policies / "pools.yaml") << "pools:\n  - {name: dw, from: it-w@s, size: 3}\n";
    {
        Daemon daemon(config, socket);
        ASSERT_TRUE(daemon.ready()) << daemon.log();
        EXPECT_TRUE(eventually([] { return pool_ready("dw") == 3; }, std::chrono::seconds(180)))
            << daemon.log();
        EXPECT_EQ(daemon.stop().rc, 0);
    }
    ASSERT_EQ(run_forky({"pool", "rm", "dw"}).rc, 0);
    ASSERT_EQ(run_forky({"rm", "--force", "--recursive", "it-w"}).rc, 0);
    EXPECT_TRUE(domain_names().empty());
}
