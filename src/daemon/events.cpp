#include "events.hpp"

#include "errors.hpp"
#include "lineage.hpp"
#include "log.hpp"
#include "vm.hpp"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <chrono>

namespace forky::daemon {

std::shared_ptr<EventHub::Subscription> EventHub::subscribe() {
    auto s = std::make_shared<Subscription>();
    std::lock_guard lock(m_);
    subs_.push_back(s);
    return s;
}

void EventHub::unsubscribe(const std::shared_ptr<Subscription>& s) {
    std::lock_guard lock(m_);
    std::erase(subs_, s);
}

void EventHub::publish(const forky::v1::Event& e) {
    std::lock_guard lock(m_);
    for (auto& s : subs_) {
        std::lock_guard sl(s->m);
        // A client that stopped reading loses the oldest, and is told so once.
        if (s->queue.size() >= 10000) {
            s->queue.pop_front();
            if (!s->overflowed) {
                forky::v1::Event lost;
                lost.set_kind("lost");
                lost.set_detail("events were dropped: this client fell behind");
                lost.set_at(utc_now_rfc3339());
                s->queue.push_back(lost);
                s->overflowed = true;
            }
        }
        s->queue.push_back(e);
        s->cv.notify_all();
    }
}

void EventHub::close_all() {
    std::lock_guard lock(m_);
    for (auto& s : subs_) {
        std::lock_guard sl(s->m);
        s->closed = true;
        s->cv.notify_all();
    }
}

void init_event_loop() {
    install_libvirt_error_handler();
    if (virEventRegisterDefaultImpl() < 0)
        throw_libvirt_error("Failed to start libvirt's event loop");
}

namespace {

const char* kind_of(int event) {
    switch (event) {
    case VIR_DOMAIN_EVENT_DEFINED:
        return "defined";
    case VIR_DOMAIN_EVENT_UNDEFINED:
        return "undefined";
    case VIR_DOMAIN_EVENT_STARTED:
        return "started";
    case VIR_DOMAIN_EVENT_SUSPENDED:
        return "suspended";
    case VIR_DOMAIN_EVENT_RESUMED:
        return "resumed";
    case VIR_DOMAIN_EVENT_STOPPED:
        return "stopped";
    case VIR_DOMAIN_EVENT_SHUTDOWN:
        return "shutdown";
    case VIR_DOMAIN_EVENT_PMSUSPENDED:
        return "pmsuspended";
    case VIR_DOMAIN_EVENT_CRASHED:
        return "crashed";
    default:
        return "other";
    }
}

std::string detail_of(int event, int detail) {
    switch (event) {
    case VIR_DOMAIN_EVENT_STARTED: {
        static const char* d[] = {"booted", "migrated", "restored", "from_snapshot", "wakeup"};
        return detail >= 0 && detail < 5 ? d[detail] : "";
    }
    case VIR_DOMAIN_EVENT_STOPPED: {
        static const char* d[] = {"shutdown", "destroyed", "crashed",      "migrated",
                                  "saved",    "failed",    "from_snapshot"};
        return detail >= 0 && detail < 7 ? d[detail] : "";
    }
    case VIR_DOMAIN_EVENT_SUSPENDED: {
        static const char* d[] = {"paused",    "migrated", "ioerror",
                                  "watchdog",  "restored", "from_snapshot",
                                  "api_error", "postcopy", "postcopy_failed"};
        return detail >= 0 && detail < 9 ? d[detail] : "";
    }
    case VIR_DOMAIN_EVENT_RESUMED: {
        static const char* d[] = {"unpaused", "migrated", "from_snapshot", "postcopy"};
        return detail >= 0 && detail < 4 ? d[detail] : "";
    }
    default:
        return "";
    }
}

} // namespace

struct EventSourceAccess {
    static void handle(EventSource* self, virDomainPtr dom, int event, int detail) {
        forky::v1::Event e;
        e.set_vm(virDomainGetName(dom) ? virDomainGetName(dom) : "");
        char uuid[VIR_UUID_STRING_BUFLEN] = {};
        if (virDomainGetUUIDString(dom, uuid) == 0)
            e.set_uuid(uuid);
        e.set_kind(kind_of(event));
        e.set_detail(detail_of(event, detail));
        e.set_at(utc_now_rfc3339());
        e.set_host(self->host_);
        bool forky = false;
        {
            std::lock_guard lock(self->cache_m_);
            auto known = self->forky_by_uuid_.find(e.uuid());
            if (event != VIR_DOMAIN_EVENT_UNDEFINED) {
                try {
                    forky = read_lineage(dom).has_value();
                } catch (const Error&) {
                    forky = known != self->forky_by_uuid_.end() && known->second;
                }
                self->forky_by_uuid_[e.uuid()] = forky;
            } else {
                forky = known != self->forky_by_uuid_.end() && known->second;
                if (known != self->forky_by_uuid_.end())
                    self->forky_by_uuid_.erase(known);
            }
        }
        clear_libvirt_error();
        e.set_forky(forky);
        logger("forkyd")->info("event: domain '{}' {} {}", e.vm(), e.kind(), e.detail());
        self->hub_.publish(e);
    }
};

int on_lifecycle(void*, void* dom, int event, int detail, void* opaque) {
    EventSourceAccess::handle(static_cast<EventSource*>(opaque), static_cast<virDomainPtr>(dom),
                              event, detail);
    return 0;
}

namespace {

int lifecycle_cb(virConnectPtr conn, virDomainPtr dom, int event, int detail, void* opaque) {
    return on_lifecycle(conn, dom, event, detail, opaque);
}

void on_close(virConnectPtr, int, void* opaque) {
    static_cast<std::atomic<bool>*>(opaque)->store(true);
}

void tick(int, void*) {}

} // namespace

EventSource::EventSource(std::string uri, std::string host, EventHub& hub, bool runs_loop)
    : uri_(std::move(uri)), host_(std::move(host)), hub_(hub) {
    if (runs_loop) {
        // A timer, so the loop wakes up to see stop_ even when no event comes.
        virEventAddTimeout(500, tick, nullptr, nullptr);
        loop_thread_ = std::thread([this] { loop(); });
    }
    watch_thread_ = std::thread([this] { watch(); });
}

EventSource::~EventSource() {
    stop_ = true;
    if (watch_thread_.joinable())
        watch_thread_.join();
    if (loop_thread_.joinable())
        loop_thread_.join();
}

bool EventSource::wait_connected(int timeout_ms) {
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        if (connected_)
            return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return connected_;
}

void EventSource::loop() {
    while (!stop_)
        if (virEventRunDefaultImpl() < 0)
            clear_libvirt_error();
}

void EventSource::watch() {
    auto log = logger("forkyd");
    bool lost_before = false;
    while (!stop_) {
        virConnectPtr conn = virConnectOpen(uri_.c_str());
        if (conn == nullptr) {
            clear_libvirt_error();
            std::this_thread::sleep_for(std::chrono::seconds(1));
            continue;
        }
        std::atomic<bool> closed{false};
        virConnectRegisterCloseCallback(conn, on_close, &closed, nullptr);
        virConnectSetKeepAlive(conn, 5, 3);
        const int id = virConnectDomainEventRegisterAny(
            conn, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(lifecycle_cb),
            this, nullptr);
        if (id < 0) {
            log->warn("Cannot listen to libvirt's domain events on '{}'", uri_);
            clear_libvirt_error();
        } else {
            if (lost_before) {
                log->warn("Reconnected to libvirt at '{}'; domain events flow again", uri_);
                forky::v1::Event back;
                back.set_kind("reconnected");
                back.set_detail("libvirt was away: events of that time are missing");
                back.set_at(utc_now_rfc3339());
                back.set_host(host_);
                hub_.publish(back);
            }
            connected_ = true;
        }
        while (!stop_ && !closed && id >= 0)
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
        if (!closed && id >= 0)
            virConnectDomainEventDeregisterAny(conn, id);
        virConnectUnregisterCloseCallback(conn, on_close);
        virConnectClose(conn);
        clear_libvirt_error();
        if (closed && !stop_) {
            connected_ = false;
            lost_before = true;
            log->warn("Lost the connection to libvirt at '{}' (libvirtd restarted?); reconnecting",
                      uri_);
        }
        if (id < 0)
            std::this_thread::sleep_for(std::chrono::seconds(1));
    }
}

} // namespace forky::daemon
