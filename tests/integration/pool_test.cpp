// Warm pools end to end: children of a snapshot held ready and paused, handed out with a
// resume, never twice; refills in the background and after a kill. Real libvirtd, real
// QEMU, the tiny test guest.
#include "harness.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

using namespace forky::it;
namespace fs = std::filesystem;
using std::chrono::seconds;
using Json = nlohmann::json;

// A ready child is paused, restored from the snapshot; acquire resumes it: it prints the
// snapshot's token and goes on from the snapshot's counter. The pool refills behind it.
TEST(Pool, AcquireResumesAChildThatCarriesOnFromTheSnapshot) {
    up_tiny("pw");
    const std::string token = boot_token("pw");
    const unsigned long before = last_counter("pw");
    ASSERT_EQ(run_forky({"snapshot", "pw", "s1"}).rc, 0);
    CommandResult made = run_forky({"pool", "create", "wp", "--from", "pw@s1", "--size", "2"});
    ASSERT_EQ(made.rc, 0) << made.all();
    EXPECT_EQ(lines(made.out), (std::vector<std::string>{"wp-1", "wp-2"})) << made.all();
    EXPECT_EQ(domain_state_of("wp-1"), "paused");
    EXPECT_EQ(domain_state_of("wp-2"), "paused");
    CommandResult ls = run_forky({"pool", "ls", "--json"});
    ASSERT_EQ(ls.rc, 0) << ls.all();
    Json entry = Json::parse(ls.out).at(0);
    EXPECT_EQ(entry["from"], "pw@s1");
    EXPECT_EQ(entry["size"], 2);
    EXPECT_EQ(entry["ready"], 2);
    EXPECT_GT(entry["memory_bytes"].get<std::uint64_t>(), 0u) << entry.dump();
    // Paused: a ready child has printed nothing since the snapshot.
    const std::size_t quiet = run_forky({"logs", "wp-1"}).out.size();

    CommandResult got = run_forky({"acquire", "wp", "--json"});
    ASSERT_EQ(got.rc, 0) << got.all();
    const std::string child = Json::parse(got.out)["name"];
    EXPECT_TRUE(child == "wp-1" || child == "wp-2") << child;
    EXPECT_EQ(domain_state_of(child), "running");
    const Tick t = first_tick(child, child == "wp-1" ? quiet : 0);
    EXPECT_EQ(t.token, token) << "the snapshot's in-memory token";
    EXPECT_GE(t.counter, before);
    EXPECT_LE(t.counter, last_counter("pw") + 1);
    const unsigned long later = last_counter(child) + 3;
    wait_for_console(child, "counter=" + std::to_string(later) + " ");
    // Its lineage: the snapshot it came from and the pool that handed it out.
    CommandResult xml = virsh({"dumpxml", child});
    EXPECT_TRUE(contains(xml.out, "<forky:fork-point>pw@s1</forky:fork-point>")) << xml.out;
    EXPECT_TRUE(contains(xml.out, "<forky:acquired-from>wp</forky:acquired-from>")) << xml.out;
    EXPECT_FALSE(contains(xml.out, "<forky:warm-pool>")) << xml.out;

    // The background refill brings the pool back to 2 ready children.
    EXPECT_TRUE(eventually([] { return pool_ready("wp") == 2; }, seconds(180)))
        << run_forky({"pool", "ls"}).all() << run_forky({"ls"}).all();

    // A ready child resumed behind forky's back is never handed out: stale, and the next
    // refill replaces it.
    const std::string resumed =
        Json::parse(run_forky({"pool", "ls", "--json"}).out)[0]["children"][0]["name"];
    const std::string resumed_uuid = virsh({"domuuid", resumed}).out;
    ASSERT_EQ(virsh({"resume", resumed}).rc, 0);
    CommandResult stale = run_forky({"pool", "ls", "--json"});
    EXPECT_EQ(Json::parse(stale.out)[0]["stale"], 1) << stale.out;
    CommandResult replaced = run_forky({"pool", "refill", "wp"});
    ASSERT_EQ(replaced.rc, 0) << replaced.all();
    // (Its name may be given again, to a new child.)
    EXPECT_NE(virsh({"domuuid", resumed}).out, resumed_uuid) << replaced.all();
    EXPECT_EQ(pool_ready("wp"), 2u);

    // Release removes only children a pool handed out.
    CommandResult wrong = run_forky({"release", "pw"});
    EXPECT_EQ(wrong.rc, 5) << wrong.all();
    EXPECT_TRUE(contains(wrong.err, "was not handed out by a warm pool")) << wrong.err;
    const std::string ready =
        Json::parse(run_forky({"pool", "ls", "--json"}).out)[0]["children"][0]["name"];
    CommandResult not_out = run_forky({"release", ready});
    EXPECT_EQ(not_out.rc, 5) << not_out.all();
    CommandResult released = run_forky({"release", child});
    ASSERT_EQ(released.rc, 0) << released.all();
    EXPECT_FALSE(has(domain_names(), child));

    // A name of the caller's: restored under it from the snapshot (libvirt renames only
    // shut-off domains); the ready children stay ready.
    CommandResult named = run_forky({"acquire", "wp", "--name", "mine"});
    ASSERT_EQ(named.rc, 0) << named.all();
    EXPECT_EQ(named.out, "mine\n");
    EXPECT_EQ(first_tick("mine").token, token);
    EXPECT_EQ(pool_ready("wp"), 2u);
    EXPECT_EQ(run_forky({"release", "mine"}).rc, 0);

    // Bad input is a clear error.
    struct Bad {
        std::vector<std::string> args;
        int rc;
        std::string says;
    };
    for (const Bad& b : std::vector<Bad>{
             {{"pool", "create", "wp", "--from", "pw@s1", "--size", "1"}, 5, "exists already"},
             {{"pool", "create", "w2", "--from", "pw", "--size", "1"}, 2, "is not one"},
             {{"pool", "create", "w2", "--from", "pw@nope", "--size", "1"}, 4, "'nope'"},
             {{"pool", "create", "a/b", "--from", "pw@s1", "--size", "1"}, 2, "Invalid pool name"},
             {{"pool", "create", "w2", "--from", "pw@s1", "--size", "999"}, 2, "999"},
             {{"acquire", "nopool"}, 4, "No warm pool named 'nopool'"},
             {{"pool", "resize", "nopool", "3"}, 4, "No warm pool named 'nopool'"},
             {{"acquire", "wp", "--name", "pw"}, 5, "'pw' is taken"},
         }) {
        CommandResult r = run_forky(b.args);
        EXPECT_EQ(r.rc, b.rc) << b.args[0] << " " << b.args[1] << ": " << r.all();
        EXPECT_TRUE(contains(r.err, b.says)) << r.err;
    }

    // A planted record: listings cope, its name is refused with the reason, pool rm
    // removes it.
    std::ofstream(pool_dir() / "evil.warmpool") << "<warm-pool><name>other</name></warm-pool>";
    ASSERT_EQ(virsh({"pool-refresh", "forky-it"}).rc, 0);
    CommandResult listed = run_forky({"pool", "ls", "--json"});
    EXPECT_EQ(listed.rc, 0) << listed.all();
    CommandResult planted = run_forky({"pool", "create", "evil", "--from", "pw@s1", "--size", "1"});
    EXPECT_EQ(planted.rc, 5) << planted.all();
    EXPECT_TRUE(contains(planted.err, "is no readable warm pool record")) << planted.err;
    EXPECT_EQ(run_forky({"pool", "rm", "evil"}).rc, 0);
    EXPECT_FALSE(fs::exists(pool_dir() / "evil.warmpool"));

    // pool rm takes the ready children with it.
    CommandResult gone = run_forky({"pool", "rm", "wp"});
    ASSERT_EQ(gone.rc, 0) << gone.all();
    EXPECT_EQ(domain_names(), std::vector<std::string>{"pw"});
    EXPECT_EQ(run_forky({"pool", "ls", "--json"}).out, "[]\n");
    ASSERT_EQ(run_forky({"rm", "--force", "--recursive", "pw"}).rc, 0);
    EXPECT_TRUE(pool_files().empty()) << pool_files().size() << " files left";
}

