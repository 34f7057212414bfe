// forky tried as a hostile user would: specs that reach host files, a pool others can
// write, planted journals, dropped connections, kills and Ctrl-C at bad moments, races.
// Each test reproduces one hole of the hardening issue and shows it closed.
#include "harness.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

namespace fs = std::filesystem;
using namespace forky::it;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

CommandResult qemu_img(std::vector<std::string> args) {
    args.insert(args.begin(), "qemu-img");
    return run(args);
}

// A folder for hostile specs, with the test guest's kernel and initrd beside them (so the
// spec's own folder is where they come from) and a fresh 64 MiB qcow2 data disk.
fs::path hostile_dir() {
    fs::path dir = test_dir() / "hostile";
    if (!fs::exists(dir)) {
        fs::create_directories(dir);
        for (const char* f : {"vmlinuz", "initrd.img"})
            fs::copy_file(source_dir() / "domains/images" / f, dir / f);
        EXPECT_EQ(
            qemu_img({"create", "-q", "-f", "qcow2", (dir / "data.qcow2").string(), "64M"}).rc, 0);
    }
    return dir;
}

// A spec of the test guest in hostile_dir() whose second disk is `extra_disk` (YAML lines).
fs::path hostile_spec(const std::string& name, const std::string& extra_disk) {
    fs::path file = hostile_dir() / (name + ".yaml");
    std::ofstream(file) << "name: " << name << "\nmemory: 256MiB\naccel: tcg\nboot:\n"
                        << "  kernel: vmlinuz\n  initrd: initrd.img\n"
                        << "  cmdline: console=ttyS0 quiet\ndisks:\n"
                        << "  - base: data.qcow2\n    format: qcow2\n"
                        << extra_disk << "console: log\n";
    return file;
}

// A journal as a forky of another machine would write it.
std::string planted_journal(const std::string& vm, const std::string& child,
                            const std::string& uuid) {
    return "forky-journal 2\noperation fork\nvm " + vm +
           "\nholder elsewhere other-machine:other-boot:1 4242 1\nsince 1\n"
           "op 0f0f0f0f-2222-4333-8444-555555555555\nchild " +
           child + " " + uuid + "\n";
}

std::string uuid_of(const std::string& vm) {
    std::string out = virsh({"domuuid", vm}).out;
    return out.substr(0, out.find('\n'));
}

} // namespace

