// Lifecycle events of the served host's domains, from libvirt's domain events
// (virConnectDomainEventRegisterAny on a connection of its own, run by libvirt's default
// event loop), fanned out to every Events stream. The connection comes back by itself when
// libvirtd restarts, and the log says so.
#pragma once

#include "forky/v1/forky.pb.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace forky::daemon {

class EventHub {
public:
    struct Subscription {
        std::mutex m;
        std::condition_variable cv;
        std::deque<forky::v1::Event> queue;
        bool closed = false;
        bool overflowed = false;
    };

    std::shared_ptr<Subscription> subscribe();
    void unsubscribe(const std::shared_ptr<Subscription>& s);
    void publish(const forky::v1::Event& e);
    void close_all();

private:
    std::mutex m_;
    std::vector<std::shared_ptr<Subscription>> subs_;
};

// Must run before the process opens its first libvirt connection.
void init_event_loop();

class EventSource {
public:
    // Events of the hypervisor at `uri`, tagged with `host` (its name in the fleet). One
    // source of a process runs libvirt's event loop (`runs_loop`): it runs in one thread.
    EventSource(std::string uri, std::string host, EventHub& hub, bool runs_loop);
    ~EventSource(); // stops and joins
    // Waits up to `timeout_ms` for the first connection; false when libvirt did not answer.
    bool wait_connected(int timeout_ms);

private:
    void loop();
    void watch();

    std::string uri_;
    std::string host_;
    EventHub& hub_;
    std::atomic<bool> stop_{false};
    std::atomic<bool> connected_{false};
    std::thread loop_thread_, watch_thread_;
    std::mutex cache_m_;
    std::map<std::string, bool> forky_by_uuid_; // whether each domain carried forky's lineage

    friend int on_lifecycle(void*, void*, int, int, void*);
    friend struct EventSourceAccess;
};

} // namespace forky::daemon
