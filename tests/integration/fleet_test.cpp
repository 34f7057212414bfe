// Forks across hosts: two private libvirtds, each in a network namespace of its own
// (scripts/netns-fleet), reached over qemu+tcp (and qemu+tls with certificates the script
// makes) from a client namespace where forky runs. Nothing outside the machine is
// contacted. Each test makes and tears down its own fleet.
#include "harness.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>

namespace fs = std::filesystem;
using namespace forky::it;

namespace {

struct Fleet {
    fs::path dir;
    std::map<std::string, std::string> uris; // h1, h1-tls, h2, ...
    fs::path inventory;
    std::unique_ptr<UsingWrapper> wrapper;

    std::string script() const { return (source_dir() / "scripts/netns-fleet").string(); }

    Fleet(const std::string& name, unsigned hosts, bool tls, bool tls_for_h2 = false) {
        dir = test_dir() / name;
        std::vector<std::string> argv{script(), "start", dir.string(), std::to_string(hosts)};
        if (tls)
            argv.push_back("--tls");
        argv.insert(argv.end(), {"--watch", std::to_string(::getpid())});
        CommandResult r = run(argv);
        EXPECT_EQ(r.rc, 0) << r.all();
        for (const auto& line : lines(r.out)) {
            auto sp = line.find(' ');
            if (sp != std::string::npos)
                uris[line.substr(0, sp)] = line.substr(sp + 1);
        }
        // Each host's pool in a folder of its own (the hosts share this machine's disk).
        for (unsigned k = 1; k <= hosts; ++k) {
            const std::string h = "h" + std::to_string(k);
            CommandResult p = client({FORKY_BINARY, "--connect", uris[h], "--pool", "forky",
                                      "--pool-dir", pool(h).string(), "--create-pool", "gc"});
            EXPECT_EQ(p.rc, 0) << p.all();
        }
        inventory = dir / "hosts.yaml";
        std::ofstream out(inventory);
        out << "hosts:\n";
        for (unsigned k = 1; k <= hosts; ++k) {
            const std::string h = "h" + std::to_string(k);
            const std::string uri = (tls_for_h2 && k == 2) ? uris[h + "-tls"] : uris[h];
            out << "  - name: " << h << "\n    uri: " << uri << "\n    labels: {n: '" << k
                << "'}\n";
        }
        out.close();
        ForkyWrapper w;
        w.prefix = {script(), "exec", dir.string(), "--"};
        w.args = {"--hosts", inventory.string()};
        const fs::path d = dir;
        const unsigned n = hosts;
        // The console is typed on through each host's own socket (a file: no network).
        w.console_uri = [d, n](const std::string& vm) {
            for (unsigned k = 1; k <= n; ++k) {
                const std::string sock = (d / ("h" + std::to_string(k)) / "run/libvirt-sock");
                CommandResult r = run(
                    {"virsh", "-q", "-c", "qemu+unix:///system?socket=" + sock, "domstate", vm});
                if (r.rc == 0)
                    return "qemu+unix:///system?socket=" + sock;
            }
            return std::string("qemu+unix:///system?socket=/nonexistent");
        };
        wrapper = std::make_unique<UsingWrapper>(w);
    }
    ~Fleet() {
        wrapper.reset();
        run({script(), "stop", dir.string()});
    }

