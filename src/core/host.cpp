#include "host.hpp"

#include "qcow2.hpp"

#include "checksum.hpp"
#include "errors.hpp"
#include "log.hpp"
#include "safe_path.hpp"

#include <libvirt/virterror.h>
#include <pugixml.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace forky {

namespace {

std::string to_xml(const pugi::xml_document& doc) {
    std::ostringstream out;
    doc.save(out, "", pugi::format_raw | pugi::format_no_declaration);
    return out.str();
}

std::string take_string(char* s, std::string_view context) {
    CString owned(lv_check(s, context));
    return owned.get();
}

// Throws the error of a failed stream transfer, then aborts the stream: virStreamAbort
// resets libvirt's last error, so it must come after the error is taken.
[[noreturn]] void fail_stream(virStreamPtr st, const std::string& context) {
    try {
        throw_libvirt_error(context);
    } catch (...) {
        virStreamAbort(st);
        throw;
    }
}

// Reads [offset, offset + length) of a volume through a libvirt stream.
std::string download(virConnectPtr conn, virStorageVolPtr vol, const std::string& name,
                     std::uint64_t offset, std::uint64_t length) {
    const std::string context = "Failed to read volume '" + name + "'";
    StreamPtr st(lv_check(virStreamNew(conn, 0), "Failed to open a stream"));
    lv_check(virStorageVolDownload(vol, st.get(), offset, length, 0), context);
    std::string out;
    char buf[65536];
    for (;;) {
        int got = virStreamRecv(st.get(), buf, sizeof buf);
        if (got < 0)
            fail_stream(st.get(), context);
        if (got == 0)
            break;
        out.append(buf, static_cast<std::size_t>(got));
    }
    lv_check(virStreamFinish(st.get()), context);
    return out;
}

VolumeInfo volume_info_from_xml(const std::string& xml) {
    pugi::xml_document doc;
    doc.load_string(xml.c_str());
    VolumeInfo info;
    info.name = doc.select_node("/volume/name").node().text().get();
    info.path = doc.select_node("/volume/target/path").node().text().get();
    info.backing = doc.select_node("/volume/backingStore/path").node().text().get();
    info.capacity = doc.select_node("/volume/capacity").node().text().as_ullong();
    info.allocation = doc.select_node("/volume/allocation").node().text().as_ullong();
    info.owner = doc.select_node("/volume/target/permissions/owner").node().text().as_llong(-1);
    return info;
}

// Why forky may not make its pool at `dir` (here): a link, a folder of someone else's, or
// a way there that someone else could change. The folder's own mode does not matter: the
// build sets 0711 (and forky takes only an empty folder).
std::optional<std::string> pool_dir_problem(const std::string& dir) {
    const std::filesystem::path p(dir);
    if (auto why = walk_path(p.parent_path(), /*allow_links=*/false).problem)
        return why;
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0)
        return std::nullopt; // made by the build
    if (S_ISLNK(st.st_mode))
        return "it is a symbolic link; give --pool-dir a real folder";
    if (st.st_uid != 0 && st.st_uid != ::geteuid())
        return "it belongs to uid " + std::to_string(st.st_uid);
    if (!S_ISDIR(st.st_mode))
        return "it is not a folder";
    // What libvirt does not list as volumes counts too (a link, a FIFO, a subfolder).
    std::error_code ec;
    if (std::filesystem::directory_iterator(p, ec) != std::filesystem::directory_iterator())
        return "the folder exists and is not empty; forky makes its pool in a new or empty "
               "folder (choose another --pool-dir)";
    return std::nullopt;
}

} // namespace

Host::Host(HostOptions options) : options_(std::move(options)) {
    // One spelling of the folder: absolute, no "..", no trailing "/" (a link must not
    // hide behind "dir/").
    std::filesystem::path dir = std::filesystem::path(options_.pool_dir).lexically_normal();
    if (!dir.is_absolute())
        throw UsageError("--pool-dir must be an absolute path, not '" + options_.pool_dir + "'");
    if (!dir.has_filename() && dir != dir.root_path())
        dir = dir.parent_path();
    options_.pool_dir = dir.string();
    install_libvirt_error_handler();
    conn_ = open_connection();
    logger("host")->debug("Connected to '{}'", options_.uri);
}

bool Host::is_local() const {
    const std::string& uri = options_.uri;
    auto scheme_end = uri.find("://");
    if (scheme_end == std::string::npos)
        return uri.rfind("test:", 0) != 0; // a bare driver name is the local default
    return uri.compare(scheme_end + 3, 1, "/") == 0;
}

ConnectPtr Host::open_connection() const {
    ConnectPtr conn(virConnectOpenAuth(options_.uri.c_str(), virConnectAuthPtrDefault, 0));
    lv_check(conn.get(), "Failed to connect to libvirt at '" + options_.uri + "'");
    return conn;
}

