// forky diff, export and import end to end: a child's file changes seen through
// libguestfs and through the layers' allocation; a running child carried out as files and
// back in under a new name, going on from its memory; a tampered export refused. Real
// libvirtd, real QEMU, the tiny test guest, libguestfs's appliance under emulation.
#include "harness.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include <csignal>

using namespace forky::it;
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

std::set<std::string> paths_of(const Json& list) {
    std::set<std::string> out;
    for (const auto& e : list)
        out.insert(e.at("path").get<std::string>());
    return out;
}

const Json* entry(const Json& list, const std::string& path) {
    for (const auto& e : list)
        if (e.at("path") == path)
            return &e;
    return nullptr;
}

// Every volume in the pool whose name starts with `prefix`.
std::vector<std::string> pool_files_of(const std::string& prefix) {
    std::vector<std::string> out;
    for (const auto& f : pool_files())
        if (f.rfind(prefix, 0) == 0)
            out.push_back(f);
    return out;
}

constexpr std::uint64_t mib = 1 << 20;

} // namespace

// A child writes, creates and deletes files on its data disk: the diff against its fork
// point lists exactly those, as text and as JSON; --blocks agrees with the bytes written.
TEST(Diff, ListsExactlyTheFilesAChildChanged) {
    up_tiny("df");
    ASSERT_EQ(guest_eval("df", "echo keep > /mnt/keep.txt; echo gone > /mnt/del.txt; "
                               "echo hello > /mnt/mod.txt; mkdir /mnt/dir; "
                               "echo same > /mnt/dir/same.txt; sync; echo ready"),
              "ready");
    CommandResult fork = run_forky({"fork", "df"});
    ASSERT_EQ(fork.rc, 0) << fork.all();
    ASSERT_EQ(lines(fork.out), std::vector<std::string>{"df-1"});
    ASSERT_EQ(guest_eval("df-1", "rm /mnt/del.txt; echo world >> /mnt/mod.txt; "
                                 "dd if=/dev/urandom of=/mnt/new.bin bs=1M count=4 2>/dev/null; "
                                 "mkdir /mnt/newdir; ln -s keep.txt /mnt/link; sync; echo done"),
              "done");

    CommandResult diff = run_forky({"diff", "df-1", "df@fp1", "--json"});
    ASSERT_EQ(diff.rc, 0) << diff.all();
    const Json j = Json::parse(diff.out);
    EXPECT_EQ(j["after"], "df-1");
    EXPECT_EQ(j["before"], "df@fp1");
    EXPECT_TRUE(j["froze_running_vm"].get<bool>());
    ASSERT_EQ(j["disks"].size(), 1u) << diff.out;
    const Json& disk = j["disks"][0];
    EXPECT_EQ(disk["target"], "vda");
    EXPECT_TRUE(disk["problem"].is_null()) << diff.out;
    ASSERT_EQ(disk["filesystems"].size(), 1u) << diff.out;
    const Json& fs0 = disk["filesystems"][0];
    EXPECT_EQ(fs0["filesystem"], "ext4");
    EXPECT_EQ(paths_of(fs0["added"]), (std::set<std::string>{"/new.bin", "/newdir", "/link"}))
        << diff.out;
    EXPECT_EQ(paths_of(fs0["removed"]), std::set<std::string>{"/del.txt"}) << diff.out;
    EXPECT_EQ(paths_of(fs0["changed"]), std::set<std::string>{"/mod.txt"}) << diff.out;
    if (const Json* e = entry(fs0["added"], "/new.bin")) {
        EXPECT_EQ((*e)["type"], "file");
        EXPECT_EQ((*e)["size"], 4 * mib);
    }
    if (const Json* e = entry(fs0["added"], "/newdir")) {
        EXPECT_EQ((*e)["type"], "directory");
    }
    if (const Json* e = entry(fs0["added"], "/link")) {
        EXPECT_EQ((*e)["type"], "symlink");
    }
    if (const Json* e = entry(fs0["removed"], "/del.txt")) {
        EXPECT_EQ((*e)["size"], 5);
    }
    if (const Json* e = entry(fs0["changed"], "/mod.txt")) {
        EXPECT_EQ((*e)["size_before"], 6);
        EXPECT_EQ((*e)["size_after"], 12);
        EXPECT_EQ((*e)["first_difference"], 6);
        EXPECT_EQ((*e)["what"], Json::array({"content"}));
    }
    // The fork point taken to read the running child is gone again; the child runs on.
    EXPECT_EQ(run_forky({"snapshots", "df-1", "--json"}).out.find("fp"), std::string::npos);
    EXPECT_EQ(domain_state_of("df-1"), "running");

    // The same as text: one line per change.
    CommandResult text = run_forky({"diff", "df-1", "df@fp1"});
    ASSERT_EQ(text.rc, 0) << text.all();
    EXPECT_TRUE(contains(text.out, "  + /new.bin  (file, 4194304 bytes)")) << text.out;
    EXPECT_TRUE(contains(text.out, "  - /del.txt  (file, 5 bytes)")) << text.out;
    EXPECT_TRUE(contains(text.out, "  ~ /mod.txt  (file; content: 6 -> 12 bytes, first difference "
                                   "at byte 6)"))
        << text.out;
    EXPECT_FALSE(contains(text.out, "keep.txt")) << text.out;
    EXPECT_FALSE(contains(text.out, "same.txt")) << text.out;

    // --blocks: what the child's layers above the fork point's hold: the 4 MiB file and a
    // little metadata and journal; the fork point wrote nothing since itself.
    CommandResult blocks = run_forky({"diff", "df-1", "df@fp1", "--blocks", "--json"});
    ASSERT_EQ(blocks.rc, 0) << blocks.all();
    const Json b = Json::parse(blocks.out)["blocks"];
    ASSERT_EQ(b.size(), 1u) << blocks.out;
    EXPECT_EQ(b[0]["target"], "vda");
    EXPECT_EQ(b[0]["common_layer"], "df.vda.qcow2") << blocks.out;
    EXPECT_EQ(b[0]["before_bytes"], 0) << blocks.out;
    const std::uint64_t written = b[0]["after_bytes"];
    EXPECT_GE(written, 4 * mib) << blocks.out;
    EXPECT_LE(written, 4 * mib + 4 * mib) << blocks.out;

    // Refusals: a running VM with --no-snapshot, a VM that does not exist.
    CommandResult refused = run_forky({"diff", "df-1", "df@fp1", "--no-snapshot"});
    EXPECT_EQ(refused.rc, 5) << refused.all();
    EXPECT_TRUE(contains(refused.err, "--no-snapshot")) << refused.err;
    CommandResult missing = run_forky({"diff", "nosuch", "df@fp1", "--blocks"});
    EXPECT_EQ(missing.rc, 4) << missing.all();
    EXPECT_TRUE(contains(missing.err, "'nosuch'")) << missing.err;
    CommandResult no_point = run_forky({"diff", "df-1", "df@nope", "--blocks"});
    EXPECT_EQ(no_point.rc, 4) << no_point.all();
    remove_all({"df", "df-1"});
}