// 16 clients acquire at once from a pool of 8: 8 distinct children and 8 "empty" errors;
// a client that waits gets a child of the next refill.
TEST(Pool, SixteenAcquiresAtOnceOfEightGiveEightChildren) {
    up_tiny("pc");
    ASSERT_EQ(run_forky({"snapshot", "pc", "s"}).rc, 0);
    CommandResult made = run_forky({"pool", "create", "wc", "--from", "pc@s", "--size", "8"});
    ASSERT_EQ(made.rc, 0) << made.all();
    ASSERT_EQ(lines(made.out).size(), 8u) << made.all();

    std::vector<Background> clients;
    for (int i = 0; i < 16; ++i)
        clients.push_back(start_forky({"acquire", "wc", "--no-refill"}));
    std::set<std::string> got;
    int empty = 0;
    for (auto& c : clients) {
        CommandResult r = finish(c, seconds(300));
        if (r.rc == 0) {
            EXPECT_TRUE(got.insert(r.out).second) << "handed out twice: " << r.out;
        } else {
            EXPECT_EQ(r.rc, 5) << r.all();
            EXPECT_TRUE(contains(r.err, "Warm pool 'wc' is empty")) << r.err;
            ++empty;
        }
    }
    EXPECT_EQ(got.size(), 8u);
    EXPECT_EQ(empty, 8);
    for (const auto& name : got)
        EXPECT_EQ(domain_state_of(name.substr(0, name.size() - 1)), "running") << name;
    EXPECT_EQ(pool_ready("wc"), 0u);

    // A client that waits gets a child once the pool is refilled.
    Background waiting = start_forky({"acquire", "wc", "--wait", "300", "--no-refill"});
    std::this_thread::sleep_for(seconds(1));
    CommandResult refill = run_forky({"pool", "resize", "wc", "1"});
    ASSERT_EQ(refill.rc, 0) << refill.all();
    CommandResult w = finish(waiting, seconds(300));
    ASSERT_EQ(w.rc, 0) << w.all();
    EXPECT_FALSE(got.count(w.out)) << w.out;
    EXPECT_EQ(domain_state_of(w.out.substr(0, w.out.size() - 1)), "running");

    // Waiting on an empty pool starts its refill: the wait ends with a child of it.
    EXPECT_EQ(pool_ready("wc"), 0u);
    CommandResult refilled = run_forky({"acquire", "wc", "--wait", "300"});
    ASSERT_EQ(refilled.rc, 0) << refilled.all();
    EXPECT_FALSE(got.count(refilled.out)) << refilled.out;
    EXPECT_NE(refilled.out, w.out);

    ASSERT_EQ(run_forky({"pool", "rm", "wc"}).rc, 0);
    ASSERT_EQ(run_forky({"rm", "--force", "--recursive", "pc"}).rc, 0);
    EXPECT_TRUE(domain_names().empty());
    EXPECT_TRUE(pool_files().empty()) << pool_files().size() << " files left";
}