    fs::path pool(const std::string& host) const { return dir / host / "pool"; }
    CommandResult client(std::vector<std::string> argv) const {
        argv.insert(argv.begin(), {script(), "exec", dir.string(), "--"});
        return run(argv);
    }
    std::vector<std::string> domains(const std::string& host) const {
        return lines(client({"virsh", "-q", "-c", uris.at(host), "list", "--all", "--name"}).out);
    }
    // forky's volumes in a host's pool, images (kept for reuse) left out.
    std::vector<std::string> forky_files(const std::string& host) const {
        std::vector<std::string> out;
        for (const auto& e : fs::directory_iterator(pool(host))) {
            const std::string name = e.path().filename().string();
            if (name.rfind("img-", 0) != 0)
                out.push_back(name);
        }
        return out;
    }
};

unsigned long first_counter(const std::string& log) {
    std::smatch m;
    if (!std::regex_search(log, m, std::regex("FORKY-TICK token=[0-9a-f]+ counter=([0-9]+)")))
        return 0;
    return std::stoul(m[1]);
}

// `child`'s console goes on from the parent's memory: its token, a counter past the
// parent's before the fork, and no boot.
void expect_carries_on(const std::string& child, const std::string& token,
                       unsigned long counter_before) {
    const std::string log =
        wait_for_console(child, "FORKY-TICK token=" + token + " counter=[0-9]+ disk=" + token);
    EXPECT_EQ(log.find("FORKY-BOOT"), std::string::npos) << child << " booted again:\n" << log;
    EXPECT_GE(first_counter(log), counter_before) << log;
}

const std::string drop = "echo 3 > /proc/sys/vm/drop_caches; ";

} // namespace

