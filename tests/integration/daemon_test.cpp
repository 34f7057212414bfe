// forkyd end to end: the daemon in the foreground against the test's private libvirtd,
// called by a gRPC client forky did not write (tests/daemon/client.py: Python, stubs
// generated from proto/ by protoc and grpc_python_plugin).
#include "harness.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <grp.h>
#include <regex>
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

std::string first_match(const std::string& text, const std::string& pattern) {
    std::smatch m;
    if (std::regex_search(text, m, std::regex(pattern)) && m.size() > 1)
        return m[1];
    return "";
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
    explicit Daemon(const fs::path& config)
        : bg(start_command({FORKYD_BINARY, "--config", config.string(), "-v"})) {}
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
