// What a spec may hand to a guest (images.hpp), forky's settings (config.hpp) and the
// strictness of its YAML files. qemu-img builds the chains under test, as an attacker
// would, in a scratch folder.
#include "config.hpp"
#include "errors.hpp"
#include "images.hpp"
#include "process.hpp"
#include "spec.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using namespace forky;

namespace {

const fs::path data_dir = FORKY_TEST_DATA;

class ImageRulesTest : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() /
               ("forky-images-" + std::to_string(::getpid()) + "-" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::create_directories(dir_ / "spec");
        fs::create_directories(dir_ / "elsewhere");
        fs::copy_file(data_dir / "images/vmlinuz", dir_ / "spec/vmlinuz");
    }
    void TearDown() override { fs::remove_all(dir_); }

    void qemu_img(const std::vector<std::string>& args) {
        std::vector<std::string> argv{"qemu-img"};
        argv.insert(argv.end(), args.begin(), args.end());
        ProcessResult r = run_process(argv);
        ASSERT_EQ(r.rc, 0) << r.err;
    }
    std::string path(const std::string& rel) const { return (dir_ / rel).string(); }

    // A spec in dir_/spec with one disk, checked against the default rules.
    std::string error_of(const std::string& disk_lines, const std::string& pool_dir = "") {
        const fs::path file = dir_ / "spec/vm.yaml";
        std::ofstream(file) << "name: vm\nmemory: 64MiB\nboot:\n  kernel: vmlinuz\ndisks:\n"
                            << disk_lines;
        try {
            DomainSpec spec = load_spec(file);
            check_spec_images(spec, image_rules_for(spec, {}, "forky", pool_dir));
        } catch (const SpecError& e) {
            return e.what();
        }
        return "";
    }

    fs::path dir_;
};

} // namespace