// A running child exported and imported under a new name: the copy goes on from the
// child's memory (its token, its counter) and sees its files; the export is plain files
// other tools read; a tampered export is refused by checksum and leaves nothing.
TEST(Export, ARunningChildComesBackUnderANewNameFromItsMemory) {
    up_tiny("ex");
    ASSERT_EQ(run_forky({"fork", "ex"}).rc, 0);
    const std::string token = boot_token("ex");
    ASSERT_EQ(guest_eval("ex-1", "echo exported-file > /mnt/hello.txt; sync; cat /mnt/hello.txt"),
              "exported-file");
    const unsigned long before = last_counter("ex-1");
    const fs::path dir = test_dir() / "ex-1.export";
    CommandResult out = run_forky({"export", "ex-1", dir.string(), "--json"});
    ASSERT_EQ(out.rc, 0) << out.all();
    const unsigned long after = last_counter("ex-1");
    const Json r = Json::parse(out.out);
    EXPECT_TRUE(r["memory"].get<bool>());
    EXPECT_EQ(domain_state_of("ex-1"), "running");
    // The fork point taken for it is gone; the child's files are untouched.
    EXPECT_EQ(run_forky({"snapshots", "ex-1", "--json"}).out.find("fp"), std::string::npos);

    // The manifest, checked with tools forky did not write.
    const Json manifest = Json::parse(slurp_file(dir / "manifest.json"));
    EXPECT_EQ(manifest["format"], "forky-export");
    EXPECT_EQ(manifest["vm"], "ex-1");
    EXPECT_FALSE(manifest["machine"].get<std::string>().empty());
    EXPECT_FALSE(manifest["cpu_mode"].get<std::string>().empty());
    std::set<std::string> roles;
    for (const auto& f : manifest["files"]) {
        roles.insert(f["role"].get<std::string>());
        EXPECT_EQ(sha256_of(dir / f["name"].get<std::string>()), f["sha256"]) << f.dump();
        EXPECT_EQ(fs::file_size(dir / f["name"].get<std::string>()), f["bytes"]) << f.dump();
    }
    EXPECT_EQ(roles, (std::set<std::string>{"disk", "memory", "kernel", "initrd", "domain",
                                            "lineage", "spec"}));
    CommandResult info =
        run({"qemu-img", "info", "--output=json", (dir / "disk-vda.qcow2").string()});
    ASSERT_EQ(info.rc, 0) << info.all();
    const Json img = Json::parse(info.out);
    EXPECT_EQ(img["format"], "qcow2");
    EXPECT_FALSE(img.contains("backing-filename")) << info.out;
    EXPECT_EQ(img["virtual-size"], 64 * mib);

    // Exporting over it is refused. A snapshot exports too; compressed, its disk holds the
    // same content in fewer bytes.
    CommandResult again = run_forky({"export", "ex-1", dir.string()});
    EXPECT_EQ(again.rc, 5) << again.all();
    ASSERT_EQ(run_forky({"snapshot", "ex-1", "s1"}).rc, 0);
    const fs::path plain = test_dir() / "ex-1.s1";
    const fs::path small = test_dir() / "ex-1.s1.compressed";
    CommandResult snap = run_forky({"export", "ex-1@s1", plain.string()});
    ASSERT_EQ(snap.rc, 0) << snap.all();
    CommandResult zipped = run_forky({"export", "ex-1@s1", small.string(), "--compress"});
    ASSERT_EQ(zipped.rc, 0) << zipped.all();
    EXPECT_EQ(run({"qemu-img", "compare", "-q", (plain / "disk-vda.qcow2").string(),
                   (small / "disk-vda.qcow2").string()})
                  .rc,
              0);
    EXPECT_LT(fs::file_size(small / "disk-vda.qcow2"), fs::file_size(plain / "disk-vda.qcow2"));
    EXPECT_EQ(Json::parse(slurp_file(small / "manifest.json"))["fork_point"], "ex-1@s1");

    // Imported under a new name: it runs on from the child's memory.
    CommandResult imported = run_forky({"import", dir.string(), "--name", "ex-copy", "--json"});
    ASSERT_EQ(imported.rc, 0) << imported.all();
    const Json ij = Json::parse(imported.out);
    EXPECT_EQ(ij["vm"], "ex-copy");
    EXPECT_TRUE(ij["resumed"].get<bool>());
    EXPECT_EQ(ij["snapshot"], "ex-copy@imported");
    EXPECT_EQ(domain_state_of("ex-copy"), "running");
    const Tick t = first_tick("ex-copy");
    EXPECT_EQ(t.token, token) << "the child's in-memory token";
    EXPECT_GE(t.counter, before);
    EXPECT_LE(t.counter, after + 1);
    EXPECT_EQ(guest_eval("ex-copy", "cat /mnt/hello.txt"), "exported-file");
    // A new family root, its own name and UUID, visible to virsh.
    CommandResult xml = virsh({"dumpxml", "ex-copy"});
    EXPECT_FALSE(contains(xml.out, "<forky:parent>")) << xml.out;
    EXPECT_NE(virsh({"domuuid", "ex-copy"}).out, virsh({"domuuid", "ex-1"}).out);
    // Its writes stay its own.
    EXPECT_EQ(guest_eval("ex-copy", "echo copy-only > /mnt/copy.txt; sync; cat /mnt/copy.txt"),
              "copy-only");
    EXPECT_EQ(guest_eval("ex-1", "echo 3 > /proc/sys/vm/drop_caches; cat /mnt/copy.txt 2>/dev/null "
                                 "|| echo absent"),
              "absent");
    // The same name twice is refused.
    CommandResult twice = run_forky({"import", dir.string(), "--name", "ex-copy"});
    EXPECT_EQ(twice.rc, 5) << twice.all();

    // One byte changed in the disk: refused by checksum, nothing made.
    const fs::path bad = test_dir() / "tampered";
    fs::copy(dir, bad);
    {
        std::fstream f(bad / "disk-vda.qcow2", std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(static_cast<std::streamoff>(fs::file_size(bad / "disk-vda.qcow2") - 4096));
        f.put('\x5a');
    }
    CommandResult tampered = run_forky({"import", bad.string(), "--name", "ex-bad"});
    EXPECT_EQ(tampered.rc, 5) << tampered.all();
    EXPECT_TRUE(contains(tampered.err, "SHA-256")) << tampered.err;
    EXPECT_TRUE(contains(tampered.err, "disk-vda.qcow2")) << tampered.err;
    EXPECT_FALSE(has(domain_names(), "ex-bad"));
    EXPECT_TRUE(pool_files_of("ex-bad").empty());
    remove_all({"ex", "ex-1", "ex-copy"});
}

// A VM that is off exports its disks alone; imported, it boots from them and finds its
// files; the export's own snapshot is disks only.
TEST(Export, AVmThatIsOffBootsFromItsDisks) {
    up_tiny("eo");
    ASSERT_EQ(guest_eval("eo", "echo on-disk > /mnt/kept.txt; sync; cat /mnt/kept.txt"), "on-disk");
    CommandResult stop = run_forky({"stop", "eo"});
    ASSERT_EQ(stop.rc, 0) << stop.all();
    const fs::path dir = test_dir() / "eo.export";
    CommandResult out = run_forky({"export", "eo", dir.string()});
    ASSERT_EQ(out.rc, 0) << out.all();
    const Json manifest = Json::parse(slurp_file(dir / "manifest.json"));
    EXPECT_FALSE(manifest["memory"].get<bool>());
    EXPECT_FALSE(fs::exists(dir / "memory.img"));
    EXPECT_EQ(domain_state_of("eo"), "shut off");
    CommandResult imported = run_forky({"import", dir.string(), "--name", "eo-copy", "--json"});
    ASSERT_EQ(imported.rc, 0) << imported.all();
    EXPECT_FALSE(Json::parse(imported.out)["resumed"].get<bool>());
    EXPECT_FALSE(boot_token("eo-copy").empty()) << "it booted";
    EXPECT_EQ(guest_eval("eo-copy", "cat /mnt/kept.txt"), "on-disk");
    remove_all({"eo", "eo-copy"});
}

// An import that fails at any step, or is killed while its VM is restored, leaves no domain
// and no volume of its own once undone or collected (the content-named images it uploaded
// stay for the next import, as forky up's do).
TEST(Export, AFailedOrKilledImportLeavesNothingOfItsOwn) {
    up_tiny("ek");
    const fs::path dir = test_dir() / "ek.export";
    CommandResult exported = run_forky({"export", "ek", dir.string()});
    ASSERT_EQ(exported.rc, 0) << exported.all();
    const auto domains = domain_names();
    for (const char* step :
         {"import-upload", "import-overlay", "import-memory", "header:1", "restored:1"}) {
        CommandResult r = run_forky({"import", dir.string(), "--name", "ek-new"},
                                    {std::string("FORKY_FAULT=") + step});
        EXPECT_NE(r.rc, 0) << step << ": " << r.all();
        EXPECT_TRUE(contains(r.err, "Injected fault")) << step << ": " << r.all();
        EXPECT_EQ(domain_names(), domains) << step;
        EXPECT_TRUE(pool_files_of("ek-new").empty()) << step;
    }
    Background bg =
        start_forky({"import", dir.string(), "--name", "ek-new"}, {"FORKY_FAULT_SLEEP=restored:1"});
    ASSERT_TRUE(eventually([] { return has(domain_names(), "ek-new"); }));
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    ::kill(bg.pid, SIGKILL);
    finish(bg);
    CommandResult gc = run_forky({"gc"});
    ASSERT_EQ(gc.rc, 0) << gc.all();
    EXPECT_TRUE(contains(gc.out, "removed domain ek-new")) << gc.out;
    EXPECT_EQ(domain_names(), domains);
    EXPECT_TRUE(pool_files_of("ek-new").empty()) << gc.out;
    // And then it imports.
    CommandResult ok = run_forky({"import", dir.string(), "--name", "ek-new"});
    ASSERT_EQ(ok.rc, 0) << ok.all();
    EXPECT_EQ(first_tick("ek-new").token, boot_token("ek"));
    remove_all({"ek", "ek-new"});
}
