// The engine's plans (pure: no libvirt), fork point records and references.
#include "errors.hpp"
#include "fork.hpp"
#include "fork_point.hpp"
#include "plan.hpp"

#include <gtest/gtest.h>

#include <set>

using namespace forky;

namespace {

VmFacts web(VmState state = VmState::running) {
    VmFacts vm;
    vm.name = "web";
    vm.uuid = "11111111-2222-4333-8444-555555555555";
    vm.state = state;
    vm.lineage.pool = "forky";
    vm.lineage.forks = 2;
    vm.top_paths = {{"vda", "/pool/web.vda.fp2.qcow2"}, {"vdb", "/pool/web.vdb.fp2.qcow2"}};
    vm.top_volumes = {{"vda", "web.vda.fp2.qcow2"}, {"vdb", "web.vdb.fp2.qcow2"}};
    vm.memory_bytes = 256ULL << 20;
    return vm;
}

PoolFacts pool() {
    PoolFacts p;
    p.pool = "forky";
    p.available = 10ULL << 30;
    p.volume_names = {"web.vda.fp2.qcow2", "web.vdb.fp2.qcow2", "web.fp2.mem",
                      "web.fp2.point",     "web-1.vda.qcow2",   "web-3.console.log"};
    p.domain_names = {"web", "web-2"};
    return p;
}

template <typename E, typename F>
std::string error_of(F f) {
    try {
        f();
    } catch (const E& e) {
        return e.what();
    }
    return "";
}

} // namespace

TEST(Plan, FreezeNamesEverythingFromTheFacts) {
    FreezeRequest fork;
    FreezePlan p = plan_freeze(web(), pool(), fork);
    EXPECT_EQ(p.point.seq, 3u); // past the lineage's counter and the volumes
    EXPECT_EQ(p.point.name, "fp3");
    EXPECT_EQ(p.point.label(), "web@fp3");
    EXPECT_EQ(p.point.memory_image, "web.fp3.mem");
    EXPECT_EQ(p.point.layers.at("vda"), "web.vda.fp2.qcow2"); // the tops are frozen
    EXPECT_EQ(p.new_tops.at("vdb"), "web.vdb.fp3.qcow2");
    EXPECT_TRUE(p.memory);
    EXPECT_FALSE(p.cold);
    EXPECT_EQ(p.bytes_needed, (256ULL << 20) + (1ULL << 20));

    FreezeRequest snap;
    snap.kind = ForkPoint::Kind::snapshot;
    EXPECT_EQ(plan_freeze(web(), pool(), snap).point.name, "snap3");
    snap.name = "before-upgrade";
    EXPECT_EQ(plan_freeze(web(), pool(), snap).point.name, "before-upgrade");
    FreezeRequest keep;
    keep.kind = ForkPoint::Kind::pre_revert;
    EXPECT_EQ(plan_freeze(web(), pool(), keep).point.name, "pre-revert-3");
    // A VM that is off: disks only, and no fork.
    FreezePlan off = plan_freeze(web(VmState::shut_off), pool(), snap);
    EXPECT_FALSE(off.memory);
    EXPECT_TRUE(off.point.memory_image.empty());
    EXPECT_EQ(off.bytes_needed, 1ULL << 20);
}