TEST_F(ImageRulesTest, AChainReachingHostFilesIsRefusedWithTheChainAndTheRule) {
    // The reproduction from the hardening issue: a qcow2 whose backing file is /etc/shadow.
    qemu_img(
        {"create", "-q", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw", path("spec/x.qcow2")});
    std::string msg = error_of("  - base: x.qcow2\n    format: qcow2\n");
    EXPECT_NE(msg.find("vm.yaml:6: key 'disks[0].base'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("refused '/etc/shadow' (backing file of '" + path("spec/x.qcow2") +
                       "', the base image)"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("lies under /etc, where forky never reads images"), std::string::npos);
    EXPECT_NE(msg.find("chain: " + path("spec/x.qcow2") + " (qcow2) -> /etc/shadow (raw)"),
              std::string::npos)
        << msg;
    // Without a stated format it is refused for the same reason, before anything else.
    msg = error_of("  - base: x.qcow2\n");
    EXPECT_NE(msg.find("refused '/etc/shadow'"), std::string::npos) << msg;

    // One level deeper, and through a link.
    qemu_img({"create", "-q", "-f", "qcow2", "-b", path("spec/x.qcow2"), "-F", "qcow2",
              path("spec/y.qcow2")});
    msg = error_of("  - base: y.qcow2\n    format: qcow2\n");
    EXPECT_NE(msg.find("refused '/etc/shadow' (backing file of '" + path("spec/x.qcow2") + "')"),
              std::string::npos)
        << msg;
    fs::create_symlink("/etc/passwd", dir_ / "spec/passwd.raw");
    qemu_img({"create", "-q", "-f", "qcow2", "-b", path("spec/passwd.raw"), "-F", "raw",
              path("spec/z.qcow2")});
    msg = error_of("  - base: z.qcow2\n    format: qcow2\n");
    EXPECT_NE(msg.find("leads to '/etc/passwd', which lies under /etc"), std::string::npos) << msg;
}

TEST_F(ImageRulesTest, HostFilesAsBaseKernelOrInitrdAreRefused) {
    for (const char* base : {"/etc/shadow", "/proc/self/environ", "/dev/zero", "/root/.bashrc"}) {
        std::string msg = error_of(std::string("  - base: ") + base + "\n    format: raw\n");
        EXPECT_NE(msg.find("key 'disks[0].base'"), std::string::npos) << base << ": " << msg;
        EXPECT_TRUE(msg.find("where forky never reads images") != std::string::npos ||
                    msg.find("does not exist") != std::string::npos ||
                    msg.find("not a regular file") != std::string::npos)
            << base << ": " << msg;
    }
    // A file outside the allowed folders (the spec's and the pool's, by default).
    qemu_img({"create", "-q", "-f", "qcow2", path("elsewhere/base.qcow2"), "1M"});
    std::string msg = error_of("  - base: ../elsewhere/base.qcow2\n    format: qcow2\n");
    EXPECT_NE(msg.find("is not under a folder allowed for images (" + path("spec")),
              std::string::npos)
        << msg;
    EXPECT_EQ(error_of("  - base: ../elsewhere/base.qcow2\n    format: qcow2\n", path("elsewhere")),
              "")
        << "the pool's folder is allowed";

    const fs::path file = dir_ / "spec/boot.yaml";
    std::ofstream(file) << "name: vm\nmemory: 64MiB\nboot:\n  kernel: vmlinuz\n"
                           "  initrd: /etc/shadow\n";
    DomainSpec spec = load_spec(file);
    try {
        check_spec_images(spec, image_rules_for(spec, {}, "forky", ""));
        FAIL() << "an initrd under /etc was accepted";
    } catch (const SpecError& e) {
        EXPECT_NE(std::string(e.what()).find("boot.yaml:5: key 'boot.initrd': refused initrd "
                                             "'/etc/shadow'"),
                  std::string::npos)
            << e.what();
    }
    // The administrator's folders replace the defaults; /etc stays out whatever they say.
    ImageRules admin = image_rules_for(spec, {dir_ / "elsewhere"}, "forky", "");
    EXPECT_NE(image_file_problem(path("spec/vmlinuz"), admin), std::nullopt);
    EXPECT_EQ(image_file_problem(path("elsewhere/base.qcow2"), admin), std::nullopt);
    EXPECT_THROW(image_rules_for(spec, {"/"}, "forky", ""), SpecError);
}

TEST_F(ImageRulesTest, AQcow2HeaderIsReadAsQcow2OnlyWhenTheSpecSaysSo) {
    qemu_img({"create", "-q", "-f", "qcow2", path("spec/base.qcow2"), "1M"});
    std::string msg = error_of("  - base: base.qcow2\n");
    EXPECT_NE(msg.find("begins with a qcow2 header; forky reads it as qcow2 only when the spec "
                       "says so: add 'format: qcow2'"),
              std::string::npos)
        << msg;
    EXPECT_EQ(error_of("  - base: base.qcow2\n    format: qcow2\n"), "");
    // A raw disk whose guest wrote a qcow2 header naming a host file: read as raw, the
    // header is just bytes.
    qemu_img({"create", "-q", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw",
              path("spec/raw-with-header.img")});
    EXPECT_EQ(error_of("  - base: raw-with-header.img\n    format: raw\n"), "");
    // A raw file without a header needs no format.
    std::ofstream(dir_ / "spec/plain.raw") << std::string(4096, 'x');
    EXPECT_EQ(error_of("  - base: plain.raw\n"), "");
}

TEST_F(ImageRulesTest, BackingFilesWithoutAFormatAndOutsideDataFilesAreRefused) {
    qemu_img({"create", "-q", "-f", "qcow2", path("spec/base.qcow2"), "1M"});
    // qemu-img no longer writes a backing file without its format; older tools did. Made
    // here as they made it: the backing-format header extension ends the list instead.
    qemu_img({"create", "-q", "-f", "qcow2", "-b", path("spec/base.qcow2"), "-F", "qcow2",
              path("spec/noformat.qcow2")});
    {
        std::fstream f(path("spec/noformat.qcow2"),
                       std::ios::in | std::ios::out | std::ios::binary);
        std::string head(4096, '\0');
        f.read(head.data(), static_cast<std::streamsize>(head.size()));
        const auto at = head.find("\xE2\x79\x2A\xCA");
        ASSERT_NE(at, std::string::npos);
        f.seekp(static_cast<std::streamoff>(at));
        f.write("\0\0\0\0", 4);
    }
    std::string msg = error_of("  - base: noformat.qcow2\n    format: qcow2\n");
    EXPECT_NE(msg.find("has no recorded format, which qemu would guess"), std::string::npos) << msg;

    qemu_img({"create", "-q", "-f", "qcow2", "-o",
              "data_file=" + path("elsewhere/data.raw") + ",data_file_raw=on",
              path("spec/external.qcow2"), "1M"});
    msg = error_of("  - base: external.qcow2\n    format: qcow2\n");
    EXPECT_NE(msg.find("refused '" + path("elsewhere/data.raw") + "' (external data file of"),
              std::string::npos)
        << msg;
}

TEST_F(ImageRulesTest, FilesOthersCouldSwapOrThatHaveSecondNamesAreRefused) {
    // Another user's file, a folder others can write, a hard link: each could be turned
    // into something else between forky's check and QEMU's open.
    std::ofstream(dir_ / "spec/theirs.raw") << std::string(4096, 'x');
    ASSERT_EQ(::chown(path("spec/theirs.raw").c_str(), 12345, 12345), 0);
    std::string msg = error_of("  - base: theirs.raw\n");
    EXPECT_NE(msg.find("could be swapped after forky checked it: '" + path("spec/theirs.raw") +
                       "' belongs to uid 12345"),
              std::string::npos)
        << msg;

    fs::create_directories(dir_ / "spec/open");
    fs::permissions(dir_ / "spec/open", fs::perms::all);
    std::ofstream(dir_ / "spec/open/disk.raw") << std::string(4096, 'x');
    msg = error_of("  - base: open/disk.raw\n");
    EXPECT_NE(msg.find("others can write '" + path("spec/open") + "' (mode 0777)"),
              std::string::npos)
        << msg;

    // A backing file named through a link in another user's folder: they could point the
    // link elsewhere once forky has looked (QEMU follows the path at every open).
    qemu_img({"create", "-q", "-f", "qcow2", path("spec/good.qcow2"), "1M"});
    fs::create_directories(dir_ / "theirs");
    fs::create_symlink(dir_ / "spec/good.qcow2", dir_ / "theirs/lnk");
    ASSERT_EQ(::chown(path("theirs").c_str(), 12345, 12345), 0);
    qemu_img({"create", "-q", "-f", "qcow2", "-b", path("theirs/lnk"), "-F", "qcow2",
              path("spec/top.qcow2")});
    msg = error_of("  - base: top.qcow2\n    format: qcow2\n");
    EXPECT_NE(msg.find("'" + path("theirs") + "' belongs to uid 12345, who could change it"),
              std::string::npos)
        << msg;

    std::ofstream(dir_ / "spec/one.raw") << std::string(4096, 'x');
    fs::create_hard_link(dir_ / "spec/one.raw", dir_ / "spec/two.raw");
    msg = error_of("  - base: two.raw\n");
    EXPECT_NE(msg.find("has 2 names (hard links)"), std::string::npos) << msg;

    // ".." after a link goes up from where the link leads, as the kernel goes: a backing
    // path "u/v/../../secret" is judged where QEMU will open it, not as tidied text.
    fs::create_directories(dir_ / "elsewhere/sub");
    std::ofstream(dir_ / "secret") << std::string(4096, 's');
    std::ofstream(dir_ / "spec/secret") << std::string(4096, 'd'); // the decoy
    fs::create_directories(dir_ / "spec/u");
    fs::create_directory_symlink(dir_ / "elsewhere/sub", dir_ / "spec/u/v");
    qemu_img({"create", "-q", "-f", "qcow2", "-b", "u/v/../../secret", "-F", "raw",
              path("spec/dotdot.qcow2")});
    msg = error_of("  - base: dotdot.qcow2\n    format: qcow2\n");
    EXPECT_NE(msg.find("leads to '" + path("secret") + "', which is not under a folder allowed"),
              std::string::npos)
        << msg;
    ASSERT_EQ(::lchown(path("spec/u/v").c_str(), 12345, 12345), 0);
    ASSERT_EQ(::chown(path("spec/u").c_str(), 12345, 12345), 0);
    msg = error_of("  - base: dotdot.qcow2\n    format: qcow2\n");
    EXPECT_NE(msg.find("'" + path("spec/u") + "' belongs to uid 12345"), std::string::npos) << msg;

    // A spec whose folder others can write (even sticky) takes no images from it by default.
    fs::permissions(dir_ / "spec", fs::perms::all | fs::perms::sticky_bit);
    std::ofstream(dir_ / "spec/plain.raw") << std::string(4096, 'x');
    msg = error_of("  - base: plain.raw\n");
    EXPECT_NE(msg.find("the spec's folder " + path("spec") +
                       " can be written by others (mode 1777), so it is no image folder"),
              std::string::npos)
        << msg;
}

TEST_F(ImageRulesTest, VolumesForkyMadeAndOtherPoolsAreOutOfBounds) {
    const fs::path pool = dir_ / "pool";
    const fs::path other = dir_ / "other-pool";
    fs::create_directories(pool);
    fs::create_directories(other);
    for (const char* f : {"web.fp1.mem", "web.vda.qcow2", "web.lock", "golden.raw"})
        std::ofstream(pool / f) << std::string(4096, 'x');
    std::ofstream(other / "vm.raw") << std::string(4096, 'x');
    const fs::path file = dir_ / "spec/vm.yaml";
    std::ofstream(file) << "name: vm\nmemory: 64MiB\nboot:\n  kernel: vmlinuz\n";
    DomainSpec spec = load_spec(file);
    ImageRules rules = image_rules_for(spec, {}, "forky", pool.string(), {pool, other});
    for (const char* f : {"web.fp1.mem", "web.vda.qcow2", "web.lock"}) {
        auto why = image_file_problem((pool / f).string(), rules);
        ASSERT_TRUE(why) << f;
        EXPECT_NE(why->find("is a volume forky made for a VM"), std::string::npos) << *why;
    }
    EXPECT_EQ(image_file_problem((pool / "golden.raw").string(), rules), std::nullopt)
        << "an image put in forky's pool (not one of its VMs' volumes) may be a base";
    auto why = image_file_problem((other / "vm.raw").string(), rules);
    ASSERT_TRUE(why);
    EXPECT_NE(why->find("lies in the folder of another storage pool"), std::string::npos) << *why;
    // Unless the administrator lists a folder there.
    ImageRules admin = image_rules_for(spec, {other}, "forky", pool.string(), {pool, other});
    EXPECT_EQ(image_file_problem((other / "vm.raw").string(), admin), std::nullopt);
}

TEST(ImageChain, ParsesQemuImgJson) {
    const std::string json = R"([
      {"filename": "/a/top.qcow2", "format": "qcow2", "backing-filename": "base.qcow2",
       "full-backing-filename": "/a/base.qcow2", "backing-filename-format": "qcow2",
       "format-specific": {"type": "qcow2", "data": {"compat": "1.1"}}},
      {"filename": "/a/base.qcow2", "format": "qcow2",
       "format-specific": {"type": "qcow2", "data": {"data-file": "/b/data"}}}
    ])";
    auto chain = parse_image_chain(json);
    ASSERT_EQ(chain.size(), 2u);
    EXPECT_EQ(chain[0].file, "/a/top.qcow2");
    EXPECT_EQ(chain[0].backing, "/a/base.qcow2");
    EXPECT_EQ(chain[0].backing_format, "qcow2");
    EXPECT_EQ(chain[1].data_file, "/b/data");
    EXPECT_THROW(parse_image_chain("not json"), Error);
    EXPECT_EQ(parse_image_chain(R"({"filename": "/x", "format": "raw"})").size(), 1u);
}

TEST(ImageChain, LiveChainsAreJudgedAsLibvirtOpenedThem) {
    ImageRules rules;
    rules.allowed_dirs = {"/srv/images", "/var/lib/forky"};
    rules.allowed_by = "test";
    const std::string xml = R"(<domain><os><kernel>/srv/images/vmlinuz</kernel></os><devices>
      <disk type='file' device='disk'><source file='/var/lib/forky/vm.vda.qcow2'/>
        <backingStore type='file'><format type='qcow2'/><source file='/srv/images/base.qcow2'/>
          <backingStore type='file'><format type='raw'/><source file='/etc/shadow'/>
            <backingStore/></backingStore></backingStore>
        <target dev='vda'/></disk></devices></domain>)";
    auto problems = live_image_problems(xml, rules);
    ASSERT_EQ(problems.size(), 1u);
    EXPECT_NE(problems[0].find("disk vda reaches '/etc/shadow', which lies under /etc"),
              std::string::npos)
        << problems[0];
    EXPECT_TRUE(live_image_problems(R"(<domain><devices><disk><source file='/var/lib/forky/a'/>
        <backingStore type='file'><source file='/srv/images/b'/><backingStore/></backingStore>
        <target dev='vda'/></disk></devices></domain>)",
                                    rules)
                    .empty());
}

