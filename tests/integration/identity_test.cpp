// Clone identity: every instance forky starts from a memory image (a fork's children, a
// fork from a stored snapshot, a reverted VM) runs under a VM generation ID of its own,
// and the guest's kernel (vmgenid, Linux 5.18+) reseeds its random pool from it, so
// children that share their parent's memory do not share its random numbers.
// Real libvirtd, real QEMU, the tiny test guest (generic Debian kernel: CONFIG_VMGENID).
#include "harness.hpp"

#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <set>
#include <thread>

using namespace forky::it;

namespace {

// The first capture of `pattern` in the VM's `virsh dumpxml`, "" if none.
std::string from_dumpxml(const std::string& vm, const std::string& pattern) {
    const std::string xml = virsh({"dumpxml", vm}).out;
    std::smatch m;
    return std::regex_search(xml, m, std::regex(pattern)) ? std::string(m[1]) : "";
}

// The generation ID the VM runs under (libvirt's live definition)...
std::string live_genid(const std::string& vm) {
    return from_dumpxml(vm, "<genid>([0-9a-f-]{36})</genid>");
}

// ... and the one forky's lineage records.
std::string lineage_genid(const std::string& vm) {
    return from_dumpxml(vm, "<forky:genid>([0-9a-f-]{36})</forky:genid>");
}

// counter -> the random bytes the guest printed at that tick.
std::map<unsigned long, std::string> rand_by_counter(const std::string& vm) {
    const std::string log = run_forky({"logs", vm}).out;
    const std::regex re(
        "FORKY-TICK token=[0-9a-f]+ counter=([0-9]+) disk=\\S+ rand=([0-9a-f]{12})");
    std::map<unsigned long, std::string> out;
    for (auto it = std::sregex_iterator(log.begin(), log.end(), re); it != std::sregex_iterator();
         ++it)
        out[std::stoul((*it)[1])] = (*it)[2];
    return out;
}

// Waits until every VM printed tick `counter`; returns each one's bytes at that tick.
std::map<std::string, std::string> rand_at(const std::vector<std::string>& vms,
                                           unsigned long counter) {
    std::map<std::string, std::string> out;
    for (const auto& vm : vms) {
        const bool printed = eventually(
            [&] {
                auto r = rand_by_counter(vm);
                auto it = r.find(counter);
                if (it == r.end())
                    return false;
                out[vm] = it->second;
                return true;
            },
            std::chrono::seconds(90));
        EXPECT_TRUE(printed) << vm << " never printed tick " << counter;
    }
    return out;
}

// The first counter each child printed (its console log holds only its own life).
unsigned long first_counter(const std::string& vm) {
    unsigned long first = 0;
    EXPECT_TRUE(eventually([&] {
        auto r = rand_by_counter(vm);
        if (r.empty())
            return false;
        first = r.begin()->first;
        return true;
    }));
    return first;
}

std::set<std::string> distinct(const std::map<std::string, std::string>& values) {
    std::set<std::string> s;
    for (const auto& [k, v] : values)
        s.insert(v);
    return s;
}

} // namespace

TEST(Identity, ChildrenGetNewGenerationIdsAndDoNotShareRandomNumbers) {
    up_tiny("id");
    const std::string parent_genid = live_genid("id");
    ASSERT_FALSE(parent_genid.empty()) << "forky up gives every VM a <genid>";
    EXPECT_EQ(lineage_genid("id"), parent_genid);

    CommandResult fork = run_forky({"fork", "id", "--count", "4"});
    ASSERT_EQ(fork.rc, 0) << fork.all();
    const std::vector<std::string> children = lines(fork.out);
    ASSERT_EQ(children.size(), 4u);

    // Five different generation IDs; the lineage and `forky ls --json` say the live one.
    std::set<std::string> genids = {parent_genid};
    for (const auto& c : children) {
        const std::string g = live_genid(c);
        EXPECT_FALSE(g.empty()) << c;
        EXPECT_EQ(lineage_genid(c), g) << c;
        genids.insert(g);
    }
    EXPECT_EQ(genids.size(), 5u);
    EXPECT_EQ(live_genid("id"), parent_genid) << "the parent was paused, not cloned";
    const std::string ls = run_forky({"ls", "--json"}).out;
    for (const auto& g : genids)
        EXPECT_TRUE(contains(ls, "\"genid\":\"" + g + "\"")) << ls;

    // Within a second of running (ticks every 100 ms or more), the children's random
    // bytes differ from one another and from the parent's at the same tick: each kernel
    // reseeded when its generation ID changed. (Without it, all five print the parent's
    // bytes at each tick until their next timed reseed.)
    unsigned long first = 0;
    for (const auto& c : children)
        first = std::max(first, first_counter(c));
    std::vector<std::string> family = children;
    family.push_back("id");
    const auto bytes = rand_at(family, first + 5);
    ASSERT_EQ(bytes.size(), 5u);
    EXPECT_EQ(distinct(bytes).size(), 5u) << "tick " << first + 5 << ": " << [&] {
        std::string s;
        for (const auto& [vm, r] : bytes)
            s += vm + "=" + r + " ";
        return s;
    }();

    // A fork from a stored snapshot and a revert: new generation IDs again. No guest
    // agent in the test guest: forky says it could not set the clocks.
    ASSERT_EQ(run_forky({"snapshot", "id", "s"}).rc, 0);
    CommandResult late = run_forky({"fork", "id@s", "--count", "2", "--json"});
    ASSERT_EQ(late.rc, 0) << late.all();
    for (const char* c : {"id-5", "id-6"}) {
        EXPECT_TRUE(contains(late.out, std::string("'") + c + "':")) << late.out;
        const std::string g = live_genid(c);
        EXPECT_FALSE(g.empty()) << c;
        EXPECT_TRUE(genids.insert(g).second) << c << " reuses " << g;
    }
    CommandResult late_text = run_forky({"fork", "id@s"});
    ASSERT_EQ(late_text.rc, 0) << late_text.all();
    EXPECT_TRUE(contains(late_text.err, "note: clock not set for 'id-7'")) << late_text.err;
    EXPECT_TRUE(genids.insert(live_genid("id-7")).second);

    CommandResult revert = run_forky({"revert", "id@s"});
    ASSERT_EQ(revert.rc, 0) << revert.all();
    EXPECT_TRUE(contains(revert.err, "note: clock not set for 'id'")) << revert.err;
    const std::string reverted = live_genid("id");
    EXPECT_TRUE(genids.insert(reverted).second) << "a reverted VM runs under a new one";
    EXPECT_EQ(lineage_genid("id"), reverted);

    CommandResult rm = run_forky({"rm", "--recursive", "id"});
    EXPECT_EQ(rm.rc, 0) << rm.all();
    EXPECT_TRUE(pool_files().empty()) << pool_files().size() << " files left";
}
