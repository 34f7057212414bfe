// forky fork end to end: children carry on from the parent's memory (token and counter,
// never a boot line), their disks are their own, failures and kills leave nothing.
#include "harness.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

namespace fs = std::filesystem;
using namespace forky::it;

namespace {

// Waits until the child prints ticks, then checks it is the parent's guest carrying on:
// the parent's token, a counter from where the parent was, no boot line.
void expect_carries_on(const std::string& child, const std::string& token,
                       unsigned long parent_counter_before_fork) {
    std::string log =
        wait_for_console(child, "FORKY-TICK token=" + token + " counter=[0-9]+ disk=" + token);
    EXPECT_EQ(log.find("FORKY-BOOT"), std::string::npos)
        << "child '" << child << "' booted again:\n"
        << log;
    std::smatch m;
    ASSERT_TRUE(
        std::regex_search(log, m, std::regex("FORKY-TICK token=([0-9a-f]+) counter=([0-9]+)")))
        << log;
    EXPECT_EQ(m[1], token) << "child '" << child << "' has another guest's memory";
    unsigned long first = std::stoul(m[2]);
    // Its first tick follows the parent's value at the fork point, which is at or after
    // the last value seen before forking and at most a few seconds of ticks later (0: the
    // caller did not look, so only the lower bound holds).
    EXPECT_GT(first, parent_counter_before_fork) << log;
    if (parent_counter_before_fork != 0) {
        EXPECT_LT(first, parent_counter_before_fork + 100) << log;
    }
}

// The host port forwarded to `guest_port` of `vm`, from forky ls --json.
std::string host_port(const std::string& vm, unsigned guest_port) {
    std::string ls = run_forky({"ls", "--json"}).out;
    std::smatch m;
    std::regex re("\\{\"name\":\"" + vm + "\"[^\\]]*\"ports\":\\[\\{\"guest\":" +
                  std::to_string(guest_port) + ",\"host\":([0-9]+)\\}");
    return std::regex_search(ls, m, re) ? std::string(m[1]) : "";
}

// The body of GET `path` from 127.0.0.1:`port`, or "<failed>" unless the answer is 200.
std::string http_get(const std::string& port, const std::string& path) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return "<failed>";
    timeval timeout{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(std::stoi(port)));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string reply;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
        std::string request = "GET " + path + " HTTP/1.0\r\n\r\n";
        if (::send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
            char buf[4096];
            for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;)
                reply.append(buf, static_cast<std::size_t>(n));
        }
    }
    ::close(fd);
    auto body = reply.find("\r\n\r\n");
    if (reply.rfind("HTTP/1.1 200", 0) != 0 || body == std::string::npos)
        return "<failed>";
    return reply.substr(body + 4);
}

std::string uuid_of_vm(const std::string& vm) {
    std::string out = run({"virsh", "-q", "-c", libvirt_uri(), "domuuid", vm}).out;
    return out.substr(0, out.find('\n'));
}

std::string qemu_img_check(const std::string& path) {
    CommandResult r = run({"qemu-img", "check", "-U", path});
    return r.rc == 0 ? "clean" : r.all();
}

} // namespace