TEST(Plan, FreezeRefusesWhatCannotBeDone) {
    FreezeRequest fork;
    EXPECT_NE(error_of<ConflictError>([&] {
                  plan_freeze(web(VmState::paused), pool(), fork);
              }).find("is paused; fork it with --cold"),
              std::string::npos);
    fork.cold = true;
    EXPECT_TRUE(plan_freeze(web(VmState::paused), pool(), fork).cold);
    fork.cold = false;
    EXPECT_NE(error_of<ConflictError>([&] {
                  plan_freeze(web(VmState::shut_off), pool(), fork);
              }).find("only a running VM can be forked"),
              std::string::npos);

    FreezeRequest snap;
    snap.kind = ForkPoint::Kind::snapshot;
    for (const char* bad : {"fp3", "a/b", "", "../x"}) {
        snap.name = bad;
        if (std::string(bad).empty())
            continue; // empty: the default name
        EXPECT_FALSE(error_of<UsageError>([&] { plan_freeze(web(), pool(), snap); }).empty())
            << bad;
    }
    PoolFacts taken = pool();
    ForkPoint existing;
    existing.vm_uuid = web().uuid;
    existing.name = "before-upgrade";
    taken.fork_points.push_back(existing);
    snap.name = "before-upgrade";
    EXPECT_NE(error_of<ConflictError>([&] {
                  plan_freeze(web(), taken, snap);
              }).find("has a snapshot named 'before-upgrade' already"),
              std::string::npos);
    existing.vm_uuid = "another-vm-of-the-same-name";
    taken.fork_points = {existing};
    EXPECT_EQ(plan_freeze(web(), taken, snap).point.name, "before-upgrade");

    VmFacts outside = web();
    outside.top_volumes.erase("vdb");
    EXPECT_NE(error_of<ConflictError>([&] {
                  plan_freeze(outside, pool(), snap);
              }).find("Disk 'vdb' of VM 'web'"),
              std::string::npos);
    PoolFacts small = pool();
    small.available = 100ULL << 20;
    EXPECT_NE(error_of<StorageError>([&] {
                  plan_freeze(web(), small, snap);
              }).find("Pool 'forky' has 100MiB free"),
              std::string::npos);
    PoolFacts leftover = pool();
    leftover.volume_names.insert("web.vda.fp3.qcow2");
    leftover.volume_names.erase("web.vda.fp2.qcow2");
    // next_seq skips past it: a leftover never collides.
    EXPECT_EQ(plan_freeze(web(), leftover, snap).point.seq, 4u);
}

TEST(Plan, SpawnSkipsTakenNamesAndSizesTheJournal) {
    ForkPoint fp = plan_freeze(web(), pool(), FreezeRequest{}).point;
    SpawnRequest req;
    req.count = 3;
    req.prefix = "web";
    req.first_index = 1;
    const std::set<std::string> taken = taken_names(pool());
    EXPECT_TRUE(taken.count("web-1")); // a volume
    EXPECT_TRUE(taken.count("web-2")); // a domain
    SpawnPlan p = plan_spawn(fp, taken, req);
    ASSERT_EQ(p.children.size(), 3u);
    EXPECT_EQ(p.children[0].name, "web-4");
    EXPECT_EQ(p.children[1].name, "web-5");
    EXPECT_EQ(p.children[2].name, "web-6");
    EXPECT_EQ(p.last_index, 6u);
    EXPECT_EQ(p.children[0].disks.at("vdb"), "web-4.vdb.qcow2");
    EXPECT_EQ(p.children[0].console, "web-4.console.log");
    std::set<std::string> uuids;
    for (const auto& c : p.children)
        uuids.insert(c.uuid);
    EXPECT_EQ(uuids.size(), 3u);
    req.console = false;
    EXPECT_TRUE(plan_spawn(fp, taken, req).children[0].console.empty());

    req.prefix = std::string(61, 'p');
    req.count = 10; // PREFIX-10 has 64 characters
    EXPECT_NE(error_of<UsageError>([&] { plan_spawn(fp, {}, req); }).find("Cannot name children"),
              std::string::npos);

    // The largest fork: 256 children, 63-character names, two disks. The journal sized
    // from the plans holds everything the fork will write.
    req.prefix = std::string(59, 'j');
    req.count = 256;
    req.console = true;
    FreezePlan freeze = plan_freeze(web(), pool(), FreezeRequest{});
    SpawnPlan big = plan_spawn(freeze.point, {}, req);
    Journal j;
    j.state = Journal::State::valid;
    j.operation = "fork";
    j.vm = "web";
    j.holder_host = "vm";
    j.holder_id = "m:b:1";
    j.holder_pid = 1;
    j.since = 1;
    j.op = "0f0f0f0f-2222-4333-8444-555555555555";
    const std::size_t bytes = journal_bytes(j, &freeze, &big);
    Journal full = j;
    full.paused = web().uuid;
    full.resumed = full.committed = true;
    full.volumes = {freeze.point.memory_image, fork_point_record_name("web", 3),
                    freeze.new_tops.at("vda"), freeze.new_tops.at("vdb")};
    for (const auto& c : big.children) {
        full.children.emplace_back(c.name, c.uuid);
        for (const auto& [t, d] : c.disks)
            full.volumes.push_back(d);
        full.volumes.push_back(c.console);
    }
    EXPECT_GE(bytes, full.encode().size() + 1);
    EXPECT_GT(bytes, 64u * 1024) << "past the lock volume's first size: it must grow";
}