TEST(Config, IsStrictAndKeepsHostFoldersOut) {
    Config c = parse_config("image_dirs: [/srv/forky/images, /var/lib/forky]\n", "/x/forky.yaml");
    EXPECT_EQ(c.image_dirs, (std::vector<fs::path>{"/srv/forky/images", "/var/lib/forky"}));
    auto error_of = [](const std::string& text) {
        try {
            parse_config(text, "/x/forky.yaml");
        } catch (const SpecError& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    EXPECT_NE(error_of("image_dirs: [relative/dir]\n").find("/x/forky.yaml:1: key 'image_dirs[0]'"),
              std::string::npos);
    EXPECT_NE(error_of("image_dirs:\n  - /etc/images\n").find("lies under /etc"),
              std::string::npos);
    EXPECT_NE(error_of("imagedirs: [/srv]\n").find("unknown key"), std::string::npos);
    EXPECT_NE(error_of("image_dirs: [/a]\nimage_dirs: [/b]\n")
                  .find("/x/forky.yaml:2: key 'image_dirs': given twice (first on line 1)"),
              std::string::npos);
    EXPECT_TRUE(load_config("/nonexistent/forky.yaml").image_dirs.empty());
    EXPECT_THROW(load_config("/nonexistent/forky.yaml", /*required=*/true), SpecError);
    EXPECT_NE(error_of("image_dirs: [/]\n").find("would allow every file"), std::string::npos);

    // Settings anybody could have written decide nothing.
    const fs::path dir = fs::temp_directory_path() / ("forky-config-" + std::to_string(getpid()));
    fs::create_directories(dir);
    const fs::path file = dir / "forky.yaml";
    std::ofstream(file) << "image_dirs: [/srv/images]\n";
    EXPECT_EQ(load_config(file).image_dirs, (std::vector<fs::path>{"/srv/images"}));
    fs::permissions(file, fs::perms::all);
    try {
        load_config(file);
        FAIL() << "settings others can write were trusted";
    } catch (const SpecError& e) {
        EXPECT_NE(
            std::string(e.what()).find("forky does not trust forky's settings file: others can "
                                       "write '" +
                                       file.string() + "'"),
            std::string::npos)
            << e.what();
    }
    fs::remove_all(dir);
}

TEST(SpecFiles, DuplicateKeysNonRegularAndHugeFilesAreRefused) {
    const fs::path spec = data_dir / "golden/case.yaml";
    try {
        parse_spec("name: a\nmemory: 64MiB\nboot:\n  kernel: ../images/vmlinuz\nmemory: 1GiB\n",
                   spec);
        FAIL() << "a key given twice was accepted";
    } catch (const SpecError& e) {
        EXPECT_NE(std::string(e.what()).find("case.yaml:5: key 'memory': given twice (first on "
                                             "line 2)"),
                  std::string::npos)
            << e.what();
    }
    EXPECT_THROW(parse_spec("name: a\nmemory: 64MiB\nboot:\n  kernel: ../images/vmlinuz\n"
                            "  kernel: ../images/vmlinuz\n",
                            spec),
                 SpecError);
    // /dev/zero would be read until memory runs out: refused at once.
    const auto t = std::chrono::steady_clock::now();
    try {
        load_spec("/dev/zero");
        FAIL() << "/dev/zero was read as a spec";
    } catch (const SpecError& e) {
        EXPECT_NE(std::string(e.what()).find("/dev/zero: not a regular file"), std::string::npos)
            << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - t, std::chrono::seconds(5));
    const fs::path big = fs::temp_directory_path() / ("forky-big-" + std::to_string(getpid()));
    std::ofstream(big) << "name: a\n# " << std::string(2 << 20, 'x') << "\n";
    try {
        load_spec(big);
        FAIL() << "a 2 MiB spec was read";
    } catch (const SpecError& e) {
        EXPECT_NE(std::string(e.what()).find("larger than 1024 KiB"), std::string::npos);
    }
    fs::remove(big);
    EXPECT_THROW(load_spec(data_dir / "golden"), SpecError); // a folder

    // A few hundred bytes of aliases that expand to billions of values: refused at once.
    std::string bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
    for (int i = 1; i <= 12; ++i) {
        bomb += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
        for (int k = 0; k < 10; ++k)
            bomb += (k ? ", *a" : "*a") + std::to_string(i - 1);
        bomb += "]\n";
    }
    bomb += "name: bomb\n";
    const auto b = std::chrono::steady_clock::now();
    try {
        parse_spec(bomb, spec);
        FAIL() << "an alias bomb was accepted";
    } catch (const SpecError& e) {
        EXPECT_NE(std::string(e.what()).find("aliases expanding?"), std::string::npos) << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - b, std::chrono::seconds(2));
}