TEST(Fork, ChildrenCarryOnFromTheParentsMemory) {
    up_tiny("fa");
    const std::string token = boot_token("fa");
    const std::string parent_disk_before = disk_of("fa");
    const unsigned long before = last_counter("fa");
    ASSERT_GT(before, 0u);

    CommandResult fork = run_forky({"fork", "fa", "--count", "2", "--json"});
    ASSERT_EQ(fork.rc, 0) << fork.all();
    EXPECT_NE(fork.out.find("\"children\":[\"fa-1\",\"fa-2\"]"), std::string::npos) << fork.out;
    EXPECT_NE(fork.out.find("\"fork_point\":\"fa@fp1\""), std::string::npos) << fork.out;
    for (const char* child : {"fa-1", "fa-2"}) {
        expect_carries_on(child, token, before);
        EXPECT_EQ(domain_state_of(child), "running");
    }
    // The parent keeps running, on a new top layer over the frozen one.
    EXPECT_EQ(domain_state_of("fa"), "running");
    const std::string parent_disk = disk_of("fa");
    EXPECT_NE(parent_disk, parent_disk_before);
    wait_for_console("fa", "counter=" + std::to_string(before + 10) + " ");

    // Ordinary libvirt domains, with their own UUIDs and lineage in virsh dumpxml.
    std::set<std::string> uuids;
    for (const char* vm : {"fa", "fa-1", "fa-2"}) {
        CommandResult uuid = run({"virsh", "-c", libvirt_uri(), "domuuid", vm});
        ASSERT_EQ(uuid.rc, 0) << uuid.all();
        uuids.insert(uuid.out);
    }
    EXPECT_EQ(uuids.size(), 3u);
    CommandResult xml = run({"virsh", "-c", libvirt_uri(), "dumpxml", "fa-1"});
    EXPECT_NE(xml.out.find("<forky:parent>fa</forky:parent>"), std::string::npos) << xml.out;
    EXPECT_NE(xml.out.find("<forky:fork-point>fa@fp1</forky:fork-point>"), std::string::npos);
    EXPECT_NE(xml.out.find("<forky:generation>1</forky:generation>"), std::string::npos);
    EXPECT_TRUE(
        has(lines(run({"virsh", "-q", "-c", libvirt_uri(), "list", "--name"}).out), "fa-2"));

    // Each child's own top layer is backed by the frozen layer, which is what the parent
    // ran on before; every chain checks clean.
    const std::string child_disk = disk_of("fa-1");
    EXPECT_EQ(child_disk, (pool_dir() / "fa-1.vda.qcow2").string());
    CommandResult info = run({"qemu-img", "info", "-U", "--output=json", child_disk});
    EXPECT_NE(info.out.find("\"backing-filename\": \"" + parent_disk_before + "\""),
              std::string::npos)
        << info.out;
    // qcow2 v3 (compat 1.1), whatever qemu-img's default: zero clusters, lazy refcounts.
    EXPECT_NE(info.out.find("\"compat\": \"1.1\""), std::string::npos) << info.out;
    for (const auto& d : {parent_disk, child_disk, disk_of("fa-2")})
        EXPECT_EQ(qemu_img_check(d), "clean") << d;

    // Own consoles: the parent's log never shows a child's output and vice versa.
    EXPECT_TRUE(has(pool_files(), "fa-1.console.log"));
    CommandResult tree = run_forky({"tree"});
    EXPECT_NE(tree.out.find("fa@fp1"), std::string::npos) << tree.out;

    // Removing everyone reclaims the fork point too.
    remove_all({"fa", "fa-1", "fa-2"});
    for (const auto& f : pool_files())
        EXPECT_EQ(f.rfind("fa", 0), std::string::npos) << "left behind: " << f;
}

TEST(Fork, WritesStayInTheirOwnVm) {
    up_tiny("fw");
    const std::string token = boot_token("fw");
    ASSERT_EQ(run_forky({"fork", "fw", "--count", "2"}).rc, 0);
    expect_carries_on("fw-1", token, 0);
    expect_carries_on("fw-2", token, 0);

    // Page cache dropped before each read, so answers come from each VM's own disk.
    const std::string read_c1 = "echo 3 > /proc/sys/vm/drop_caches; cat /mnt/c1 2>/dev/null || "
                                "echo absent";
    const std::string read_p = "echo 3 > /proc/sys/vm/drop_caches; cat /mnt/p 2>/dev/null || "
                               "echo absent";
    EXPECT_EQ(guest_eval("fw-1", "echo child-one > /mnt/c1; sync; cat /mnt/c1"), "child-one");
    EXPECT_EQ(guest_eval("fw", "echo parent-after > /mnt/p; sync; cat /mnt/p"), "parent-after");
    EXPECT_EQ(guest_eval("fw-1", read_c1), "child-one");
    EXPECT_EQ(guest_eval("fw", read_c1), "absent");
    EXPECT_EQ(guest_eval("fw-2", read_c1), "absent");
    EXPECT_EQ(guest_eval("fw-1", read_p), "absent");
    EXPECT_EQ(guest_eval("fw-2", read_p), "absent");
    EXPECT_EQ(guest_eval("fw", read_p), "parent-after");

    // Each VM's own user-mode network, reached through its own forwarded port: the
    // guest's HTTP server serves its data disk.
    const std::string parent_port = host_port("fw", 80);
    const std::string child_port = host_port("fw-1", 80);
    const std::string sibling_port = host_port("fw-2", 80);
    ASSERT_FALSE(parent_port.empty());
    EXPECT_EQ(std::set<std::string>({parent_port, child_port, sibling_port}).size(), 3u);
    EXPECT_EQ(http_get(child_port, "/c1"), "child-one\n");
    EXPECT_EQ(http_get(parent_port, "/c1"), "<failed>");
    EXPECT_EQ(http_get(sibling_port, "/c1"), "<failed>");
    EXPECT_EQ(http_get(parent_port, "/p"), "parent-after\n");
    EXPECT_EQ(http_get(child_port, "/token"), token + "\n");
    remove_all({"fw", "fw-1", "fw-2"});
}