TEST(ForkPointRecord, RoundTripsThroughXml) {
    ForkPoint fp;
    fp.id = "22222222-2222-4333-8444-555555555555";
    fp.name = "before-upgrade";
    fp.kind = ForkPoint::Kind::snapshot;
    fp.seq = 7;
    fp.vm = "web";
    fp.vm_uuid = "11111111-2222-4333-8444-555555555555";
    fp.created_at = "2026-11-27T10:00:00Z";
    fp.host = "qemu:///system";
    fp.pool = "forky";
    fp.state = VmState::paused;
    fp.operation = "33333333-2222-4333-8444-555555555555";
    fp.memory_image = "web.fp7.mem";
    fp.layers = {{"vda", "web.vda.fp6.qcow2"}};
    ForkPoint back = fork_point_from_xml(fork_point_to_xml(fp));
    EXPECT_EQ(back.id, fp.id);
    EXPECT_EQ(back.name, fp.name);
    EXPECT_EQ(back.kind, fp.kind);
    EXPECT_EQ(back.seq, 7u);
    EXPECT_EQ(back.vm_uuid, fp.vm_uuid);
    EXPECT_EQ(back.state, VmState::paused);
    EXPECT_EQ(back.memory_image, fp.memory_image);
    EXPECT_EQ(back.layers, fp.layers);
    EXPECT_TRUE(back.kept());
    EXPECT_TRUE(back.shipped_from.empty());
    // A copy shipped to another host: where from, what each volume's SHA-256 was on
    // arrival, its kernel and initrd there.
    fp.shipped_from = "a";
    fp.checksums = {{"web.fp7.mem", std::string(64, 'a')}, {"web.vda.fp6.qcow2", "b"}};
    fp.boot_files = {{"kernel", "img-k"}, {"initrd", "img-i"}};
    ForkPoint copy = fork_point_from_xml(fork_point_to_xml(fp));
    EXPECT_EQ(copy.shipped_from, "a");
    EXPECT_EQ(copy.checksums, fp.checksums);
    EXPECT_EQ(copy.boot_files, fp.boot_files);
    std::string bad = fork_point_to_xml(fp);
    bad.replace(bad.find("role=\"kernel\""), 13, "role=\"kernex\"");
    EXPECT_THROW(fork_point_from_xml(bad), Error);
    EXPECT_THROW(fork_point_from_xml("<fork-point/>"), Error);
    EXPECT_THROW(fork_point_from_xml("not xml"), Error);
}

TEST(ForkPointRecord, ReferencesResolveByTheVmsIdentity) {
    EXPECT_FALSE(parse_point_ref("web"));
    auto ref = parse_point_ref("web@s1");
    ASSERT_TRUE(ref);
    EXPECT_EQ(ref->vm, "web");
    EXPECT_EQ(ref->name, "s1");
    EXPECT_THROW(parse_point_ref("web@"), UsageError);
    EXPECT_THROW(parse_point_ref("../x@s1"), UsageError);

    ForkPoint old_web; // a removed VM of the same name, its snapshot kept
    old_web.name = "s1";
    old_web.vm = "web";
    old_web.vm_uuid = "aaaaaaaa-2222-4333-8444-555555555555";
    ForkPoint new_web = old_web;
    new_web.vm_uuid = "bbbbbbbb-2222-4333-8444-555555555555";
    new_web.id = "new";
    const std::vector<ForkPoint> points{old_web, new_web};
    // The VM that exists: its own snapshot, never the old one of its name.
    EXPECT_EQ(find_fork_point(points, *ref, new_web.vm_uuid).id, "new");
    EXPECT_THROW(find_fork_point(points, *ref, std::string("cccccccc-2222-4333-8444-555555555555")),
                 NotFoundError);
    // No VM of that name: ambiguous between two removed ones.
    EXPECT_NE(error_of<ConflictError>([&] {
                  find_fork_point(points, *ref, std::nullopt);
              }).find("is ambiguous"),
              std::string::npos);
    EXPECT_EQ(find_fork_point({old_web}, *ref, std::nullopt).vm_uuid, old_web.vm_uuid);
    EXPECT_EQ(snapshot_name_problem("fp12").has_value(), true);
    EXPECT_EQ(snapshot_name_problem("fpx").has_value(), false);
}