TEST(Fleet, AChildOnAnotherHostCarriesOnAndItsWritesStayThere) {
    Fleet fleet("fleet-tcp", 2, false);
    ASSERT_EQ(fleet.uris.size(), 2u);
    const std::string spec = (source_dir() / "domains/tiny.yaml").string();
    CommandResult up = run_forky({"up", "-f", spec, "--host", "h1", "--name", "fl"});
    ASSERT_EQ(up.rc, 0) << up.all();
    EXPECT_TRUE(contains(up.out, "on host 'h1'")) << up.out;
    const std::string token = boot_token("fl");
    ASSERT_FALSE(token.empty());
    EXPECT_EQ(guest_eval("fl", "echo before-fork > /mnt/p0; sync; cat /mnt/p0"), "before-fork");
    const unsigned long before = last_counter("fl");
    // A kernel image planted on h2 under the name the real one's content gives, with a
    // forged mark: replaced, never booted.
    const std::string kernel_sha = sha256_of(source_dir() / "domains/images/vmlinuz");
    const fs::path planted = fleet.pool("h2") / ("img-" + kernel_sha);
    std::ofstream(planted) << std::string(4096, 'x');
    std::ofstream(planted.string() + ".ok") << kernel_sha;
    ASSERT_EQ(fleet.client({"virsh", "-c", fleet.uris["h2"], "pool-refresh", "forky"}).rc, 0);

    CommandResult f = run_forky({"fork", "fl", "--host", "h2", "--json"});
    ASSERT_EQ(f.rc, 0) << f.all();
    const auto fj = nlohmann::json::parse(f.out);
    ASSERT_EQ(fj["children"].size(), 1u) << f.out;
    const std::string child = fj["children"][0];
    EXPECT_EQ(fj["child_hosts"][0], "h2");
    EXPECT_GT(fj["bytes_shipped"].get<std::uint64_t>(), 1u << 20) << f.out; // memory image
    expect_carries_on(child, token, before);
    EXPECT_EQ(sha256_of(planted), kernel_sha);

    // The parent's disk as it was at the fork; the child's writes stay on h2.
    EXPECT_EQ(guest_eval(child, drop + "cat /mnt/p0 2>/dev/null || echo absent"), "before-fork");
    EXPECT_EQ(guest_eval(child, "echo on-b > /mnt/c; sync; cat /mnt/c"), "on-b");
    EXPECT_EQ(guest_eval("fl", drop + "cat /mnt/c 2>/dev/null || echo absent"), "absent");
    EXPECT_EQ(guest_eval(child, drop + "cat /mnt/c 2>/dev/null || echo absent"), "on-b");
    EXPECT_TRUE(has(fleet.domains("h2"), child));
    EXPECT_FALSE(has(fleet.domains("h1"), child));
    EXPECT_TRUE(fs::exists(fleet.pool("h2") / (child + ".vda.qcow2")));
    EXPECT_FALSE(fs::exists(fleet.pool("h1") / (child + ".vda.qcow2")));
    // The shipped chain is whole and names its copies on h2 (qemu-img, not forky).
    CommandResult chain = run({"qemu-img", "info", "--backing-chain", "-U",
                               (fleet.pool("h2") / (child + ".vda.qcow2")).string()});
    EXPECT_EQ(chain.rc, 0) << chain.all();
    EXPECT_FALSE(contains(chain.out, fleet.pool("h1").string())) << chain.out;

    // Every listing covers the fleet and says each VM's host.
    CommandResult ls = run_forky({"ls", "--json"});
    ASSERT_EQ(ls.rc, 0) << ls.all();
    std::map<std::string, nlohmann::json> by_name;
    for (const auto& vm : nlohmann::json::parse(ls.out))
        by_name[vm["name"]] = vm;
    EXPECT_EQ(by_name["fl"]["host"], "h1");
    EXPECT_EQ(by_name[child]["host"], "h2");
    EXPECT_EQ(by_name[child]["parent"], "fl");
    EXPECT_EQ(by_name[child]["parent_host"], "h1");
    CommandResult tree = run_forky({"tree", "--json"});
    ASSERT_EQ(tree.rc, 0) << tree.all();
    std::string child_parent;
    std::map<std::string, std::string> host_of;
    const auto tj = nlohmann::json::parse(tree.out);
    for (const auto& n : tj["nodes"]) {
        host_of[n["name"]] = n["host"].is_null() ? "" : n["host"].get<std::string>();
        if (n["name"] == child)
            child_parent = n["parent"];
    }
    EXPECT_EQ(host_of[child], "h2");
    EXPECT_EQ(host_of["fl"], "h1");
    EXPECT_FALSE(child_parent.empty());

    // A stored fork point: the second fork to h2 ships nothing.
    ASSERT_EQ(run_forky({"snapshot", "fl", "s"}).rc, 0);
    CommandResult first = run_forky({"fork", "fl@s", "--host", "h2", "--json"});
    ASSERT_EQ(first.rc, 0) << first.all();
    CommandResult second = run_forky({"fork", "fl@s", "--host", "h2", "--json"});
    ASSERT_EQ(second.rc, 0) << second.all();
    const auto j1 = nlohmann::json::parse(first.out);
    const auto j2 = nlohmann::json::parse(second.out);
    EXPECT_GT(j1["volumes_shipped"].get<unsigned>(), 0u) << first.out;
    EXPECT_EQ(j2["volumes_shipped"], 0u) << second.out;
    EXPECT_EQ(j2["bytes_shipped"], 0u) << second.out;
    expect_carries_on(j2["children"][0], token, before);

    // Removed, and collected on every host: nothing of forky's is left.
    const std::vector<std::string> made = {j2["children"][0].get<std::string>(),
                                           j1["children"][0].get<std::string>(), child};
    for (const auto& vm : made)
        EXPECT_EQ(run_forky({"rm", "--force", vm}).rc, 0);
    EXPECT_EQ(run_forky({"rm", "--force", "--recursive", "fl"}).rc, 0);
    CommandResult gc = run_forky({"gc"});
    EXPECT_EQ(gc.rc, 0) << gc.all();
    EXPECT_EQ(fleet.forky_files("h1"), std::vector<std::string>{});
    EXPECT_EQ(fleet.forky_files("h2"), std::vector<std::string>{});
    EXPECT_TRUE(fleet.domains("h1").empty());
    EXPECT_TRUE(fleet.domains("h2").empty());
}