TEST(Fork, ForkOfAForkAndColdForks) {
    up_tiny("fg");
    const std::string token = boot_token("fg");
    ASSERT_EQ(run_forky({"fork", "fg"}).rc, 0);
    expect_carries_on("fg-1", token, 0);

    // Generation 2: a child of the child, from the child's memory.
    const unsigned long child_counter = last_counter("fg-1");
    CommandResult grand = run_forky({"fork", "fg-1"});
    ASSERT_EQ(grand.rc, 0) << grand.all();
    EXPECT_EQ(grand.out, "fg-1-1\n");
    expect_carries_on("fg-1-1", token, child_counter);
    CommandResult xml = run({"virsh", "-c", libvirt_uri(), "dumpxml", "fg-1-1"});
    EXPECT_NE(xml.out.find("<forky:generation>2</forky:generation>"), std::string::npos);
    EXPECT_NE(xml.out.find("<forky:parent>fg-1</forky:parent>"), std::string::npos);

    // Cold: the parent is paused for the cut and resumed.
    unsigned long before = last_counter("fg");
    CommandResult cold = run_forky({"fork", "fg", "--cold", "--prefix", "cold"});
    ASSERT_EQ(cold.rc, 0) << cold.all();
    EXPECT_EQ(cold.out, "cold-1\n");
    expect_carries_on("cold-1", token, before);
    EXPECT_EQ(domain_state_of("fg"), "running");

    // --keep-paused leaves the parent paused; its children run.
    const unsigned long before_keep = last_counter("fg");
    CommandResult keep = run_forky({"fork", "fg", "--cold", "--keep-paused"});
    ASSERT_EQ(keep.rc, 0) << keep.all();
    EXPECT_EQ(keep.out, "fg-2\n") << "names are never reused";
    EXPECT_EQ(domain_state_of("fg"), "paused");
    expect_carries_on("fg-2", token, before_keep);
    // A hot fork of a paused VM is refused; a cold one works.
    EXPECT_EQ(run_forky({"fork", "fg"}).rc, 5);
    ASSERT_EQ(run({"virsh", "-c", libvirt_uri(), "resume", "fg"}).rc, 0);

    // Warm children: restored paused, they carry on once resumed.
    const unsigned long before_warm = last_counter("fg");
    CommandResult warm = run_forky({"fork", "fg", "--paused", "--prefix", "warm"});
    ASSERT_EQ(warm.rc, 0) << warm.all();
    EXPECT_EQ(domain_state_of("warm-1"), "paused");
    ASSERT_EQ(run({"virsh", "-c", libvirt_uri(), "resume", "warm-1"}).rc, 0);
    expect_carries_on("warm-1", token, before_warm);

    // The tree: fg-1-1 hangs from fork point fg-1@fp1, which hangs from fg-1.
    CommandResult tree = run_forky({"tree", "--json"});
    std::smatch point;
    ASSERT_TRUE(std::regex_search(tree.out, point,
                                  std::regex("\"kind\":\"fork-point\",\"id\":\"([0-9a-f-]+)\","
                                             "\"name\":\"fg-1@fp1\"")))
        << tree.out;
    EXPECT_NE(tree.out.find("\"kind\":\"vm\",\"id\":\"" + uuid_of_vm("fg-1-1") +
                            "\",\"name\":\"fg-1-1\",\"parent\":\"" + std::string(point[1]) +
                            "\",\"state\":\"running\",\"generation\":2"),
              std::string::npos)
        << tree.out;
    remove_all({"fg", "fg-1", "fg-1-1", "cold-1", "fg-2", "warm-1"});
    EXPECT_TRUE(pool_files().empty()) << pool_files().size() << " files left";
}

