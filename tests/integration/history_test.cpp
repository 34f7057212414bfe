// A VM's history end to end: snapshots, revert, forks from a stored snapshot, removal,
// gc of what is orphaned, squash, the tree as Graphviz; failures and Ctrl-C at each new
// step. Real libvirtd, real QEMU, the tiny test guest.
#include "harness.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

namespace fs = std::filesystem;
using namespace forky::it;
using std::chrono::seconds;

namespace {

std::string uuid_of(const std::string& vm) {
    std::string out = virsh({"domuuid", vm}).out;
    return out.substr(0, out.find('\n'));
}

// The first tick after the counter went back (a revert), after `after` bytes of the console.
Tick tick_after_drop(const std::string& vm, std::size_t after) {
    const std::regex re("FORKY-TICK token=([0-9a-f]{16}) counter=([0-9]+) ");
    for (int i = 0; i < 600; ++i) {
        std::string log = run_forky({"logs", vm}).out.substr(after);
        unsigned long previous = 0;
        for (auto it = std::sregex_iterator(log.begin(), log.end(), re);
             it != std::sregex_iterator(); ++it) {
            const unsigned long c = std::stoul((*it)[2]);
            if (previous != 0 && c < previous)
                return {(*it)[1], c};
            previous = c;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ADD_FAILURE() << vm << "'s counter never went back";
    return {};
}

std::size_t console_size(const std::string& vm) {
    return run_forky({"logs", vm}).out.size();
}

std::string qemu_img_check(const fs::path& file) {
    CommandResult r = run({"qemu-img", "check", "-U", file.string()});
    return r.rc == 0 ? "clean" : r.all();
}

// Every qcow2 volume of the pool checks clean.
void expect_pool_clean(const std::string& when) {
    for (const auto& f : pool_files())
        if (f.size() > 6 && f.substr(f.size() - 6) == ".qcow2") {
            EXPECT_EQ(qemu_img_check(pool_dir() / f), "clean") << when << ": " << f;
        }
}

} // namespace

// snapshot -> the guest moves on -> revert -> it prints the token and counter of the
// snapshot moment, under the same name and UUID; its children are not touched.
TEST(History, RevertPutsTheVmBackAtItsSnapshot) {
    up_tiny("hr");
    const std::string uuid = uuid_of("hr");
    const unsigned long before = last_counter("hr");
    CommandResult snap = run_forky({"snapshot", "hr", "s1"});
    ASSERT_EQ(snap.rc, 0) << snap.all();
    EXPECT_EQ(snap.out, "hr@s1\n");
    const unsigned long after_snapshot = last_counter("hr");
    // libvirt shows it as the VM's snapshot, with forky's record.
    CommandResult list = virsh({"snapshot-list", "hr", "--name"});
    EXPECT_TRUE(contains(list.out, "s1")) << list.all();
    CommandResult dump = virsh({"snapshot-dumpxml", "hr", "s1"});
    EXPECT_TRUE(contains(dump.out, "forky snapshot hr@s1")) << dump.out;
    // and refuses to delete it behind forky's back (it would merge shared layers).
    EXPECT_NE(virsh({"snapshot-delete", "hr", "s1"}).rc, 0);

    // A child of the VM, to prove a revert leaves it alone.
    ASSERT_EQ(run_forky({"fork", "hr"}).rc, 0);
    const std::string child_token = boot_token("hr");
    EXPECT_EQ(guest_eval("hr-1", "echo child-data > /mnt/c; sync; cat /mnt/c"), "child-data");
    const unsigned long child_before = last_counter("hr-1");

    // The guest moves on and writes.
    EXPECT_EQ(guest_eval("hr", "echo later > /mnt/later; sync; cat /mnt/later"), "later");
    wait_for_console("hr", "counter=" + std::to_string(after_snapshot + 30) + " ");
    const std::size_t mark = console_size("hr") - 200; // a tick before the revert
    CommandResult revert = run_forky({"revert", "hr", "s1"});
    ASSERT_EQ(revert.rc, 0) << revert.all();
    EXPECT_TRUE(contains(revert.out, "kept as 'hr@pre-revert-")) << revert.out;
    const Tick t = tick_after_drop("hr", mark);
    EXPECT_EQ(t.token, boot_token("hr"));
    EXPECT_GT(t.counter, before);
    EXPECT_LE(t.counter, after_snapshot + 2) << "the counter of the snapshot's moment";
    EXPECT_EQ(uuid_of("hr"), uuid);
    EXPECT_EQ(domain_state_of("hr"), "running");
    // Its disk is the snapshot's too: what it wrote later is gone.
    EXPECT_EQ(guest_eval("hr", "echo 3 > /proc/sys/vm/drop_caches; cat /mnt/later 2>/dev/null || "
                               "echo absent"),
              "absent");
    // The child carries on with its own memory and disk.
    EXPECT_EQ(domain_state_of("hr-1"), "running");
    EXPECT_GT(last_counter("hr-1"), child_before);
    EXPECT_EQ(guest_eval("hr-1", "echo 3 > /proc/sys/vm/drop_caches; cat /mnt/c"), "child-data");
    EXPECT_EQ(first_tick("hr-1", console_size("hr-1")).token, child_token);

    // Back to the state it left, kept as pre-revert-N: the later write is there again.
    CommandResult snaps = run_forky({"snapshots", "hr", "--json"});
    std::smatch m;
    ASSERT_TRUE(std::regex_search(snaps.out, m, std::regex("\"name\":\"(pre-revert-[0-9]+)\"")))
        << snaps.out;
    ASSERT_EQ(run_forky({"revert", "hr", m[1], "--discard"}).rc, 0);
    EXPECT_EQ(guest_eval("hr", "echo 3 > /proc/sys/vm/drop_caches; cat /mnt/later"), "later");
    expect_pool_clean("after reverts");
    remove_all({"hr", "hr-1"});
    ASSERT_EQ(run_forky({"rm", "--recursive", "hr"}).rc, 0);
    EXPECT_TRUE(pool_files().empty()) << pool_files().size() << " files left";
}

// Two forks of one stored snapshot, far apart in guest time, start from the same state.
TEST(History, ForksOfAStoredSnapshotStartFromIdenticalStates) {
    up_tiny("hs");
    const std::string token = boot_token("hs");
    ASSERT_EQ(run_forky({"snapshot", "hs", "base"}).rc, 0);
    CommandResult a = run_forky({"fork", "hs@base", "--prefix", "early"});
    ASSERT_EQ(a.rc, 0) << a.all();
    const Tick ta = first_tick("early-1");
    // The VM moves on, is stopped: the snapshot does not care.
    wait_for_console("hs", "counter=" + std::to_string(last_counter("hs") + 40) + " ");
    ASSERT_EQ(run_forky({"stop", "--force", "hs"}).rc, 0);
    CommandResult b = run_forky({"fork", "hs@base", "--prefix", "late"});
    ASSERT_EQ(b.rc, 0) << b.all();
    const Tick tb = first_tick("late-1");
    EXPECT_EQ(ta.token, token);
    EXPECT_EQ(tb.token, token);
    EXPECT_EQ(ta.counter, tb.counter) << "both children start from the snapshot's instant";
    CommandResult xml = virsh({"dumpxml", "late-1"});
    EXPECT_TRUE(contains(xml.out, "<forky:fork-point>hs@base</forky:fork-point>")) << xml.out;
    EXPECT_TRUE(contains(xml.out, "<forky:parent-uuid>" + uuid_of("hs") + "</forky:parent-uuid>"));

    // The VM removed, its snapshot kept: still a source of children.
    ASSERT_EQ(run_forky({"rm", "hs"}).rc, 0);
    CommandResult c = run_forky({"fork", "hs@base", "--prefix", "orphan"});
    ASSERT_EQ(c.rc, 0) << c.all();
    EXPECT_EQ(first_tick("orphan-1").counter, ta.counter);
    CommandResult tree = run_forky({"tree"});
    EXPECT_TRUE(contains(tree.out, "hs  [removed]")) << tree.out;

    // Removing a snapshot VMs came from is refused, naming them.
    CommandResult refused = run_forky({"rm", "hs@base"});
    EXPECT_EQ(refused.rc, 5) << refused.all();
    EXPECT_TRUE(contains(refused.err, "'early-1', 'late-1', 'orphan-1'")) << refused.err;
    CommandResult all = run_forky({"rm", "--recursive", "hs"});
    ASSERT_EQ(all.rc, 0) << all.all();
    for (const char* vm : {"early-1", "late-1", "orphan-1"})
        EXPECT_FALSE(has(domain_names(), vm)) << vm;
    EXPECT_TRUE(pool_files().empty()) << pool_files().size() << " files left";
}

// Bad input is a clear error and changes nothing.
TEST(History, BadInputIsAClearError) {
    up_tiny("hb");
    up_tiny("other");
    ASSERT_EQ(run_forky({"snapshot", "hb", "one"}).rc, 0);
    const auto files = pool_files();
    const auto domains = domain_names();
    struct Case {
        std::vector<std::string> args;
        int rc;
        std::string message;
    };
    const std::vector<Case> cases = {
        {{"snapshot", "hb", "one"}, 5, "has a snapshot named 'one' already"},
        {{"snapshot", "hb", "fp7"}, 2, "names fpN are forky's own"},
        {{"snapshot", "hb", "a/b"}, 2, "Invalid snapshot name 'a/b'"},
        {{"revert", "hb", "nope"}, 4, "No snapshot or fork point 'nope' of VM 'hb'"},
        {{"revert", "other", "one"}, 4, "No snapshot or fork point 'one' of VM 'other'"},
        {{"fork", "other@one"}, 4, "No snapshot or fork point 'one' of VM 'other'"},
        {{"fork", "hb@"}, 2, "Invalid snapshot name"},
        {{"rm", "hb@nope"}, 4, "No snapshot or fork point 'nope'"},
        {{"snapshots", "nobody"}, 4, "No VM named 'nobody'"},
        {{"tree", "nobody"}, 4, "No VM named 'nobody'"},
        {{"fork", "hb@one", "--cold"}, 2, "is frozen already"},
        {{"rm", "hb@one", "--recursive"}, 2, "not a snapshot"},
    };
    for (const auto& c : cases) {
        CommandResult r = run_forky(c.args);
        EXPECT_EQ(r.rc, c.rc) << c.args.front() << " " << c.args.at(1) << ": " << r.all();
        EXPECT_TRUE(contains(r.err, c.message)) << "expected '" << c.message << "' in " << r.err;
    }
    // A VM that is busy (another operation holds it) is not reverted.
    Background holder = start_forky({"snapshot", "hb", "two"},
                                    {"FORKY_FAULT_SLEEP=snapshot", "FORKY_FAULT_SLEEP_S=4"});
    ASSERT_TRUE(eventually([] { return has(pool_files(), "hb.lock"); }));
    CommandResult busy = run_forky({"revert", "hb", "one", "--wait", "1"});
    EXPECT_EQ(busy.rc, 5) << busy.all();
    EXPECT_TRUE(contains(busy.err, "VM 'hb' is busy: a snapshot by process")) << busy.err;
    EXPECT_EQ(finish(holder).rc, 0);
    ASSERT_EQ(run_forky({"rm", "hb@two"}).rc, 0);
    EXPECT_EQ(domain_names(), domains);
    remove_all({"hb", "other"});
    ASSERT_EQ(run_forky({"rm", "--recursive", "hb"}).rc, 0);
    EXPECT_TRUE(pool_files().empty()) << pool_files().size() << " files left";
}

// A failure, or Ctrl-C, at any step of a snapshot, a revert or a squash leaves the VM as
// it was (or on an intact chain one layer longer), and every layer checks clean.
TEST(History, AFailureAtAnyStepLeavesTheVmAsItWas) {
    up_tiny("hf");
    const std::string token = boot_token("hf");
    ASSERT_EQ(run_forky({"snapshot", "hf", "s"}).rc, 0);
    const auto domains = domain_names();
    auto check_as_it_was = [&](const std::string& what, const std::set<std::string>& files) {
        EXPECT_EQ(domain_names(), domains) << what;
        EXPECT_EQ(domain_state_of("hf"), "running") << what;
        EXPECT_EQ(run_forky({"gc"}).out, "Nothing to collect\n") << what;
        const std::string disk = disk_of("hf");
        for (const auto& f : pool_files())
            if (!files.count(f)) {
                EXPECT_EQ((pool_dir() / f).string(), disk) << what << " left " << f;
            }
        expect_pool_clean(what);
        const unsigned long c = last_counter("hf");
        wait_for_console("hf", "FORKY-TICK token=" + token + " counter=" + std::to_string(c + 2) +
                                   " disk=" + token);
    };
    for (const std::string step :
         {"lock", "memory-volume", "parent-overlay", "snapshot", "parent-metadata", "commit"}) {
        const auto files = pool_files();
        CommandResult r = run_forky({"snapshot", "hf", "x"}, {"FORKY_FAULT=" + step});
        EXPECT_EQ(r.rc, 1) << step << ": " << r.all();
        EXPECT_TRUE(contains(r.err, "Injected fault at step '" + step)) << r.err;
        check_as_it_was("snapshot " + step, {files.begin(), files.end()});
        EXPECT_FALSE(contains(virsh({"snapshot-list", "hf", "--name"}).out, "x")) << step;
    }
    for (const std::string step :
         {"lock", "snapshot", "revert-snapshot", "revert-overlay", "revert-stop", "revert-restore",
          "header:1", "restore:1", "define:1", "commit"}) {
        const auto files = pool_files();
        CommandResult r = run_forky({"revert", "hf", "s"}, {"FORKY_FAULT=" + step});
        EXPECT_EQ(r.rc, 1) << step << ": " << r.all();
        check_as_it_was("revert " + step, {files.begin(), files.end()});
    }
    // Ctrl-C while the VM is stopped for its revert: it comes back as it was.
    {
        const auto files = pool_files();
        const unsigned long c = last_counter("hf");
        Background bg = start_forky({"revert", "hf", "s"}, {"FORKY_FAULT_SLEEP=revert-stop"});
        ASSERT_TRUE(eventually([] { return domain_state_of("hf") == "shut off"; }));
        ::kill(bg.pid, SIGINT);
        CommandResult r = finish(bg, seconds(60));
        EXPECT_EQ(r.rc, 130) << r.all();
        check_as_it_was("revert interrupted", {files.begin(), files.end()});
        EXPECT_GE(last_counter("hf"), c) << "it carried on from where it was, not from s";
    }
    ASSERT_EQ(run_forky({"snapshot", "hf", "t"}).rc, 0);
    ASSERT_EQ(run_forky({"rm", "hf@t"}).rc, 0);
    for (const std::string step : {"lock", "squash-pull", "commit"}) {
        const auto files = pool_files();
        CommandResult r = run_forky({"squash", "hf"}, {"FORKY_FAULT=" + step});
        EXPECT_EQ(r.rc, 1) << step << ": " << r.all();
        EXPECT_EQ(domain_state_of("hf"), "running") << step;
        expect_pool_clean("squash " + step);
    }
    remove_all({"hf"});
    ASSERT_EQ(run_forky({"rm", "--recursive", "hf"}).rc, 0);
}

// gc frees exactly what is orphaned: after a killed snapshot, a child undefined with
// virsh, and the removal of a middle generation.
TEST(History, GcFreesExactlyWhatIsOrphaned) {
    up_tiny("hg");
    const auto start = pool_files();

    Background bg = start_forky({"snapshot", "hg", "k"}, {"FORKY_FAULT_SLEEP=snapshot"});
    ASSERT_TRUE(eventually([] { return has(pool_files(), "hg.fp1.mem"); }));
    ::kill(bg.pid, SIGKILL);
    finish(bg);
    CommandResult gc = run_forky({"gc"});
    EXPECT_TRUE(contains(gc.out, "deleted volume hg.fp1.mem")) << gc.out;
    EXPECT_TRUE(contains(gc.out, "deleted volume hg.fp1.point")) << gc.out;
    EXPECT_EQ(pool_files(), start);

    // A child undefined behind forky's back: its volumes and its fork point go.
    ASSERT_EQ(run_forky({"fork", "hg"}).rc, 0);
    const std::string top = fs::path(disk_of("hg")).filename();
    ASSERT_EQ(virsh({"destroy", "hg-1"}).rc, 0);
    ASSERT_EQ(virsh({"undefine", "hg-1"}).rc, 0);
    CommandResult dry = run_forky({"gc", "--dry-run"});
    EXPECT_TRUE(contains(dry.out, "would delete volume hg-1.vda.qcow2")) << dry.out;
    gc = run_forky({"gc"});
    for (const auto& f : pool_files())
        EXPECT_TRUE(has(start, f) || f == top || f == "hg.vda.qcow2") << "left " << f;
    EXPECT_FALSE(has(pool_files(), "hg-1.vda.qcow2"));
    EXPECT_FALSE(has(pool_files(), "hg-1.console.log"));

    // Three generations; the middle one removed: its layers stay while its child needs
    // them, and go with the child.
    ASSERT_EQ(run_forky({"fork", "hg"}).rc, 0);
    ASSERT_EQ(run_forky({"fork", "hg-2"}).rc, 0);
    const auto with_three = pool_files();
    ASSERT_EQ(run_forky({"rm", "--force", "hg-2"}).rc, 0);
    EXPECT_EQ(run_forky({"gc"}).out, "Nothing to collect\n");
    EXPECT_EQ(domain_state_of("hg-2-1"), "running");
    CommandResult tree = run_forky({"tree"});
    EXPECT_TRUE(contains(tree.out, "hg-2-1")) << tree.out;
    ASSERT_EQ(run_forky({"rm", "--force", "hg-2-1"}).rc, 0);
    for (const auto& f : pool_files())
        EXPECT_EQ(f.rfind("hg-2", 0), std::string::npos) << "left " << f;

    // A snapshot's memory image deleted behind forky's back: tree and gc say so (gc acts
    // on nothing), a fork from it is a clear error, and the snapshot can still be removed.
    const auto before_snapshot = pool_files();
    ASSERT_EQ(run_forky({"snapshot", "hg", "lost"}).rc, 0);
    std::string mem;
    for (const auto& f : pool_files())
        if (!has(before_snapshot, f) && f.size() > 4 && f.substr(f.size() - 4) == ".mem")
            mem = f;
    ASSERT_FALSE(mem.empty());
    fs::remove(pool_dir() / mem);
    ASSERT_EQ(virsh({"pool-refresh", "forky-it"}).rc, 0);
    tree = run_forky({"tree"});
    EXPECT_EQ(tree.rc, 0) << tree.all();
    EXPECT_TRUE(contains(tree.all(), "memory image")) << tree.all();
    dry = run_forky({"gc", "--dry-run"});
    EXPECT_EQ(dry.rc, 0) << dry.all();
    EXPECT_TRUE(contains(dry.out, "problem: fork point 'hg@lost'")) << dry.out;
    EXPECT_FALSE(contains(dry.out, "would delete")) << dry.out;
    CommandResult json = run_forky({"gc", "--dry-run", "--json"});
    EXPECT_TRUE(contains(json.out, "\"problems\":[\"fork point 'hg@lost'")) << json.out;
    CommandResult from_lost = run_forky({"fork", "hg@lost"});
    EXPECT_NE(from_lost.rc, 0);
    EXPECT_TRUE(contains(from_lost.err, "hg@lost")) << from_lost.all();
    EXPECT_FALSE(has(domain_names(), "hg-3"));
    CommandResult rm_lost = run_forky({"rm", "hg@lost"});
    EXPECT_EQ(rm_lost.rc, 0) << rm_lost.all();
    EXPECT_EQ(run_forky({"gc"}).out, "Nothing to collect\n");
    remove_all({"hg"});
    EXPECT_TRUE(pool_files().empty()) << pool_files().size() << " files left";
}

// squash shortens the chain and keeps every domain's data.
TEST(History, SquashKeepsTheDataAndShortensTheChain) {
    up_tiny("hq");
    auto sum = [](const std::string& vm) {
        return guest_eval(vm, "echo 3 > /proc/sys/vm/drop_caches; cat /mnt/f* | md5sum | cut "
                              "-c1-32");
    };
    for (int i = 0; i < 4; ++i) {
        const std::string file = "/mnt/f" + std::to_string(i);
        ASSERT_EQ(
            guest_eval("hq", "echo v" + std::to_string(i) + " > " + file + "; sync; cat " + file),
            "v" + std::to_string(i));
        ASSERT_EQ(run_forky({"snapshot", "hq"}).rc, 0);
        if (i == 0) { // a child low in the chain: its layer must stay
            ASSERT_EQ(run_forky({"fork", "hq"}).rc, 0);
        }
    }
    const std::string before = sum("hq");
    const std::string child_before = sum("hq-1");
    CommandResult r = run_forky({"squash", "hq", "--keep", "0", "--json"});
    ASSERT_EQ(r.rc, 0) << r.all();
    std::smatch m;
    ASSERT_TRUE(std::regex_search(r.out, m,
                                  std::regex("\"depth_before\":\\{\"vda\":([0-9]+)\\},"
                                             "\"depth_after\":\\{\"vda\":([0-9]+)\\}")))
        << r.out;
    EXPECT_LT(std::stoul(m[2]), std::stoul(m[1])) << r.out;
    EXPECT_EQ(sum("hq"), before);
    EXPECT_EQ(sum("hq-1"), child_before);
    expect_pool_clean("after squash");
    // What is left: the fork point the child came from; the snapshots went (--keep 0).
    CommandResult snaps = run_forky({"snapshots", "hq"});
    EXPECT_EQ(lines(snaps.out).size(), 2u) << snaps.out;
    EXPECT_TRUE(contains(snaps.out, "hq-1")) << snaps.out;
    remove_all({"hq", "hq-1"});
    EXPECT_TRUE(pool_files().empty()) << pool_files().size() << " files left";
}

// The tree as Graphviz, rendered by dot.
TEST(History, TreeDotRendersWithGraphviz) {
    up_tiny("ht");
    ASSERT_EQ(run_forky({"snapshot", "ht", "s"}).rc, 0);
    ASSERT_EQ(run_forky({"fork", "ht@s", "--count", "2"}).rc, 0);
    CommandResult dot = run_forky({"tree", "--dot"});
    ASSERT_EQ(dot.rc, 0) << dot.all();
    EXPECT_TRUE(contains(dot.out, "digraph forky")) << dot.out;
    fs::path file = test_dir() / "tree.dot";
    std::ofstream(file) << dot.out;
    CommandResult svg = run({"dot", "-Tsvg", file.string()});
    ASSERT_EQ(svg.rc, 0) << svg.all();
    EXPECT_TRUE(contains(svg.out, "<svg")) << svg.out.substr(0, 200);
    for (const char* name : {"ht&#45;1", "ht&#45;2", "ht@s"}) // dot writes '-' as &#45;
        EXPECT_TRUE(contains(svg.out, name)) << name;
    CommandResult json = run_forky({"tree", "ht", "--json"});
    EXPECT_TRUE(contains(json.out, "\"kind\":\"fork-point\",\"id\":")) << json.out;
    remove_all({"ht", "ht-1", "ht-2"});
    ASSERT_EQ(run_forky({"rm", "--recursive", "ht"}).rc, 0);
}

// Records in the pool are evidence, not orders: a planted record never makes forky delete
// another VM's volume, a damaged one never costs the snapshot it describes, and a qcow2
// that forky did not make is never collected for its name. (Found by trying forky as a
// hostile user would.)
TEST(History, PlantedAndDamagedRecordsCostNoData) {
    up_tiny("hp");
    up_tiny("victim");
    ASSERT_EQ(run_forky({"snapshot", "hp", "good"}).rc, 0);
    ASSERT_EQ(run_forky({"snapshot", "hp", "second"}).rc, 0);
    const std::string good_record = slurp_file(pool_dir() / "hp.fp1.point");
    ASSERT_TRUE(contains(good_record, "<memory-image>hp.fp1.mem</memory-image>"));

    // A copy of a real record that names the victim's disk as its memory image.
    std::string planted = good_record;
    auto swap = [&planted](const std::string& from, const std::string& to) {
        const auto at = planted.find(from);
        ASSERT_NE(at, std::string::npos) << from;
        planted.replace(at, from.size(), to);
    };
    swap("<name>good</name>", "<name>evil</name>");
    swap("<seq>1</seq>", "<seq>95</seq>");
    swap("hp.fp1.mem", "victim.vda.qcow2");
    std::ofstream(pool_dir() / "hp.fp95.point") << planted << std::string(64, '\0');
    ASSERT_EQ(virsh({"pool-refresh", "forky-it"}).rc, 0);
    CommandResult rm = run_forky({"rm", "hp@evil"});
    EXPECT_NE(rm.rc, 0) << rm.all();
    EXPECT_TRUE(has(pool_files(), "victim.vda.qcow2"));
    CommandResult tree = run_forky({"tree"});
    EXPECT_TRUE(contains(tree.all(), "hp.fp95.point' is unreadable")) << tree.all();
    EXPECT_TRUE(contains(tree.all(), "is not 'hp.fp95.mem'")) << tree.all();

    // A damaged record: gc keeps the snapshot's files and says why.
    {
        std::fstream f(pool_dir() / "hp.fp1.point", std::ios::in | std::ios::out);
        f.seekp(5);
        f << 'X';
    }
    CommandResult dry = run_forky({"gc", "--dry-run"});
    EXPECT_FALSE(contains(dry.out, "would delete volume hp.fp1.")) << dry.out;
    EXPECT_TRUE(contains(dry.out, "problem: fork point record 'hp.fp1.point' is unreadable"))
        << dry.out;
    // Nor does the sweep after another removal take them.
    ASSERT_EQ(run_forky({"rm", "hp@second"}).rc, 0);
    EXPECT_TRUE(has(pool_files(), "hp.fp1.mem"));
    EXPECT_TRUE(has(pool_files(), "hp.fp1.point"));

    // A qcow2 named like forky's volumes but made by someone else (no backing file).
    ASSERT_EQ(run({"qemu-img", "create", "-q", "-f", "qcow2",
                   (pool_dir() / "notforky.vda.qcow2").string(), "1M"})
                  .rc,
              0);
    ASSERT_EQ(virsh({"pool-refresh", "forky-it"}).rc, 0);
    CommandResult gc = run_forky({"gc"});
    EXPECT_TRUE(has(pool_files(), "notforky.vda.qcow2")) << gc.all();
    EXPECT_TRUE(contains(gc.out, "notforky.vda.qcow2: named like forky's volumes")) << gc.out;
    EXPECT_TRUE(has(pool_files(), "hp.fp1.mem")) << gc.out;
    EXPECT_TRUE(has(pool_files(), "victim.vda.qcow2"));
    EXPECT_EQ(domain_state_of("victim"), "running");
    remove_all({"hp", "victim"});
}

// A VM that is off can be snapshotted and forked from its snapshots; default names step
// over names the user took; revert takes VM@NAME; rm of a removed VM points at its kept
// snapshots.
TEST(History, ShutOffVmsDefaultNamesAndShortForms) {
    up_tiny("ho");
    ASSERT_EQ(run_forky({"snapshot", "ho", "warm"}).rc, 0);
    ASSERT_EQ(run_forky({"stop", "ho", "--timeout", "1"}).rc, 0);
    ASSERT_EQ(domain_state_of("ho"), "shut off");
    CommandResult cold = run_forky({"snapshot", "ho", "off"});
    ASSERT_EQ(cold.rc, 0) << cold.all();
    CommandResult xml = virsh({"dumpxml", "--inactive", "ho"});
    const std::string disk = disk_of("ho");
    EXPECT_TRUE(contains(xml.out, "<forky:volume role=\"disk\" target=\"vda\">" +
                                      fs::path(disk).filename().string() + "<"))
        << "the lineage follows the VM onto its new top: " << disk << "\n"
        << xml.out;
    CommandResult child = run_forky({"fork", "ho@warm"});
    ASSERT_EQ(child.rc, 0) << child.all();
    EXPECT_EQ(domain_state_of(lines(child.out).at(0)), "running");

    // The user took 'snap4' (as the third fork point); the fourth's default name, snap4,
    // is stepped over.
    ASSERT_EQ(run_forky({"snapshot", "ho", "snap4"}).rc, 0);
    CommandResult dflt = run_forky({"snapshot", "ho", "--json"});
    EXPECT_EQ(dflt.rc, 0) << dflt.all();
    EXPECT_TRUE(contains(dflt.out, "\"snapshot\":\"ho@snap4-2\"")) << dflt.out;
    CommandResult empty = run_forky({"snapshot", "ho", ""});
    EXPECT_EQ(empty.rc, 2) << empty.all();

    // revert VM@NAME (the VM is off: it comes back running, at 'warm').
    CommandResult revert = run_forky({"revert", "ho@warm"});
    EXPECT_EQ(revert.rc, 0) << revert.all();
    EXPECT_EQ(domain_state_of("ho"), "running");
    CommandResult mixed = run_forky({"revert", "ho", "other@warm"});
    EXPECT_EQ(mixed.rc, 2) << mixed.all();

    ASSERT_EQ(run_forky({"rm", "--force", "ho", lines(child.out).at(0)}).rc, 0);
    CommandResult gone = run_forky({"rm", "ho"});
    EXPECT_EQ(gone.rc, 4);
    EXPECT_TRUE(contains(gone.err, "its snapshots are kept")) << gone.err;
    ASSERT_EQ(run_forky({"rm", "--recursive", "ho"}).rc, 0);
    EXPECT_TRUE(pool_files().empty()) << pool_files().size() << " files left";
}