TEST(Fleet, AHostStoppedMidForkLeavesNothingBehindAfterGc) {
    Fleet fleet("fleet-kill", 2, false);
    const std::string spec = (source_dir() / "domains/tiny.yaml").string();
    ASSERT_EQ(run_forky({"up", "-f", spec, "--host", "h1", "--name", "fk"}).rc, 0);
    const std::string token = boot_token("fk");
    ASSERT_EQ(run_forky({"snapshot", "fk", "s"}).rc, 0);
    // The fork waits once the fork point reached h2; h2's libvirtd (and its QEMUs) die.
    Background bg = start_forky({"fork", "fk@s", "--host", "h2"},
                                {"FORKY_FAULT_SLEEP=shipped", "FORKY_FAULT_SLEEP_S=8"});
    ASSERT_TRUE(eventually([&] { return fs::exists(fleet.pool("h2") / "fk.fp1.point"); },
                           std::chrono::seconds(60)));
    CommandResult stop = run({fleet.script(), "stop", fleet.dir.string(), "h2"});
    ASSERT_EQ(stop.rc, 0) << stop.all();
    CommandResult r = finish(bg);
    EXPECT_NE(r.rc, 0) << r.all();
    EXPECT_TRUE(contains(r.err, "forky: error:")) << r.err;
    // h1 is as it was: the parent runs, its snapshot is there, no child.
    EXPECT_EQ(fleet.domains("h1"), std::vector<std::string>{"fk"});
    // h2 back (as after a reboot): gc there undoes what the dead fork left.
    CommandResult restart = run({fleet.script(), "start", fleet.dir.string(), "2"});
    ASSERT_EQ(restart.rc, 0) << restart.all();
    CommandResult gc = run_forky({"gc", "--host", "h2"});
    EXPECT_EQ(gc.rc, 0) << gc.all();
    EXPECT_TRUE(fleet.domains("h2").empty());
    EXPECT_EQ(fleet.forky_files("h2"), std::vector<std::string>{}) << gc.out;
    // And the fork goes through now.
    CommandResult again = run_forky({"fork", "fk@s", "--host", "h2"});
    ASSERT_EQ(again.rc, 0) << again.all();
    expect_carries_on(lines(again.out).at(0), token, 0);
    EXPECT_EQ(run_forky({"rm", "--force", lines(again.out).at(0)}).rc, 0);
    EXPECT_EQ(run_forky({"rm", "--force", "--recursive", "fk"}).rc, 0);
}

TEST(Fleet, SpreadOverAHostReachedOverTls) {
    Fleet fleet("fleet-tls", 2, true, /*tls_for_h2=*/true);
    ASSERT_TRUE(contains(fleet.uris["h2-tls"], "qemu+tls://"));
    CommandResult hosts = run_forky({"hosts", "--json"});
    ASSERT_EQ(hosts.rc, 0) << hosts.all();
    for (const auto& h : nlohmann::json::parse(hosts.out))
        EXPECT_EQ(h["reachable"], true) << hosts.out;
    const std::string spec = (source_dir() / "domains/tiny.yaml").string();
    // Placement: labels filter (only h1 carries n=1).
    const fs::path policy = fleet.dir / "placement.yaml";
    std::ofstream(policy) << "filters:\n  labels: {n: '1'}\n  min_pool_free: 1MiB\n"
                          << "  min_free_memory: 1MiB\n";
    CommandResult up =
        run_forky({"--placement", policy.string(), "up", "-f", spec, "--name", "ft"});
    ASSERT_EQ(up.rc, 0) << up.all();
    EXPECT_TRUE(contains(up.out, "on host 'h1'")) << up.out;
    const std::string token = boot_token("ft");
    // Spread: one child on each host (h1 holds the fork point and is ranked first).
    const fs::path spread = fleet.dir / "spread.yaml";
    std::ofstream(spread) << "filters:\n  min_pool_free: 1MiB\n  min_free_memory: 1MiB\n"
                          << "rank:\n  strategy: spread\n";
    CommandResult f = run_forky(
        {"--placement", spread.string(), "fork", "ft", "--count", "2", "--spread", "--json"});
    ASSERT_EQ(f.rc, 0) << f.all();
    const auto j = nlohmann::json::parse(f.out);
    ASSERT_EQ(j["children"].size(), 2u) << f.out;
    EXPECT_EQ(std::set<std::string>({j["child_hosts"][0], j["child_hosts"][1]}),
              std::set<std::string>({"h1", "h2"}))
        << f.out;
    for (const auto& c : j["children"])
        expect_carries_on(c, token, 0);
    // A host that cannot take them is refused with its reason.
    CommandResult refused =
        run_forky({"--placement", policy.string(), "fork", "ft", "--host", "h2", "--json"});
    EXPECT_EQ(refused.rc, 5) << refused.all();
    EXPECT_TRUE(contains(refused.err, "h2")) << refused.err;
    for (const auto& c : j["children"])
        EXPECT_EQ(run_forky({"rm", "--force", c.get<std::string>()}).rc, 0);
    EXPECT_EQ(run_forky({"rm", "--force", "ft"}).rc, 0);
}