TEST(Fork, FourChildrenAtOnce) {
    up_tiny("f4");
    const std::string token = boot_token("f4");
    const unsigned long before = last_counter("f4");
    CommandResult fork = run_forky({"fork", "f4", "--count", "4"});
    ASSERT_EQ(fork.rc, 0) << fork.all();
    EXPECT_EQ(lines(fork.out), (std::vector<std::string>{"f4-1", "f4-2", "f4-3", "f4-4"}));
    for (const auto& c : lines(fork.out))
        expect_carries_on(c, token, before);
    // The memory image is written once per fork point, not once per child.
    int images = 0;
    for (const auto& f : pool_files())
        images += f.size() > 4 && f.substr(f.size() - 4) == ".mem";
    EXPECT_EQ(images, 1);
    remove_all({"f4", "f4-1", "f4-2", "f4-3", "f4-4"});
}

TEST(Fork, BadInputIsAClearErrorAndChangesNothing) {
    up_tiny("fb");
    const auto files = pool_files();
    const auto domains = domain_names();
    struct Case {
        std::vector<std::string> args;
        int rc;
        std::string message;
    };
    const std::vector<Case> cases = {
        {{"fork", "no-such"}, 4, "No VM named 'no-such'"},
        {{"fork", "fb", "--count", "0"}, 2, "between 1 and 256"},
        {{"fork", "fb", "--count", "100000"}, 2, "between 1 and 256"},
        {{"fork", "fb", "--prefix", "a/b"}, 2, "Invalid prefix 'a/b'"},
        {{"fork", "fb", "--prefix", std::string(62, 'p')}, 2, "Cannot name children"},
        {{"fork", "../fb"}, 2, "Invalid VM name '../fb'"},
        {{"fork", "fb", "--keep-paused"}, 2, "--keep-paused goes with --cold"},
    };
    for (const auto& c : cases) {
        CommandResult r = run_forky(c.args);
        EXPECT_EQ(r.rc, c.rc) << c.args.back() << ": " << r.all();
        EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    }
    // A VM that is not running.
    ASSERT_EQ(run_forky({"stop", "fb", "--force"}).rc, 0);
    CommandResult off = run_forky({"fork", "fb"});
    EXPECT_EQ(off.rc, 5) << off.all();
    EXPECT_NE(off.err.find("VM 'fb' is shut off; only a running VM can be forked"),
              std::string::npos)
        << off.err;
    EXPECT_EQ(pool_files(), files);
    EXPECT_EQ(domain_names(), domains);

    // A name in use is skipped, never taken over.
    ASSERT_EQ(run({"virsh", "-c", libvirt_uri(), "start", "fb"}).rc, 0);
    up_tiny("fb-1");
    CommandResult fork = run_forky({"fork", "fb"});
    ASSERT_EQ(fork.rc, 0) << fork.all();
    EXPECT_EQ(fork.out, "fb-2\n");
    remove_all({"fb", "fb-1", "fb-2"});
}