// 1. A spec cannot hand host files to the guest: not as a base, not through a base's
// backing chain, not by swapping the chain after forky checked it.
TEST(Hardening, SpecsCannotHandHostFilesToTheGuest) {
    const auto files = pool_files();
    const auto domains = domain_names();
    const fs::path dir = hostile_dir();
    const std::string shadow_chain = (dir / "x.qcow2").string();
    ASSERT_EQ(
        qemu_img({"create", "-q", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw", shadow_chain})
            .rc,
        0);
    struct Case {
        std::string disk;
        std::string expected;
    };
    const std::vector<Case> cases = {
        // The reproduction from the issue, with and without a stated format.
        {"  - base: x.qcow2\n    format: qcow2\n",
         "refused '/etc/shadow' (backing file of '" + shadow_chain + "', the base image)"},
        {"  - base: x.qcow2\n", "refused '/etc/shadow'"},
        {"  - base: /etc/shadow\n    format: raw\n",
         "refused base image '/etc/shadow': it lies under /etc"},
        {"  - base: /etc/shadow\n", "refused base image '/etc/shadow'"},
        {"  - base: /proc/self/environ\n", "refused base image '/proc/self/environ'"},
    };
    for (const auto& c : cases) {
        fs::path spec = hostile_spec("hx", c.disk);
        CommandResult up = run_forky({"up", "-f", spec.string()});
        EXPECT_EQ(up.rc, 3) << c.disk << up.all();
        EXPECT_TRUE(contains(up.err, spec.string() + ":11: key 'disks[1].base'")) << up.err;
        EXPECT_TRUE(contains(up.err, c.expected))
            << "expected '" << c.expected << "' in " << up.err;
    }
    CommandResult up = run_forky({"up", "-f", hostile_spec("hx", cases[0].disk).string()});
    EXPECT_TRUE(contains(up.err, "where forky never reads images; chain: " + shadow_chain +
                                     " (qcow2) -> /etc/shadow (raw)"))
        << up.err;
    EXPECT_EQ(domain_names(), domains);
    EXPECT_EQ(pool_files(), files);

    // A chain that was clean when forky checked it and reaches /etc/shadow once QEMU opens
    // it: the guest never runs, and the VM goes.
    const std::string swapped = (dir / "y.qcow2").string();
    ASSERT_EQ(qemu_img({"create", "-q", "-f", "qcow2", swapped, "1M"}).rc, 0);
    fs::path spec = hostile_spec("hy", "  - base: y.qcow2\n    format: qcow2\n");
    Background bg = start_forky({"up", "-f", spec.string()},
                                {"FORKY_FAULT_SLEEP=up-define", "FORKY_FAULT_SLEEP_S=3"});
    ASSERT_TRUE(eventually([] { return has(domain_names(), "hy"); }));
    ASSERT_EQ(
        qemu_img({"rebase", "-q", "-u", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw", swapped})
            .rc,
        0);
    CommandResult late = finish(bg);
    EXPECT_EQ(late.rc, 3) << late.all();
    EXPECT_TRUE(contains(late.err, "VM 'hy' was removed before it ran")) << late.err;
    EXPECT_TRUE(contains(late.err, "reaches '/etc/shadow', which lies under /etc")) << late.err;
    EXPECT_EQ(domain_names(), domains);
    EXPECT_EQ(pool_files(), files);
}

// 2. forky refuses a pool folder that others can write, and makes its own 0711.
TEST(Hardening, APoolOthersCanWriteIsRefused) {
    fs::path open = test_dir() / "open-pool";
    fs::create_directories(open);
    fs::permissions(open, fs::perms::all | fs::perms::sticky_bit);
    ASSERT_EQ(virsh({"pool-define-as", "open", "dir", "--target", open.string()}).rc, 0);
    ASSERT_EQ(virsh({"pool-start", "open"}).rc, 0);
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"gc"},
          {"up", "-f", (source_dir() / "domains/tiny.yaml").string(), "--name", "in-open"}}) {
        std::vector<std::string> a{"--pool", "open"};
        a.insert(a.end(), args.begin(), args.end());
        CommandResult r = run_forky(a);
        EXPECT_EQ(r.rc, 7) << r.all();
        EXPECT_TRUE(contains(r.err, "Storage pool 'open' at '" + open.string() +
                                        "' can be written by others (mode 0777)"))
            << r.err;
    }
    EXPECT_FALSE(has(domain_names(), "in-open"));
    EXPECT_TRUE(fs::is_empty(open));
    virsh({"pool-destroy", "open"});
    virsh({"pool-undefine", "open"});

    // forky makes its pool only in a new or empty folder, never through a link.
    fs::path busy = test_dir() / "busy-dir";
    fs::create_directories(busy);
    std::ofstream(busy / "someone-elses-file") << "x";
    fs::permissions(busy, fs::perms::all | fs::perms::sticky_bit);
    fs::create_directory_symlink(test_dir() / "fresh-pool", test_dir() / "link-dir");
    for (const auto& [dir, why] : std::vector<std::pair<fs::path, std::string>>{
             {busy, "the folder exists and is not empty"},
             {test_dir() / "link-dir", "it is a symbolic link"}}) {
        CommandResult r =
            run_forky({"--pool", "taken", "--pool-dir", dir.string(), "--create-pool", "gc"});
        EXPECT_EQ(r.rc, 7) << r.all();
        EXPECT_TRUE(contains(r.err, why)) << r.err;
        EXPECT_FALSE(contains(virsh({"pool-list", "--all", "--name"}).out, "taken"));
    }
    struct stat busy_st {};
    ASSERT_EQ(::stat(busy.c_str(), &busy_st), 0);
    EXPECT_EQ(busy_st.st_mode & 07777, 01777u) << "a folder forky refused was changed";

    // Nor under a folder someone else owns (they could rename the pool away and put their
    // own in its place), nor at a relative path.
    fs::path theirs = test_dir() / "their-dir";
    fs::create_directories(theirs);
    ASSERT_EQ(::chown(theirs.c_str(), 12345, 12345), 0);
    CommandResult under = run_forky(
        {"--pool", "under", "--pool-dir", (theirs / "pool").string(), "--create-pool", "gc"});
    EXPECT_EQ(under.rc, 7) << under.all();
    EXPECT_TRUE(contains(under.err, "'" + theirs.string() + "' belongs to uid 12345")) << under.err;
    EXPECT_FALSE(fs::exists(theirs / "pool"));
    // Through a link on the way (root's own, too), or into a folder holding what libvirt
    // does not list (a FIFO).
    fs::create_directories(test_dir() / "real-parent");
    fs::create_directory_symlink(test_dir() / "real-parent", test_dir() / "parent-link");
    CommandResult via_link =
        run_forky({"--pool", "vialink", "--pool-dir",
                   (test_dir() / "parent-link" / "pool").string(), "--create-pool", "gc"});
    EXPECT_EQ(via_link.rc, 7) << via_link.all();
    EXPECT_TRUE(contains(via_link.err, "is a symbolic link")) << via_link.err;
    fs::create_directories(test_dir() / "fifo-dir");
    ASSERT_EQ(::mkfifo((test_dir() / "fifo-dir" / "x.lock").c_str(), 0600), 0);
    CommandResult fifo = run_forky({"--pool", "fifo", "--pool-dir",
                                    (test_dir() / "fifo-dir").string(), "--create-pool", "gc"});
    EXPECT_EQ(fifo.rc, 7) << fifo.all();
    EXPECT_TRUE(contains(fifo.err, "exists and is not empty")) << fifo.err;
    CommandResult slash =
        run_forky({"--pool", "slash", "--pool-dir", (test_dir() / "link-dir").string() + "/",
                   "--create-pool", "gc"});
    EXPECT_EQ(slash.rc, 7) << slash.all();
    CommandResult relative =
        run_forky({"--pool", "rel", "--pool-dir", "relpool", "--create-pool", "gc"});
    EXPECT_EQ(relative.rc, 2) << relative.all();
    EXPECT_TRUE(contains(relative.err, "--pool-dir must be an absolute path")) << relative.err;
    for (const char* p : {"under", "slash", "rel", "vialink", "fifo"})
        EXPECT_FALSE(contains(virsh({"pool-list", "--all", "--name"}).out, p)) << p;

    // A pool forky creates on an empty folder that exists gets mode 0711, whatever it had.
    fs::path fresh = test_dir() / "fresh-pool";
    fs::create_directories(fresh);
    fs::permissions(fresh, fs::perms::all | fs::perms::sticky_bit);
    CommandResult made =
        run_forky({"--pool", "fresh", "--pool-dir", fresh.string(), "--create-pool", "gc"});
    EXPECT_EQ(made.rc, 0) << made.all();
    struct stat st {};
    ASSERT_EQ(::stat(fresh.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0711u);
    virsh({"pool-destroy", "fresh"});
    virsh({"pool-undefine", "fresh"});
}

// 2. A journal is evidence, never an order: gc removes only what an operation of forky's
// made, and leaves journals it cannot trust in place, reported.
TEST(Hardening, GcActsOnlyOnWhatTheJournalsOperationMade) {
    // A domain that forky did not make, defined with plain virsh.
    fs::path foreign = test_dir() / "victim.xml";
    std::ofstream(foreign) << "<domain type='qemu'><name>victim</name><memory>65536</memory>"
                              "<os><type arch='x86_64' machine='pc'>hvm</type></os></domain>";
    ASSERT_EQ(virsh({"define", foreign.string()}).rc, 0);
    // One of forky's VMs and a finished child of it.
    up_tiny("gv");
    ASSERT_EQ(run_forky({"fork", "gv"}).rc, 0);
    const auto plant = [](const std::string& file, const std::string& text) {
        std::ofstream(pool_dir() / file) << text << std::string(64, '\0');
    };
    plant("planted.lock", planted_journal("planted", "victim", uuid_of("victim")));
    plant("gv-parent.lock", planted_journal("gv-parent", "gv", uuid_of("gv")));
    // Right lock name, right parent, since long ago: only the operation id tells.
    plant("gv.lock", planted_journal("gv", "gv-1", uuid_of("gv-1")));
    plant("zzz.lock", planted_journal("gv", "gv-1", uuid_of("gv-1")));
    plant("garbage.lock", "forky-journal 2\nchild victim " + uuid_of("victim") + "\nrm -rf /\n");
    plant("foreign-owner.lock", planted_journal("fo", "victim", uuid_of("victim")));
    ASSERT_EQ(::chown((pool_dir() / "foreign-owner.lock").c_str(), 12345, 12345), 0);
    ASSERT_EQ(virsh({"pool-refresh", "forky-it"}).rc, 0);

    CommandResult gc = run_forky({"gc"});
    EXPECT_EQ(gc.rc, 0) << gc.all();
    EXPECT_TRUE(has(domain_names(), "victim")) << gc.out;
    EXPECT_EQ(domain_state_of("gv"), "running") << gc.out;
    EXPECT_TRUE(contains(gc.out, "planted.lock: names VM 'victim', but it carries no forky "
                                 "metadata; VM left alone"))
        << gc.out;
    EXPECT_TRUE(contains(gc.out, "gv-parent.lock: names VM 'gv', but its parent is '', not "
                                 "'gv-parent'"))
        << gc.out;
    EXPECT_TRUE(contains(gc.out, "garbage.lock: its journal does not parse (line 3: unknown "
                                 "entry 'rm')"))
        << gc.out;
    EXPECT_TRUE(contains(gc.out, "foreign-owner.lock: owned by uid 12345")) << gc.out;
    EXPECT_TRUE(contains(gc.out, "gv.lock: names VM 'gv-1', but another operation made it"))
        << gc.out;
    EXPECT_TRUE(contains(gc.out, "zzz.lock: its journal is about VM 'gv', whose lock is "
                                 "'gv.lock'; left alone"))
        << gc.out;
    EXPECT_EQ(domain_state_of("gv-1"), "running");
    // Untrusted journals stay for a person to look at; the merely dead ones are released.
    EXPECT_TRUE(has(pool_files(), "garbage.lock"));
    EXPECT_TRUE(has(pool_files(), "foreign-owner.lock"));
    EXPECT_FALSE(has(pool_files(), "planted.lock"));

    // forky's own commands refuse a lock of another user at once, with a way out.
    plant("gv-1.lock", planted_journal("gv-1", "gv-1", uuid_of("gv-1")));
    ASSERT_EQ(::chown((pool_dir() / "gv-1.lock").c_str(), 12345, 12345), 0);
    ASSERT_EQ(virsh({"pool-refresh", "forky-it"}).rc, 0);
    CommandResult stop = run_forky({"stop", "gv-1"});
    EXPECT_EQ(stop.rc, 5) << stop.all();
    EXPECT_TRUE(contains(stop.err, "which belongs to uid 12345, not to the pool's owner; forky "
                                   "does not act on it: look at it and remove it with 'virsh "
                                   "vol-delete gv-1.lock --pool forky-it'"))
        << stop.err;
    for (const char* f : {"garbage.lock", "foreign-owner.lock", "zzz.lock", "gv-1.lock"})
        fs::remove(pool_dir() / f);
    virsh({"pool-refresh", "forky-it"});
    virsh({"undefine", "victim"});
    remove_all({"gv", "gv-1"});
}

// 3. The quick start's state folder is made safely or refused before anything is written.
TEST(Hardening, QuickstartRefusesAPlantedStateFolder) {
    fs::path target = test_dir() / "qs-target";
    fs::create_directories(target);
    fs::path planted = test_dir() / "qs-state";
    fs::create_symlink(target, planted);
    const auto t = std::chrono::steady_clock::now();
    CommandResult r =
        run({(source_dir() / "scripts/quickstart").string()}, {"FORKY_STATE=" + planted.string()});
    EXPECT_NE(r.rc, 0);
    EXPECT_TRUE(contains(r.err, "refusing '" + planted.string() + "': it is a symlink")) << r.all();
    EXPECT_TRUE(fs::is_empty(target)) << "the quick start wrote through a planted link";
    EXPECT_LT(std::chrono::steady_clock::now() - t, seconds(10)) << "it went on before refusing";

    const std::string helper = (source_dir() / "scripts/private-dir").string();
    fs::path theirs = test_dir() / "qs-theirs";
    fs::create_directories(theirs);
    ASSERT_EQ(::chown(theirs.c_str(), 12345, 12345), 0);
    r = run({helper, theirs.string()});
    EXPECT_NE(r.rc, 0);
    EXPECT_TRUE(contains(r.err, "it belongs to uid 12345")) << r.err;
    fs::path via_theirs = theirs / "sub" / "state";
    r = run({helper, via_theirs.string()});
    EXPECT_NE(r.rc, 0);
    EXPECT_TRUE(contains(r.err, "'" + theirs.string() + "' on its way belongs to uid 12345"))
        << r.err;
    EXPECT_FALSE(fs::exists(theirs / "sub"));
    // A link cannot hide behind a trailing "/", nor a path behind "..".
    r = run({helper, planted.string() + "/"});
    EXPECT_NE(r.rc, 0);
    EXPECT_TRUE(contains(r.err, "it is a symlink")) << r.err;
    r = run({helper, (test_dir() / "qs-target" / ".." / "qs-x").string()});
    EXPECT_NE(r.rc, 0);
    EXPECT_TRUE(contains(r.err, "it has '.' or '..' in it")) << r.err;
    fs::path mine = test_dir() / "qs-mine";
    r = run({helper, mine.string()});
    EXPECT_EQ(r.rc, 0) << r.err;
    struct stat st {};
    ASSERT_EQ(::lstat(mine.c_str(), &st), 0);
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0700u);
}

// 4. stop acts only on forky's VMs, and not in the middle of an operation on them.
TEST(Hardening, StopActsOnlyOnForkyVmsAndWaitsForOperations) {
    const fs::path images = source_dir() / "domains/images";
    fs::path foreign = test_dir() / "bystander.xml";
    std::ofstream(foreign) << "<domain type='qemu'><name>bystander</name><memory>131072</memory>"
                              "<os><type arch='x86_64' machine='pc'>hvm</type><kernel>"
                           << (images / "vmlinuz").string() << "</kernel><initrd>"
                           << (images / "initrd.img").string()
                           << "</initrd><cmdline>console=ttyS0</cmdline></os>"
                              "<devices><controller type='usb' model='none'/>"
                              "<memballoon model='none'/></devices></domain>";
    ASSERT_EQ(virsh({"define", foreign.string()}).rc, 0);
    ASSERT_EQ(virsh({"start", "bystander"}).rc, 0);
    CommandResult refused = run_forky({"stop", "--force", "bystander"});
    EXPECT_EQ(refused.rc, 5) << refused.all();
    EXPECT_TRUE(contains(refused.err, "Domain 'bystander' was not made by forky")) << refused.err;
    EXPECT_EQ(domain_state_of("bystander"), "running");
    virsh({"destroy", "bystander"});
    virsh({"undefine", "bystander"});

    up_tiny("sw");
    Background fork =
        start_forky({"fork", "sw"}, {"FORKY_FAULT_SLEEP=snapshot", "FORKY_FAULT_SLEEP_S=4"});
    ASSERT_TRUE(eventually([] { return has(pool_files(), "sw.fp1.mem"); }));
    CommandResult busy = run_forky({"stop", "--force", "--wait", "1", "sw"});
    EXPECT_EQ(busy.rc, 5) << busy.all();
    EXPECT_TRUE(contains(busy.err, "VM 'sw' is busy: a fork by process")) << busy.err;
    EXPECT_EQ(domain_state_of("sw"), "running");
    // Without --wait 1 it waits for the fork and then stops the VM.
    CommandResult later = run_forky({"stop", "--force", "sw"});
    EXPECT_EQ(later.rc, 0) << later.all();
    CommandResult forked = finish(fork);
    EXPECT_EQ(forked.rc, 0) << forked.all();
    EXPECT_EQ(forked.out, "sw-1\n");
    EXPECT_EQ(domain_state_of("sw"), "shut off");
    remove_all({"sw", "sw-1"});
}

// 5. A lost libvirt connection mid-fork: exit 6 with a message, and the undo done.
TEST(Hardening, ALostConnectionIsAnErrorWithAnUndo) {
    up_tiny("lc");
    const auto files = pool_files();
    const auto domains = domain_names();
    Background bg = start_forky({"fork", "lc", "--count", "2"},
                                {"FORKY_FAULT_SLEEP=restore:2", "FORKY_FAULT_SLEEP_S=3"});
    ASSERT_TRUE(eventually([] { return has(domain_names(), "lc-1"); }));
    EXPECT_GT(disconnect_clients_of(bg.pid), 0);
    CommandResult r = finish(bg);
    EXPECT_EQ(r.rc, 6) << r.all();
    EXPECT_TRUE(contains(r.err, "forky: error: ")) << r.err;
    EXPECT_EQ(domain_names(), domains) << r.err;
    const std::string disk = disk_of("lc");
    for (const auto& f : pool_files()) {
        if (!has(files, f)) {
            EXPECT_EQ((pool_dir() / f).string(), disk) << "left " << f << "\n" << r.err;
        }
    }
    EXPECT_EQ(run_forky({"gc"}).out, "Nothing to collect\n");
    EXPECT_EQ(domain_state_of("lc"), "running");

    // Lost at the very end (the children run, the lock is still held): the commit point
    // is the journal's "committed", which cannot be written; the fork is undone, and a
    // later gc finds nothing of it to remove.
    bg = start_forky({"fork", "lc", "--count", "2"},
                     {"FORKY_FAULT_SLEEP=commit", "FORKY_FAULT_SLEEP_S=3"});
    ASSERT_TRUE(eventually([] { return has(domain_names(), "lc-4"); }));
    EXPECT_GT(disconnect_clients_of(bg.pid), 0);
    r = finish(bg);
    EXPECT_EQ(r.rc, 6) << r.all();
    EXPECT_EQ(domain_names(), domains) << r.err;
    EXPECT_EQ(run_forky({"gc"}).out, "Nothing to collect\n");

    // And for forky up, once the VM runs.
    bg = start_forky({"up", "-f", (source_dir() / "domains/tiny.yaml").string(), "--name", "lu"},
                     {"FORKY_FAULT_SLEEP=up-start", "FORKY_FAULT_SLEEP_S=3"});
    ASSERT_TRUE(eventually([] { return domain_state_of("lu") == "running"; }));
    EXPECT_GT(disconnect_clients_of(bg.pid), 0);
    r = finish(bg);
    EXPECT_EQ(r.rc, 6) << r.all();
    EXPECT_EQ(domain_names(), domains) << r.err;
    EXPECT_EQ(run_forky({"gc"}).out, "Nothing to collect\n");
    remove_all({"lc"});
}

// 6. A killed cold fork leaves its parent paused: gc resumes it (unless --keep-paused).
TEST(Hardening, GcResumesTheParentOfAKilledColdFork) {
    up_tiny("cp");
    Background bg = start_forky({"fork", "cp", "--cold"}, {"FORKY_FAULT_SLEEP=snapshot"});
    ASSERT_TRUE(eventually([] { return domain_state_of("cp") == "paused"; }));
    ::kill(bg.pid, SIGKILL);
    finish(bg);
    // Until then, forking it says why it is paused.
    CommandResult again = run_forky({"fork", "cp", "--wait", "1"});
    EXPECT_EQ(again.rc, 5) << again.all();
    EXPECT_TRUE(contains(again.err, "that is gone; run 'forky gc'")) << again.err;
    CommandResult gc = run_forky({"gc"});
    EXPECT_TRUE(contains(gc.out, "resumed domain cp")) << gc.all();
    EXPECT_EQ(domain_state_of("cp"), "running");
    const unsigned long c = last_counter("cp");
    wait_for_console("cp", "counter=" + std::to_string(c + 3) + " ");

    // --keep-paused is for a fork that succeeds: one that fails or is killed leaves the
    // parent as it was, running.
    bg = start_forky({"fork", "cp", "--cold", "--keep-paused"}, {"FORKY_FAULT_SLEEP=snapshot"});
    ASSERT_TRUE(eventually([] { return domain_state_of("cp") == "paused"; }));
    ::kill(bg.pid, SIGKILL);
    finish(bg);
    gc = run_forky({"gc"});
    EXPECT_TRUE(contains(gc.out, "resumed domain cp")) << gc.all();
    EXPECT_EQ(domain_state_of("cp"), "running");
    CommandResult failed =
        run_forky({"fork", "cp", "--cold", "--keep-paused"}, {"FORKY_FAULT=restore:1"});
    EXPECT_NE(failed.rc, 0);
    EXPECT_EQ(domain_state_of("cp"), "running") << failed.all();
    CommandResult kept = run_forky({"fork", "cp", "--cold", "--keep-paused"});
    ASSERT_EQ(kept.rc, 0) << kept.all();
    EXPECT_EQ(domain_state_of("cp"), "paused") << "a fork that succeeds keeps it paused";
    EXPECT_EQ(run_forky({"gc"}).out, "Nothing to collect\n");
    EXPECT_EQ(domain_state_of("cp"), "paused");
    remove_all({"cp", lines(kept.out).at(0)});
}

// 7. rm of a child that a fork is still making waits for the fork; a child that vanished
// is never defined back as a broken VM.
TEST(Hardening, AChildRemovedDuringItsForkIsNotDefinedBack) {
    up_tiny("rp");
    Background fork = start_forky({"fork", "rp", "--count", "2"},
                                  {"FORKY_FAULT_SLEEP=restore:2", "FORKY_FAULT_SLEEP_S=3"});
    ASSERT_TRUE(eventually([] { return has(domain_names(), "rp-1"); }));
    Background rm = start_forky({"rm", "--force", "rp-1"});
    CommandResult forked = finish(fork);
    EXPECT_EQ(forked.rc, 0) << forked.all();
    EXPECT_EQ(lines(forked.out), (std::vector<std::string>{"rp-1", "rp-2"}));
    CommandResult removed = finish(rm);
    EXPECT_EQ(removed.rc, 0) << removed.all();
    EXPECT_FALSE(has(domain_names(), "rp-1"));
    for (const auto& f : pool_files())
        EXPECT_NE(f.rfind("rp-1.", 0), 0u) << "left " << f;
    EXPECT_EQ(domain_state_of("rp-2"), "running");

    // Behind forky's back (virsh): the fork fails and defines nothing.
    fork = start_forky({"fork", "rp", "--count", "2"},
                       {"FORKY_FAULT_SLEEP=restored:1", "FORKY_FAULT_SLEEP_S=5"});
    // Once its restore is over (the fork sleeps right after it), so the fork sees the
    // restore succeed and the domain gone before it defines it.
    ASSERT_TRUE(eventually([&] { return contains(slurp_file(fork.err_file), "step 'restored'"); }));
    ASSERT_EQ(virsh({"destroy", "rp-3"}).rc, 0);
    forked = finish(fork);
    EXPECT_EQ(forked.rc, 5) << forked.all();
    EXPECT_TRUE(contains(forked.err, "'rp-3' is not running under the UUID forky gave it"))
        << forked.err;
    EXPECT_FALSE(has(domain_names(), "rp-3"));
    EXPECT_FALSE(has(domain_names(), "rp-4"));
    EXPECT_EQ(run_forky({"gc"}).out, "Nothing to collect\n");
    remove_all({"rp", "rp-2"});
}

// 8. Ctrl-C undoes `forky up` and ends a wait for a lock at once.
TEST(Hardening, CtrlCUndoesUpAndEndsLockWaits) {
    const auto files = pool_files();
    const auto domains = domain_names();
    for (const char* step : {"up-define", "up-start"}) {
        Background bg =
            start_forky({"up", "-f", (source_dir() / "domains/tiny.yaml").string(), "--name", "cc"},
                        {std::string("FORKY_FAULT_SLEEP=") + step});
        ASSERT_TRUE(eventually([] { return has(domain_names(), "cc"); })) << step;
        if (std::string(step) == "up-start") {
            ASSERT_TRUE(eventually([] { return domain_state_of("cc") == "running"; }));
        }
        const auto t = std::chrono::steady_clock::now();
        ::kill(bg.pid, SIGINT);
        CommandResult r = finish(bg, seconds(30));
        EXPECT_EQ(r.rc, 130) << step << ": " << r.all();
        EXPECT_LT(std::chrono::steady_clock::now() - t, seconds(10)) << step;
        EXPECT_EQ(domain_names(), domains) << step;
        EXPECT_EQ(pool_files(), files) << step;
    }

    up_tiny("cw");
    Background holder = start_forky({"fork", "cw"}, {"FORKY_FAULT_SLEEP=snapshot"});
    ASSERT_TRUE(eventually([] { return has(pool_files(), "cw.fp1.mem"); }));
    Background waiter = start_forky({"stop", "cw"});
    std::this_thread::sleep_for(seconds(1));
    auto t = std::chrono::steady_clock::now();
    ::kill(waiter.pid, SIGINT);
    CommandResult waited = finish(waiter, seconds(30));
    EXPECT_EQ(waited.rc, 130) << waited.all();
    EXPECT_LT(std::chrono::steady_clock::now() - t, seconds(5));
    t = std::chrono::steady_clock::now();
    ::kill(holder.pid, SIGINT); // interrupts the fork's own sleep too
    CommandResult held = finish(holder, seconds(30));
    EXPECT_EQ(held.rc, 130) << held.all();
    EXPECT_LT(std::chrono::steady_clock::now() - t, seconds(10));
    EXPECT_EQ(domain_state_of("cw"), "running");
    EXPECT_EQ(run_forky({"gc"}).out, "Nothing to collect\n");
    remove_all({"cw"});
}

// 9. Two gc runs over the same garbage share it: no failure, nothing counted twice.
TEST(Hardening, ConcurrentGcRunsShareTheSweep) {
    // Half-made children of a killed fork, and volumes nothing uses.
    up_tiny("kk");
    Background killed = start_forky({"fork", "kk", "--count", "2"}, {"FORKY_FAULT_SLEEP=commit"});
    ASSERT_TRUE(eventually([] { return has(domain_names(), "kk-2"); }));
    ASSERT_TRUE(eventually([] { return domain_state_of("kk-2") == "running"; }));
    ::kill(killed.pid, SIGKILL);
    finish(killed);
    std::set<std::string> garbage;
    // Orphan overlays, as a killed forky leaves them (a qcow2 with no backing file is
    // not one of forky's, and gc leaves it alone).
    for (int i = 0; i < 60; ++i) {
        std::string name = "junk" + std::to_string(i) + ".vda.qcow2";
        ASSERT_EQ(virsh({"vol-create-as", "forky-it", name, "1M", "--format", "qcow2",
                         "--backing-vol", "kk.vda.qcow2", "--backing-vol-format", "qcow2"})
                      .rc,
                  0);
        garbage.insert(name);
    }
    Background a = start_forky({"gc"});
    Background b = start_forky({"gc"});
    CommandResult ra = finish(a);
    CommandResult rb = finish(b);
    EXPECT_EQ(ra.rc, 0) << ra.all();
    EXPECT_EQ(rb.rc, 0) << rb.all();
    std::multiset<std::string> deleted;
    std::multiset<std::string> removed;
    for (const auto* r : {&ra, &rb}) {
        for (const auto& l : lines(r->out)) {
            if (l.rfind("deleted volume junk", 0) == 0)
                deleted.insert(l.substr(15));
            if (l.rfind("removed domain ", 0) == 0)
                removed.insert(l.substr(15));
        }
    }
    EXPECT_EQ(removed, (std::multiset<std::string>{"kk-1", "kk-2"})) << ra.out << "\n---\n"
                                                                     << rb.out;
    EXPECT_FALSE(has(domain_names(), "kk-1"));
    remove_all({"kk"});
    EXPECT_EQ(std::set<std::string>(deleted.begin(), deleted.end()), garbage);
    EXPECT_EQ(deleted.size(), garbage.size()) << "a volume was counted by both runs";
    for (const auto& g : garbage)
        EXPECT_FALSE(has(pool_files(), g));

    // Siblings removed at once: each rm meets the others' VMs vanishing under it.
    up_tiny("sib");
    ASSERT_EQ(run_forky({"fork", "sib", "--count", "3"}).rc, 0);
    std::vector<Background> rms;
    for (const char* c : {"sib-1", "sib-2", "sib-3"})
        rms.push_back(start_forky({"rm", "--force", c}));
    for (auto& bg : rms) {
        CommandResult r = finish(bg);
        EXPECT_EQ(r.rc, 0) << r.all();
    }
    for (const char* c : {"sib-1", "sib-2", "sib-3"})
        EXPECT_FALSE(has(domain_names(), c)) << c;
    remove_all({"sib"});
}

// 10. One prefix for two parents at once: names are reserved before the snapshot, so the
// second fork takes the next free name instead of failing late.
TEST(Hardening, TwoParentsWithOnePrefixGetDistinctNames) {
    up_tiny("pa");
    up_tiny("pb");
    Background first = start_forky({"fork", "pa", "--prefix", "pp"},
                                   {"FORKY_FAULT_SLEEP=snapshot", "FORKY_FAULT_SLEEP_S=3"});
    ASSERT_TRUE(eventually([] { return has(pool_files(), "pp-1.lock"); }));
    CommandResult second = run_forky({"fork", "pb", "--prefix", "pp"});
    EXPECT_EQ(second.rc, 0) << second.all();
    EXPECT_EQ(second.out, "pp-2\n");
    CommandResult r = finish(first);
    EXPECT_EQ(r.rc, 0) << r.all();
    EXPECT_EQ(r.out, "pp-1\n");
    remove_all({"pa", "pb", "pp-1", "pp-2"});
}

// 11. The largest fork the CLI accepts journals everything it makes: the journal is sized
// from the plan before the first volume is made.
TEST(Hardening, TheJournalOfTheLargestForkFits) {
    up_tiny("jf");
    const auto files = pool_files();
    const std::string prefix(59, 'j'); // children jjj...j-256: 63 characters
    Background bg = start_forky({"fork", "jf", "--count", "256", "--prefix", prefix},
                                {"FORKY_FAULT_SLEEP=memory-volume"});
    ASSERT_TRUE(eventually([] { return has(pool_files(), "jf.fp1.mem"); }, seconds(180)));
    // Every child (name and UUID), its overlay and console, the parent's layers.
    const std::uintmax_t needed = 256 * (6 + 63 + 1 + 36 + 1 + 2 * (7 + 63 + 12 + 1));
    EXPECT_GE(fs::file_size(pool_dir() / "jf.lock"), needed);
    EXPECT_TRUE(has(pool_files(), prefix + "-256.lock")) << "every name is reserved up front";
    ::kill(bg.pid, SIGINT);
    CommandResult r = finish(bg, seconds(180));
    EXPECT_EQ(r.rc, 130) << r.all();
    EXPECT_EQ(pool_files(), files);
    remove_all({"jf"});
}

// Smaller: the real pause of a cold fork; a --pool typo; duplicate keys; /dev/zero; a pool
// that fills during the snapshot.
TEST(Hardening, SmallerThings) {
    up_tiny("sm");
    CommandResult cold = run_forky({"fork", "sm", "--cold", "--json"});
    ASSERT_EQ(cold.rc, 0) << cold.all();
    std::smatch m;
    ASSERT_TRUE(std::regex_search(cold.out, m, std::regex("\"parent_downtime_ms\":([0-9]+)")))
        << cold.out;
    ASSERT_TRUE(std::regex_search(cold.out, m,
                                  std::regex("\"parent_downtime_ms\":([0-9]+),.*"
                                             "\"snapshot_ms\":([0-9]+)")))
        << cold.out;
    // Paused from before the memory image was written until after: not QEMU's few ms of
    // switch-over, but most of the snapshot's time.
    EXPECT_GE(std::stoul(m[1]) * 2, std::stoul(m[2])) << cold.out;
    EXPECT_GE(std::stoul(m[1]), 20u) << cold.out;
    CommandResult text = run_forky({"fork", "sm", "--cold"});
    EXPECT_TRUE(std::regex_search(text.err, std::regex("parent paused [0-9]+ ms, the whole cut")))
        << text.err;

    for (const std::vector<std::string>& args : {std::vector<std::string>{"gc", "--dry-run"},
                                                 {"fork", "sm"},
                                                 {"rm", "sm"},
                                                 {"ls"},
                                                 {"tree"},
                                                 {"logs", "sm"},
                                                 {"stop", "sm"}}) {
        std::vector<std::string> a{"--pool", "forky-typo"};
        a.insert(a.end(), args.begin(), args.end());
        CommandResult r = run_forky(a);
        EXPECT_EQ(r.rc, 4) << r.all();
        EXPECT_TRUE(contains(r.err, "No storage pool 'forky-typo'")) << r.err;
    }
    EXPECT_FALSE(contains(virsh({"pool-list", "--all", "--name"}).out, "forky-typo"));

    fs::path dup = test_dir() / "dup.yaml";
    std::ofstream(dup) << "name: dup\nmemory: 256MiB\nboot:\n  kernel: "
                       << (source_dir() / "domains/images/vmlinuz").string() << "\nmemory: 1GiB\n";
    CommandResult d = run_forky({"up", "-f", dup.string()});
    EXPECT_EQ(d.rc, 3);
    EXPECT_TRUE(contains(d.err, dup.string() + ":5: key 'memory': given twice (first on line 2)"))
        << d.err;
    CommandResult no_config =
        run_forky({"--config", (test_dir() / "forky.yml").string(), "up", "-f", dup.string()});
    EXPECT_EQ(no_config.rc, 3) << no_config.all();
    EXPECT_TRUE(contains(no_config.err, "forky's settings file does not exist")) << no_config.err;
    const auto t = std::chrono::steady_clock::now();
    CommandResult zero = run_forky({"up", "-f", "/dev/zero"});
    EXPECT_EQ(zero.rc, 3) << zero.all();
    EXPECT_TRUE(contains(zero.err, "/dev/zero: not a regular file")) << zero.err;
    EXPECT_LT(std::chrono::steady_clock::now() - t, seconds(5));
    remove_all({"sm", "sm-1", "sm-2"});

    // The pool fills while the snapshot writes the memory image: exit 7, as for a pool
    // found too small before, and the parent runs on.
    fs::path small = test_dir() / "filling";
    fs::create_directories(small);
    ASSERT_EQ(
        run_in_daemon_ns({"mount", "-t", "tmpfs", "-o", "size=320m", "tmpfs", small.string()}).rc,
        0);
    const std::vector<std::string> pool{"--pool", "filling", "--pool-dir", small.string()};
    auto with_pool = [&](std::vector<std::string> args, const Env& env = {}) {
        args.insert(args.begin(), pool.begin(), pool.end());
        return start_forky(args, env);
    };
    Background up =
        with_pool({"up", "-f", (source_dir() / "domains/tiny.yaml").string(), "--name", "fl"});
    ASSERT_EQ(finish(up).rc, 0);
    Background fork =
        with_pool({"fork", "fl"}, {"FORKY_FAULT_SLEEP=snapshot", "FORKY_FAULT_SLEEP_S=3"});
    ASSERT_TRUE(eventually([] {
        return virsh({"vol-info", "--pool", "filling", "fl.fp1.mem"}).rc == 0;
    }));
    // Leave about 8 MiB: the memory image (tens of MiB) cannot fit.
    ASSERT_EQ(run_in_daemon_ns({"sh", "-c",
                                "avail=$(df -B1 --output=avail " + small.string() +
                                    " | tail -n1); fallocate -l $((avail - 8*1024*1024)) " +
                                    small.string() + "/filler"})
                  .rc,
              0);
    CommandResult full = finish(fork);
    EXPECT_EQ(full.rc, 7) << full.all();
    EXPECT_TRUE(contains(full.err, "pool 'filling' has")) << full.err;
    EXPECT_EQ(domain_state_of("fl"), "running");
    run_in_daemon_ns({"rm", "-f", (small / "filler").string()});
    Background rm = with_pool({"rm", "--force", "fl"});
    EXPECT_EQ(finish(rm).rc, 0);
    virsh({"pool-destroy", "filling"});
    virsh({"pool-undefine", "filling"});
    EXPECT_EQ(run_in_daemon_ns({"umount", small.string()}).rc, 0);
}
