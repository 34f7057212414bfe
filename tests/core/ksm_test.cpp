// KSM: reading /sys/kernel/mm/ksm and /proc, families' figures, and forkyd's tuner, on
// fake folders laid out as the kernel's.
#include "errors.hpp"
#include "ksm.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using namespace forky;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        char tmpl[] = "/tmp/forky-ksm-XXXXXX";
        path = ::mkdtemp(tmpl);
    }
    ~TempDir() { fs::remove_all(path); }
};

void put(const fs::path& file, const std::string& text) {
    fs::create_directories(file.parent_path());
    std::ofstream(file, std::ios::binary) << text;
}

std::string get(const fs::path& file) {
    std::ifstream in(file);
    std::string s;
    in >> s;
    return s;
}

// /sys/kernel/mm/ksm as the kernel shows it: stopped, the defaults.
void fake_ksm(const fs::path& dir) {
    put(dir / "run", "0\n");
    put(dir / "pages_to_scan", "100\n");
    put(dir / "sleep_millisecs", "20\n");
    put(dir / "pages_shared", "250\n");
    put(dir / "pages_sharing", "1000\n");
}

void fake_qemu(const fs::path& proc, int pid, const std::string& uuid, unsigned rss_pages,
               unsigned merging) {
    const fs::path d = proc / std::to_string(pid);
    std::string cmdline;
    for (const std::string& arg :
         {std::string("/usr/bin/qemu-system-x86_64"), std::string("-name"), std::string("guest=x"),
          std::string("-uuid"), uuid, std::string("-m")})
        cmdline += arg + '\0';
    put(d / "cmdline", cmdline);
    put(d / "statm", "5000 " + std::to_string(rss_pages) + " 100 1 0 200 0\n");
    put(d / "ksm_merging_pages", std::to_string(merging) + "\n");
}

VmInfo vm(const std::string& name, const std::string& uuid, const std::string& parent) {
    VmInfo v;
    v.name = name;
    v.uuid = uuid;
    v.lineage.parent = parent;
    return v;
}

} // namespace

TEST(Ksm, ReadsTheKernelsFiguresAndSaysWhenThereIsNoKsm) {
    TempDir t;
    EXPECT_FALSE(read_ksm(t.path / "none").available);
    fake_ksm(t.path);
    const KsmStatus s = read_ksm(t.path);
    EXPECT_TRUE(s.available);
    EXPECT_EQ(s.settings, (KsmSettings{0, 100, 20}));
    EXPECT_EQ(s.pages_shared, 250u);
    EXPECT_EQ(s.saved_bytes(), 1000u * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)));
}

TEST(Ksm, TheTunerTurnsKsmOnWhileForksRunAndPutsBackWhatItFound) {
    TempDir t;
    fake_ksm(t.path);
    put(t.path / "sleep_millisecs", "200\n");
    KsmTuner tuner({1, 1000, 20}, t.path, t.path / "state");
    EXPECT_FALSE(tuner.update(0)); // nothing to do without forks
    EXPECT_EQ(get(t.path / "run"), "0");
    auto on = tuner.update(3);
    ASSERT_TRUE(on);
    EXPECT_NE(on->find("KSM on while forks run (3 now)"), std::string::npos) << *on;
    EXPECT_TRUE(tuner.active());
    EXPECT_EQ(get(t.path / "run"), "1");
    EXPECT_EQ(get(t.path / "pages_to_scan"), "1000");
    EXPECT_EQ(get(t.path / "sleep_millisecs"), "20");
    EXPECT_FALSE(tuner.update(5)); // already in hand
    auto off = tuner.update(0);
    ASSERT_TRUE(off);
    EXPECT_NE(off->find("no forked VM runs"), std::string::npos) << *off;
    EXPECT_EQ(get(t.path / "run"), "0");
    EXPECT_EQ(get(t.path / "pages_to_scan"), "100");
    EXPECT_EQ(get(t.path / "sleep_millisecs"), "200");
    EXPECT_FALSE(tuner.restore()); // nothing in hand
    // Stopping forkyd puts the settings back too.
    ASSERT_TRUE(tuner.update(1));
    ASSERT_TRUE(tuner.restore());
    EXPECT_EQ(get(t.path / "run"), "0");
    // A kernel without KSM: nothing written, nothing in hand.
    KsmTuner none({1, 1000, 20}, t.path / "none", t.path / "state");
    EXPECT_FALSE(none.update(2));
    EXPECT_FALSE(none.active());
}