TEST(Fork, PoolTooSmallIsRefusedBeforeAnythingChanges) {
    // A 96 MiB pool holds the VM's overlay and console but not a 256 MiB memory image.
    // Mounted where libvirtd (and so QEMU) sees it: in the private daemon's namespace.
    fs::path small = test_dir() / "small";
    fs::create_directories(small);
    std::ifstream pid_file(test_dir() / "libvirt/libvirtd.pid");
    std::string daemon;
    pid_file >> daemon;
    const std::vector<std::string> in_ns{"nsenter", "-t", daemon, "-m", "--"};
    auto ns = [&](std::vector<std::string> argv) {
        argv.insert(argv.begin(), in_ns.begin(), in_ns.end());
        return run(argv);
    };
    ASSERT_EQ(ns({"mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", small.string()}).rc, 0);
    const std::vector<std::string> pool{"--pool", "small", "--pool-dir", small.string()};
    auto with_pool = [&](std::vector<std::string> args) {
        args.insert(args.begin(), pool.begin(), pool.end());
        return run_forky(args);
    };
    CommandResult up =
        with_pool({"up", "-f", (source_dir() / "domains/tiny.yaml").string(), "--name", "fs"});
    ASSERT_EQ(up.rc, 0) << up.all();
    for (int i = 0;
         i < 300 && with_pool({"logs", "fs"}).out.find("FORKY-TICK") == std::string::npos; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CommandResult fork = with_pool({"fork", "fs", "--count", "2"});
    EXPECT_EQ(fork.rc, 7) << fork.all();
    EXPECT_NE(fork.err.find("Pool 'small' has"), std::string::npos) << fork.err;
    EXPECT_EQ(domain_names(), (std::vector<std::string>{"fs"}));
    EXPECT_EQ(with_pool({"rm", "--force", "fs"}).rc, 0);
    run({"virsh", "-c", libvirt_uri(), "pool-destroy", "small"});
    run({"virsh", "-c", libvirt_uri(), "pool-undefine", "small"});
    EXPECT_EQ(ns({"umount", small.string()}).rc, 0);
}

// Each step of a fork fails in turn: no child, overlay, memory image or lock remains,
// and the parent runs on an intact chain, carrying on.
TEST(Fork, AFailureAtAnyStepLeavesNothingBehind) {
    up_tiny("fx");
    const std::string token = boot_token("fx");
    const auto domains = domain_names();
    for (const std::string step :
         {"lock", "memory-volume", "parent-overlay", "snapshot", "parent-metadata",
          "child-overlay:2", "child-console:2", "header:2", "restore:2", "define:2", "commit"}) {
        const auto files = pool_files();
        const std::string parent_disk = disk_of("fx");
        CommandResult r = run_forky({"fork", "fx", "--count", "3"}, {"FORKY_FAULT=" + step});
        EXPECT_NE(r.rc, 0) << step;
        EXPECT_NE(r.err.find("Injected fault at step '" + step.substr(0, step.find(':'))),
                  std::string::npos)
            << step << ": " << r.err;
        EXPECT_EQ(domain_names(), domains) << step;
        // Only the parent's new top layer may be new: a snapshot that happened stays.
        const std::string now_disk = disk_of("fx");
        for (const auto& f : pool_files()) {
            if (has(files, f))
                continue;
            EXPECT_EQ((pool_dir() / f).string(), now_disk) << step << " left " << f;
        }
        EXPECT_EQ(domain_state_of("fx"), "running") << step;
        EXPECT_EQ(qemu_img_check(now_disk), "clean") << step;
        if (now_disk != parent_disk) {
            CommandResult info = run({"qemu-img", "info", "-U", "--output=json", now_disk});
            EXPECT_NE(info.out.find("\"backing-filename\": \"" + parent_disk + "\""),
                      std::string::npos)
                << step;
        }
    }
    const unsigned long c = last_counter("fx");
    wait_for_console("fx", "FORKY-TICK token=" + token + " counter=" + std::to_string(c + 3) +
                               " disk=" + token);
    // And forking works afterwards, with names never used.
    CommandResult ok = run_forky({"fork", "fx"});
    ASSERT_EQ(ok.rc, 0) << ok.all();
    expect_carries_on(lines(ok.out).at(0), token, c);
    remove_all({"fx", lines(ok.out).at(0)});
}

TEST(Fork, KilledOrInterruptedForksAreUndone) {
    up_tiny("fk");
    const auto files = pool_files();
    const auto domains = domain_names();

    // gc leaves a fork that is under way alone: its journal protects what it made so far.
    Background bg = start_forky({"fork", "fk"}, {"FORKY_FAULT_SLEEP=snapshot"});
    for (int i = 0; i < 300 && !has(pool_files(), "fk.fp1.mem"); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    CommandResult busy = run_forky({"gc"});
    EXPECT_NE(busy.out.find("busy, left alone: fk (fork by process " + std::to_string(bg.pid)),
              std::string::npos)
        << busy.out;
    EXPECT_TRUE(has(pool_files(), "fk.fp1.mem"));
    EXPECT_TRUE(has(pool_files(), "fk.vda.fp1.qcow2"));
    ::kill(bg.pid, SIGKILL);
    finish(bg);
    CommandResult swept = run_forky({"gc"});
    EXPECT_NE(swept.out.find("deleted volume fk.fp1.mem"), std::string::npos) << swept.out;
    EXPECT_EQ(pool_files(), files);

    // SIGKILL while the second child is being made: forky gc undoes what the journal says.
    bg = start_forky({"fork", "fk", "--count", "3"}, {"FORKY_FAULT_SLEEP=restore:2"});
    for (int i = 0; i < 300 && !has(domain_names(), "fk-1"); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_TRUE(has(domain_names(), "fk-1"));
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    ::kill(bg.pid, SIGKILL);
    finish(bg);
    CommandResult locked = run_forky({"fork", "fk", "--wait", "1"});
    EXPECT_EQ(locked.rc, 5) << locked.all();
    EXPECT_NE(locked.err.find("run 'forky gc'"), std::string::npos) << locked.err;
    CommandResult gc = run_forky({"gc"});
    ASSERT_EQ(gc.rc, 0) << gc.all();
    EXPECT_NE(gc.out.find("removed domain fk-1"), std::string::npos) << gc.out;
    EXPECT_NE(gc.out.find("released lock fk.lock"), std::string::npos) << gc.out;
    EXPECT_EQ(domain_names(), domains);
    for (const auto& f : pool_files()) {
        if (!has(files, f)) {
            EXPECT_EQ((pool_dir() / f).string(), disk_of("fk")) << "left " << f;
        }
    }
    EXPECT_EQ(run_forky({"gc"}).out, "Nothing to collect\n");

    // Ctrl-C: forky finishes the step at hand, undoes the rest and exits 130.
    bg = start_forky({"fork", "fk", "--count", "6"});
    for (int i = 0; i < 300 && !has(domain_names(), "fk-5"); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ::kill(bg.pid, SIGINT);
    CommandResult interrupted = finish(bg);
    EXPECT_EQ(interrupted.rc, 130) << interrupted.all();
    EXPECT_EQ(domain_names(), domains);
    EXPECT_EQ(run_forky({"gc"}).out, "Nothing to collect\n");
    EXPECT_EQ(domain_state_of("fk"), "running");
    remove_all({"fk"});
}

TEST(Fork, ConcurrentForksOfOneParentAllSucceedWithDistinctNames) {
    up_tiny("fc");
    const std::string token = boot_token("fc");
    std::vector<Background> running;
    for (int i = 0; i < 3; ++i)
        running.push_back(start_forky({"fork", "fc", "--count", "2"}));
    std::set<std::string> children;
    for (auto& bg : running) {
        CommandResult r = finish(bg);
        EXPECT_EQ(r.rc, 0) << r.all();
        for (const auto& c : lines(r.out))
            children.insert(c);
    }
    EXPECT_EQ(children, (std::set<std::string>{"fc-1", "fc-2", "fc-3", "fc-4", "fc-5", "fc-6"}));
    for (const auto& c : children)
        expect_carries_on(c, token, 0);
    std::vector<std::string> all{"fc"};
    all.insert(all.end(), children.begin(), children.end());
    remove_all(all);
    EXPECT_TRUE(pool_files().empty());
}