// forkyd serving a fleet (hosts: in forkyd.yaml): the CLI through it places a VM on a
// named host, forks to another, and lists, draws and collects the fleet exactly as it
// does itself with the inventory.
TEST(Fleet, ForkydServesTheFleetAsTheCliDoes) {
    Fleet fleet("fleet-d", 2, false);
    ASSERT_EQ(fleet.uris.size(), 2u);
    const fs::path run_dir = fleet.dir / "run";
    fs::create_directories(run_dir);
    fs::permissions(run_dir, fs::perms::owner_all);
    const fs::path socket = run_dir / "forkyd.sock";
    const fs::path config = fleet.dir / "forkyd.yaml";
    std::ofstream(config) << "hosts: " << fleet.inventory.string() << "\nlisten: [unix://"
                          << socket.string() << "]\nspec_dirs: ["
                          << (source_dir() / "domains").string() << "]\n";
    fs::permissions(config, fs::perms::owner_read | fs::perms::owner_write);
    CommandResult check = fleet.client({FORKYD_BINARY, "--config", config.string(), "--check"});
    EXPECT_EQ(check.rc, 0) << check.all();
    EXPECT_TRUE(contains(check.out, "the fleet of " + fleet.inventory.string())) << check.out;
    Background daemon = start_command({fleet.script(), "exec", fleet.dir.string(), "--",
                                       FORKYD_BINARY, "--config", config.string(), "-v"});
    ASSERT_TRUE(eventually([&] { return fs::exists(socket); }, std::chrono::seconds(60)))
        << slurp_file(daemon.err_file);
    const auto via = [&](std::vector<std::string> args) {
        args.insert(args.begin(), {FORKY_BINARY, "--server", "unix://" + socket.string()});
        return fleet.client(args);
    };

    const std::string spec = (source_dir() / "domains/tiny.yaml").string();
    CommandResult up = via({"up", "-f", spec, "--host", "h2", "--name", "fd"});
    ASSERT_EQ(up.rc, 0) << up.all();
    EXPECT_TRUE(contains(up.out, "Started VM 'fd' on host 'h2'")) << up.out;
    EXPECT_TRUE(has(fleet.domains("h2"), "fd"));
    const std::string token = boot_token("fd");
    ASSERT_FALSE(token.empty());
    CommandResult fork = via({"fork", "fd", "--host", "h1"});
    ASSERT_EQ(fork.rc, 0) << fork.all();
    EXPECT_EQ(lines(fork.out), std::vector<std::string>{"fd-1"});
    EXPECT_TRUE(contains(fork.err, "On host 'h1': fd-1")) << fork.err;
    EXPECT_TRUE(has(fleet.domains("h1"), "fd-1"));
    wait_for_console("fd-1", "FORKY-TICK token=" + token);

    for (const std::vector<std::string>& args : {std::vector<std::string>{"ls"},
                                                 {"ls", "--json"},
                                                 {"tree", "--json"},
                                                 {"hosts", "--json"},
                                                 {"gc", "--dry-run", "--json"}}) {
        CommandResult direct = run_forky(args); // the inventory, through the wrapper
        CommandResult served = via(args);
        EXPECT_EQ(served.rc, direct.rc) << served.all();
        if (args.front() == "hosts") // free memory moves between the two calls
            EXPECT_EQ(served.out.substr(0, 40), direct.out.substr(0, 40));
        else
            EXPECT_EQ(served.out, direct.out) << args.front();
    }
    CommandResult ls = via({"ls"});
    EXPECT_TRUE(contains(ls.out, "HOST")) << ls.out;
    CommandResult missing = via({"rm", "nope"});
    EXPECT_EQ(missing.rc, 4) << missing.all();
    EXPECT_TRUE(
        contains(missing.err, "No VM named 'nope' on any host of " + fleet.inventory.string()))
        << missing.err;

    CommandResult rm = via({"rm", "fd", "--recursive"});
    EXPECT_EQ(rm.rc, 0) << rm.all();
    EXPECT_TRUE(contains(rm.out, "Removed VM 'fd-1' on host 'h1'")) << rm.out;
    EXPECT_FALSE(has(fleet.domains("h1"), "fd-1"));
    EXPECT_FALSE(has(fleet.domains("h2"), "fd"));
    ::kill(daemon.pid, SIGTERM);
    CommandResult stopped = finish(daemon, std::chrono::seconds(90));
    EXPECT_EQ(stopped.rc, 0) << stopped.all();
}