virStoragePoolPtr Host::pool() {
    if (pool_)
        return pool_.get();
    const std::string& name = options_.pool;
    bool created = false;
    StoragePoolPtr pool(virStoragePoolLookupByName(conn(), name.c_str()));
    if (!pool) {
        expect_absent(VIR_ERR_NO_STORAGE_POOL, "Failed to look up storage pool '" + name + "'");
        if (!options_.create_pool)
            throw NotFoundError("No storage pool '" + name + "' on '" + options_.uri +
                                "'; 'forky up' creates it (or pass --create-pool), check --pool");
        // Where nobody else could swap the folder under forky, checked before anything
        // is defined (here, where the hypervisor is this machine).
        if (is_local())
            if (auto why = pool_dir_problem(options_.pool_dir))
                throw StorageError("Cannot make storage pool '" + name + "' at '" +
                                   options_.pool_dir + "': " + *why +
                                   "; forky keeps its journals and memory images there");
        pugi::xml_document doc;
        pugi::xml_node p = doc.append_child("pool");
        p.append_attribute("type") = "dir";
        p.append_child("name").text().set(name.c_str());
        pugi::xml_node target = p.append_child("target");
        target.append_child("path").text().set(options_.pool_dir.c_str());
        // forky's alone: its owner (libvirtd's user) writes, others may only traverse to
        // the images QEMU opens. Building the pool applies it to a folder that exists.
        target.append_child("permissions").append_child("mode").text().set("0711");
        const std::string pool_xml = to_xml(doc);
        pool.reset(virStoragePoolDefineXML(conn(), pool_xml.c_str(), 0));
        if (!pool) {
            try {
                throw_libvirt_error("Failed to create storage pool '" + name + "' at '" +
                                    options_.pool_dir + "'");
            } catch (const Error&) {
                // Another forky may have defined it meanwhile.
                pool.reset(virStoragePoolLookupByName(conn(), name.c_str()));
                if (!pool)
                    throw;
            }
        } else {
            build_new_pool(pool.get(), pool_xml);
            created = true;
            logger("host")->info("Created storage pool '{}' at '{}' (mode 0711)", name,
                                 options_.pool_dir);
        }
    }
    int active =
        lv_check(virStoragePoolIsActive(pool.get()), "Failed to query storage pool '" + name + "'");
    if (!active && virStoragePoolCreate(pool.get(), 0) < 0) {
        try {
            throw_libvirt_error("Failed to start storage pool '" + name + "'");
        } catch (const Error&) {
            // Lost a race with another forky starting it: fine if it is active now.
            if (virStoragePoolIsActive(pool.get()) != 1)
                throw;
        }
    }
    pool_ = std::move(pool);
    try {
        check_pool_is_safe();
    } catch (...) {
        if (created) { // ours a moment ago: leave nothing behind
            virStoragePoolDestroy(pool_.get());
            virStoragePoolUndefine(pool_.get());
            clear_libvirt_error();
        }
        pool_.reset();
        throw;
    }
    return pool_.get();
}