// A refill killed while it makes a child leaves nothing that gc does not reclaim; the
// pool refills afterwards.
TEST(Pool, ARefillKilledMidwayIsCleanedUpByGc) {
    up_tiny("pk");
    ASSERT_EQ(run_forky({"snapshot", "pk", "s"}).rc, 0);
    ASSERT_EQ(run_forky({"pool", "create", "wk", "--from", "pk@s", "--size", "0"}).rc, 0);
    const std::vector<std::string> domains = domain_names();
    const std::vector<std::string> files = pool_files();

    Background bg = start_forky({"pool", "resize", "wk", "3"}, {"FORKY_FAULT_SLEEP=restore:2"});
    ASSERT_TRUE(eventually([] { return has(domain_names(), "wk-1"); }, seconds(60)));
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    ::kill(bg.pid, SIGKILL);
    finish(bg);
    CommandResult busy = run_forky({"pool", "refill", "wk"});
    EXPECT_EQ(busy.rc, 5) << busy.all();
    CommandResult gc = run_forky({"gc"});
    ASSERT_EQ(gc.rc, 0) << gc.all();
    EXPECT_TRUE(contains(gc.out, "removed domain wk-1")) << gc.out;
    EXPECT_EQ(domain_names(), domains);
    for (const auto& f : pool_files())
        if (!has(files, f))
            ADD_FAILURE() << "left " << f;
    EXPECT_EQ(run_forky({"gc"}).out, "Nothing to collect\n");

    // The pool goes on: its size is 3 now (the resize was recorded before the kill).
    CommandResult refill = run_forky({"pool", "refill", "wk"});
    ASSERT_EQ(refill.rc, 0) << refill.all();
    EXPECT_EQ(lines(refill.out).size(), 3u) << refill.all();
    EXPECT_EQ(pool_ready("wk"), 3u);
    ASSERT_EQ(run_forky({"pool", "rm", "wk"}).rc, 0);
    ASSERT_EQ(run_forky({"rm", "--force", "--recursive", "pk"}).rc, 0);
    EXPECT_TRUE(pool_files().empty()) << pool_files().size() << " files left";
}