// A warm pool whose children run on another host of the fleet (--host): the snapshot
// travels there once, the ready children are made and handed out there, and a refill puts
// the replacement there too; the record stays with the snapshot.
TEST(Fleet, AWarmPoolOnAnotherHostHandsOutChildrenThere) {
    Fleet fleet("fleet-pool", 2, false);
    const std::string spec = (source_dir() / "domains/tiny.yaml").string();
    CommandResult up = run_forky({"up", "-f", spec, "--name", "fp", "--host", "h1"});
    ASSERT_EQ(up.rc, 0) << up.all();
    const std::string token = boot_token("fp");
    ASSERT_EQ(run_forky({"snapshot", "fp", "s"}).rc, 0);
    CommandResult made =
        run_forky({"pool", "create", "fw", "--from", "fp@s", "--size", "2", "--host", "h2"});
    ASSERT_EQ(made.rc, 0) << made.all();
    EXPECT_TRUE(has(fleet.domains("h2"), "fw-1")) << made.all();
    EXPECT_TRUE(has(fleet.domains("h2"), "fw-2")) << made.all();
    CommandResult ls = run_forky({"pool", "ls", "--json"});
    ASSERT_EQ(ls.rc, 0) << ls.all();
    const auto pools = nlohmann::json::parse(ls.out);
    ASSERT_EQ(pools.size(), 1u) << ls.out;
    EXPECT_EQ(pools[0]["host"], "h1") << ls.out;
    EXPECT_EQ(pools[0]["placement"], "h2") << ls.out;
    EXPECT_EQ(pools[0]["ready"], 2) << ls.out;
    for (const auto& c : pools[0]["children"])
        EXPECT_EQ(c["host"], "h2") << ls.out;

    CommandResult got = run_forky({"acquire", "fw", "--no-refill", "--json"});
    ASSERT_EQ(got.rc, 0) << got.all();
    const auto j = nlohmann::json::parse(got.out);
    EXPECT_EQ(j["host"], "h2") << got.out;
    expect_carries_on(j["name"], token, 0);
    CommandResult refill = run_forky({"pool", "refill", "fw"});
    ASSERT_EQ(refill.rc, 0) << refill.all();
    ASSERT_EQ(lines(refill.out).size(), 1u) << refill.all();
    EXPECT_TRUE(has(fleet.domains("h2"), lines(refill.out)[0])) << refill.all();

    EXPECT_EQ(run_forky({"release", j["name"].get<std::string>()}).rc, 0);
    EXPECT_EQ(run_forky({"pool", "rm", "fw"}).rc, 0);
    EXPECT_EQ(run_forky({"rm", "--force", "--recursive", "fp"}).rc, 0);
    EXPECT_TRUE(fleet.domains("h1").empty());
    EXPECT_TRUE(fleet.domains("h2").empty());
}