void Host::build_new_pool(virStoragePoolPtr pool, const std::string& xml) {
    const std::string& name = options_.pool;
    const std::string where = "'" + options_.pool_dir + "'";
    auto give_up = [pool](const std::string& why) {
        if (virStoragePoolIsActive(pool) == 1)
            virStoragePoolDestroy(pool);
        virStoragePoolUndefine(pool);
        clear_libvirt_error();
        throw StorageError(why);
    };
    if (is_local()) {
        struct stat st {};
        if (::lstat(options_.pool_dir.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
            give_up("Cannot make storage pool '" + name + "' at " + where +
                    ": it is a symbolic link; give --pool-dir a real folder");
    }
    // A folder that exists already starts as a pool without being built: forky takes it
    // only if it is empty (building it would chmod whatever someone keeps there).
    if (virStoragePoolCreate(pool, 0) == 0) {
        const int n = virStoragePoolNumOfVolumes(pool);
        if (n != 0)
            give_up("Cannot make storage pool '" + name + "' at " + where +
                    ": the folder exists and is not empty; forky makes its pool in a new or "
                    "empty folder (choose another --pool-dir)");
        virStoragePoolDestroy(pool);
        // Starting it read the folder's mode into the definition; define it again (same
        // UUID), so the build sets 0711 rather than what the folder had.
        char uuid[VIR_UUID_STRING_BUFLEN] = {};
        lv_check(virStoragePoolGetUUIDString(pool, uuid),
                 "Failed to read storage pool '" + name + "'");
        pugi::xml_document doc;
        doc.load_string(xml.c_str());
        pugi::xml_node root = doc.child("pool");
        root.insert_child_after("uuid", root.child("name")).text().set(uuid);
        StoragePoolPtr again(virStoragePoolDefineXML(conn(), to_xml(doc).c_str(), 0));
        lv_check(again.get(), "Failed to define storage pool '" + name + "'");
    }
    clear_libvirt_error();
    if (virStoragePoolBuild(pool, 0) < 0) {
        try {
            throw_libvirt_error("Failed to build storage pool '" + name + "' at " + where);
        } catch (const Error& e) {
            give_up(e.what());
        }
    }
    lv_check(virStoragePoolSetAutostart(pool, 1),
             "Failed to autostart storage pool '" + name + "'");
}

void Host::check_pool_is_safe() {
    // libvirt reports the folder's mode and owner as it found them when the pool last
    // started or refreshed. (A refresh here would race with other forky processes'
    // volume streams, so a chmod after the pool started is seen at its next start.)
    std::string xml = take_string(virStoragePoolGetXMLDesc(pool_.get(), 0),
                                  "Failed to read storage pool '" + options_.pool + "'");
    pugi::xml_document doc;
    doc.load_string(xml.c_str());
    pugi::xml_node perms = doc.select_node("/pool/target/permissions").node();
    const std::string path = doc.select_node("/pool/target/path").node().text().get();
    if (!perms) {
        logger("host")->debug("Pool '{}' reports no permissions; not checked", options_.pool);
        return;
    }
    const std::string mode_text = perms.child("mode").text().get();
    const long long owner = perms.child("owner").text().as_llong(-1);
    unsigned long mode = 0;
    try {
        mode = std::stoul(mode_text, nullptr, 8);
    } catch (const std::exception&) {
        return; // libvirt did not say
    }
    if (mode & 022) {
        char shown[24];
        std::snprintf(shown, sizeof shown, "%04lo", mode);
        throw StorageError("Storage pool '" + options_.pool + "' at '" + path +
                           "' can be written by others (mode " + shown +
                           "); forky keeps its journals and memory images there and refuses "
                           "such a pool: run 'chmod 0711 " +
                           path + "' on the host");
    }
    // Here, the folder as it is now, and every folder and link above it.
    if (is_local())
        if (auto why = walk_path(path, /*allow_links=*/false).problem)
            throw StorageError("Storage pool '" + options_.pool + "' at '" + path + "': " + *why +
                               "; forky keeps its journals and memory images there and "
                               "refuses such a pool");
    if (owner > 0 && owner != static_cast<long long>(::geteuid()))
        throw StorageError("Storage pool '" + options_.pool + "' at '" + path +
                           "' belongs to uid " + std::to_string(owner) +
                           ", who could open it to others; forky refuses it: run 'chown root " +
                           path + "' on the host");
    pool_owner_ = owner;
}

std::string Host::pool_path() {
    std::string xml = take_string(virStoragePoolGetXMLDesc(pool(), 0),
                                  "Failed to read storage pool '" + options_.pool + "'");
    pugi::xml_document doc;
    doc.load_string(xml.c_str());
    return doc.select_node("/pool/target/path").node().text().get();
}

std::vector<std::string> Host::other_pool_dirs() {
    virStoragePoolPtr* raw = nullptr;
    int n = lv_check(virConnectListAllStoragePools(conn(), &raw, 0),
                     "Failed to list the storage pools of '" + options_.uri + "'");
    std::vector<StoragePoolPtr> pools;
    for (int i = 0; i < n; ++i)
        pools.emplace_back(raw[i]);
    std::free(raw);
    std::vector<std::string> dirs;
    for (const auto& p : pools) {
        const char* name = virStoragePoolGetName(p.get());
        if (name != nullptr && options_.pool == name)
            continue;
        char* xml = virStoragePoolGetXMLDesc(p.get(), 0);
        if (xml == nullptr) {
            clear_libvirt_error(); // undefined meanwhile
            continue;
        }
        pugi::xml_document doc;
        doc.load_string(CString(xml).get());
        std::string path = doc.select_node("/pool/target/path").node().text().get();
        if (!path.empty() && path.front() == '/')
            dirs.push_back(path);
    }
    return dirs;
}

long long Host::pool_owner() {
    pool();
    return pool_owner_;
}

std::string Host::pool_dir_if_any() {
    StoragePoolPtr pool(virStoragePoolLookupByName(conn(), options_.pool.c_str()));
    if (!pool) {
        expect_absent(VIR_ERR_NO_STORAGE_POOL,
                      "Failed to look up storage pool '" + options_.pool + "'");
        return options_.pool_dir;
    }
    std::string xml = take_string(virStoragePoolGetXMLDesc(pool.get(), 0),
                                  "Failed to read storage pool '" + options_.pool + "'");
    pugi::xml_document doc;
    doc.load_string(xml.c_str());
    return doc.select_node("/pool/target/path").node().text().get();
}

bool Host::reconnect_if_lost() noexcept {
    // A client learns that libvirtd dropped it only on its next call: ask something cheap.
    unsigned long version = 0;
    if (conn_ && virConnectIsAlive(conn_.get()) == 1 &&
        virConnectGetLibVersion(conn_.get(), &version) == 0)
        return true;
    clear_libvirt_error();
    try {
        ConnectPtr fresh = open_connection();
        pool_.reset();
        conn_ = std::move(fresh);
        logger("host")->warn("The connection to '{}' was lost; reconnected", options_.uri);
        return true;
    } catch (const Error& e) {
        logger("host")->error("The connection to '{}' was lost and libvirt does not answer: {}",
                              options_.uri, e.what());
        return false;
    }
}

StorageVolPtr Host::create_overlay(const std::string& name, const std::string& backing,
                                   DiskFormat backing_format) {
    pugi::xml_document doc;
    pugi::xml_node v = doc.append_child("volume");
    v.append_child("name").text().set(name.c_str());
    pugi::xml_node cap = v.append_child("capacity");
    cap.append_attribute("unit") = "bytes";
    cap.text().set("0"); // 0: the overlay takes its backing file's size
    // qcow2 version 3 (zero clusters; lazy refcounts stay off: a layer must check clean
    // after a crash). Without <compat>, libvirt 9.0 writes 0.10 (version 2).
    pugi::xml_node target = v.append_child("target");
    target.append_child("format").append_attribute("type") = "qcow2";
    target.append_child("compat").text().set("1.1");
    pugi::xml_node b = v.append_child("backingStore");
    b.append_child("path").text().set(backing.c_str());
    b.append_child("format").append_attribute("type") = to_string(backing_format);
    StorageVolPtr vol(virStorageVolCreateXML(pool(), to_xml(doc).c_str(), 0));
    lv_check(vol.get(), "Failed to create overlay '" + name + "' on '" + backing + "' in pool '" +
                            options_.pool + "'");
    return vol;
}

StorageVolPtr Host::create_raw_volume(const std::string& name, std::uint64_t capacity) {
    pugi::xml_document doc;
    pugi::xml_node v = doc.append_child("volume");
    v.append_child("name").text().set(name.c_str());
    pugi::xml_node cap = v.append_child("capacity");
    cap.append_attribute("unit") = "bytes";
    cap.text().set(std::to_string(capacity).c_str());
    v.append_child("allocation").text().set("0");
    v.append_child("target").append_child("format").append_attribute("type") = "raw";
    StorageVolPtr vol(virStorageVolCreateXML(pool(), to_xml(doc).c_str(), 0));
    lv_check(vol.get(), "Failed to create volume '" + name + "' in pool '" + options_.pool + "'");
    return vol;
}

std::optional<VolumeInfo> Host::volume_info(const std::string& name) {
    StorageVolPtr vol = find_volume(name);
    if (!vol)
        return std::nullopt;
    char* xml = virStorageVolGetXMLDesc(vol.get(), 0);
    if (xml == nullptr) {
        expect_absent(VIR_ERR_NO_STORAGE_VOL, "Failed to read volume '" + name + "'");
        return std::nullopt;
    }
    return volume_info_from_xml(take_string(xml, ""));
}

StorageVolPtr Host::find_volume(const std::string& name) {
    StorageVolPtr vol(virStorageVolLookupByName(pool(), name.c_str()));
    if (!vol) {
        expect_absent(VIR_ERR_NO_STORAGE_VOL, "Failed to look up volume '" + name + "'");
    }
    return vol;
}

std::string Host::volume_path(virStorageVolPtr vol) {
    return take_string(virStorageVolGetPath(vol), "Failed to get a volume's path");
}

bool Host::delete_volume(const std::string& name) {
    StorageVolPtr vol = find_volume(name);
    if (!vol)
        return false;
    if (virStorageVolDelete(vol.get(), 0) < 0) {
        try {
            throw_libvirt_error("Failed to delete volume '" + name + "' from pool '" +
                                options_.pool + "'");
        } catch (const NotFoundError&) {
            return false; // deleted by someone else since the lookup
        }
    }
    logger("host")->debug("Deleted volume '{}'", name);
    return true;
}

void Host::resize_volume(const std::string& name, std::uint64_t capacity) {
    StorageVolPtr vol = find_volume(name);
    if (!vol)
        throw NotFoundError("No volume '" + name + "' in pool '" + options_.pool + "'");
    lv_check(virStorageVolResize(vol.get(), capacity, 0),
             "Failed to resize volume '" + name + "' to " + std::to_string(capacity) + " bytes");
}

std::vector<VolumeInfo> Host::volumes() {
    virStorageVolPtr* raw = nullptr;
    int n = lv_check(virStoragePoolListAllVolumes(pool(), &raw, 0),
                     "Failed to list the volumes of pool '" + options_.pool + "'");
    std::vector<StorageVolPtr> vols;
    for (int i = 0; i < n; ++i)
        vols.emplace_back(raw[i]);
    std::free(raw);
    std::vector<VolumeInfo> out;
    for (const auto& vol : vols) {
        char* raw_xml = virStorageVolGetXMLDesc(vol.get(), 0);
        if (raw_xml == nullptr) {
            // Deleted since the listing: not there any more.
            expect_absent(VIR_ERR_NO_STORAGE_VOL,
                          "Failed to read a volume of pool '" + options_.pool + "'");
            continue;
        }
        out.push_back(volume_info_from_xml(take_string(raw_xml, "")));
    }
    return out;
}

VolumeChunk Host::read_volume(const std::string& name, std::uint64_t offset) {
    StorageVolPtr vol = find_volume(name);
    if (!vol)
        throw NotFoundError("No volume '" + name + "' in pool '" + options_.pool + "'");
    virStorageVolInfo info{};
    lv_check(virStorageVolGetInfo(vol.get(), &info), "Failed to query volume '" + name + "'");
    VolumeChunk chunk;
    if (info.capacity < offset) {
        chunk.restarted = true;
        offset = 0;
    }
    chunk.next_offset = offset;
    if (info.capacity == offset)
        return chunk;
    // Read up to the size seen above; later bytes are the next call's.
    chunk.data = download(conn(), vol.get(), name, offset, info.capacity - offset);
    chunk.next_offset = offset + chunk.data.size();
    return chunk;
}

std::string Host::read_volume_range(const std::string& name, std::uint64_t offset,
                                    std::uint64_t length) {
    StorageVolPtr vol = find_volume(name);
    if (!vol)
        throw NotFoundError("No volume '" + name + "' in pool '" + options_.pool + "'");
    std::string data = download(conn(), vol.get(), name, offset, length);
    if (data.size() != length)
        throw StorageError("Volume '" + name + "' is shorter than expected (" +
                           std::to_string(offset + data.size()) + " bytes)");
    return data;
}

void Host::write_volume(const std::string& name, std::uint64_t offset, std::string_view data) {
    StorageVolPtr vol = find_volume(name);
    if (!vol)
        throw NotFoundError("No volume '" + name + "' in pool '" + options_.pool + "'");
    const std::string context = "Failed to write volume '" + name + "'";
    StreamPtr st(lv_check(virStreamNew(conn(), 0), "Failed to open a stream"));
    lv_check(virStorageVolUpload(vol.get(), st.get(), offset, data.size(), 0), context);
    std::size_t sent = 0;
    while (sent < data.size()) {
        int n = virStreamSend(st.get(), data.data() + sent, data.size() - sent);
        if (n < 0)
            fail_stream(st.get(), context);
        sent += static_cast<std::size_t>(n);
    }
    lv_check(virStreamFinish(st.get()), context);
}

namespace {

// Sends [data or hole] segments read from `next` into upload stream `out`, hashing the
// volume's content as it goes (holes as zeros). `next` fills buf and returns the bytes
// read, 0 at the end, or -3 with `hole` set for a hole.
template <typename Next>
void pump(virStreamPtr out, std::vector<char>& buf, Next next, ShipResult& result, Sha256& hash,
          const ProgressFn& progress, const std::string& context) {
    std::uint64_t covered = 0;
    for (;;) {
        long long hole = 0;
        const long long got = next(hole);
        if (got == -3) {
            if (hole > 0) {
                if (virStreamSendHole(out, hole, 0) < 0)
                    fail_stream(out, context);
                hash.update_zeros(static_cast<std::uint64_t>(hole));
                covered += static_cast<std::uint64_t>(hole);
            }
        } else if (got == 0) {
            break;
        } else {
            std::size_t sent = 0;
            while (sent < static_cast<std::size_t>(got)) {
                const int n =
                    virStreamSend(out, buf.data() + sent, static_cast<std::size_t>(got) - sent);
                if (n < 0)
                    fail_stream(out, context);
                sent += static_cast<std::size_t>(n);
            }
            hash.update(std::string_view(buf.data(), static_cast<std::size_t>(got)));
            covered += static_cast<std::uint64_t>(got);
            result.data_bytes += static_cast<std::uint64_t>(got);
        }
        if (progress)
            progress(covered, result.size);
    }
}

// One segment of a sparse download: the bytes read into `buf`, 0 at the end, or -3 with
// `hole` set to a hole's length.
long long recv_segment(virStreamPtr in, std::vector<char>& buf, long long& hole,
                       const std::string& context) {
    const int got = virStreamRecvFlags(in, buf.data(), buf.size(), VIR_STREAM_RECV_STOP_AT_HOLE);
    if (got == -3 && virStreamRecvHole(in, &hole, 0) < 0)
        fail_stream(in, context);
    if (got < 0 && got != -3)
        fail_stream(in, context);
    return got;
}

// A volume's file length (a qcow2's capacity is its virtual disk size).
std::uint64_t file_length(virStorageVolPtr vol, const std::string& name) {
    virStorageVolInfo info{};
    lv_check(virStorageVolGetInfoFlags(vol, &info, VIR_STORAGE_VOL_GET_PHYSICAL),
             "Failed to query volume '" + name + "'");
    return info.allocation; // with GET_PHYSICAL: the file's size
}

// A sparse upload into `target`, `length` bytes from its start.
StreamPtr open_upload(virConnectPtr conn, virStorageVolPtr target, std::uint64_t length,
                      const std::string& context) {
    StreamPtr out(lv_check(virStreamNew(conn, 0), "Failed to open a stream"));
    lv_check(
        virStorageVolUpload(target, out.get(), 0, length, VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM),
        context);
    return out;
}

// A new volume that goes again unless the copy into it completes.
struct DropUnlessDone {
    Host& host;
    const std::string& name;
    bool done = false;
    ~DropUnlessDone() {
        if (!done) {
            try {
                host.delete_volume(name);
            } catch (const Error&) {
                // reported by the error that got us here
            }
        }
    }
};

} // namespace

ShipResult Host::ship_volume(const std::string& name, Host& to, const std::string& to_name,
                             const ProgressFn& progress) {
    StorageVolPtr vol = find_volume(name);
    if (!vol)
        throw NotFoundError("No volume '" + name + "' in pool '" + options_.pool + "'");
    ShipResult result;
    result.size = file_length(vol.get(), name);
    const std::string context =
        "Failed to copy volume '" + name + "' to '" + to_name + "' on '" + to.options().uri + "'";
    StorageVolPtr target = to.create_raw_volume(to_name, result.size);
    DropUnlessDone drop{to, to_name};

    StreamPtr in(lv_check(virStreamNew(conn(), 0), "Failed to open a stream"));
    lv_check(virStorageVolDownload(vol.get(), in.get(), 0, result.size,
                                   VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM),
             context);
    StreamPtr out = open_upload(to.conn(), target.get(), result.size, context);
    std::vector<char> buf(1 << 20);
    Sha256 hash;
    try {
        pump(
            out.get(), buf,
            [&](long long& hole) { return recv_segment(in.get(), buf, hole, context); }, result,
            hash, progress, context);
    } catch (...) {
        virStreamAbort(in.get());
        virStreamAbort(out.get());
        throw;
    }
    lv_check(virStreamFinish(in.get()), context);
    lv_check(virStreamFinish(out.get()), context);
    result.sha256 = hash.hex();
    drop.done = true;
    return result;
}

ShipResult Host::upload_file(const std::string& file, const std::string& to_name,
                             const ProgressFn& progress) {
    const std::string context =
        "Failed to upload '" + file + "' as '" + to_name + "' to '" + options_.uri + "'";
    std::ifstream in(file, std::ios::binary);
    if (!in)
        throw NotFoundError("Cannot read '" + file + "'");
    in.seekg(0, std::ios::end);
    ShipResult result;
    result.size = static_cast<std::uint64_t>(in.tellg());
    in.seekg(0);
    StorageVolPtr target = create_raw_volume(to_name, result.size);
    DropUnlessDone drop{*this, to_name};
    StreamPtr out = open_upload(conn(), target.get(), result.size, context);
    std::vector<char> buf(1 << 20);
    Sha256 hash;
    try {
        pump(
            out.get(), buf,
            [&](long long& hole) -> long long {
                in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
                const std::streamsize got = in.gcount();
                if (got <= 0) {
                    if (in.bad())
                        throw Error(context + ": read error");
                    return 0;
                }
                // A block of zeros travels as a hole: sparse on arrival.
                bool zeros = true;
                for (std::streamsize i = 0; i < got && zeros; ++i)
                    zeros = buf[static_cast<std::size_t>(i)] == 0;
                if (zeros) {
                    hole = got;
                    return -3;
                }
                return got;
            },
            result, hash, progress, context);
    } catch (...) {
        virStreamAbort(out.get());
        throw;
    }
    lv_check(virStreamFinish(out.get()), context);
    result.sha256 = hash.hex();
    drop.done = true;
    return result;
}

ShipResult Host::download_file(const std::string& name, const std::string& file,
                               const ProgressFn& progress) {
    StorageVolPtr vol = find_volume(name);
    if (!vol)
        throw NotFoundError("No volume '" + name + "' in pool '" + options_.pool + "'");
    const std::string context =
        "Failed to download volume '" + name + "' from '" + options_.uri + "' to '" + file + "'";
    ShipResult result;
    result.size = file_length(vol.get(), name);
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        throw Error(context + ": " + std::strerror(errno));
    bool done = false;
    struct Cleanup {
        int fd;
        const std::string& file;
        bool& done;
        ~Cleanup() {
            ::close(fd);
            if (!done)
                ::unlink(file.c_str());
        }
    } cleanup{fd, file, done};
    StreamPtr in(lv_check(virStreamNew(conn(), 0), "Failed to open a stream"));
    lv_check(virStorageVolDownload(vol.get(), in.get(), 0, result.size,
                                   VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM),
             context);
    std::vector<char> buf(1 << 20);
    Sha256 hash;
    std::uint64_t offset = 0;
    try {
        for (;;) {
            long long hole = 0;
            const long long got = recv_segment(in.get(), buf, hole, context);
            if (got == 0)
                break;
            if (got == -3) {
                hash.update_zeros(static_cast<std::uint64_t>(hole));
                offset += static_cast<std::uint64_t>(hole);
            } else {
                const std::string_view data(buf.data(), static_cast<std::size_t>(got));
                hash.update(data);
                for (std::size_t put = 0; put < data.size();) {
                    const ssize_t n = ::pwrite(fd, data.data() + put, data.size() - put,
                                               static_cast<off_t>(offset + put));
                    if (n < 0 && errno == EINTR)
                        continue;
                    if (n <= 0)
                        throw StorageError(context + ": " + std::strerror(errno));
                    put += static_cast<std::size_t>(n);
                }
                offset += data.size();
                result.data_bytes += data.size();
            }
            if (progress)
                progress(offset, result.size);
        }
        if (::ftruncate(fd, static_cast<off_t>(offset)) != 0 || ::fsync(fd) != 0)
            throw StorageError(context + ": " + std::strerror(errno));
    } catch (...) {
        virStreamAbort(in.get());
        throw;
    }
    lv_check(virStreamFinish(in.get()), context);
    result.sha256 = hash.hex();
    done = true;
    return result;
}

StorageVolPtr Host::flatten_volume(const std::string& from, const std::string& to_name) {
    StorageVolPtr src = find_volume(from);
    if (!src)
        throw NotFoundError("No volume '" + from + "' in pool '" + options_.pool + "'");
    virStorageVolInfo info{};
    lv_check(virStorageVolGetInfo(src.get(), &info), "Failed to query volume '" + from + "'");
    pugi::xml_document doc;
    pugi::xml_node v = doc.append_child("volume");
    v.append_child("name").text().set(to_name.c_str());
    pugi::xml_node cap = v.append_child("capacity");
    cap.append_attribute("unit") = "bytes";
    cap.text().set(std::to_string(info.capacity).c_str());
    pugi::xml_node target = v.append_child("target");
    target.append_child("format").append_attribute("type") = "qcow2";
    target.append_child("compat").text().set("1.1");
    StorageVolPtr vol(virStorageVolCreateXMLFrom(pool(), to_xml(doc).c_str(), src.get(), 0));
    lv_check(vol.get(), "Failed to copy volume '" + from + "' into '" + to_name + "' in pool '" +
                            options_.pool + "'");
    return vol;
}

std::string Host::volume_sha256(const std::string& name) {
    StorageVolPtr vol = find_volume(name);
    if (!vol)
        throw NotFoundError("No volume '" + name + "' in pool '" + options_.pool + "'");
    const std::string context = "Failed to read volume '" + name + "'";
    StreamPtr in(lv_check(virStreamNew(conn(), 0), "Failed to open a stream"));
    lv_check(virStorageVolDownload(vol.get(), in.get(), 0, file_length(vol.get(), name),
                                   VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM),
             context);
    std::vector<char> buf(1 << 20);
    Sha256 hash;
    for (;;) {
        long long hole = 0;
        const long long got = recv_segment(in.get(), buf, hole, context);
        if (got == 0)
            break;
        if (got == -3)
            hash.update_zeros(static_cast<std::uint64_t>(hole));
        else
            hash.update(std::string_view(buf.data(), static_cast<std::size_t>(got)));
    }
    lv_check(virStreamFinish(in.get()), context);
    return hash.hex();
}

void Host::set_qcow2_backing(const std::string& name, const std::string& backing) {
    const std::string start = read_volume_range(name, 0, 72);
    const std::uint64_t cluster = qcow2_first_cluster_size(start);
    const std::string header = read_volume_range(name, 0, cluster);
    for (const auto& edit : qcow2_set_backing(header, backing))
        write_volume(name, edit.offset, edit.bytes);
}

void Host::refresh_pool() {
    // libvirt refuses while a volume is being built in the pool (another forky's): again.
    for (int attempt = 0;; ++attempt) {
        if (virStoragePoolRefresh(pool(), 0) == 0)
            return;
        virErrorPtr e = virGetLastError();
        const bool busy =
            e != nullptr && e->code == VIR_ERR_INTERNAL_ERROR && e->message &&
            std::string_view(e->message).find("asynchronous jobs") != std::string_view::npos;
        if (!busy || attempt >= 50)
            throw_libvirt_error("Failed to refresh pool '" + options_.pool + "'");
        clear_libvirt_error();
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

std::uint64_t Host::pool_available() {
    virStoragePoolInfo info{};
    lv_check(virStoragePoolGetInfo(pool(), &info),
             "Failed to query storage pool '" + options_.pool + "'");
    return info.available;
}

DomainPtr Host::find_domain(const std::string& name) {
    DomainPtr dom(virDomainLookupByName(conn(), name.c_str()));
    if (!dom) {
        expect_absent(VIR_ERR_NO_DOMAIN, "Failed to look up VM '" + name + "'");
    }
    return dom;
}

DomainPtr Host::domain(const std::string& name) {
    DomainPtr dom = find_domain(name);
    if (!dom)
        throw NotFoundError("No VM named '" + name + "' on '" + options_.uri + "'");
    return dom;
}

std::vector<DomainPtr> Host::domains() {
    virDomainPtr* raw = nullptr;
    int n = lv_check(virConnectListAllDomains(conn(), &raw, 0), "Failed to list domains");
    std::vector<DomainPtr> out;
    for (int i = 0; i < n; ++i)
        out.emplace_back(raw[i]);
    std::free(raw);
    return out;
}

std::string Host::capabilities() {
    return take_string(virConnectGetCapabilities(conn()),
                       "Failed to read the capabilities of '" + options_.uri + "'");
}

std::string Host::domain_capabilities(const std::string& arch, const std::string& machine,
                                      const std::string& virt_type) {
    auto or_null = [](const std::string& s) { return s.empty() ? nullptr : s.c_str(); };
    return take_string(virConnectGetDomainCapabilities(conn(), nullptr, or_null(arch),
                                                       or_null(machine), or_null(virt_type), 0),
                       "Failed to read the domain capabilities of '" + options_.uri + "'");
}

std::string Host::domain_type_for(Accel accel) {
    if (accel == Accel::tcg)
        return "qemu";
    std::string caps = capabilities();
    pugi::xml_document doc;
    doc.load_string(caps.c_str());
    bool kvm = static_cast<bool>(
        doc.select_node("/capabilities/guest[arch/@name='x86_64']/arch/domain[@type='kvm']"));
    bool nested =
        static_cast<bool>(doc.select_node("/capabilities/host/cpu/feature[@name='hypervisor']"));
    if (accel == Accel::kvm) {
        if (!kvm)
            throw ConflictError("accel 'kvm' was asked for but '" + options_.uri +
                                "' offers no KVM; use accel: auto or tcg");
        return "kvm";
    }
    if (kvm && !nested)
        return "kvm";
    logger("host")->warn("{}; using software emulation (set accel: kvm to force KVM)",
                         kvm ? "KVM is present but this host is itself a virtual machine, "
                               "where nested KVM may hang"
                             : "KVM is not available");
    return "qemu";
}

VmState domain_state(virDomainPtr dom) {
    int state = 0;
    int reason = 0;
    lv_check(virDomainGetState(dom, &state, &reason, 0), "Failed to read a domain's state");
    switch (state) {
    case VIR_DOMAIN_RUNNING:
        return VmState::running;
    case VIR_DOMAIN_BLOCKED:
        return VmState::idle;
    case VIR_DOMAIN_PAUSED:
        return VmState::paused;
    case VIR_DOMAIN_SHUTDOWN:
        return VmState::shutting_down;
    case VIR_DOMAIN_SHUTOFF:
        return VmState::shut_off;
    case VIR_DOMAIN_CRASHED:
        return VmState::crashed;
    case VIR_DOMAIN_PMSUSPENDED:
        return VmState::suspended;
    default:
        return VmState::unknown;
    }
}

const char* to_string(VmState s) {
    switch (s) {
    case VmState::running:
        return "running";
    case VmState::idle:
        return "idle";
    case VmState::paused:
        return "paused";
    case VmState::shutting_down:
        return "in shutdown";
    case VmState::shut_off:
        return "shut off";
    case VmState::crashed:
        return "crashed";
    case VmState::suspended:
        return "pmsuspended";
    case VmState::unknown:
        break;
    }
    return "no state";
}

bool domain_is_active(virDomainPtr dom) {
    return lv_check(virDomainIsActive(dom), "Failed to read a domain's state") == 1;
}

std::string domain_name(virDomainPtr dom) {
    return lv_check(virDomainGetName(dom), "Failed to read a domain's name");
}

std::string domain_xml(virDomainPtr dom, unsigned flags) {
    return take_string(virDomainGetXMLDesc(dom, flags), "Failed to read the XML of a domain");
}

} // namespace forky