// Who holds KSM lives in a state file: another live forkyd keeps it on; one that died
// (SIGKILL) leaves what it found, which the next forkyd puts back.
TEST(Ksm, TheTunersShareKsmThroughTheirStateFile) {
    TempDir t;
    fake_ksm(t.path);
    const fs::path state = t.path / "state";
    // Another live holder (process 1 stands in for a second forkyd).
    std::ifstream init("/proc/1/stat");
    std::string stat;
    std::getline(init, stat);
    std::istringstream fields(stat.substr(stat.rfind(')') + 2));
    std::string f, start;
    for (int i = 3; i <= 22 && fields >> f; ++i)
        start = f;
    put(state, "found 0 100 20\nholder 1 " + start + "\n");
    put(t.path / "run", "1\n");
    KsmTuner tuner({1, 1000, 20}, t.path, state);
    ASSERT_TRUE(tuner.update(2));
    auto left = tuner.restore();
    ASSERT_TRUE(left);
    EXPECT_NE(left->find("1 other forkyd(s) hold it"), std::string::npos) << *left;
    EXPECT_EQ(get(t.path / "run"), "1"); // still the other's
    // That holder dies (a process id that is not running): the next look puts back what
    // was found before any forkyd.
    put(state, "found 0 100 20\nholder 999999999 12345\n");
    auto back = tuner.update(0);
    ASSERT_TRUE(back);
    EXPECT_NE(back->find("a forkyd that held them is gone"), std::string::npos) << *back;
    EXPECT_EQ(get(t.path / "run"), "0");
    EXPECT_EQ(get(t.path / "pages_to_scan"), "100");
    EXPECT_FALSE(tuner.update(0)); // nothing left to do
    // A forkyd started after one was killed keeps the first one's findings, not the tuned
    // values it sees now.
    put(state, "found 0 100 20\nholder 999999999 12345\n");
    put(t.path / "run", "1\n");
    put(t.path / "pages_to_scan", "1000\n");
    KsmTuner next({1, 1000, 20}, t.path, state);
    ASSERT_TRUE(next.update(1));
    ASSERT_TRUE(next.restore());
    EXPECT_EQ(get(t.path / "run"), "0");
    EXPECT_EQ(get(t.path / "pages_to_scan"), "100");
}

TEST(Ksm, AFileItCannotWriteIsAnError) {
    TempDir t;
    EXPECT_THROW(write_ksm({1, 1, 1}, t.path / "missing"), StorageError);
}

TEST(Ksm, FamiliesAddUpTheirQemuProcesses) {
    TempDir t;
    const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    fake_qemu(t.path, 101, "u-web", 1000, 0);
    fake_qemu(t.path, 102, "u-web-1", 1000, 600);
    fake_qemu(t.path, 103, "u-web-2", 1000, 600);
    fake_qemu(t.path, 104, "u-db", 500, 0);
    put(t.path / "105/cmdline", std::string("/bin/sh\0-uuid\0u-x\0", 18)); // not QEMU
    put(t.path / "self/cmdline", "x");
    const auto procs = qemu_processes(t.path);
    ASSERT_EQ(procs.size(), 4u);
    EXPECT_EQ(procs.at("u-web-1").pid, 102);
    EXPECT_EQ(procs.at("u-web-1").rss_bytes, 1000 * page);
    EXPECT_EQ(procs.at("u-web-1").merging_pages, 600u);

    // A family is named by its oldest VM forky knows, or the removed parent's name.
    const std::vector<VmInfo> vms{vm("web", "u-web", ""),         vm("web-1", "u-web-1", "web"),
                                  vm("web-2", "u-web-2", "web"),  vm("db", "u-db", ""),
                                  vm("orphan", "u-none", "gone"), vm("off", "u-off", "")};
    KsmStatus ksm;
    ksm.page_size = page;
    const MemoryStats s = memory_stats(vms, procs, ksm);
    ASSERT_EQ(s.families.size(), 2u); // db and web; orphan and off run nowhere
    EXPECT_EQ(s.families[0].root, "db");
    const FamilyMemory& web = s.families[1];
    EXPECT_EQ(web.root, "web");
    EXPECT_EQ(web.vms, (std::vector<std::string>{"web", "web-1", "web-2"}));
    EXPECT_EQ(web.rss_bytes, 3000 * page);
    EXPECT_EQ(web.merging_pages, 1200u);
    EXPECT_EQ(web.saved_bytes, 1200u * 2 / 3 * page);
}

TEST(Ksm, OnlyALocalUriIsThisMachines) {
    EXPECT_TRUE(is_local_uri("qemu:///system"));
    EXPECT_TRUE(is_local_uri("qemu+unix:///system?socket=/tmp/x"));
    EXPECT_TRUE(is_local_uri("test:///default"));
    EXPECT_FALSE(is_local_uri("qemu+ssh://root@h2/system"));
    EXPECT_FALSE(is_local_uri("qemu+tcp://10.0.0.2/system"));
    EXPECT_FALSE(is_local_uri("nonsense"));
}
